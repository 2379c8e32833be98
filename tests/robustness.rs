//! Unattended-job robustness with real processes: signals, locks, a database restarted mid-seed,
//! pathological tiles with --keep-going, a seeder killed with SIGKILL, and a read-only role.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::disk::TinyDisk;
use crate::common::pg::{Point, TestSchema};
use crate::common::run::{
    assert_same_tiles, journaled_tiles, oar_tiles, oar_tiles_command, read_mbtiles_raw, run_from,
    seed_args, send_signal, single_layer_config, strs, wait_for_progress, Speaking,
};
use crate::common::slow::{many_points, SLOW_ROWS};

fn config(dir: &Path, schema: &str, database: &str, extra_layer: &str) -> PathBuf {
    let path = dir.join("robust.toml");
    let text = single_layer_config(schema, "sites", "", extra_layer).replace(
        "pool_size = 2",
        &format!("pool_size = 2\nmax_attempts = 8\nstatement_timeout = \"2s\"\n{database}"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn sigterm_and_sigint_stop_the_seed_cleanly_with_their_exit_codes() {
    let mut schema = TestSchema::create("signals");
    schema.point_table("sites", &many_points(3000));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &schema.name, "", SLOW_ROWS);
    let output = dir.path().join("out.mbtiles");
    oar_tiles(
        Some(&schema.url),
        &strs(&seed_args(&config, "0-6", output.to_str().unwrap())),
    )
    .assert_success();
    let before = std::fs::read(&output).unwrap();
    for (name, number, code) in [("TERM", libc::SIGTERM, 143), ("INT", libc::SIGINT, 130)] {
        let args_owned = seed_args(&config, "0-16", output.to_str().unwrap());
        let args = strs(&args_owned);
        let mut child = oar_tiles_command(Some(&schema.url), &args, &[])
            .spawn()
            .unwrap();
        wait_for_progress(&mut child, &output);
        send_signal(&child, number);
        let run = run_from(child.wait_with_output().unwrap());
        assert_eq!(run.code, code, "SIG{name}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("stopped by SIG{name}")),
            "{}",
            run.stderr
        );
        assert_eq!(
            std::fs::read(&output).unwrap(),
            before,
            "the previous output is untouched"
        );
        assert!(
            !dir.path().join("out.mbtiles.oar-tiles.lock").exists(),
            "the lock is released"
        );
        assert!(
            dir.path().join("out.mbtiles.partial").exists(),
            "progress is kept for a resume"
        );
    }
    // The same command picks up where the stopped run left off and ends as a clean run would.
    let args_owned = seed_args(&config, "0-16", output.to_str().unwrap());
    let args = strs(&args_owned);
    let resumed = oar_tiles(Some(&schema.url), &args);
    resumed.assert_success();
    assert!(resumed.stderr.contains("resuming:"), "{}", resumed.stderr);
    let clean = dir.path().join("clean.mbtiles");
    let clean_args_owned = seed_args(&config, "0-16", clean.to_str().unwrap());
    let clean_args = strs(&clean_args_owned);
    oar_tiles(Some(&schema.url), &clean_args).assert_success();
    assert_same_tiles(
        &read_mbtiles_raw(&output),
        &read_mbtiles_raw(&clean),
        "resumed equals clean",
    );
    assert!(!dir.path().join("out.mbtiles.partial").exists());
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_second_job_on_the_same_output_refuses_or_waits() {
    let mut schema = TestSchema::create("locks");
    schema.point_table("sites", &many_points(50));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &schema.name, "", "");
    let output = dir.path().join("out.mbtiles");
    let lock_path = dir.path().join("out.mbtiles.oar-tiles.lock");
    let holder = std::fs::File::create(&lock_path).unwrap();
    holder.lock().unwrap();
    std::fs::write(&lock_path, "pid 4242 on testhost since now").unwrap();
    let args_owned = seed_args(&config, "0-4", output.to_str().unwrap());
    let args = strs(&args_owned);
    let refused = oar_tiles(Some(&schema.url), &args);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("pid 4242 on testhost"),
        "{}",
        refused.stderr
    );
    assert!(!output.exists());

    let mut waiting_args = args.to_vec();
    waiting_args.push("--wait-lock");
    let mut waiting = Speaking::start(oar_tiles_command(Some(&schema.url), &waiting_args, &[]));
    // It says so once it found the lock held, and then holds back until the holder lets go.
    waiting.wait_for("waiting for");
    assert!(!output.exists(), "the waiting job has not started");
    std::fs::remove_file(&lock_path).unwrap();
    drop(holder);
    let run = waiting.finish();
    run.assert_success();
    assert!(run.stderr.contains("locked by pid 4242"), "{}", run.stderr);
    assert!(output.exists());
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_pathological_tile_times_out_and_keep_going_lists_it_for_tiles_from() {
    let mut schema = TestSchema::create("keepgoing");
    let mut points = many_points(200);
    points.push(Point::new(7777, 120.0, -10.0));
    schema.point_table("sites", &points);
    let dir = tempfile::tempdir().unwrap();
    // Rows of facility 7777 take longer than the statement timeout to read.
    let slow = "filter = \"(site_id <> 7777 OR pg_sleep(3) IS NOT NULL)\"";
    let config = config(dir.path(), &schema.name, "", slow);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_attempts = 8", "max_attempts = 2");
    std::fs::write(&config, text).unwrap();
    let output = dir.path().join("out.mbtiles");
    let failed = dir.path().join("failed.txt");
    let args_owned = seed_args(&config, "0-5", output.to_str().unwrap());
    let args = strs(&args_owned);
    let strict = oar_tiles(Some(&schema.url), &args);
    assert_eq!(strict.code, 1, "{}", strict.stderr);
    assert!(
        strict.stderr.contains("statement timeout"),
        "{}",
        strict.stderr
    );
    assert!(
        strict.stderr.contains("tile 0/0/0"),
        "the first tile showing 7777 is named: {}",
        strict.stderr
    );

    // From zoom 2 on, 7777 lies in one tile (2/3/2): that one fails, the rest are finished.
    let mut keep = args.to_vec();
    keep[4] = "2-5";
    keep.extend(["--keep-going", failed.to_str().unwrap()]);
    let run = oar_tiles(Some(&schema.url), &keep);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("failed.txt"), "{}", run.stderr);
    let listed = std::fs::read_to_string(&failed).unwrap();
    let listed: Vec<(u8, u32, u32)> = listed
        .lines()
        .map(|line| {
            let parts: Vec<u32> = line.split('/').map(|p| p.parse().unwrap()).collect();
            (parts[0] as u8, parts[1], parts[2])
        })
        .collect();
    assert!(
        listed.contains(&(2, 3, 2)),
        "the tile holding 7777 is listed: {listed:?}"
    );
    // Below it the walk goes on (a probe finds its children), and so the tiles that hold 7777
    // there fail too, one per zoom; nothing else does.
    let zooms: BTreeSet<u8> = listed.iter().map(|t| t.0).collect();
    assert_eq!(zooms.len(), listed.len(), "one tile per zoom: {listed:?}");
    assert!(
        listed
            .iter()
            .all(|(z, x, y)| x >> (z - 2) == 3 && y >> (z - 2) == 2),
        "only 2/3/2 and tiles below it: {listed:?}"
    );
    let tiles = read_mbtiles_raw(&output);
    assert!(
        tiles.keys().any(|(z, _, _)| *z == 5),
        "the other tiles were finished"
    );

    let fixed = std::fs::read_to_string(&config).unwrap().replace(slow, "");
    std::fs::write(&config, fixed).unwrap();
    let retry = [
        "seed",
        "--config",
        config.to_str().unwrap(),
        "--zoom",
        "2-5",
        "--output",
        output.to_str().unwrap(),
        "--tiles-from",
        failed.to_str().unwrap(),
    ];
    oar_tiles(Some(&schema.url), &retry).assert_success();
    let tiles = read_mbtiles_raw(&output);
    assert!(
        listed.iter().all(|tile| tiles.contains_key(tile)),
        "{listed:?}"
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_seed_killed_at_random_points_is_finished_by_the_next_run_with_identical_tiles() {
    let mut schema = TestSchema::create("sigkill");
    schema.point_table("sites", &many_points(3000));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &schema.name, "", SLOW_ROWS);
    let clean = dir.path().join("clean.mbtiles");
    let base =
        |output: &Path| -> Vec<String> { seed_args(&config, "0-14", output.to_str().unwrap()) };
    let args: Vec<String> = base(&clean);
    let args = strs(&args);
    oar_tiles(Some(&schema.url), &args).assert_success();
    let expected = read_mbtiles_raw(&clean);

    let output = dir.path().join("killed.mbtiles");
    let owned = base(&output);
    let args = strs(&owned);
    // Kill points come from the run's own progress, never from a clock: each kill is sent once
    // the journal holds a share of the clean run's tiles more than the last kill left (and so
    // tiles of this run's own), shares drawn from a seeded generator that together stay under
    // half of the tiles, so no run is near its end when its kill is sent. The seed is fixed and
    // printed; OAR_TILES_TEST_SEED replays another. Where in its work the process is when the
    // signal arrives is the kernel's choice, which the outcome must not depend on.
    let seed_number = std::env::var("OAR_TILES_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(66);
    let mut rng = crate::common::pg::Rng::new(seed_number);
    let total = expected.len() as u64;
    let mut story = format!("OAR_TILES_TEST_SEED={seed_number}, {total} tiles in a clean run; ");
    eprintln!("{story}");
    let mut left = 0;
    for kill in 1..=3 {
        let point = left + 1 + (rng.range(0.05, 0.15) * total as f64) as u64;
        let mut child = oar_tiles_command(Some(&schema.url), &args, &[])
            .spawn()
            .unwrap();
        let reached = wait_for_journaled(&mut child, &output, point, &story);
        send_signal(&child, libc::SIGKILL);
        let status = child.wait().unwrap();
        left = journaled_tiles(&output);
        story += &format!(
            "kill {kill} sent at {reached} journaled tiles (its point: {point}), {status}, \
             {left} journaled after it; "
        );
        eprintln!("{story}");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "{story}: the kill lands on a running seed"
        );
        assert!(
            !output.exists(),
            "{story}: a killed first seed publishes nothing"
        );
        assert!(
            left >= reached,
            "{story}: what the journal had committed outlives the kill"
        );
    }
    let finished = oar_tiles(Some(&schema.url), &args);
    finished.assert_success();
    assert!(
        finished.stderr.contains("resuming:"),
        "{story}: {}",
        finished.stderr
    );
    assert_same_tiles(
        &expected,
        &read_mbtiles_raw(&output),
        &format!("{story}: the finished output against a clean run"),
    );
}

/// Waits until the journal of the seed `child` runs into `output` holds `point` tiles; returns how
/// many it holds then. Fails, with `story`, when the seed ends first or after two minutes without
/// a new tile (a hang's bound).
fn wait_for_journaled(
    child: &mut std::process::Child,
    output: &Path,
    point: u64,
    story: &str,
) -> u64 {
    let (mut last, mut moved) = (journaled_tiles(output), Instant::now());
    while last < point {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{story}: the seed ended at {last} journaled tiles, before {point}"
        );
        assert!(
            moved.elapsed() < Duration::from_secs(120),
            "{story}: the journal stayed at {last} tiles for two minutes"
        );
        std::thread::sleep(Duration::from_millis(10));
        let now = journaled_tiles(output);
        if now != last {
            (last, moved) = (now, Instant::now());
        }
    }
    last
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_read_only_role_can_seed() {
    let mut schema = TestSchema::create("readonly");
    schema.point_table("sites", &many_points(100));
    let role = format!("{}_reader", schema.name);
    schema.execute(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'reader-secret';
         GRANT USAGE ON SCHEMA {{schema}} TO {role};
         GRANT SELECT ON {{schema}}.sites TO {role};"
    ));
    let url = schema
        .url
        .replacen("oar_tiles:oar_tiles@", &format!("{role}:reader-secret@"), 1);
    assert_ne!(url, schema.url, "the test URL names the oar_tiles user");
    // Change capture and cluster cells installed by the owner, readable by the reader: it may not
    // keep the cells up to date, so it aggregates clusters from rows, to the same tiles.
    let changes = schema.companion("cdc");
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &schema.name,
        "",
        "cluster_maxzoom = 4\ncluster_cell = 512",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("[changes]\nschema = \"{changes}\"\n{text}"),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    oar_tiles(
        Some(&schema.url),
        &["changes", "install", "--config", config_arg],
    )
    .assert_success();
    let by_owner = dir.path().join("owner.mbtiles");
    oar_tiles(
        Some(&schema.url),
        &strs(&seed_args(&config, "0-6", by_owner.to_str().unwrap())),
    )
    .assert_success();
    schema.execute(&format!(
        "GRANT USAGE ON SCHEMA \"{changes}\" TO {role};
         GRANT SELECT ON ALL TABLES IN SCHEMA \"{changes}\" TO {role};"
    ));
    let output = dir.path().join("out.mbtiles");
    let run = oar_tiles(
        Some(&url),
        &strs(&seed_args(&config, "0-6", output.to_str().unwrap())),
    );
    schema.execute(&format!("DROP OWNED BY {role}; DROP ROLE {role};"));
    run.assert_success();
    assert!(!run.stderr.contains("reader-secret"));
    assert!(
        run.stderr.contains("no right to update its cluster cells"),
        "{}",
        run.stderr
    );
    let tiles = read_mbtiles_raw(&output);
    assert!(!tiles.is_empty());
    assert_same_tiles(
        &read_mbtiles_raw(&by_owner),
        &tiles,
        "the read-only role's seed against the owner's",
    );
}

/// A PostgreSQL server of this test's own, so it can be restarted without disturbing other tests.
struct PrivateServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivateServer {
    fn start() -> PrivateServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed under /usr/lib/postgresql")
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Command::new("chown")
            .args(["-R", "postgres:postgres", dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PrivateServer {
            bin,
            data,
            port,
            _dir: dir,
        };
        server.as_postgres(&[
            "initdb",
            "-D",
            server.data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]);
        server.pg_ctl("start");
        server
    }

    fn as_postgres(&self, args: &[&str]) {
        let program = self.bin.join(args[0]);
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--", program.to_str().unwrap()])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{args:?}");
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        self.as_postgres(&[
            "pg_ctl",
            action,
            "-D",
            self.data.to_str().unwrap(),
            "-w",
            "-m",
            "fast",
            "-o",
            &options,
        ]);
    }

    fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                self.bin.join("pg_ctl").to_str().unwrap(),
                "stop",
                "-D",
            ])
            .arg(&self.data)
            .args(["-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_database_restart_mid_seed_is_ridden_out_and_every_tile_arrives() {
    // Needs the packages scripts/test.sh installs, not its server: it starts a server of its own.
    let server = PrivateServer::start();
    let mut client = postgres::Client::connect(&server.url(), postgres::NoTls).unwrap();
    client
        .batch_execute(
            "CREATE EXTENSION postgis; CREATE SCHEMA restart;
             CREATE TABLE restart.sites (site_id bigint PRIMARY KEY, label text NOT NULL, kind text, score integer,
                 seen_at timestamptz DEFAULT '2024-01-02 03:04:05+00', pt geometry(Point, 4326) NOT NULL);
             CREATE INDEX ON restart.sites USING gist (pt);
             INSERT INTO restart.sites (site_id, label, kind, score, pt)
               SELECT i, 'F' || i, 'knit', i % 17,
                      ST_SetSRID(ST_MakePoint(-0.3 + (i * 7919 % 1000) / 1666.0, 51.3 + (i * 104729 % 1000) / 2500.0), 4326)
               FROM generate_series(1, 4000) i;
             ANALYZE restart.sites;",
        )
        .unwrap();
    drop(client);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "restart", "", SLOW_ROWS);
    let reference = dir.path().join("reference.mbtiles");
    let output = dir.path().join("restarted.mbtiles");
    let args = |out: &Path| -> Vec<String> { seed_args(&config, "0-15", out.to_str().unwrap()) };
    let reference_args = args(&reference);
    let reference_args = strs(&reference_args);
    oar_tiles(Some(&server.url()), &reference_args).assert_success();

    let owned = args(&output);
    let restarted_args = strs(&owned);
    let mut child = oar_tiles_command(Some(&server.url()), &restarted_args, &[])
        .spawn()
        .unwrap();
    wait_for_progress(&mut child, &output);
    server.pg_ctl("stop");
    std::thread::sleep(Duration::from_millis(1000));
    server.pg_ctl("start");
    let run = run_from(child.wait_with_output().unwrap());
    run.assert_success();
    assert!(
        run.stderr.contains("retrying"),
        "the restart was noticed: {}",
        run.stderr
    );
    assert_same_tiles(
        &read_mbtiles_raw(&output),
        &read_mbtiles_raw(&reference),
        "every tile arrived, identical",
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_stopped_directory_seed_is_resumed_from_its_journal() {
    let mut schema = TestSchema::create("dirresume");
    schema.point_table("sites", &many_points(3000));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &schema.name, "", SLOW_ROWS);
    let tree = dir.path().join("tree");
    let tree_arg = format!("dir:{}", tree.display());
    let args_owned = seed_args(&config, "0-16", tree_arg.as_str());
    let args = strs(&args_owned);
    let mut child = oar_tiles_command(Some(&schema.url), &args, &[])
        .spawn()
        .unwrap();
    let journal = tree.join(".oar-tiles-journal.sqlite");
    let started = Instant::now();
    // Progress journaled, not a time: on a loaded machine a fixed wait may end before any tile.
    let done = || {
        rusqlite::Connection::open_with_flags(&journal, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT count(*) FROM done", [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0)
    };
    while done() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the seed journaled nothing in two minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the seed ended too soon"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    send_signal(&child, libc::SIGTERM);
    let stopped = run_from(child.wait_with_output().unwrap());
    assert_eq!(stopped.code, 143, "{}", stopped.stderr);
    assert!(journal.exists(), "the journal is kept for the next run");

    let resumed = oar_tiles(Some(&schema.url), &args);
    resumed.assert_success();
    assert!(resumed.stderr.contains("resuming:"), "{}", resumed.stderr);
    assert!(!journal.exists(), "a finished seed removes its journal");
    let clean = dir.path().join("clean.mbtiles");
    let clean_args_owned = seed_args(&config, "0-16", clean.to_str().unwrap());
    let clean_args = strs(&clean_args_owned);
    oar_tiles(Some(&schema.url), &clean_args).assert_success();
    let expected = read_mbtiles_raw(&clean);
    for ((z, x, y), data) in &expected {
        let stored = std::fs::read(tree.join(format!("{z}/{x}/{y}.pbf"))).unwrap();
        assert!(&stored == data, "{z}/{x}/{y} differs from a clean run");
    }
    let inventory = oar_tiles(None, &["inspect", &tree_arg, "--json"]);
    let inventory: serde_json::Value = serde_json::from_str(&inventory.stdout).unwrap();
    assert_eq!(
        inventory["tiles"].as_u64().unwrap(),
        expected.len() as u64,
        "no extra tiles"
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_full_disk_is_a_clear_error_and_leaves_readable_files() {
    let mut schema = TestSchema::create("diskfull");
    schema.point_table("sites", &many_points(3000));
    // Room for the z0-1 seed, not for z0-14: with no WAL beside the `.partial` file and libdeflate's
    // smaller tiles, z0-14 of these points fits in 3 MB.
    let disk = TinyDisk::mount("2m");
    let work = tempfile::tempdir().unwrap();
    let config = config(work.path(), &schema.name, "", "");
    let output = disk.dir.path().join("out.mbtiles");
    let seed = |zoom: &str| {
        oar_tiles(
            Some(&schema.url),
            &strs(&seed_args(&config, zoom, output.to_str().unwrap())),
        )
    };
    seed("0-1").assert_success();
    let before = read_mbtiles_raw(&output);
    assert!(!before.is_empty());

    let run = seed("0-14");
    assert_eq!(run.code, 1, "{}", run.stderr);
    let error = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("out.mbtiles") && error.contains("full"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"));
    assert_same_tiles(
        &read_mbtiles_raw(&output),
        &before,
        "the output still opens and holds what it held",
    );
    let partial = disk.dir.path().join("out.mbtiles.partial");
    if partial.exists() {
        // What the run committed before the disk filled up is readable (and is what a resume continues).
        let connection = rusqlite::Connection::open(&partial).unwrap();
        let count: i64 = connection
            .query_row("SELECT count(*) FROM tiles", [], |r| r.get(0))
            .unwrap();
        assert!(count > 0);
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_run_refused_for_the_lock_leaves_the_running_jobs_changed_list_whole() {
    let mut schema = TestSchema::create("overlap");
    schema.point_table("sites", &many_points(3000));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &schema.name, "", SLOW_ROWS);
    let output = dir.path().join("out.mbtiles");
    let list = dir.path().join("changed.txt");
    let summary = dir.path().join("summary.json");
    let mut args_owned = seed_args(&config, "0-12", output.to_str().unwrap());
    args_owned.extend(
        [
            "--changed-list",
            list.to_str().unwrap(),
            "--summary-json",
            summary.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let mut first = oar_tiles_command(Some(&schema.url), &strs(&args_owned), &[])
        .spawn()
        .unwrap();
    wait_for_progress(&mut first, &output);
    // The same cron line again while the first still runs: refused for the output's lock.
    let mut second_args = seed_args(&config, "0-12", output.to_str().unwrap());
    second_args.extend(["--changed-list", list.to_str().unwrap()].map(String::from));
    let second = oar_tiles(Some(&schema.url), &strs(&second_args));
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert!(second.stderr.contains("in use"), "{}", second.stderr);
    run_from(first.wait_with_output().unwrap()).assert_success();

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let changed = json[0]["stored"]["changed"].as_u64().unwrap();
    let text = std::fs::read(&list).unwrap();
    assert!(!text.contains(&0), "the list holds NUL bytes");
    let lines = String::from_utf8(text).unwrap();
    let listed: std::collections::BTreeSet<&str> = lines.lines().collect();
    assert_eq!(
        listed.len() as u64,
        changed,
        "every changed tile listed once"
    );
    assert_eq!(
        listed,
        read_mbtiles_raw(&output)
            .keys()
            .map(|(z, x, y)| format!("{z}/{x}/{y}"))
            .collect::<std::collections::BTreeSet<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
        "a first seed changes every tile it stores"
    );
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("writing"))
        .collect();
    assert!(left.is_empty(), "temporary lists left: {left:?}");
}
