//! Sharded runs that render from read replicas (`[database] replicas`): shard I reads from replica
//! I mod R, the merged output equals a single run, and the watermark taken on a hot standby keeps a
//! later `seed --dirty` on the primary exact, also while the standby lags and while a transaction
//! is still running on the primary. The standby is the one `scripts/pg-test-servers.sh` makes with
//! `pg_basebackup -R` (`OAR_TILES_TEST_STANDBY_URL`).

use std::process::Child;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::common::env::required_env;
use crate::common::fixture::Fixture;
use crate::common::pg::{hub_with_scatter, wait_for_replay, Point};
use crate::common::run::{
    assert_same_tiles, oar_tiles, oar_tiles_command, read_mbtiles_raw, read_metadata, run_from,
    single_layer_config, Run,
};

const STANDBY: &str = "OAR_TILES_TEST_STANDBY_URL";

fn points() -> Vec<Point> {
    hub_with_scatter(900, 17, 6, [4.80, 52.30, 5.00, 52.45])
}

/// A fixture whose `[database]` lists `replicas` and whose change log lives in a companion schema.
fn fixture(label: &str, replicas: &[&str], extra_layer: &str) -> Fixture {
    let list: Vec<String> = replicas.iter().map(|r| format!("\"{r}\"")).collect();
    Fixture::new(label, &points(), "replicas.toml", |schema| {
        let changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(&schema.name, "sites", "", extra_layer).replace(
                "pool_size = 2",
                &format!("pool_size = 2\nreplicas = [{}]", list.join(", ")),
            )
        )
    })
}

/// Rewrites the fixture's `replicas = [...]` line.
fn set_replicas(fixture: &Fixture, replicas: &[&str]) {
    let list: Vec<String> = replicas.iter().map(|r| format!("\"{r}\"")).collect();
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("replicas = "))
        .unwrap()
        .to_string();
    let text = text.replace(&line, &format!("replicas = [{}]", list.join(", ")));
    std::fs::write(&fixture.config, text).unwrap();
}

/// The standby's client, for its replay position and its activity.
fn standby_client(standby: &str) -> postgres::Client {
    postgres::Client::connect(standby, postgres::NoTls).unwrap()
}

/// Replay paused on the standby for as long as it lives, so the standby lags the primary; resumed
/// when dropped, also when a test fails.
struct PausedReplay(postgres::Client);

impl PausedReplay {
    fn start(standby: &str) -> PausedReplay {
        let mut client = standby_client(standby);
        client
            .batch_execute("SELECT pg_wal_replay_pause()")
            .unwrap();
        PausedReplay(client)
    }
}

impl Drop for PausedReplay {
    fn drop(&mut self) {
        let _ = self.0.batch_execute("SELECT pg_wal_replay_resume()");
    }
}

/// Pauses the standby's replay, runs `lagging` (SQL) on the primary, then runs a shard and resumes
/// replay once the shard waits for the standby to catch up (its query on the standby shows it), or
/// when it ended without waiting.
fn shard_on_a_lagging_standby(standby: &str, lagging: &str, args: &[&str], url: &str) -> Run {
    let paused = PausedReplay::start(standby);
    let mut primary = postgres::Client::connect(url, postgres::NoTls).unwrap();
    primary.batch_execute(lagging).unwrap();
    // Its own application name, so another test's shard waiting on the same standby is not taken
    // for this one.
    let name = format!("oar-tiles-lag-{}", std::process::id() ^ started_nanos());
    let envs = [("PGAPPNAME", name.as_str())];
    let mut child: Child = oar_tiles_command(Some(url), args, &envs).spawn().unwrap();
    let mut watcher = standby_client(standby);
    let started = Instant::now();
    let mut waited = false;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE query LIKE '%pg_last_wal_replay_lsn() >=%' AND pid <> pg_backend_pid()
                   AND application_name = $1",
                &[&name],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            waited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(paused);
    let run = run_from(child.wait_with_output().unwrap());
    eprintln!("shard on a lagging standby took {:?}", started.elapsed());
    // Ending without waiting would mean it rendered from a standby that lacks what it wrote.
    assert!(
        waited || run.code != 0,
        "the shard never waited for the standby:\n{}",
        run.stderr
    );
    run
}

