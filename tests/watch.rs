//! `oar-tiles watch` as an operator runs it: a real process LISTENing on real PostGIS, changes
//! committed at a steady rate, `/metrics` and `/health` read over real HTTP, PostgreSQL stopped
//! and started under it, SIGTERM mid-cycle, and a second watcher on the same output refused.
//! Waits are bounded but generous; no test asserts how fast anything is.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use crate::common::env::required_env;
use crate::common::fixture::{wraps_fixture, Fixture};
use crate::common::free_port;
use crate::common::pg::{hub_with_scatter, Cluster, Point, Rng, TestSchema};
use crate::common::run::{
    assert_same_tiles, oar_tiles, read_mbtiles_raw, single_layer_config, Run,
};
use crate::common::watcher::{parse_prometheus, Watcher, PACING};

const OUTPUT: &str = "watched.mbtiles";
const ZOOMS: &str = "0-10";

/// A schema with `sites`, change capture installed in a schema of its own, a config whose tileset
/// writes `watched.mbtiles`, and that output seeded in full.
struct Setup {
    base: Fixture,
}

wraps_fixture!(Setup, base);

impl Setup {
    fn new(schema: TestSchema, points: &[Point], extra_layer: &str) -> Setup {
        Self::with_output(schema, points, extra_layer, OUTPUT)
    }

    /// As [`Setup::new`], with the tileset writing `output` (relative to the test's directory).
    fn with_output(schema: TestSchema, points: &[Point], extra_layer: &str, output: &str) -> Setup {
        let mut schema = schema;
        schema.point_table("sites", points);
        let changes = schema.companion("cdc");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("watch.toml");
        let tileset = format!("maxzoom = 10\noutput = \"{output}\"");
        let text = format!(
            "[changes]\nschema = \"{changes}\"\n{PACING}{}",
            single_layer_config(&schema.name, "sites", &tileset, extra_layer)
        );
        std::fs::write(&config, text).unwrap();
        let setup = Setup {
            base: Fixture {
                schema,
                dir,
                config,
            },
        };
        setup.run(&["changes", "install"]).assert_success();
        setup.run(&["seed"]).assert_success();
        setup
    }

