//! Waits that end: a database or a store that keeps its connections open and answers nothing (a
//! hung server or proxy) ends the run within the configured bounds with a message naming it; one
//! SIGTERM abandons a hung store request; `watch`'s `/health` says when a change waits and no cycle
//! covers it; a lock held past `statement_timeout` is a database failure, not a usage error.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::pg::TestSchema;
use crate::common::run::{
    oar_tiles, oar_tiles_command, run_from, seed_args, send_signal, single_layer_config, strs,
    wait_for_progress, Run,
};
use crate::common::slow::{many_points, SLOW_ROWS};
use crate::common::watcher::Watcher;

/// A server that accepts connections and never answers: a hung server, or a proxy in front of one.
/// Returns its address and the count of connections it took, which stay open for the test's life.
fn silent_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (address, accepted)
}

/// A proxy to `upstream` that forwards both ways until [`Proxy::go_silent`]: from then on it
/// forwards nothing, keeps every connection open, and answers no new one.
struct Proxy {
    address: String,
    silent: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let silent = Arc::new(AtomicBool::new(false));
        let flag = silent.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for client in listener.incoming().flatten() {
                if flag.load(Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                forward(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    &flag,
                );
                forward(server, client, &flag);
            }
        });
        Proxy { address, silent }
    }

    fn go_silent(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread of its own, dropping what it reads once `silent` is set.
fn forward(mut from: TcpStream, mut to: TcpStream, silent: &Arc<AtomicBool>) {
    let silent = silent.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16384];
        while let Ok(read) = from.read(&mut buffer) {
            if read == 0 {
                break;
            }
            if !silent.load(Ordering::SeqCst) && to.write_all(&buffer[..read]).is_err() {
                break;
            }
        }
        // Keeps the other side open: a hung proxy closes nothing.
        std::thread::sleep(Duration::from_secs(600));
    });
}

/// `url` with its `host:port` replaced by `address`.
fn via(url: &str, address: &str) -> String {
    let at = url
        .rfind('@')
        .map_or(url.find("://").unwrap() + 3, |i| i + 1);
    let end = url[at..].find('/').map_or(url.len(), |i| at + i);
    format!("{}{address}{}", &url[..at], &url[end..])
}

/// Waits for `child` at most `limit`, killing it past that; its run and how long it took.
fn wait_within(mut child: Child, limit: Duration) -> (Run, Duration) {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    (
        run_from(child.wait_with_output().unwrap()),
        started.elapsed(),
    )
}

/// A config of the `sites` table in `schema` with `database` added to `[database]` and `extra`
/// (tables of its own) after it.
fn config(dir: &std::path::Path, schema: &str, database: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("bounded.toml");
    let text = single_layer_config(schema, "sites", "", SLOW_ROWS).replace(
        "pool_size = 2",
        &format!("pool_size = 2\nmax_attempts = 2\nconnect_timeout = \"2s\"\n{database}"),
    );
    std::fs::write(&path, format!("{text}\n{extra}")).unwrap();
    path
}

