//! `watch` under commits that keep coming while the low zooms of an unclustered layer render: a
//! second layer on the same rows sleeps in PostgreSQL for each row at zooms 0-3, so each of those
//! tiles takes over a second, as zooms 0-3 of a large unclustered layer do. A commit's deep tiles
//! must not wait for them, `kill -9` while the low lane renders loses nothing, a lane that fails
//! rests without running empty cycles, and once the commits stop the output is a full seed's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::edge::{metric, Watching};
use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::run::{oar_tiles, read_tree, read_tree_being_written, Tiles};

/// The tileset's deepest zoom: a change's own tile.
const DEEPEST: u8 = 9;

/// The zooms checked as deep: well below the slow ones (0-3), so a tile of zoom 4 or 5 slowed
/// down by a busy machine, which the watcher may then take for a low zoom, does not count.
const DEEP_FROM: u8 = 6;

/// A tree fixture of 300 rows whose layer `slow` costs about 1.5 s a tile at zooms 0-3.
fn slow_low_world(label: &str) -> (Fixture, PathBuf) {
    slow_low_world_with(label, "", "")
}

/// [`slow_low_world`], with `and` added to the slow layer's filter (`{schema}`: the fixture's
/// schema) and `setup` run before the first seed.
fn slow_low_world_with(label: &str, and: &str, setup: &str) -> (Fixture, PathBuf) {
    let points = hub_with_scatter(300, 31, 3, [2.2, 48.8, 2.5, 48.95]);
    let mut fixture = Fixture::new(label, &points, "live.toml", |schema| {
        let changes = schema.companion("cdc");
        let name = &schema.name;
        let and = and.replace("{schema}", name);
        format!(
            r#"[changes]
schema = "{changes}"

[database]
url = "postgresql://unused@127.0.0.1:1/unused"
pool_size = 2

[watch]
debounce = "200ms"
max_delay = "2s"
poll_interval = "1s"

[[tileset]]
name = "sites"
output = "dir:TREE"
maxzoom = {DEEPEST}

[[tileset.layer]]
name = "sites"
table = "{name}.sites"
geometry_column = "pt"
id_column = "site_id"
attributes = ["label", "kind"]

[[tileset.layer]]
name = "slow"
table = "{name}.sites"
geometry_column = "pt"
id_column = "site_id"
attributes = ["label"]
maxzoom = 3
filter = "pg_sleep(0.005) IS NOT NULL{and}"
"#
        )
    });
    if !setup.is_empty() {
        fixture.schema.execute(setup);
    }
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
    oar_tiles(Some(&fixture.schema.url), &["seed", "--config", &config]).assert_success();
    (fixture, tree)
}

/// What a full seed makes of the rows now.
fn full_seed(fixture: &Fixture, name: &str) -> Tiles {
    seed_zooms(fixture, name, &format!("0-{DEEPEST}"))
}

/// What a seed of `zooms` makes of the rows now.
fn seed_zooms(fixture: &Fixture, name: &str, zooms: &str) -> Tiles {
    let fresh = fixture.path(name);
    let output = format!("dir:{}", fresh.display());
    oar_tiles(
        Some(&fixture.schema.url),
        &fixture.seed_args(&output, zooms, &[]),
    )
    .assert_success();
    read_tree(&fresh, "pbf")
}

/// The watched tree's tiles, as a reader gets them while the watcher writes.
fn tiles(tree: &Path) -> Tiles {
    read_tree_being_written(tree, "pbf")
}

fn rename(fixture: &mut Fixture, nth: u32, label: &str) {
    fixture.schema.execute(&format!(
        "UPDATE {{schema}}.sites SET label = '{label}' WHERE site_id = \
         (SELECT site_id FROM {{schema}}.sites ORDER BY site_id OFFSET {nth} LIMIT 1)"
    ));
}

fn idle(watching: &mut Watching) {
    watching.wait_until("/health 200 and nothing pending", |w| {
        w.listening()
            && w.get("/health").status == 200
            && metric(&w.get("/metrics").text(), "oar_tiles_pending_changes") == 0.0
    });
}

/// The watcher's first change: its cycle renders every zoom and finds zooms 0-3 slow.
fn warm_up(fixture: &mut Fixture, tree: &Path) -> Watching {
    let mut watching = Watching::start(fixture, &[]);
    idle(&mut watching);
    let before = tiles(tree);
    rename(fixture, 0, "warm");
    watching.wait_until("the warm-up's low zooms", |_| {
        tiles(tree).get(&(0, 0, 0)) != before.get(&(0, 0, 0))
    });
    idle(&mut watching);
    watching
}