fn started_nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// Runs the 3 shards of `out`; with `lag` = (standby, SQL), shard 0 runs while the standby has not
/// replayed that SQL, run on the primary after pausing replay.
fn run_shards(fixture: &Fixture, out: &str, zoom: &str, lag: Option<(&str, &str)>) {
    let url = fixture.schema.url.clone();
    for index in 0..3 {
        let shard = format!("{index}/3");
        let args = fixture.seed_args(out, zoom, &["--shard", &shard]);
        match (index, lag) {
            (0, Some((standby, sql))) => shard_on_a_lagging_standby(standby, sql, &args, &url),
            _ => oar_tiles(Some(&url), &args),
        }
        .assert_success();
    }
}

/// `finalize` of `out`, which merges the shards' part files into it.
fn finalize(fixture: &Fixture, out: &str) {
    let config = fixture.config.to_str().unwrap();
    let args = ["finalize", "--config", config, "--output", out];
    oar_tiles(Some(&fixture.schema.url), &args).assert_success();
}

/// [`run_shards`], then [`finalize`].
fn shards_then_finalize(fixture: &Fixture, out: &str, zoom: &str, lag: Option<(&str, &str)>) {
    run_shards(fixture, out, zoom, lag);
    finalize(fixture, out);
}

fn dead_replica(standby: &str) -> String {
    let config = postgres::Config::from_str(standby).unwrap();
    assert!(
        config.get_password().is_some(),
        "the standby URL has a password"
    );
    standby.replace(&format!(":{}/", config.get_ports()[0]), ":1/")
}

#[test]
#[ignore = "needs a standby: run scripts/test.sh, which sets OAR_TILES_TEST_STANDBY_URL"]
fn each_shard_renders_from_its_replica_and_the_merge_equals_a_single_run() {
    let standby = required_env(STANDBY);
    let dead = dead_replica(&standby);
    let mut fixture = fixture("replica_shards", &[&standby, &dead], "");
    wait_for_replay(&mut fixture.schema, &standby);
    let url = fixture.schema.url.clone();
    let single = fixture.path("single.mbtiles");
    oar_tiles(
        Some(&url),
        &fixture.seed_args(single.to_str().unwrap(), "0-12", &[]),
    )
    .assert_success();
    let out = fixture.path("sharded.mbtiles");
    let out = out.to_str().unwrap();
    let standby_port = postgres::Config::from_str(&standby).unwrap().get_ports()[0];
    for index in [0, 2] {
        // Shards 0 and 2 map to replica 0, the standby.
        let shard = format!("{index}/3");
        let run = oar_tiles(
            Some(&url),
            &fixture.seed_args(out, "0-12", &["--shard", &shard]),
        );
        run.assert_success();
        let named = format!("rendering from replica 0 (oar_tiles@127.0.0.1:{standby_port}/");
        assert!(run.stderr.contains(&named), "{}", run.stderr);
        assert!(run.stderr.contains("a hot standby"), "{}", run.stderr);
    }
    // Shard 1 maps to replica 1, which is down: it fails naming it, as any connection failure.
    let run = oar_tiles(
        Some(&url),
        &fixture.seed_args(out, "0-12", &["--shard", "1/3"]),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("replica 1 (oar_tiles@127.0.0.1:1/"),
        "{}",
        run.stderr
    );
    let password = postgres::Config::from_str(&standby).unwrap();
    let password = String::from_utf8_lossy(password.get_password().unwrap()).into_owned();
    assert!(
        !run.stderr.contains(&format!(":{password}@")),
        "{}",
        run.stderr
    );
    // The engine retries the index after the operator listed the primary itself as replica 1: a
    // server not in recovery is used as it is.
    set_replicas(&fixture, &[&standby, &url]);
    let run = oar_tiles(
        Some(&url),
        &fixture.seed_args(out, "0-12", &["--shard", "1/3"]),
    );
    run.assert_success();
    assert!(run.stderr.contains("not in recovery"), "{}", run.stderr);
    let parts: Vec<String> = (0..3)
        .map(|i| out.replace(".mbtiles", &format!(".part-{i}-of-3.mbtiles")))
        .collect();
    let mut merge = vec!["merge", out];
    merge.extend(parts.iter().map(String::as_str));
    oar_tiles(None, &merge).assert_success();
    assert_same_tiles(
        &read_mbtiles_raw(&single),
        &read_mbtiles_raw(std::path::Path::new(out)),
        "3 shards from replicas",
    );
}