fn command(url: &str, args: &[String], envs: &[(&str, &str)]) -> Command {
    oar_tiles_command(Some(url), &strs(args), envs)
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_database_gone_silent_mid_seed_ends_the_run_within_the_bound_naming_it() {
    let mut schema = TestSchema::create("silent_mid_seed");
    schema.point_table("sites", &many_points(3000));
    let upstream = schema
        .url
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let proxy = Proxy::start(upstream.to_string());
    let dir = tempfile::tempdir().unwrap();
    let database = "statement_timeout = \"2s\"\nanswer_margin = \"1s\"\n";
    let config = config(dir.path(), &schema.name, database, "");
    let output = dir.path().join("out.mbtiles");
    let args = seed_args(&config, "0-16", output.to_str().unwrap());
    let mut child = command(&via(&schema.url, &proxy.address), &args, &[])
        .spawn()
        .unwrap();
    wait_for_progress(&mut child, &output);
    proxy.go_silent();
    let silent_at = Instant::now();
    let (run, _) = wait_within(child, Duration::from_secs(90));
    let took = silent_at.elapsed();
    assert_eq!(run.code, 1, "{}", run.stderr);
    // 3 s of silence per statement, then each attempt's connection times out after 2 s + 1 s.
    assert!(
        took < Duration::from_secs(40),
        "took {took:?}: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("answered nothing for 3s")
            && run.stderr.contains(&proxy.address)
            && run.stderr.contains("answer_margin"),
        "{}",
        run.stderr
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_watcher_whose_listen_server_is_silent_says_so_within_connect_timeout() {
    let mut schema = TestSchema::create("silent_listen");
    schema.point_table("sites", &many_points(100));
    let changes = schema.companion("cdc");
    let dir = tempfile::tempdir().unwrap();
    let (silent, _) = silent_server();
    let listen_url = via(&schema.url, &silent);
    let database = format!("listen_url = \"{listen_url}\"\n");
    let extra = format!("[changes]\nschema = \"{changes}\"\n");
    let config = config(dir.path(), &schema.name, &database, &extra);
    let tileset_output = dir.path().join("watched.mbtiles");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "name = \"sites\"\n\n",
        &format!(
            "name = \"sites\"\nmaxzoom = 6\noutput = \"{}\"\n\n",
            tileset_output.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let install = ["changes", "install", "--config", config.to_str().unwrap()];
    oar_tiles(Some(&schema.url), &install).assert_success();
    let args = ["watch", "--config", config.to_str().unwrap()].map(String::from);
    let port = crate::common::free_port().to_string();
    let args = [&args[..], &["--listen".into(), format!("127.0.0.1:{port}")]].concat();
    let child = command(&schema.url, &args, &[]).spawn().unwrap();
    // The watcher retries for ever; it is stopped once it had time to say why it cannot listen.
    std::thread::sleep(Duration::from_secs(6));
    send_signal(&child, libc::SIGTERM);
    let (run, _) = wait_within(child, Duration::from_secs(30));
    assert!(
        run.stderr.contains("no answer within 2s") && run.stderr.contains("connect_timeout"),
        "{}",
        run.stderr
    );
}

/// A seed to an S3 prefix whose endpoint is a silent server, with the `[store]` settings given.
fn seed_to_silent_store(
    label: &str,
    store: &str,
) -> (TestSchema, tempfile::TempDir, Child, Arc<AtomicUsize>) {
    let mut schema = TestSchema::create(label);
    schema.point_table("sites", &many_points(100));
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, accepted) = silent_server();
    let extra = format!(
        "[store]\nendpoint = \"http://{endpoint}\"\nforce_path_style = true\nregion = \"us-east-1\"\n{store}"
    );
    let config = config(dir.path(), &schema.name, "", &extra);
    let args = seed_args(&config, "0-3", "s3://hung-bucket/tiles");
    let envs = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let child = command(&schema.url, &args, &envs).spawn().unwrap();
    (schema, dir, child, accepted)
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_silent_store_fails_the_run_within_its_bounds_naming_the_object() {
    let store = "max_attempts = 2\nconnect_timeout = \"1s\"\nrequest_timeout = \"1s\"\n";
    let (_schema, _dir, child, _) = seed_to_silent_store("silent_store", store);
    let (run, took) = wait_within(child, Duration::from_secs(60));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("s3://hung-bucket/tiles"),
        "the message names the object: {}",
        run.stderr
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn one_sigterm_during_a_hung_store_request_ends_the_run_with_143_within_seconds() {
    // The request bound is long: only the signal can end the wait in time.
    let store = "max_attempts = 2\nrequest_timeout = \"10m\"\n";
    let (_schema, _dir, child, accepted) = seed_to_silent_store("sigterm_store", store);
    let started = Instant::now();
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no store request came"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    send_signal(&child, libc::SIGTERM);
    let (run, took) = wait_within(child, Duration::from_secs(30));
    assert_eq!(run.code, 143, "{}", run.stderr);
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}: {}",
        run.stderr
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn health_turns_503_while_a_change_waits_and_no_cycle_covers_it() {
    let mut schema = TestSchema::create("health_wait");
    schema.point_table("sites", &many_points(100));
    let changes = schema.companion("cdc");
    let dir = tempfile::tempdir().unwrap();
    let watch = format!(
        "[changes]\nschema = \"{changes}\"\n[watch]\ndebounce = \"1s\"\nmax_delay = \"1s\"\n\
         max_change_wait = \"2s\"\n"
    );
    let config = config(dir.path(), &schema.name, "", &watch);
    let output = dir.path().join("watched.mbtiles");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "name = \"sites\"\n\n",
        &format!(
            "name = \"sites\"\nmaxzoom = 6\noutput = \"{}\"\n\n",
            output.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let fixture = crate::common::fixture::Fixture {
        schema,
        dir,
        config,
    };
    let path = fixture.config.to_str().unwrap();
    let url = Some(fixture.schema.url.as_str());
    oar_tiles(url, &["changes", "install", "--config", path]).assert_success();
    oar_tiles(url, &["seed", "--config", path]).assert_success();
    let mut watcher = Watcher::start(&fixture);
    watcher.wait_until("/health 200 after the catch-up", |w| {
        w.health() == Some(200)
    });
    // A committed change, then its table locked (as a migration would) before the cycle reads it:
    // the cycle waits on the lock, and no cycle covers the change.
    let mut locker = postgres::Client::connect(&fixture.schema.url, postgres::NoTls).unwrap();
    let table = format!("\"{}\".sites", fixture.schema.name);
    // Two messages: in one, the UPDATE would join the locking transaction.
    locker
        .batch_execute(&format!(
            "UPDATE {table} SET label = 'moved' WHERE site_id = 1"
        ))
        .unwrap();
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
        ))
        .unwrap();
    watcher.wait_until("/health 503 saying a change waits", |w| {
        w.get("/health")
            .is_some_and(|(status, body)| status == 503 && body.contains("max_change_wait"))
    });
    locker.batch_execute("ROLLBACK").unwrap();
    watcher.wait_until("/health 200 once a cycle covered it", |w| {
        w.health() == Some(200)
    });
    watcher.stop(libc::SIGTERM);
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_table_locked_past_statement_timeout_is_a_database_failure_not_a_usage_error() {
    let mut schema = TestSchema::create("locked_source");
    schema.point_table("sites", &many_points(100));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &schema.name, "statement_timeout = \"1s\"\n", "");
    let mut locker = postgres::Client::connect(&schema.url, postgres::NoTls).unwrap();
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{}\".sites IN ACCESS EXCLUSIVE MODE;",
            schema.name
        ))
        .unwrap();
    let output = dir.path().join("locked.mbtiles");
    let args = seed_args(&config, "0-3", output.to_str().unwrap());
    let (run, _) = wait_within(
        command(&schema.url, &args, &[]).spawn().unwrap(),
        Duration::from_secs(60),
    );
    locker.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        run.code, 1,
        "a transient failure, not a usage error: {}",
        run.stderr
    );
    assert!(run.stderr.contains("statement_timeout"), "{}", run.stderr);
}