    /// `args` (a subcommand first) with `--config`, against the schema's server.
    fn run(&self, args: &[&str]) -> Run {
        let mut full = vec![args[0], "--config", self.config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        oar_tiles(Some(&self.schema.url), &full)
    }

    fn output(&self) -> PathBuf {
        self.path(OUTPUT)
    }

    /// A full seed of the current data into a fresh file.
    fn full(&self, name: &str) -> BTreeMap<(u8, u32, u32), Vec<u8>> {
        let path = self.path(name);
        let _ = std::fs::remove_file(&path);
        self.run(&["seed", "--zoom", ZOOMS, "--output", path.to_str().unwrap()])
            .assert_success();
        read_mbtiles_raw(&path)
    }
}

/// One committed change to one row: an insert, a move, an attribute edit or a delete.
fn one_change(schema: &mut TestSchema, rng: &mut Rng, alive: &mut Vec<i64>, step: i64) {
    let pick = |rng: &mut Rng, alive: &[i64]| {
        alive[((rng.next_f64() * alive.len() as f64) as usize).min(alive.len() - 1)]
    };
    let sql = match step % 4 {
        0 => {
            let id = 10_000 + step;
            alive.push(id);
            format!(
                "INSERT INTO {{schema}}.sites (site_id, label, kind, score, pt)
                 VALUES ({id}, 'new {id}', 'knit', 3, ST_SetSRID(ST_MakePoint({:.6}, {:.6}), 4326))",
                rng.range(106.5, 106.9),
                rng.range(10.6, 11.0)
            )
        }
        1 => format!(
            "UPDATE {{schema}}.sites SET pt = ST_SetSRID(ST_MakePoint({:.6}, {:.6}), 4326) WHERE site_id = {}",
            rng.range(-170.0, 170.0),
            rng.range(-60.0, 70.0),
            pick(rng, alive)
        ),
        2 => format!(
            "UPDATE {{schema}}.sites SET label = 'edited {step}' WHERE site_id = {}",
            pick(rng, alive)
        ),
        _ => {
            let id = pick(rng, alive);
            alive.retain(|&a| a != id);
            format!("DELETE FROM {{schema}}.sites WHERE site_id = {id}")
        }
    };
    schema.execute(&sql);
}

/// The deletions the watcher's cycle lines report (`… (31 stored, 2 deleted) …`), summed.
fn logged_deletions(log: &str) -> f64 {
    log.lines()
        .filter(|line| line.contains("cycle: "))
        .filter_map(|line| {
            let after = line.split(" stored, ").nth(1)?;
            after.split(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn metrics_count_the_deletions_the_cycle_lines_report_not_every_tile_that_rendered_empty() {
    let mut setup = Setup::new(TestSchema::create("watch_deleted"), &points(), "");
    let mut watcher = Watcher::start(&setup);
    watcher.wait_until("/health 200 after the catch-up", |w| {
        w.health() == Some(200)
    });
    // A row that comes and goes in one transaction, far from every other: its deeper tiles render
    // empty, and the output never held them, so nothing is deleted.
    setup.schema.execute(
        "BEGIN;
         INSERT INTO {schema}.sites (site_id, label, kind, score, pt)
         VALUES (99999, 'passing', 'knit', 1, ST_SetSRID(ST_MakePoint(-150, -40), 4326));
         DELETE FROM {schema}.sites WHERE site_id = 99999;
         COMMIT;",
    );
    watcher.wait_until("the cycle's line", |w| {
        w.log()
            .lines()
            .any(|line| line.contains("cycle: ") && !line.contains("cycle: 0 change"))
    });
    let metrics = watcher.metrics();
    let output = format!("output=\"{} (MBTiles)\"", setup.output().display());
    assert!(
        metrics.with("oar_tiles_tiles_empty_total", &output) > 0.0,
        "the passing row's tiles rendered empty:\n{}",
        watcher.log()
    );
    assert_eq!(
        metrics.with("oar_tiles_tiles_deleted_total", &output),
        logged_deletions(&watcher.log()),
        "deletions in /metrics and in the cycle lines:\n{}",
        watcher.log()
    );
    assert_eq!(logged_deletions(&watcher.log()), 0.0, "{}", watcher.log());
    watcher.stop(libc::SIGTERM);
}

fn points() -> Vec<Point> {
    hub_with_scatter(200, 31, 3, [106.6, 10.7, 106.8, 10.9])
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_watcher_keeps_its_output_equal_to_a_full_seed_and_its_metrics_count_the_changes() {
    let mut setup = Setup::new(TestSchema::create("watch"), &points(), "");
    let mut watcher = Watcher::start(&setup);
    watcher.wait_until("/health 200 after the catch-up", |w| {
        w.health() == Some(200)
    });

    // 60 single-row changes at about 10 per second, then nothing.
    let mut rng = Rng::new(5);
    let mut alive: Vec<i64> = (1..=200).collect();
    let changes = 60;
    for step in 0..changes {
        one_change(&mut setup.schema, &mut rng, &mut alive, step);
        std::thread::sleep(Duration::from_millis(100));
    }
    watcher.wait_for_applied(changes as f64);

    let full = setup.full("full.mbtiles");
    assert_same_tiles(
        &full,
        &read_mbtiles_raw(&setup.output()),
        "the watched output against a full seed",
    );
    let metrics = watcher.metrics();
    let output = format!("output=\"{} (MBTiles)\"", setup.output().display());
    assert_eq!(
        metrics.with("oar_tiles_changes_applied_total", &output),
        changes as f64
    );
    assert_eq!(
        metrics.with("oar_tiles_change_to_tile_seconds_count", &output),
        changes as f64,
        "one latency per change"
    );
    assert_eq!(
        metrics.with("oar_tiles_change_to_tile_seconds_bucket", "le=\"+Inf\""),
        changes as f64
    );
    let rendered = metrics.with("oar_tiles_tiles_rendered_total", &output);
    assert!(rendered > 0.0);
    assert_eq!(
        metrics.with("oar_tiles_tiles_written_total", &output)
            + metrics.with("oar_tiles_tiles_empty_total", &output),
        rendered,
        "every rendered tile was written or empty"
    );
    // `/metrics` counts the deletions the cycle lines report: those the output made.
    assert_eq!(
        metrics.with("oar_tiles_tiles_deleted_total", &output),
        logged_deletions(&watcher.log()),
        "deletions in /metrics and in the cycle lines:\n{}",
        watcher.log()
    );
    assert_eq!(
        metrics.with("oar_tiles_render_seconds_count", &output),
        rendered
    );
    assert!(metrics.with("oar_tiles_cycle_seconds_count", &output) >= 2.0);
    assert_eq!(metrics.sum("oar_tiles_errors_total"), 0.0);
    assert!(metrics.sum("oar_tiles_last_success_timestamp_seconds") > 1.6e9);
    assert_eq!(watcher.health(), Some(200));
    let log = watcher.log();
    assert!(log.contains("change-to-tile latency p50"), "{log}");

    let run = watcher.stop(libc::SIGINT);
    assert_eq!(run.code, 130, "{}", run.stderr);
    assert!(!setup.path(&format!("{OUTPUT}.oar-tiles.lock")).exists());
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_tree_naming_relative_tile_urls_is_warned_about_once_however_many_cycles_open_it() {
    let mut setup = Setup::with_output(TestSchema::create("watch_warn"), &points(), "", "dir:tree");
    let mut watcher = Watcher::start(&setup);
    watcher.wait_until("/health 200 after the catch-up", |w| {
        w.health() == Some(200)
    });
    // One change per cycle: each cycle opens the tree again.
    let cycles = 3;
    for step in 0..cycles {
        setup.schema.execute(&format!(
            "UPDATE {{schema}}.sites SET label = 'renamed {step}' WHERE site_id = 1"
        ));
        watcher.wait_for_applied(f64::from(step + 1));
    }
    assert!(watcher.metrics().sum("oar_tiles_cycle_seconds_count") >= f64::from(cycles));
    let run = watcher.stop(libc::SIGINT);
    assert_eq!(run.code, 130, "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("names relative tile URLs").count(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn health_is_503_while_postgres_is_down_and_200_once_the_watcher_caught_up_again() {
    let url = required_env("OAR_TILES_TEST_WATCH_URL");
    let cluster = Cluster::from_env();
    let mut setup = Setup::new(TestSchema::create_on(url, "watchdown"), &points(), "");
    let mut watcher = Watcher::start(&setup);
    watcher.wait_until("/health 200", |w| w.health() == Some(200));

    assert!(cluster.ctl("stop"), "pg_ctlcluster stop");
    watcher.wait_until("/health 503 with the server down", |w| {
        w.health() == Some(503)
    });
    assert!(cluster.ctl("start"), "pg_ctlcluster start");
    setup.schema.reconnect();
    let mut rng = Rng::new(9);
    let mut alive: Vec<i64> = (1..=200).collect();
    for step in 0..4 {
        one_change(&mut setup.schema, &mut rng, &mut alive, step);
    }
    watcher.wait_for_applied(4.0);
    watcher.wait_until("/health 200 after the restart", |w| w.health() == Some(200));
    assert_same_tiles(
        &setup.full("full.mbtiles"),
        &read_mbtiles_raw(&setup.output()),
        "the output after the restart against a full seed",
    );
    let metrics = watcher.metrics();
    assert!(
        metrics.sum("oar_tiles_errors_total") >= 1.0,
        "the outage is counted"
    );
    let log = watcher.log();
    assert!(log.contains("reconnecting in"), "{log}");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn sigterm_mid_cycle_leaves_a_consistent_output_and_a_second_watcher_is_refused() {
    // Every tenth row costs the server a millisecond, so a cycle over many moved rows takes a while.
    let slow = "filter = \"site_id % 10 <> 0 OR pg_sleep(0.001) IS NOT NULL\"";
    let many = hub_with_scatter(3000, 44, 4, [106.6, 10.7, 106.8, 10.9]);
    let mut setup = Setup::new(TestSchema::create("watchterm"), &many, slow);
    let mut watcher = Watcher::start(&setup);
    watcher.wait_until("/health 200", |w| w.health() == Some(200));

    let second_listen = format!("127.0.0.1:{}", free_port());
    let second = setup.run(&["watch", "--listen", &second_listen]);
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert!(
        second.stderr.contains("in use by another oar-tiles job"),
        "{}",
        second.stderr
    );

    let before = read_mbtiles_raw(&setup.output());
    setup.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(ST_X(pt) + 0.01, ST_Y(pt)), 4326)
         WHERE site_id % 3 = 0",
    );
    // The cycle changes the MBTiles in place, in one transaction: its rollback journal exists
    // from the first tile written until the commit, so SIGTERM now lands mid-cycle.
    let journal = setup.path(&format!("{OUTPUT}-journal"));
    watcher.wait_until("the cycle to write its first tiles", |_| journal.exists());
    let run = watcher.stop(libc::SIGTERM);
    assert_eq!(run.code, 143, "{}", run.stderr);
    assert!(run.stderr.contains("stopped by SIGTERM"), "{}", run.stderr);
    assert!(!setup.path(&format!("{OUTPUT}.oar-tiles.lock")).exists());
    assert_eq!(
        run.stderr.matches("INFO cycle: ").count(),
        1,
        "only the catch-up cycle finished, the interrupted one did not: {}",
        run.stderr
    );
    assert_same_tiles(
        &before,
        &read_mbtiles_raw(&setup.output()),
        "the output after SIGTERM mid-cycle against its state before the cycle",
    );
    let full = setup.full("full.mbtiles");
    let mut again = Watcher::start(&setup);
    again.wait_until("the restarted watcher to catch up", |w| {
        w.health() == Some(200) && w.metrics().sum("oar_tiles_pending_changes") == 0.0
    });
    assert_same_tiles(
        &full,
        &read_mbtiles_raw(&setup.output()),
        "the output after a restarted watcher caught up",
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_statement_that_logs_notifies_once_however_many_rows_and_reinstalling_upgrades_an_old_install()
{
    let mut setup = Setup::new(TestSchema::create("watchnotify"), &points(), "");
    let changes = setup.schema.companion("cdc");
    let old_notifier = |setup: &mut Setup| -> (i64, bool) {
        let table = format!("\"{}\".sites", setup.schema.name);
        let row = setup
            .schema
            .client()
            .query_one(
                "SELECT (SELECT count(*) FROM pg_trigger WHERE tgname = 'oar_tiles_notify'
                           AND tgrelid = to_regclass($1)),
                        to_regprocedure($2) IS NOT NULL",
                &[&table, &format!("\"{changes}\".notify_change()")],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    // Earlier versions notified from a trigger of their own, on every statement; installing
    // again removes it and its function, and the capture triggers notify instead.
    setup.schema.execute(&format!(
        "CREATE OR REPLACE FUNCTION \"{changes}\".notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_notify('{changes}', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME); RETURN NULL; END $$;
         DROP TRIGGER IF EXISTS oar_tiles_notify ON {{schema}}.sites;
         CREATE TRIGGER oar_tiles_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {{schema}}.sites
             FOR EACH STATEMENT EXECUTE FUNCTION \"{changes}\".notify_change();"
    ));
    assert_eq!(old_notifier(&mut setup), (1, true));
    setup.run(&["changes", "install"]).assert_success();
    setup.run(&["changes", "install"]).assert_success();
    assert_eq!(old_notifier(&mut setup), (0, false));

    let mut listener = postgres::Client::connect(&setup.schema.url, postgres::NoTls).unwrap();
    listener
        .batch_execute(&format!("LISTEN \"{changes}\""))
        .unwrap();
    setup
        .schema
        .execute("UPDATE {schema}.sites SET label = label || '!' WHERE site_id <= 50");
    // Nothing rendered changes: nothing is logged, and no watcher is woken for it.
    setup
        .schema
        .execute("UPDATE {schema}.sites SET label = label WHERE site_id <= 50");
    setup
        .schema
        .execute("UPDATE {schema}.sites SET label = label WHERE site_id = 7");
    // A single row takes a path of its own, which notifies too.
    setup
        .schema
        .execute("UPDATE {schema}.sites SET label = label || '?' WHERE site_id = 7");
    setup
        .schema
        .execute("DELETE FROM {schema}.sites WHERE site_id > 190");
    // A notification is delivered between statements; an empty query collects what is pending.
    listener.batch_execute("").unwrap();
    let mut received = Vec::new();
    let mut notifications = listener.notifications();
    let mut pending = notifications.iter();
    while let Some(notification) = pending.next().unwrap() {
        received.push(notification.payload().to_string());
    }
    let table = format!("{}.sites", setup.schema.name);
    assert_eq!(
        received,
        vec![table.clone(), table.clone(), table],
        "one notification per statement that logged a change"
    );
    let row = setup
        .schema
        .client()
        .query_one(
            &format!(
                "SELECT count(*), sum(coalesce(cardinality(old_geoms), 0) + coalesce(cardinality(new_geoms), 0)
                                      + (old_geom IS NOT NULL)::int + (new_geom IS NOT NULL)::int)
                 FROM \"{changes}\".change_log"
            ),
            &[],
        )
        .unwrap();
    let (logged, positions): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        logged, 3,
        "one log row per statement that changed something rendered"
    );
    assert_eq!(
        positions,
        50 * 2 + 2 + 10,
        "old and new positions of the 50 updates and of the single one, and 10 deleted"
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn seed_writes_its_metrics_for_the_textfile_collector_and_a_failed_run_keeps_the_last_success() {
    let mut setup = Setup::new(TestSchema::create("watchtextfile"), &points(), "");
    let mut rng = Rng::new(2);
    let mut alive: Vec<i64> = (1..=200).collect();
    for step in 0..5 {
        one_change(&mut setup.schema, &mut rng, &mut alive, step);
    }
    let prom = setup.path("oar-tiles.prom");
    let file = prom.to_str().unwrap();
    setup
        .run(&["seed", "--dirty", "--metrics-file", file])
        .assert_success();
    let metrics = parse_prometheus(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(metrics.sum("oar_tiles_changes_applied_total"), 5.0);
    assert_eq!(metrics.sum("oar_tiles_change_to_tile_seconds_count"), 5.0);
    assert!(metrics.sum("oar_tiles_tiles_rendered_total") > 0.0);
    let success = metrics.sum("oar_tiles_last_success_timestamp_seconds");
    assert!(success > 1.6e9);

    // A run that fails records its error and keeps the previous success time.
    let failed = oar_tiles(
        Some("postgresql://nobody@127.0.0.1:1/none"),
        &[
            "seed",
            "--config",
            setup.config.to_str().unwrap(),
            "--dirty",
            "--metrics-file",
            file,
        ],
    );
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let metrics = parse_prometheus(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(
        metrics.with("oar_tiles_errors_total", "kind=\"connect\""),
        1.0
    );
    assert_eq!(
        metrics.sum("oar_tiles_last_success_timestamp_seconds"),
        success
    );
    let leftovers = std::fs::read_dir(setup.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0, "the temporary file was renamed");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn behind_pgbouncer_in_transaction_mode_the_watcher_listens_on_listen_url() {
    let bouncer = required_env("OAR_TILES_TEST_PGBOUNCER_URL");
    let mut setup = Setup::new(TestSchema::create("watchbouncer"), &points(), "");
    // Cycles go through PgBouncer; only the LISTEN session connects to the server directly.
    let text = std::fs::read_to_string(&setup.config).unwrap().replace(
        "pool_size = 2",
        &format!(
            "pool_size = 2\npool_mode = \"transaction\"\nlisten_url = \"{}\"",
            setup.schema.url
        ),
    );
    std::fs::write(&setup.config, text).unwrap();
    let mut watcher = Watcher::start_on(&setup, &bouncer);
    watcher.wait_until("/health 200", |w| w.health() == Some(200));
    let mut rng = Rng::new(12);
    let mut alive: Vec<i64> = (1..=200).collect();
    for step in 0..8 {
        one_change(&mut setup.schema, &mut rng, &mut alive, step);
    }
    watcher.wait_for_applied(8.0);
    assert_same_tiles(
        &setup.full("full.mbtiles"),
        &read_mbtiles_raw(&setup.output()),
        "the output watched through PgBouncer against a full seed",
    );
}

/// An idle watcher stopped by SIGTERM ends cleanly: the exit code the book promises (143) and no
/// `error:` line (the seed's message about a run's tiles would be untrue of it).
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn an_idle_watch_stopped_by_sigterm_prints_no_error() {
    let setup = Setup::new(TestSchema::create("idlestop"), &points(), "");
    let mut watcher = Watcher::start(&setup);
    watcher.wait_until("/health 200", |w| w.health() == Some(200));
    let run = watcher.stop(libc::SIGTERM);
    assert_eq!(run.code, 143, "{}", run.stderr);
    assert!(
        !run.stderr.contains("error:"),
        "no error line: {}",
        run.stderr
    );
    assert!(run.stderr.contains("stopped by SIGTERM"), "{}", run.stderr);
}