#[test]
#[ignore = "needs a standby: run scripts/test.sh, which sets OAR_TILES_TEST_STANDBY_URL"]
fn a_dirty_reseed_after_shards_on_a_lagging_standby_equals_a_full_seed() {
    let standby = required_env(STANDBY);
    let mut fixture = fixture("replica_dirty", &[&standby], "");
    let url = fixture.schema.url.clone();
    let config = fixture.config.to_str().unwrap().to_string();
    oar_tiles(Some(&url), &["changes", "install", "--config", &config]).assert_success();
    fixture
        .schema
        .execute("CREATE TABLE {schema}.other (n int)");
    wait_for_replay(&mut fixture.schema, &standby);
    // A transaction still running on the primary while every shard takes its snapshot: the standby
    // must count it as not seen, though it commits only after the shards.
    let mut running = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut running = running.transaction().unwrap();
    let schema = format!("\"{}\"", fixture.schema.name);
    running
        .batch_execute(&format!(
            "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(-43.2, -22.9), 4326)
             WHERE site_id = 5"
        ))
        .unwrap();
    // A later commit, so the running transaction lies below the standby's snapshot's xmax.
    fixture
        .schema
        .execute("INSERT INTO {schema}.other VALUES (1)");
    wait_for_replay(&mut fixture.schema, &standby);
    // A change committed on the primary that the standby has not replayed when shard 0 starts.
    let lagging = format!(
        "INSERT INTO {schema}.sites (site_id, label, kind, score, pt)
             VALUES (9001, 'lagging', 'mill', 3, ST_SetSRID(ST_MakePoint(100.5, 13.7), 4326))"
    );
    let out = fixture.path("merged.mbtiles");
    let out = out.to_str().unwrap();
    run_shards(&fixture, out, "0-10", Some((&standby, &lagging)));
    // Shard 0's watermark was taken on the standby, which had not replayed the lagging insert: it
    // must not count it as seen (a snapshot of the primary would).
    let part = out.replace(".mbtiles", ".part-0-of-3.mbtiles");
    let state = read_metadata(std::path::Path::new(&part))["oar_tiles_state"].clone();
    let snapshot = serde_json::from_str::<serde_json::Value>(&state).unwrap()["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let seen: bool = fixture
        .schema
        .client()
        .query_one(
            &format!(
                "SELECT pg_visible_in_snapshot(xmin::text::xid8, $1::text::pg_snapshot)
                 FROM {schema}.sites WHERE site_id = 9001"
            ),
            &[&snapshot],
        )
        .unwrap()
        .get(0);
    assert!(
        !seen,
        "shard 0's snapshot {snapshot} sees what its standby had not replayed"
    );
    finalize(&fixture, out);
    running.commit().unwrap();
    fixture.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(-70.5, -33.4), 4326) WHERE site_id = 7;
         DELETE FROM {schema}.sites WHERE site_id = 11;",
    );
    // The reseed reads the change log on the primary, against the watermarks taken on the standby.
    let run = oar_tiles(Some(&url), &fixture.seed_args(out, "0-10", &["--dirty"]));
    run.assert_success();
    // Exactness must come from the watermark, not from a reseed of everything.
    assert!(
        !run.stderr.contains("reseeding everything"),
        "{}",
        run.stderr
    );
    let fresh = fixture.path("fresh.mbtiles");
    oar_tiles(
        Some(&url),
        &fixture.seed_args(fresh.to_str().unwrap(), "0-10", &[]),
    )
    .assert_success();
    assert_same_tiles(
        &read_mbtiles_raw(&fresh),
        &read_mbtiles_raw(std::path::Path::new(out)),
        "the merged output of standby shards after --dirty",
    );
}

