//! Purge hygiene: what a hostile or broken CDN can make a purge do, and what a config must not get
//! past before a tile renders. The CDNs are the recording server (`common/recorder.rs`) answering
//! as a hostile or broken one would: a refusal echoing the request's headers, a huge body, no
//! answer at all.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::edge::{metric, seed_tree, tree_in_config, tree_world, Watching};
use crate::common::recorder::{Answer, Recorder};
use crate::common::run::{
    oar_tiles, oar_tiles_command, read_tree, send_signal, single_layer_config, summary, Run,
};

const ZOOMS: &str = "0-9";
/// A zone and a service id of the real shapes (32 hex digits; 22 letters and digits).
const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const SERVICE: &str = "SU1Z0isxPaozGVKXdv0eYz";

fn http_cdn(port: u16, extra: &str) -> String {
    format!(
        "[[tileset.cdn]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/t/{{path}}\"\n{extra}\n"
    )
}

/// The 1-based line of the first line of `text` that starts with `start`, after the line
/// `after` (0: from the top).
fn line_of(text: &str, start: &str, after: usize) -> usize {
    text.lines()
        .enumerate()
        .skip(after)
        .find(|(_, line)| line.starts_with(start))
        .map(|(index, _)| index + 1)
        .unwrap_or_else(|| panic!("no line starts with {start:?}:\n{text}"))
}