fn deep_changed(before: &Tiles, now: &Tiles) -> bool {
    now.iter()
        .any(|(key, bytes)| key.0 == DEEPEST && before.get(key) != Some(bytes))
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_commit_made_while_low_zooms_render_has_its_deep_tile_stored_before_they_finish() {
    let (mut fixture, tree) = slow_low_world("live_intake_front");
    let mut watching = warm_up(&mut fixture, &tree);
    let before_a = tiles(&tree);
    rename(&mut fixture, 10, "commit-a");
    watching.wait_until("commit A's deep tile", |_| {
        deep_changed(&before_a, &tiles(&tree))
    });
    // Commit A's low zooms (about 1.5 s a tile) are due now, or rendering: commit B comes.
    let after_a = tiles(&tree);
    rename(&mut fixture, 200, "commit-b");
    let committed = Instant::now();
    watching.wait_until("commit B's deep tile", |_| {
        deep_changed(&after_a, &tiles(&tree))
    });
    let took = committed.elapsed();
    let now = tiles(&tree);
    assert_eq!(
        now.get(&(0, 0, 0)),
        before_a.get(&(0, 0, 0)),
        "commit B's deep tile was stored {took:?} after it, once commit A's low zooms were"
    );
    // And the low zooms come, both commits' together.
    let fresh = full_seed(&fixture, "fresh");
    watching.wait_until("the output a full seed's", |_| tiles(&tree) == fresh);
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_new_watchers_first_commits_do_not_wait_for_the_low_zooms_its_seed_found_slow() {
    // The seed rendered zooms 0-3 at about 1.5 s a tile and recorded them as slow: the watcher's
    // very first cycle already leaves them to the low lane, with no cycle spent learning it.
    let (mut fixture, tree) = slow_low_world("live_intake_first");
    let mut watching = Watching::start(&fixture, &[]);
    idle(&mut watching);
    let before = tiles(&tree);
    rename(&mut fixture, 10, "first-a");
    watching.wait_until("the first commit's deep tile", |_| {
        deep_changed(&before, &tiles(&tree))
    });
    let after_a = tiles(&tree);
    rename(&mut fixture, 200, "first-b");
    let committed = Instant::now();
    watching.wait_until("the second commit's deep tile", |_| {
        deep_changed(&after_a, &tiles(&tree))
    });
    let took = committed.elapsed();
    assert_eq!(
        tiles(&tree).get(&(0, 0, 0)),
        before.get(&(0, 0, 0)),
        "the second commit's deep tile was stored {took:?} after it, once the first cycle had \
         rendered the low zooms"
    );
    let fresh = full_seed(&fixture, "fresh");
    watching.wait_until("the output a full seed's", |_| tiles(&tree) == fresh);
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn kill_9_while_the_low_lane_renders_loses_nothing() {
    let (mut fixture, tree) = slow_low_world("live_intake_kill");
    let mut watching = warm_up(&mut fixture, &tree);
    let rendering = tree
        .join(".oar-tiles-outbox")
        .join("deferred-tiles-rendering.note.json");
    rename(&mut fixture, 10, "before-the-kill");
    let started = Instant::now();
    while !rendering.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the low lane never started rendering the commit's low zooms"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A commit the cycles take in while the lane renders, then the kill.
    rename(&mut fixture, 200, "during-the-lane");
    std::thread::sleep(Duration::from_millis(400));
    watching.child().kill().unwrap();
    watching.child().wait().unwrap();
    drop(watching);
    let mut watching = Watching::start(&fixture, &[]);
    idle(&mut watching);
    let fresh = full_seed(&fixture, "fresh");
    watching.wait_until("the output a full seed's after the restart", |_| {
        tiles(&tree) == fresh
    });
    watching.wait_until("the lane's notes gone", |_| {
        !rendering.exists()
            && !tree
                .join(".oar-tiles-outbox")
                .join("deferred-tiles.note.json")
                .exists()
    });
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn after_a_stream_of_edits_deep_tiles_are_current_at_once_and_all_within_max_delay() {
    let (mut fixture, tree) = slow_low_world("live_intake_stream");
    let mut watching = warm_up(&mut fixture, &tree);
    for nth in 0..12 {
        rename(&mut fixture, 20 * nth, &format!("stream-{nth}"));
        std::thread::sleep(Duration::from_millis(300));
    }
    let stopped = Instant::now();
    // The deep tiles of every commit, the last's included, without waiting for any low zoom.
    std::thread::sleep(Duration::from_millis(2500));
    let deep: Tiles = tiles(&tree)
        .into_iter()
        .filter(|(key, _)| key.0 >= DEEP_FROM)
        .collect();
    assert_eq!(
        deep,
        seed_zooms(&fixture, "deep", &format!("{DEEP_FROM}-{DEEPEST}")),
        "the deep tiles of the stream's last commits were not current 2.5 s after it"
    );
    let fresh = full_seed(&fixture, "fresh");
    // Every tile within max_delay (2 s), the lane's render (4 tiles of 1.5 s on one connection)
    // and one cycle; the full seed to compare with takes as long as the lane.
    watching.wait_until("the output a full seed's", |_| tiles(&tree) == fresh);
    let all_after = stopped.elapsed();
    assert!(
        all_after < Duration::from_secs(30),
        "the output equalled a full seed only {all_after:?} after the stream"
    );
    idle(&mut watching);
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_failing_low_lane_rests_without_running_empty_cycles_and_loses_nothing() {
    // While `lane_ok` is empty, every tile of the slow layer (zooms 0-3) fails: a division by zero.
    let (mut fixture, tree) = slow_low_world_with(
        "live_intake_rest",
        " AND 1 / (SELECT count(*)::int FROM {schema}.lane_ok) = 1",
        "CREATE TABLE {schema}.lane_ok (); INSERT INTO {schema}.lane_ok DEFAULT VALUES",
    );
    let mut watching = warm_up(&mut fixture, &tree);
    fixture.schema.execute("DELETE FROM {schema}.lane_ok");
    rename(&mut fixture, 10, "while-the-lane-fails");
    watching.wait_until("the low lane's failure", |w| {
        w.log().contains("rendered again in")
    });
    // The lane rests 5 s; nothing is pending, so no cycle has anything to do meanwhile.
    let cycles = |w: &Watching| w.log().matches(" cycle: ").count();
    let before = cycles(&watching);
    std::thread::sleep(Duration::from_secs(4));
    let during = cycles(&watching) - before;
    assert!(
        during <= 5,
        "{during} cycles ran in the 4 s the low lane rested after a failure"
    );
    // Once its tiles render again, the lane stores them: nothing was lost.
    fixture
        .schema
        .execute("INSERT INTO {schema}.lane_ok DEFAULT VALUES");
    let fresh = full_seed(&fixture, "fresh");
    watching.wait_until("the output a full seed's", |_| tiles(&tree) == fresh);
}