#[test]
#[ignore = "needs a standby: run scripts/test.sh, which sets OAR_TILES_TEST_STANDBY_URL"]
fn shards_of_a_clustered_tileset_read_the_cells_refreshed_on_the_primary() {
    let standby = required_env(STANDBY);
    let mut fixture = fixture("replica_cells", &[&standby], "cluster_maxzoom = 6");
    let url = fixture.schema.url.clone();
    let config = fixture.config.to_str().unwrap().to_string();
    oar_tiles(Some(&url), &["changes", "install", "--config", &config]).assert_success();
    wait_for_replay(&mut fixture.schema, &standby);
    let cells = format!("{}_cdc", fixture.schema.name);
    // Shard 0 creates and fills the cell tables on the primary while the standby lags: it must
    // wait for them to arrive there before its statements and tiles read them.
    let out = fixture.path("merged.mbtiles");
    let out = out.to_str().unwrap();
    shards_then_finalize(&fixture, out, "0-9", Some((&standby, "")));
    let tables: i64 = fixture
        .schema
        .client()
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'cells%'",
            &[&cells],
        )
        .unwrap()
        .get(0);
    assert!(tables > 0, "the clustered layer has maintained cells");
    let single = fixture.path("single.mbtiles");
    oar_tiles(
        Some(&url),
        &fixture.seed_args(single.to_str().unwrap(), "0-9", &[]),
    )
    .assert_success();
    assert_same_tiles(
        &read_mbtiles_raw(&single),
        &read_mbtiles_raw(std::path::Path::new(out)),
        "clustered shards from the standby",
    );
    // Changes after the cells exist: the next shards refresh them on the primary and must render
    // them from the standby; the merged output then takes an exact --dirty.
    fixture.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(4.9, 52.37), 4326) WHERE site_id % 4 = 0;
         DELETE FROM {schema}.sites WHERE site_id = 3;",
    );
    let again = fixture.path("again.mbtiles");
    let again = again.to_str().unwrap();
    shards_then_finalize(&fixture, again, "0-9", Some((&standby, "")));
    let fresh = fixture.path("fresh.mbtiles");
    oar_tiles(
        Some(&url),
        &fixture.seed_args(fresh.to_str().unwrap(), "0-9", &[]),
    )
    .assert_success();
    assert_same_tiles(
        &read_mbtiles_raw(&fresh),
        &read_mbtiles_raw(std::path::Path::new(again)),
        "clustered shards after changes",
    );
    fixture.schema.execute(
        "INSERT INTO {schema}.sites (site_id, label, kind, score, pt)
             VALUES (9001, 'new', 'mill', 3, ST_SetSRID(ST_MakePoint(4.85, 52.35), 4326))",
    );
    oar_tiles(Some(&url), &fixture.seed_args(again, "0-9", &["--dirty"])).assert_success();
    let fresh = fixture.path("fresh-after.mbtiles");
    oar_tiles(
        Some(&url),
        &fixture.seed_args(fresh.to_str().unwrap(), "0-9", &[]),
    )
    .assert_success();
    assert_same_tiles(
        &read_mbtiles_raw(&fresh),
        &read_mbtiles_raw(std::path::Path::new(again)),
        "clustered shards after --dirty",
    );
}
