//! `watch`'s window between a commit and its cycle, against real PostGIS: with `debounce` set far
//! above what any cycle here takes, a lone commit's cycle still starts at once, and a burst of
//! commits makes one cycle. The assertions read the watcher's own log (each window's notifications
//! and length), not the clock of the test.

use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::run::{oar_tiles, single_layer_config};
use crate::common::watcher::Watcher;

/// Far above a cycle of this test's tileset: a window that waited for it would be seen.
const DEBOUNCE_MS: f64 = 30_000.0;

/// The windows the watcher logged, in order: (notifications, length in ms).
fn windows(log: &str) -> Vec<(usize, f64)> {
    log.lines()
        .filter_map(|line| {
            let (head, rest) = line.split_once(" notification(s) in a window of ")?;
            let count = head.rsplit(' ').next()?.parse().ok()?;
            let ms = rest.split(' ').next()?.parse().ok()?;
            Some((count, ms))
        })
        .collect()
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_lone_commit_starts_its_cycle_at_once_and_a_burst_makes_one_cycle_however_long_debounce_is() {
    let points = hub_with_scatter(100, 41, 3, [106.6, 10.7, 106.8, 10.9]);
    let mut setup = Fixture::new("debounce", &points, "watch.toml", |schema| {
        let changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n[watch]\ndebounce = \"30s\"\nmax_delay = \"60s\"\n\
             poll_interval = \"60s\"\n{}",
            single_layer_config(
                &schema.name,
                "sites",
                "maxzoom = 8\noutput = \"watched.mbtiles\"",
                ""
            )
        )
    });
    let config = setup.config.to_str().unwrap().to_string();
    for command in ["changes", "seed"] {
        let mut args = vec![command, "--config", &config];
        if command == "changes" {
            args.push("install");
        }
        oar_tiles(Some(&setup.schema.url), &args).assert_success();
    }
    let debug = [
        "sh",
        "-c",
        "RUST_LOG=info,oar_tiles::watch=debug exec \"$0\" \"$@\"",
    ];
    let url = setup.schema.url.clone();
    let mut watcher = Watcher::start_wrapped(&setup, &url, crate::common::free_port(), &debug);
    watcher.wait_until("/health 200 after the catch-up", |w| {
        w.health() == Some(200)
    });

    // One commit: its window closes long before `debounce`.
    setup
        .schema
        .execute("UPDATE {schema}.sites SET label = 'lone' WHERE site_id = 1");
    watcher.wait_for_applied(1.0);
    let log = watcher.log();
    let lone = windows(&log);
    assert_eq!(lone.len(), 1, "one window for one commit:\n{log}");
    assert_eq!(lone[0].0, 1, "{log}");
    assert!(
        lone[0].1 < DEBOUNCE_MS / 10.0,
        "a lone commit waited {} ms of a {DEBOUNCE_MS} ms debounce:\n{log}",
        lone[0].1
    );

    // Twenty commits sent in one go, each its own transaction and notification: one window, so
    // one cycle (a window's line comes before its cycle, whose changes are applied when it ends).
    let burst: String = (2..22)
        .map(|id| format!("BEGIN; UPDATE {{schema}}.sites SET label = 'burst' WHERE site_id = {id}; COMMIT;\n"))
        .collect();
    setup.schema.execute(&burst);
    watcher.wait_for_applied(21.0);
    let log = watcher.log();
    let all = windows(&log);
    assert_eq!(all.len(), 2, "one window for the burst:\n{log}");
    assert_eq!(
        all[1].0, 20,
        "the burst's notifications in one window:\n{log}"
    );
    assert!(all[1].1 < DEBOUNCE_MS / 10.0, "{log}");
    let run = watcher.stop(libc::SIGTERM);
    assert_eq!(run.code, 143, "{}", run.stderr);
}
