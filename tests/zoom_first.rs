//! The change's own tiles first: a dirty run renders its deepest zoom first and purges the tiles
//! a tree serves as soon as they are stored, so the tile at a change is fresh at the edge while
//! the heavy low zooms still render.
//!
//! The low zooms are made slow on purpose, and without a clock: their layer's filter calls a
//! function that waits for an advisory lock the test holds. Until the test lets go, no low-zoom
//! tile can be rendered; what the purge target receives meanwhile is what a run purges before
//! its heaviest tiles end.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use postgres::NoTls;

use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::recorder::Recorder;
use crate::common::run::{
    oar_tiles, oar_tiles_command, oar_tiles_with, read_tree, read_tree_being_written,
};
use crate::common::s3::S3Server;

const ZOOMS: &str = "0-9";

/// Zooms below this go through the gated layer.
const GATED_BELOW: u8 = 5;

/// A tree fixture purged through a recording `http` target: one layer of the `sites` table at
/// zooms 5-9, another at zooms 0-4 whose filter waits for the advisory lock `gate`.
fn gated_world(label: &str, cache_port: u16, gate: i64) -> (Fixture, PathBuf) {
    let (fixture, _) = gated_world_with(label, cache_port, gate, "", "", &[]);
    let tree = fixture.path("tree");
    (fixture, tree)
}

/// [`gated_world`] with `top` (tables before the tileset), `tileset` (its keys and tables, before
/// its purge target) and `env` for `changes install`.
fn gated_world_with(
    label: &str,
    cache_port: u16,
    gate: i64,
    top: &str,
    tileset: &str,
    env: &[(&str, &str)],
) -> (Fixture, ()) {
    let points = hub_with_scatter(400, 31, 3, [2.2, 48.8, 2.5, 48.95]);
    let fixture = Fixture::new(label, &points, "zoom_first.toml", |schema| {
        schema.execute(&format!(
            "CREATE FUNCTION {{schema}}.gate() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
             BEGIN
                 PERFORM pg_advisory_lock_shared({gate});
                 PERFORM pg_advisory_unlock_shared({gate});
                 RETURN true;
             END $$"
        ));
        let changes = schema.companion("cdc");
        let name = &schema.name;
        format!(
            r#"[changes]
schema = "{changes}"

[database]
url = "postgresql://unused@127.0.0.1:1/unused"
pool_size = 2

{top}

[[tileset]]
name = "sites"
{tileset}

[[tileset.cdn]]
kind = "http"
url = "http://127.0.0.1:{cache_port}/t/{{path}}"

[[tileset.layer]]
name = "sites"
table = "{name}.sites"
geometry_column = "pt"
id_column = "site_id"
attributes = ["label", "kind"]
minzoom = {GATED_BELOW}

[[tileset.layer]]
name = "overview"
table = "{name}.sites"
geometry_column = "pt"
id_column = "site_id"
attributes = ["label"]
maxzoom = {below}
filter = "\"{name}\".gate()"
"#,
            below = GATED_BELOW - 1
        )
    });
    let config = fixture.config.to_str().unwrap().to_string();
    oar_tiles_with(
        Some(&fixture.schema.url),
        &["changes", "install", "--config", &config],
        env,
    )
    .assert_success();
    (fixture, ())
}

fn seed(fixture: &Fixture, tree: &Path, extra: &[&str]) -> Child {
    seed_into(fixture, &format!("dir:{}", tree.display()), extra, &[])
}

fn seed_into(fixture: &Fixture, output: &str, extra: &[&str], env: &[(&str, &str)]) -> Child {
    let args = fixture.seed_args(output, ZOOMS, extra);
    oar_tiles_command(Some(&fixture.schema.url), &args, env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(fixture.path("seed.log")).unwrap())
        .spawn()
        .unwrap()
}

fn log(fixture: &Fixture) -> String {
    std::fs::read_to_string(fixture.path("seed.log")).unwrap_or_default()
}

/// Waits for the run to end and returns its exit code.
fn finished(child: &mut Child) -> i32 {
    child.wait().unwrap().code().unwrap_or(-1)
}