/// `seed` of the fixture's tileset into `tree`, started in the background with its log in a file.
fn spawn_seed(
    fixture: &crate::common::fixture::Fixture,
    tree: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Child, PathBuf) {
    let output = format!("dir:{}", tree.display());
    let args = fixture.seed_args(&output, ZOOMS, extra);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let log = fixture.path(&format!("seed-{started}.log"));
    let child = oar_tiles_command(Some(&fixture.schema.url), &args, env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

/// Waits at most `limit` for the child to exit, and returns its exit code; kills it and fails
/// when it outlives the limit (a stall, not a slow machine).
fn exit_within(child: &mut Child, limit: Duration, log: &Path, what: &str) -> i32 {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: still running {limit:?} later; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls until `done` holds, failing after five minutes or when the child exits first.
fn wait_for(child: &mut Child, log: &Path, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run exited ({status}) before {what}; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "waited 5 minutes for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn purge_answers_that_echo_the_request_headers_put_no_secret_into_stderr_or_the_summary() {
    let cloudflare = Recorder::answering(Answer::EchoHeaders(401));
    let fastly = Recorder::answering(Answer::EchoHeaders(500));
    let shield = Recorder::answering(Answer::EchoHeaders(403));
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"cloudflare\"\nzone_id = \"{ZONE}\"\napi_url = \"http://127.0.0.1:{}/client/v4\"\npublic_url = \"https://tiles.example.org/v1\"\ntoken_env = \"OAR_TEST_CF_TOKEN\"\n\n\
         [[tileset.cdn]]\nkind = \"fastly\"\nservice_id = \"{SERVICE}\"\napi_url = \"http://127.0.0.1:{}\"\npublic_url = \"https://tiles.example.org\"\ntoken_env = \"OAR_TEST_FASTLY_TOKEN\"\n\n\
         [[tileset.cdn]]\nkind = \"http\"\nname = \"shield\"\nurl = \"http://127.0.0.1:{}/t/{{path}}\"\nconcurrency = 1\nheaders = {{ \"X-Purge-Token\" = \"OAR_TEST_SHIELD_TOKEN\" }}\n",
        cloudflare.port, fastly.port, shield.port
    );
    let (fixture, tree) = tree_world("hygiene_echo", &cdn);
    let secrets = [
        ("OAR_TEST_CF_TOKEN", "cf-Secret-4b1d9e0a"),
        ("OAR_TEST_FASTLY_TOKEN", "fastly-Secret-77aa21c3"),
        ("OAR_TEST_SHIELD_TOKEN", "shield-Secret-0c3f5e9d"),
    ];
    let report = fixture.path("summary.json");
    let report_arg = report.to_str().unwrap().to_string();
    let run = seed_tree(&fixture, &tree, &["--summary-json", &report_arg], &secrets);
    assert_eq!(run.code, 1, "{}", run.stderr);
    // Each server really was sent its secret, and echoed it back.
    let sent = |recorder: &Recorder, header: &str| {
        recorder.requests.lock().unwrap()[0]
            .header(header)
            .to_string()
    };
    assert_eq!(
        sent(&cloudflare, "authorization"),
        "Bearer cf-Secret-4b1d9e0a"
    );
    assert_eq!(sent(&fastly, "fastly-key"), "fastly-Secret-77aa21c3");
    assert_eq!(sent(&shield, "x-purge-token"), "shield-Secret-0c3f5e9d");
    let json = std::fs::read_to_string(&report).unwrap();
    for (_, secret) in secrets {
        for (what, text) in [
            ("stderr", &run.stderr),
            ("stdout", &run.stdout),
            ("--summary-json", &json),
        ] {
            assert!(
                !text.contains(secret),
                "{what} holds the secret {secret}:\n{text}"
            );
        }
    }
    // What went wrong is still said: each target's failure names the status it was answered.
    let purges = &summary(&report)[0]["purges"];
    for (index, status) in [(0, "401"), (1, "500"), (2, "403")] {
        let failed = purges[index]["failed"].as_str().unwrap_or_default();
        assert!(failed.contains(status), "{}", purges[index]);
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn purge_answers_quoting_a_secret_without_its_scheme_word_encoded_or_in_base64_leak_nothing() {
    use base64::Engine as _;
    let cloudflare = Recorder::answering(Answer::EchoAuthorization(401));
    let shield = Recorder::answering(Answer::EchoAuthorization(403));
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"cloudflare\"\nzone_id = \"{ZONE}\"\napi_url = \"http://127.0.0.1:{}/client/v4\"\npublic_url = \"https://tiles.example.org/v1\"\ntoken_env = \"OAR_TEST_CF_TOKEN\"\n\n\
         [[tileset.cdn]]\nkind = \"http\"\nname = \"shield\"\nurl = \"http://127.0.0.1:{}/t/{{path}}\"\nconcurrency = 1\nheaders = {{ \"Authorization\" = \"OAR_TEST_SHIELD_AUTH\" }}\n",
        cloudflare.port, shield.port
    );
    let (fixture, tree) = tree_world("hygiene_forms", &cdn);
    let secrets = [
        ("OAR_TEST_CF_TOKEN", "cf-Secret/4b1d+9e0a"),
        ("OAR_TEST_SHIELD_AUTH", "Bearer shield-Secret/0c3f+5e9d"),
    ];
    let report = fixture.path("summary.json");
    let report_arg = report.to_str().unwrap().to_string();
    let run = seed_tree(&fixture, &tree, &["--summary-json", &report_arg], &secrets);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        shield.requests.lock().unwrap()[0].header("authorization"),
        "Bearer shield-Secret/0c3f+5e9d"
    );
    let json = std::fs::read_to_string(&report).unwrap();
    for value in [
        "cf-Secret/4b1d+9e0a",
        "Bearer cf-Secret/4b1d+9e0a",
        "Bearer shield-Secret/0c3f+5e9d",
        "shield-Secret/0c3f+5e9d",
    ] {
        let forms = [
            value.to_string(),
            percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
            base64::engine::general_purpose::STANDARD.encode(value),
        ];
        for form in forms {
            for (what, text) in [("stderr", &run.stderr), ("--summary-json", &json)] {
                assert!(!text.contains(&form), "{what} holds {form}:\n{text}");
            }
        }
    }
    // What was answered is still said, less the secrets.
    let purges = &summary(&report)[0]["purges"];
    for index in [0, 1] {
        let failed = purges[index]["failed"].as_str().unwrap_or_default();
        assert!(failed.contains("denied [redacted]"), "{}", purges[index]);
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // waitpid(2) has no safe wrapper; the crate itself forbids unsafe code.
/// Waits for `child` and returns its exit code and its peak resident memory in bytes, read from
/// the kernel's high-water mark of its own image (`VmHWM`) while it runs. Not `wait4`'s
/// `ru_maxrss`: a child spawned by vfork and exec starts that figure at the high-water mark of the
/// test process it was spawned from, which holds every test running beside it.
fn wait_with_peak_memory(child: Child) -> (i32, u64) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let status_file = format!("/proc/{pid}/status");
    let mut peak = 0;
    let mut status = 0;
    loop {
        // Read before reaping: once reaped, the figure is gone.
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            let kib = text
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                });
            peak = peak.max(kib.unwrap_or(0) * 1024);
        }
        // SAFETY: waitpid writes only to the valid status pointer it is given.
        let waited = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(waited >= 0, "{}", std::io::Error::last_os_error());
        if waited == pid {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, peak)
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_purge_answer_of_128_mib_is_read_only_up_to_a_small_cap() {
    const BODY: u64 = 128 << 20;
    let cache = Recorder::answering(Answer::Huge(500, BODY));
    let (fixture, tree) = tree_world("hygiene_huge", &http_cdn(cache.port, "concurrency = 1"));
    let (child, log) = spawn_seed(&fixture, &tree, &[], &[]);
    let (code, peak) = wait_with_peak_memory(child);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("answered 500"), "{stderr}");
    let requests = cache.requests.lock().unwrap().len() as u64;
    assert!(requests >= 1);
    // What the server could hand over before the client hung up: the cap and the sockets'
    // buffers, not the body.
    let sent = cache.sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        sent < requests * (16 << 20),
        "{sent} bytes of body taken over {requests} request(s)"
    );
    assert!(peak > 0, "no memory figure was read while the run lasted");
    assert!(
        peak < BODY,
        "the run peaked at {} MiB for a {} MiB answer",
        peak >> 20,
        BODY >> 20
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_cdn_that_never_answers_fails_the_purge_within_its_timeouts_and_keeps_the_changes() {
    let hung = Recorder::answering(Answer::Never);
    let cdn = http_cdn(
        hung.port,
        "concurrency = 2\nrequest_timeout = \"1s\"\npurge_timeout = \"4s\"",
    );
    let (fixture, tree) = tree_world("hygiene_hung", &cdn);
    let report = fixture.path("summary.json");
    let report_arg = report.to_str().unwrap().to_string();
    let started = Instant::now();
    let run = seed_tree(&fixture, &tree, &["--summary-json", &report_arg], &[]);
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        !hung.requests.lock().unwrap().is_empty(),
        "no purge was sent"
    );
    // Generous: the purge's budget is 4 s; before there was none, and each of 5 tries waited 30 s.
    assert!(took < Duration::from_secs(60), "the run took {took:?}");
    let json = summary(&report);
    let failed = json[0]["purges"][0]["failed"].as_str().unwrap_or_default();
    assert!(failed.contains("purge_timeout 4s"), "{json}");
    assert!(
        json[0]["outbox"]["entries"].as_u64().unwrap() > 0,
        "the changes wait in the outbox: {json}"
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn sigterm_while_purging_a_silent_cdn_stops_the_run_at_once_and_the_next_run_purges() {
    let hung = Recorder::answering(Answer::Never);
    let cache = Recorder::start("purged", 0);
    // The default timeouts: the signal, not a timeout, must end the purge.
    // A cache that takes BAN: a full seed purges it once every tile is stored (a PURGE-only one
    // is purged beside the writer, where the signal would stop the render too).
    let (fixture, tree) = tree_world(
        "hygiene_sigterm",
        &http_cdn(hung.port, "method = \"BAN\"\n"),
    );
    let (mut child, log) = spawn_seed(&fixture, &tree, &[], &[]);
    wait_for(&mut child, &log, "a purge request", || {
        !hung.requests.lock().unwrap().is_empty()
    });
    send_signal(&child, libc::SIGTERM);
    let code = exit_within(
        &mut child,
        Duration::from_secs(20),
        &log,
        "SIGTERM mid-purge",
    );
    assert_eq!(
        code,
        143,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let stored = read_tree(&tree, "pbf");
    assert!(!stored.is_empty(), "the tiles were stored before the purge");

    // The cache answers now: the next run purges every tile the stopped one stored.
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    std::fs::write(
        &fixture.config,
        text.replace(
            &format!("127.0.0.1:{}/", hung.port),
            &format!("127.0.0.1:{}/", cache.port),
        ),
    )
    .unwrap();
    seed_tree(&fixture, &tree, &["--dirty"], &[]).assert_success();
    let purged = cache.paths_under("/t/");
    if !purged.contains("") {
        for (z, x, y) in stored.keys() {
            let path = format!("{z}/{x}/{y}.pbf");
            assert!(purged.contains(&path), "{path} was never purged");
        }
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn seed_wait_lock_stops_on_sigterm_and_sigint_while_it_waits() {
    let (fixture, tree) = tree_world("hygiene_wait_lock", "");
    // Another job holds the tree: its lock file beside it, locked.
    let lock = tree.with_file_name("tree.oar-tiles.lock");
    let holder = std::fs::File::create(&lock).unwrap();
    holder.lock().unwrap();
    for (signal, expected) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let (mut child, log) = spawn_seed(&fixture, &tree, &["--wait-lock"], &[]);
        wait_for(&mut child, &log, "the wait for the lock", || {
            std::fs::read_to_string(&log).is_ok_and(|text| text.contains("waiting for"))
        });
        send_signal(&child, signal);
        let code = exit_within(
            &mut child,
            Duration::from_secs(20),
            &log,
            "a signal while waiting for the lock",
        );
        assert_eq!(
            code,
            expected,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    assert!(!tree.join("0").exists(), "nothing was rendered");
    drop(holder);
}

/// A config of one tileset purged through `cdn`, whose database is never reached: the checks at
/// fault refuse it first.
fn config_with(dir: &Path, cdn: &str) -> (PathBuf, String) {
    let text = single_layer_config("s", "sites", cdn, "");
    let path = dir.join("cdn.toml");
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

fn seed_config(dir: &Path, config: &Path) -> Run {
    let output = format!("dir:{}", dir.join("tree").display());
    oar_tiles(
        None,
        &[
            "seed",
            "--config",
            config.to_str().unwrap(),
            "--zoom",
            "0-1",
            "--output",
            &output,
        ],
    )
}

/// Asserts that the config is refused (exit 2) at `FILE:LINE` with a message holding `words`.
fn assert_refused_at(dir: &Path, cdn: &str, key: &str, words: &[&str]) {
    let (config, text) = config_with(dir, cdn);
    let line = line_of(&text, key, line_of(&text, "[[tileset.cdn]]", 0) - 1);
    let run = seed_config(dir, &config);
    assert_eq!(run.code, 2, "{cdn}\n{}", run.stderr);
    let at = format!("{}:{line}:", config.display());
    assert!(
        run.stderr.contains(&at),
        "{cdn}\nnot at {at}: {}",
        run.stderr
    );
    for word in words {
        assert!(
            run.stderr.contains(word),
            "{cdn}\nno {word:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn cloudflare_and_fastly_refuse_an_api_url_in_clear_text_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    assert_refused_at(
        dir.path(),
        &format!("[[tileset.cdn]]\nkind = \"cloudflare\"\nzone_id = \"{ZONE}\"\npublic_url = \"https://tiles.example.org\"\napi_url = \"http://api.cloudflare.com/client/v4\""),
        "api_url",
        &["https://", "loopback"],
    );
    assert_refused_at(
        dir.path(),
        &format!("[[tileset.cdn]]\nkind = \"fastly\"\nservice_id = \"{SERVICE}\"\npublic_url = \"https://tiles.example.org\"\napi_url = \"http://10.1.2.3:8080\""),
        "api_url",
        &["https://", "loopback"],
    );
}

#[test]
fn bad_header_names_and_bogus_ids_are_refused_at_their_line_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    assert_refused_at(
        dir.path(),
        "[[tileset.cdn]]\nkind = \"http\"\nurl = \"http://127.0.0.1:6081/{path}\"\nheaders = { \"X Purge Token\" = \"OAR_TEST_TOKEN\" }",
        "headers",
        &["X Purge Token", "header name"],
    );
    assert_refused_at(
        dir.path(),
        "[[tileset.cdn]]\nkind = \"cloudfront\"\ndistribution_id = \"my distribution/1\"",
        "distribution_id",
        &["my distribution/1", "distribution_id"],
    );
    assert_refused_at(
        dir.path(),
        "[[tileset.cdn]]\nkind = \"cloudflare\"\nzone_id = \"zone1\"\npublic_url = \"https://tiles.example.org\"",
        "zone_id",
        &["zone1", "32 hexadecimal"],
    );
    assert_refused_at(
        dir.path(),
        "[[tileset.cdn]]\nkind = \"fastly\"\nservice_id = \"svc/../1\"\npublic_url = \"https://tiles.example.org\"",
        "service_id",
        &["svc/../1", "service_id"],
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn missing_or_unusable_secret_variables_are_reported_at_the_cdn_line_before_rendering() {
    let cloudflare = Recorder::start(r#"{"success": true}"#, 0);
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"cloudflare\"\nzone_id = \"{ZONE}\"\napi_url = \"http://127.0.0.1:{}/client/v4\"\npublic_url = \"https://tiles.example.org/v1\"\ntoken_env = \"OAR_TEST_CF_TOKEN\"\n\n\
         [[tileset.cdn]]\nkind = \"http\"\nname = \"shield\"\nurl = \"http://127.0.0.1:{}/t/{{path}}\"\nheaders = {{ \"X-Purge-Token\" = \"OAR_TEST_SHIELD_TOKEN\" }}\n",
        cloudflare.port, cloudflare.port
    );
    let (fixture, tree) = tree_world("hygiene_env", &cdn);
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    let first = line_of(&text, "[[tileset.cdn]]", 0);
    let second = line_of(&text, "[[tileset.cdn]]", first);
    let config = fixture.config.display().to_string();

    let missing = seed_tree(
        &fixture,
        &tree,
        &[],
        &[("OAR_TEST_SHIELD_TOKEN", "shield-token")],
    );
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains(&format!("{config}:{first}:"))
            && missing.stderr.contains("OAR_TEST_CF_TOKEN"),
        "{}",
        missing.stderr
    );
    // A value no header can carry (it would smuggle in a header of its own).
    let smuggling = "token\r\nX-Injected: 1";
    let unusable = seed_tree(
        &fixture,
        &tree,
        &[],
        &[
            ("OAR_TEST_CF_TOKEN", "cf-token"),
            ("OAR_TEST_SHIELD_TOKEN", smuggling),
        ],
    );
    assert_eq!(unusable.code, 2, "{}", unusable.stderr);
    assert!(
        unusable.stderr.contains(&format!("{config}:{second}:"))
            && unusable.stderr.contains("OAR_TEST_SHIELD_TOKEN")
            && unusable.stderr.contains("X-Purge-Token")
            && !unusable.stderr.contains("X-Injected"),
        "{}",
        unusable.stderr
    );
    assert!(!tree.join("0").exists(), "nothing was rendered");
    assert!(cloudflare.requests.lock().unwrap().is_empty());
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_cloudfront_target_without_aws_credentials_fails_before_any_tile_renders() {
    let cdn = "[[tileset.cdn]]\nkind = \"cloudfront\"\ndistribution_id = \"E2QWRUHAPOMQZL\"\n";
    let (fixture, tree) = tree_world("hygiene_aws", cdn);
    let nowhere = fixture.path("no-such-aws-file");
    let output = format!("dir:{}", tree.display());
    let args = fixture.seed_args(&output, ZOOMS, &[]);
    let mut command = oar_tiles_command(
        Some(&fixture.schema.url),
        &args,
        &[
            // Nothing answers there: no request may be needed to find the credentials missing.
            ("AWS_ENDPOINT_URL_CLOUDFRONT", "http://127.0.0.1:1"),
            ("AWS_SHARED_CREDENTIALS_FILE", nowhere.to_str().unwrap()),
            ("AWS_CONFIG_FILE", nowhere.to_str().unwrap()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    for variable in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        command.env_remove(variable);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cdn `cloudfront`") && stderr.contains("credentials"),
        "{stderr}"
    );
    assert!(!tree.join("0").exists(), "nothing was rendered");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_watcher_delivers_what_waits_in_its_outbox_without_waiting_for_a_new_change() {
    // Nothing listens on the CDN's port until the test starts a cache there.
    let port = crate::common::free_port();
    let timeouts = "request_timeout = \"1s\"\npurge_timeout = \"3s\"";
    let (fixture, tree) = tree_world("hygiene_backlog", &http_cdn(port, timeouts));
    tree_in_config(&fixture, &tree, "[watch]\npoll_interval = \"2s\"\n\n");
    let seeded = seed_tree(&fixture, &tree, &[], &[]);
    assert_eq!(seeded.code, 1, "{}", seeded.stderr);

    let mut watching = Watching::start(&fixture, &[]);
    watching.wait_until("a failed purge", |w| {
        w.listening() && metric(&w.get("/metrics").text(), "oar_tiles_purge_failures_total") > 0.0
    });
    // The CDN is back; no row changes from here on.
    let cache = Recorder::start_on(port, "purged");
    watching.wait_until("the outbox delivered", |w| {
        metric(&w.get("/metrics").text(), "oar_tiles_outbox_entries") == 0.0
    });
    assert!(!cache.requests.lock().unwrap().is_empty());
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_watcher_with_a_silent_cdn_keeps_its_purges_within_purge_timeout_and_stops_at_once_on_sigterm()
{
    let hung = Recorder::answering(Answer::Never);
    let timeouts = "request_timeout = \"1s\"\npurge_timeout = \"3s\"";
    let (fixture, tree) = tree_world("hygiene_watch", &http_cdn(hung.port, timeouts));
    tree_in_config(&fixture, &tree, "");
    // The seed stores its tiles; its purge fails within the budget and leaves them in the outbox.
    let seeded = seed_tree(&fixture, &tree, &[], &[]);
    assert_eq!(seeded.code, 1, "{}", seeded.stderr);

    // A watcher's first cycle purges what waits: it fails within the budget, and says so.
    let mut watching = Watching::start(&fixture, &[]);
    let started = Instant::now();
    watching.wait_until("a failed purge", |w| {
        w.listening() && metric(&w.get("/metrics").text(), "oar_tiles_purge_failures_total") > 0.0
    });
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the first cycle's purge took {:?}",
        started.elapsed()
    );
    drop(watching);

    // With the default timeouts the purge would hang for a minute: SIGTERM must not wait for it.
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    std::fs::write(&fixture.config, text.replace(timeouts, "")).unwrap();
    let since = hung.requests.lock().unwrap().len();
    let mut watching = Watching::start(&fixture, &[]);
    watching.wait_until("a purge in flight", |_| {
        hung.requests.lock().unwrap().len() > since
    });
    send_signal(watching.child(), libc::SIGTERM);
    let signalled = Instant::now();
    let code = loop {
        if let Some(status) = watching.child().try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "the watcher still runs 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 143);
}