/// Polls until `done` holds; fails when the run exits first, or after five minutes (a hang, not a
/// slow machine), with the run's log.
fn wait_for(child: &mut Child, fixture: &Fixture, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run exited ({status}) before {what}:\n{}", log(fixture));
        }
        if started.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("waited 5 minutes for {what}:\n{}", log(fixture));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The paths the cache was asked to purge, in arrival order.
fn purged(cache: &Recorder) -> Vec<String> {
    cache
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.target.trim_start_matches("/t/").to_string())
        .collect()
}

/// Takes the advisory lock `gate` (on a connection the caller keeps until it lets go), then
/// renames the first site: a dirty run started now renders no tile below zoom 5 until the gate
/// opens.
fn close_the_gate_and_rename(fixture: &mut Fixture, gate: i64) -> postgres::Client {
    let mut holder = postgres::Client::connect(&fixture.schema.url, NoTls).unwrap();
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({gate})"))
        .unwrap();
    fixture.schema.execute(
        "UPDATE {schema}.sites SET label = 'renamed' WHERE site_id = (SELECT min(site_id) FROM {schema}.sites)",
    );
    holder
}

/// An advisory lock key of this test's own, so tests running side by side do not share a gate.
fn gate_key(salt: i64) -> i64 {
    i64::from(std::process::id()) * 100 + salt
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_dirty_run_purges_the_changes_deepest_tiles_before_its_low_zoom_tiles_are_rendered() {
    let cache = Recorder::start("purged", 0);
    let gate = gate_key(1);
    let (mut fixture, tree) = gated_world("zoom_first_purge", cache.port, gate);
    let mut child = seed(&fixture, &tree, &[]);
    assert_eq!(finished(&mut child), 0, "{}", log(&fixture));
    let before = read_tree(&tree, "pbf");
    cache.requests.lock().unwrap().clear();

    let mut holder = close_the_gate_and_rename(&mut fixture, gate);
    let mut child = seed(&fixture, &tree, &["--dirty"]);
    // The gate holds every tile below zoom 5 back: whatever is purged now was purged before them.
    wait_for(&mut child, &fixture, "a purge of a zoom 9 tile", || {
        purged(&cache).iter().any(|p| p.starts_with("9/"))
    });
    let early = purged(&cache);
    let now = read_tree_being_written(&tree, "pbf");
    for zoom in 0..GATED_BELOW {
        let low: Vec<_> = now.keys().filter(|(z, _, _)| *z == zoom).collect();
        assert!(
            low.iter().all(|key| before.get(key) == now.get(key)),
            "zoom {zoom} was rewritten before the gate opened"
        );
    }
    assert!(
        early
            .iter()
            .all(|p| p.split('/').next().unwrap().parse::<u8>().unwrap() >= GATED_BELOW),
        "only tiles the gate does not hold are purged yet: {early:?}"
    );
    for path in &early {
        let mut parts = path.trim_end_matches(".pbf").split('/');
        let mut next = || parts.next().unwrap().parse::<u32>().unwrap();
        let key = (next() as u8, next(), next());
        assert!(
            now.get(&key)
                .is_none_or(|bytes| before.get(&key) != Some(bytes)),
            "{path} was purged before its new bytes were in place"
        );
    }

    holder
        .batch_execute(&format!("SELECT pg_advisory_unlock({gate})"))
        .unwrap();
    assert_eq!(finished(&mut child), 0, "{}", log(&fixture));
    let after = read_tree(&tree, "pbf");
    let all = purged(&cache);
    assert!(
        after.get(&(0, 0, 0)) != before.get(&(0, 0, 0)),
        "the z0 tile holds the renamed site"
    );
    let z0 = all.iter().position(|p| p == "0/0/0.pbf");
    let z9 = all.iter().position(|p| p.starts_with("9/"));
    assert!(
        z0.is_some() && z9 < z0,
        "the z0 tile is purged too, after the deep ones: {all:?}"
    );
    // Every tile the run changed was purged, and none twice: the run's delivery left out what it
    // purged as the tiles were stored.
    for key in crate::common::run::differences(&before, &after) {
        let path = format!("{key}.pbf");
        assert_eq!(
            all.iter().filter(|p| **p == path).count(),
            1,
            "{path}: {all:?}"
        );
    }
    assert!(
        !tree.join(".oar-tiles-outbox").exists(),
        "nothing waits in the outbox"
    );
}

/// A tree fixture whose tileset names its output and defers zooms below 5 for an hour.
fn deferring_world(label: &str) -> (Fixture, PathBuf) {
    let points = hub_with_scatter(400, 31, 3, [2.2, 48.8, 2.5, 48.95]);
    let fixture = Fixture::new(label, &points, "zoom_first.toml", |schema| {
        let changes = schema.companion("cdc");
        let name = &schema.name;
        format!(
            r#"[changes]
schema = "{changes}"

[database]
url = "postgresql://unused@127.0.0.1:1/unused"
pool_size = 2

[watch]
poll_interval = "1s"

[[tileset]]
name = "sites"
output = "dir:TREE"
maxzoom = 9

[tileset.freshness]
defer_below_zoom = {GATED_BELOW}
defer_seconds = 3600

[[tileset.layer]]
name = "sites"
table = "{name}.sites"
geometry_column = "pt"
id_column = "site_id"
attributes = ["label", "kind"]
"#
        )
    });
    // The tree, and the lock file beside it, go into the test's own directory.
    let tree = fixture.path("tree");
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    let text = text.replace("dir:TREE", &format!("dir:{}", tree.display()));
    std::fs::write(&fixture.config, text).unwrap();
    let config = fixture.config.to_str().unwrap().to_string();
    oar_tiles(
        Some(&fixture.schema.url),
        &["changes", "install", "--config", &config],
    )
    .assert_success();
    (fixture, tree)
}

fn note(tree: &Path) -> PathBuf {
    tree.join(".oar-tiles-outbox")
        .join("deferred-tiles.note.json")
}

/// The note holding the tiles `watch`'s low lane took from [`note`] to render, until a cycle
/// stored them.
fn lane_note(tree: &Path) -> PathBuf {
    tree.join(".oar-tiles-outbox")
        .join("deferred-tiles-rendering.note.json")
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn watch_defers_low_zooms_durably_and_renders_them_when_due_losing_nothing() {
    let (mut fixture, tree) = deferring_world("zoom_first_defer");
    let config = fixture.config.to_str().unwrap().to_string();
    oar_tiles(Some(&fixture.schema.url), &["seed", "--config", &config]).assert_success();
    let before = read_tree(&tree, "pbf");

    let mut watching = crate::common::edge::Watching::start(&fixture, &[]);
    watching.wait_until("/health 200", |w| {
        w.listening() && w.get("/health").status == 200
    });
    fixture.schema.execute(
        "UPDATE {schema}.sites SET label = 'renamed' WHERE site_id = (SELECT min(site_id) FROM {schema}.sites)",
    );
    // Read while the watcher writes: a tile it is replacing is a temporary file beside it.
    watching.wait_until("the change's deep tiles", |_| {
        let now = read_tree_being_written(&tree, "pbf");
        now.iter()
            .any(|(key, bytes)| key.0 == 9 && before.get(key) != Some(bytes))
    });
    // The cycle is over once the watermark moved: nothing is pending any more.
    watching.wait_until("an idle watcher", |w| {
        crate::common::edge::metric(&w.get("/metrics").text(), "oar_tiles_pending_changes") == 0.0
    });
    assert!(note(&tree).exists(), "the deferred tiles are noted");
    let cycled = read_tree_being_written(&tree, "pbf");
    let noted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(note(&tree)).unwrap()).unwrap();
    let noted: Vec<String> = noted["tiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert!(noted.contains(&"0/0/0".to_string()), "{noted:?}");
    assert!(
        noted
            .iter()
            .all(|t| t.split('/').next().unwrap().parse::<u8>().unwrap() < GATED_BELOW),
        "{noted:?}"
    );
    for (key, bytes) in &cycled {
        if key.0 < GATED_BELOW {
            assert_eq!(
                Some(bytes),
                before.get(key),
                "{key:?} was rendered in the cycle"
            );
        }
    }

    // A cron reseed would render the noted tiles: its dry run plans them.
    let plan = fixture.path("plan.json");
    oar_tiles(
        Some(&fixture.schema.url),
        &[
            "seed",
            "--config",
            &config,
            "--dirty",
            "--dry-run",
            "--summary-json",
            plan.to_str().unwrap(),
        ],
    )
    .assert_success();
    let plan = crate::common::run::summary(&plan);
    let planned: Vec<u64> = plan[0]["plan"]["dirty_tiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|zoom| zoom["zoom"].as_u64().unwrap())
        .collect();
    assert!(planned.contains(&0), "{plan}");

    // Time passes for the note (its due time, rewritten as if the hour were up): the watcher's
    // next poll renders what it holds without any new change.
    let mut due: serde_json::Value =
        serde_json::from_slice(&std::fs::read(note(&tree)).unwrap()).unwrap();
    due["due"] = 0.into();
    std::fs::write(note(&tree), serde_json::to_vec(&due).unwrap()).unwrap();
    // The lane takes the tiles from the note as it starts; its own note goes once they are stored.
    watching.wait_until(
        "the deferred tiles rendered, stored and the notes gone",
        |_| {
            let now = read_tree_being_written(&tree, "pbf");
            !note(&tree).exists()
                && !lane_note(&tree).exists()
                && now.get(&(0, 0, 0)) != before.get(&(0, 0, 0))
        },
    );
    drop(watching);

    // Nothing was lost: the tree is what a full seed makes of the rows now.
    let fresh = fixture.path("fresh");
    let output = format!("dir:{}", fresh.display());
    oar_tiles(
        Some(&fixture.schema.url),
        &["seed", "--config", &config, "--output", &output],
    )
    .assert_success();
    assert_eq!(read_tree(&tree, "pbf"), read_tree(&fresh, "pbf"));
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_deferral_note_due_at_the_end_of_time_is_rendered_now_not_a_panic_at_every_start() {
    let (fixture, tree) = deferring_world("zoom_first_due_max");
    let config = fixture.config.to_str().unwrap().to_string();
    oar_tiles(Some(&fixture.schema.url), &["seed", "--config", &config]).assert_success();
    let seeded = read_tree(&tree, "pbf");
    // A note no run writes: due 2^64 - 1 seconds after the epoch, holding a tile a run skipped.
    std::fs::create_dir_all(note(&tree).parent().unwrap()).unwrap();
    std::fs::write(
        note(&tree),
        format!(r#"{{"due": {}, "tiles": ["0/0/0"]}}"#, u64::MAX),
    )
    .unwrap();
    std::fs::remove_file(tree.join("0/0/0.pbf")).unwrap();
    let mut watching = crate::common::edge::Watching::start(&fixture, &[]);
    watching.wait_until("the noted tile rendered and the note gone", |_| {
        !note(&tree).exists() && !lane_note(&tree).exists() && tree.join("0/0/0.pbf").exists()
    });
    drop(watching);
    assert_eq!(read_tree(&tree, "pbf"), seeded);
}

/// Each tile object's bytes under `bucket/prefix`, by key (the test server lists no ETags).
fn objects(
    s3: &S3Server,
    bucket: &str,
    prefix: &str,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let client = s3.client();
    crate::common::block_on(async {
        let mut objects = std::collections::BTreeMap::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for object in page.unwrap().contents() {
                let key = object.key().unwrap().to_string();
                if key.ends_with(".pbf") {
                    let got = client.get_object().bucket(bucket).key(&key).send();
                    let body = got.await.unwrap().body.collect().await.unwrap();
                    objects.insert(key, body.into_bytes().to_vec());
                }
            }
        }
        objects
    })
}

#[test]
#[ignore = "needs PostGIS and the S3 test server: run scripts/test.sh"]
fn an_s3_prefix_is_purged_as_its_uploads_end_with_the_cache_control_of_each_zoom() {
    let bucket = "zoom-first";
    let s3 = S3Server::start(bucket);
    let env = s3.env();
    let cache = Recorder::start("purged", 0);
    let gate = gate_key(2);
    let (mut fixture, ()) = gated_world_with(
        "zoom_first_s3",
        cache.port,
        gate,
        &s3.config_table(""),
        "cache_control = \"public, max-age=86400\"\n\n[tileset.freshness.cache_control]\n\"0-4\" = \"public, max-age=300\"\n",
        &env,
    );
    let output = format!("s3://{bucket}/tiles");
    let mut child = seed_into(&fixture, &output, &[], &env);
    assert_eq!(finished(&mut child), 0, "{}", log(&fixture));
    let before = objects(&s3, bucket, "tiles/");
    cache.requests.lock().unwrap().clear();

    let mut holder = close_the_gate_and_rename(&mut fixture, gate);
    let mut child = seed_into(&fixture, &output, &["--dirty"], &env);
    wait_for(&mut child, &fixture, "a purge of a zoom 9 tile", || {
        purged(&cache).iter().any(|p| p.starts_with("9/"))
    });
    let early = purged(&cache);
    let now = objects(&s3, bucket, "tiles/");
    assert!(
        early
            .iter()
            .all(|p| p.split('/').next().unwrap().parse::<u8>().unwrap() >= GATED_BELOW),
        "only tiles the gate does not hold are purged yet: {early:?}"
    );
    for path in &early {
        let key = format!("tiles/{path}");
        assert!(
            now.get(&key) != before.get(&key),
            "{key} was purged before its upload ended"
        );
    }
    holder
        .batch_execute(&format!("SELECT pg_advisory_unlock({gate})"))
        .unwrap();
    assert_eq!(finished(&mut child), 0, "{}", log(&fixture));
    let all = purged(&cache);
    assert!(all.iter().any(|p| p == "0/0/0.pbf"), "{all:?}");

    let client = s3.client();
    let header = |key: &str| {
        let head = crate::common::block_on(client.head_object().bucket(bucket).key(key).send());
        head.unwrap()
            .cache_control()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header("tiles/0/0/0.pbf"), "public, max-age=300");
    let deep = now.keys().find(|k| k.starts_with("tiles/9/")).unwrap();
    assert_eq!(header(deep), "public, max-age=86400");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_run_killed_after_its_early_purges_leaves_the_next_run_every_tile_not_yet_purged() {
    let cache = Recorder::start("purged", 0);
    let gate = gate_key(3);
    let (mut fixture, tree) = gated_world("zoom_first_kill", cache.port, gate);
    let mut child = seed(&fixture, &tree, &[]);
    assert_eq!(finished(&mut child), 0, "{}", log(&fixture));
    let before = read_tree(&tree, "pbf");
    cache.requests.lock().unwrap().clear();

    let mut holder = close_the_gate_and_rename(&mut fixture, gate);
    let mut child = seed(&fixture, &tree, &["--dirty"]);
    wait_for(&mut child, &fixture, "a purge of a zoom 9 tile", || {
        purged(&cache).iter().any(|p| p.starts_with("9/"))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    holder
        .batch_execute(&format!("SELECT pg_advisory_unlock({gate})"))
        .unwrap();
    let early = purged(&cache);
    cache.requests.lock().unwrap().clear();

    // The killed run's intent named every tile it planned, and what the cache accepted of them
    // was journaled as it accepted it: the next run purges the rest, resends at most the
    // requests that were in flight (the http target's concurrency, 8), and renders what the
    // killed run did not.
    let mut child = seed(&fixture, &tree, &["--dirty"]);
    assert_eq!(finished(&mut child), 0, "{}", log(&fixture));
    let after = read_tree(&tree, "pbf");
    let again = purged(&cache);
    let resent: Vec<&String> = early
        .iter()
        .filter(|p| p.ends_with(".pbf") && again.contains(*p))
        .collect();
    assert!(
        resent.len() <= 8,
        "{} of the {} tiles purged before the kill were purged again: {resent:?}",
        resent.len(),
        early.len()
    );
    for key in crate::common::run::differences(&before, &after) {
        let path = format!("{key}.pbf");
        assert!(
            again.contains(&path) || early.contains(&path),
            "{path} was never purged: {again:?}"
        );
    }
    assert!(again.contains(&"0/0/0.pbf".to_string()), "{again:?}");
    assert!(
        !tree.join(".oar-tiles-outbox").exists(),
        "nothing waits in the outbox"
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn an_unreadable_deferral_note_fails_a_dirty_run_by_name_and_a_full_seed_clears_it() {
    let (fixture, tree) = deferring_world("zoom_first_bad_note");
    let config = fixture.config.to_str().unwrap().to_string();
    let url = Some(fixture.schema.url.as_str());
    oar_tiles(url, &["seed", "--config", &config]).assert_success();
    std::fs::create_dir_all(note(&tree).parent().unwrap()).unwrap();
    std::fs::write(note(&tree), b"{\"due\": 0, \"tiles\": [\"0/0/").unwrap();

    // Taken as absent, the tiles it held back would never be rendered.
    let dirty = oar_tiles(url, &["seed", "--config", &config, "--dirty"]);
    assert_ne!(dirty.code, 0, "{}", dirty.stderr);
    assert!(
        dirty.stderr.contains("deferred-tiles.note.json") && dirty.stderr.contains("full"),
        "{}",
        dirty.stderr
    );
    assert!(note(&tree).exists());

    oar_tiles(url, &["seed", "--config", &config]).assert_success();
    assert!(!note(&tree).exists());
}

/// The feed's head in `tree`, if any: its `sequence`.
fn feed_sequence(tree: &Path) -> u64 {
    std::fs::read(tree.join("changes/head.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|head| head["sequence"].as_u64())
        .unwrap_or(0)
}

/// The tiles segment `sequence` of `tree`'s feed lists.
fn feed_segment(tree: &Path, sequence: u64) -> std::collections::BTreeSet<String> {
    let bytes = std::fs::read(tree.join(format!("changes/{sequence}.json")))
        .unwrap_or_else(|e| panic!("segment {sequence}: {e}"));
    crate::common::segment_tiles(&serde_json::from_slice(&bytes).unwrap())
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn the_feed_lists_the_changes_deepest_tiles_once_purged_before_the_low_zooms_are_rendered() {
    let cache = Recorder::start("purged", 0);
    let gate = gate_key(4);
    let (mut fixture, ()) = gated_world_with(
        "zoom_first_feed",
        cache.port,
        gate,
        "",
        "\n[tileset.feed]\nretention = 100\n",
        &[],
    );
    let tree = fixture.path("tree");
    let mut child = seed(&fixture, &tree, &[]);
    assert_eq!(finished(&mut child), 0, "{}", log(&fixture));
    let seeded = feed_sequence(&tree);
    let before = read_tree(&tree, "pbf");
    cache.requests.lock().unwrap().clear();

    let mut holder = close_the_gate_and_rename(&mut fixture, gate);
    let mut child = seed(&fixture, &tree, &["--dirty"]);
    // No tile below zoom 5 can render while the gate holds: a segment now was published before
    // the run's low zooms, as soon as the CDN took the deep tiles.
    wait_for(
        &mut child,
        &fixture,
        "a segment while the gate holds",
        || feed_sequence(&tree) > seeded,
    );
    let purged_then = purged(&cache);
    let now = read_tree_being_written(&tree, "pbf");
    let early: std::collections::BTreeSet<String> = (seeded + 1..=feed_sequence(&tree))
        .flat_map(|sequence| feed_segment(&tree, sequence))
        .collect();
    assert!(!early.is_empty(), "the early segment lists tiles");
    for tile in &early {
        let mut parts = tile.split('/').map(|p| p.parse::<u32>().unwrap());
        let key = (
            parts.next().unwrap() as u8,
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert!(key.0 >= GATED_BELOW, "{tile} listed before the gate opened");
        assert!(
            now.get(&key) != before.get(&key),
            "{tile} listed before its new bytes were in place"
        );
        assert!(
            purged_then.contains(&format!("{tile}.pbf")),
            "{tile} listed before the CDN took its purge: {purged_then:?}"
        );
    }

    holder
        .batch_execute(&format!("SELECT pg_advisory_unlock({gate})"))
        .unwrap();
    assert_eq!(finished(&mut child), 0, "{}", log(&fixture));
    let after = read_tree(&tree, "pbf");
    let last = feed_sequence(&tree);
    let segments: Vec<_> = (seeded + 1..=last)
        .map(|sequence| feed_segment(&tree, sequence))
        .collect();
    assert!(
        segments.len() <= 4,
        "a run publishes a few segments, not one per chunk: {segments:?}"
    );
    let listed: std::collections::BTreeSet<String> = segments.iter().flatten().cloned().collect();
    assert_eq!(
        segments.iter().map(|s| s.len()).sum::<usize>(),
        listed.len(),
        "no tile listed twice: {segments:?}"
    );
    assert_eq!(
        listed,
        crate::common::run::differences(&before, &after),
        "the run's segments list exactly the tiles it changed"
    );
    assert!(
        listed.contains("0/0/0"),
        "the low zooms are listed at the end"
    );
}
