//! Deleted means gone from the edge, partitions included: a tree partitioned by country behind
//! Debian's Varnish (keeping every answer for a day), purged with `PURGE`. A partition whose
//! rows all vanish while the CDN is down, and a row of one partition deleted while the CDN is
//! down followed by changes only in another partition, both end with the edge serving none of
//! the deleted rows' tiles once the CDN is back; `partitions.json` is purged too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::free_port;
use crate::common::pg::TestSchema;
use crate::common::run::{
    oar_tiles, oar_tiles_command, read_tree, read_tree_after_a_kill, send_signal, Run, Tiles,
};
use crate::common::varnish::{Origin, Varnish};

/// Every row costs the server 10 ms, but only in sessions that set `oar.slow`: a run started with
/// [`slow_url`] is slow enough to be killed in the middle of a partition.
const SLOW_FILTER: &str =
    "filter = \"current_setting('oar.slow', true) IS NULL OR pg_sleep(0.01) IS NOT NULL\"";

struct World {
    schema: TestSchema,
    changes: String,
    _dir: tempfile::TempDir,
    tree: PathBuf,
    config: PathBuf,
}

impl World {
    fn new() -> World {
        let mut schema = TestSchema::create("partedge");
        schema.execute(
            "CREATE TABLE {schema}.places (id bigint PRIMARY KEY, country character(2), name text,
                                           pt geometry(Point, 4326) NOT NULL);
             CREATE INDEX ON {schema}.places USING gist (pt);
             INSERT INTO {schema}.places
             SELECT g, (ARRAY['CN', 'US', 'DE'])[1 + g % 3], 'place ' || g,
                    ST_SetSRID(ST_MakePoint(-30 + (g * 37) % 90, -20 + (g * 53) % 60), 4326)
             FROM generate_series(1, 90) g;",
        );
        let changes = schema.companion("cdc");
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tiles");
        std::fs::create_dir(&tree).unwrap();
        let config = dir.path().join("edge.toml");
        World {
            schema,
            changes,
            _dir: dir,
            tree,
            config,
        }
    }

    /// The config with its purge target at `port` (a closed one: the CDN is down).
    fn write_config(&self, port: u16) {
        self.write_config_with(port, "");
    }

    /// The same, with `tileset_tables` (tables of the tileset such as `[tileset.feed]`) last.
    fn write_config_with(&self, port: u16, tileset_tables: &str) {
        let changes = &self.changes;
        std::fs::write(
            &self.config,
            format!(
                "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\npool_size = 2\n\
                 [changes]\nschema = \"{changes}\"\n\
                 [[tileset]]\nname = \"places\"\nmaxzoom = 5\npartition_by = \"country\"\n\
                 output = \"dir:{}\"\n\
                 [[tileset.layer]]\nname = \"places\"\ntable = \"{}.places\"\ngeometry_column = \"pt\"\n\
                 attributes = [\"name\"]\n{SLOW_FILTER}\n\
                 [[tileset.cdn]]\nkind = \"http\"\nname = \"edge\"\n\
                 url = \"http://127.0.0.1:{port}/{{path}}\"\n{tileset_tables}",
                self.tree.display(),
                self.schema.name
            ),
        )
        .unwrap();
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut full = vec![args[0], "--config", self.config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        oar_tiles(Some(&self.schema.url), &full)
    }

    /// `/VALUE/z/x/y.pbf` of every tile a partition holds now, with its bytes.
    fn tiles_of(&self, value: &str) -> BTreeMap<String, Vec<u8>> {
        Self::named(value, read_tree(&self.tree.join(value), "pbf"))
    }

    /// [`World::tiles_of`] while a writer runs or after it was killed: a tile being written is
    /// a temporary file beside it, which the next run removes.
    fn tiles_of_while_written(&self, value: &str) -> BTreeMap<String, Vec<u8>> {
        Self::named(
            value,
            read_tree_after_a_kill(&self.tree.join(value), "pbf").0,
        )
    }

    fn named(value: &str, tiles: Tiles) -> BTreeMap<String, Vec<u8>> {
        tiles
            .into_iter()
            .map(|((z, x, y), bytes)| (format!("/{value}/{z}/{x}/{y}.pbf"), bytes))
            .collect()
    }
}

/// Paths the cache still answers 200 with bytes other than the origin's now (or at all, for a
/// path the origin no longer has).
fn stale(cache: &Varnish, world: &World, paths: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    paths
        .keys()
        .filter(|path| {
            let reply = cache.get_path(path);
            let now = std::fs::read(world.tree.join(path.trim_start_matches('/'))).ok();
            reply.status == 200 && Some(&reply.body) != now.as_ref()
        })
        .cloned()
        .collect()
}

/// Fails naming `what`, the stale paths and `run`'s log when the cache still serves any of
/// `paths` stale.
#[track_caller]
fn assert_fresh(
    cache: &Varnish,
    world: &World,
    paths: &BTreeMap<String, Vec<u8>>,
    what: &str,
    run: &Run,
) {
    let stale = stale(cache, world, paths);
    assert!(stale.is_empty(), "{what}: {stale:?}\n{}", run.stderr);
}

#[test]
#[ignore = "needs PostGIS and Varnish: run scripts/test.sh"]
fn purges_outlive_a_vanished_partition_and_are_retried_whichever_partition_changes_next() {
    let mut world = World::new();
    let origin = Origin::start(&world.tree);
    let cache = Varnish::keeping(origin.port, "1d");
    let down = free_port();
    world.write_config(cache.port);
    world.run(&["changes", "install"]).assert_success();
    world.run(&["seed"]).assert_success();
    let cn = world.tiles_of("CN");
    let us = world.tiles_of("US");
    assert!(!cn.is_empty() && !us.is_empty());
    // A lock names its holder's host and process: none may be served.
    fn locks_under(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                locks_under(&path, found);
            } else if path.to_string_lossy().contains(".lock") {
                found.push(path.display().to_string());
            }
        }
    }
    let mut served_locks = Vec::new();
    locks_under(&world.tree, &mut served_locks);
    assert!(
        served_locks.is_empty(),
        "locks inside the served tree: {served_locks:?}"
    );
    // Warm the edge with every tile and the index.
    for path in cn.keys().chain(us.keys()) {
        assert_eq!(cache.get_path(path).status, 200, "{path}");
    }
    let index_before = cache.get_path("/partitions.json");
    assert!(String::from_utf8_lossy(&index_before.body).contains("\"CN\""));

    // Every CN row deleted while the CDN is down: the run fails, the partition is removed.
    world.write_config(down);
    world
        .schema
        .execute("DELETE FROM {schema}.places WHERE country = 'CN'");
    let failed = world.run(&["seed", "--dirty"]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert!(
        !world.tree.join("CN").exists(),
        "the vanished partition is removed"
    );
    assert_eq!(
        stale(&cache, &world, &cn).len(),
        cn.len(),
        "the edge keeps every CN tile while the CDN is down"
    );

    // The CDN is back; nothing changed since: the next run purges what the vanished partition
    // left, and the index.
    world.write_config(cache.port);
    let good = world.run(&["seed", "--dirty"]);
    good.assert_success();
    assert_fresh(
        &cache,
        &world,
        &cn,
        "tiles of the deleted rows still at the edge: {}",
        &good,
    );
    let index_after = cache.get_path("/partitions.json");
    assert!(
        !String::from_utf8_lossy(&index_after.body).contains("\"CN\""),
        "the edge still lists the vanished value: {}",
        String::from_utf8_lossy(&index_after.body)
    );

    // A US row deleted while the CDN is down, then only a DE row changes with the CDN back.
    for path in world.tiles_of("US").keys() {
        cache.get_path(path);
    }
    let us = world.tiles_of("US");
    world.write_config(down);
    world.schema.execute(
        "DELETE FROM {schema}.places WHERE id = (SELECT min(id) FROM {schema}.places WHERE country = 'US')",
    );
    assert_eq!(world.run(&["seed", "--dirty"]).code, 1);
    let waiting = stale(&cache, &world, &us);
    assert!(!waiting.is_empty(), "the deletion changed no US tile");
    world.write_config(cache.port);
    world.schema.execute(
        "UPDATE {schema}.places SET name = 'renamed' WHERE id = (SELECT min(id) FROM {schema}.places WHERE country = 'DE')",
    );
    let next = world.run(&["seed", "--dirty"]);
    next.assert_success();
    assert_fresh(
        &cache,
        &world,
        &us,
        "US tiles of the deleted row still at the edge after a run that changed only DE: {}",
        &next,
    );
}

#[test]
#[ignore = "needs PostGIS and Varnish: run scripts/test.sh"]
fn a_partitions_killed_full_seed_is_purged_as_a_ban_of_its_prefix() {
    let mut world = World::new();
    let origin = Origin::start(&world.tree);
    let cache = Varnish::keeping(origin.port, "1d");
    world.write_config(cache.port);
    world.run(&["seed"]).assert_success();
    let cn = world.tiles_of("CN");
    for path in cn.keys() {
        assert_eq!(cache.get_path(path).status, 200, "{path}");
    }
    // Every CN tile changes; a full seed is killed in the middle of CN.
    world
        .schema
        .execute("UPDATE {schema}.places SET name = name || ' (renamed)' WHERE country = 'CN'");
    kill_a_seed_in_the_middle_of(&world, "CN", &cn);

    // The same command again, at full speed: it resumes, and the edge must serve no old CN tile,
    // the ones the killed run replaced (which this run does not write again) included.
    let resumed = world.run(&["seed"]);
    resumed.assert_success();
    assert_fresh(
        &cache,
        &world,
        &world.tiles_of("CN"),
        "CN tiles stale at the edge after the resumed seed: {}",
        &resumed,
    );
}

/// Starts a slow full seed, and kills it once it replaced some of `value`'s tiles (`before`),
/// long before all of them (10 ms a row), after that partition's intent (`*`).
fn kill_a_seed_in_the_middle_of(world: &World, value: &str, before: &BTreeMap<String, Vec<u8>>) {
    let url = format!("{}?options=-c%20oar.slow%3D1", world.schema.url);
    let config = world.config.to_str().unwrap().to_string();
    let mut child = oar_tiles_command(Some(&url), &["seed", "--config", &config], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let outbox = world.tree.join(format!("{value}/.oar-tiles-outbox"));
    let intended = || {
        std::fs::read_dir(&outbox).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".intent"))
        })
    };
    for _ in 0..1200 {
        if intended() || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(intended(), "the slow seed never started {value}");
    let replaced = || {
        world
            .tiles_of_while_written(value)
            .iter()
            .filter(|(path, bytes)| before.get(*path) != Some(*bytes))
            .count()
    };
    for _ in 0..2400 {
        if replaced() > 0 || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    send_signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let replaced = replaced();
    assert!(
        replaced > 0 && replaced < before.len(),
        "the killed seed replaced {replaced} of {} {value} tiles",
        before.len()
    );
}

/// A partition's feed as its map reads it through the cache: `/VALUE/changes/head.json`.
fn feed_head(cache: &Varnish, value: &str) -> serde_json::Value {
    let reply = cache.get_path(&format!("/{value}/changes/head.json"));
    assert_eq!(reply.status, 200, "{value}'s feed head");
    reply.json()
}

fn segment_tiles(world: &World, value: &str, sequence: u64) -> std::collections::BTreeSet<String> {
    let bytes = std::fs::read(world.tree.join(format!("{value}/changes/{sequence}.json"))).unwrap();
    crate::common::segment_tiles(&serde_json::from_slice(&bytes).unwrap())
}

#[test]
#[ignore = "needs PostGIS and Varnish: run scripts/test.sh"]
fn each_partition_feeds_its_own_changes_and_one_handed_over_waits_until_its_purge_reached_the_edge()
{
    let mut world = World::new();
    let origin = Origin::start(&world.tree);
    let cache = Varnish::keeping(origin.port, "1d");
    let down = free_port();
    let feed = "[tileset.feed]\nretention = 10\n";
    world.write_config_with(cache.port, feed);
    world.run(&["changes", "install"]).assert_success();
    world.run(&["seed"]).assert_success();
    for value in ["CN", "US", "DE"] {
        assert_eq!(feed_head(&cache, value)["sequence"], 1, "{value}");
    }

    // A US row moves while the CDN is down: its purges go to the tileset's outbox, and its feed
    // must not tell maps yet.
    let us_before = read_tree(&world.tree.join("US"), "pbf");
    world.write_config_with(down, feed);
    world.schema.execute(
        "UPDATE {schema}.places SET pt = ST_Translate(pt, 3, 2) WHERE id = (SELECT min(id) FROM {schema}.places WHERE country = 'US')",
    );
    assert_eq!(world.run(&["seed", "--dirty"]).code, 1);
    let us_moved = read_tree(&world.tree.join("US"), "pbf");
    let moved = crate::common::run::differences(&us_before, &us_moved);
    assert!(!moved.is_empty());
    assert_eq!(
        feed_head(&cache, "US")["sequence"],
        1,
        "listed before its purge"
    );
    // Another US change with the CDN still down: the first batch's purge waits in the tileset's
    // outbox, so the origin's head (which a purge could not reach the cache with) stays too.
    world.schema.execute(
        "UPDATE {schema}.places SET name = 'moved' WHERE id = (SELECT min(id) FROM {schema}.places WHERE country = 'US')",
    );
    assert_eq!(world.run(&["seed", "--dirty"]).code, 1);
    let at_origin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(world.tree.join("US/changes/head.json")).unwrap())
            .unwrap();
    assert_eq!(
        at_origin["sequence"], 1,
        "a handed-over purge listed before it reached the edge"
    );

    // The CDN is back; only DE changes: DE publishes, and the tileset's run purges US's tiles.
    world.write_config_with(cache.port, feed);
    world.schema.execute(
        "UPDATE {schema}.places SET name = 'renamed' WHERE id = (SELECT min(id) FROM {schema}.places WHERE country = 'DE')",
    );
    world.run(&["seed", "--dirty"]).assert_success();
    assert!(feed_head(&cache, "DE")["sequence"].as_u64() >= Some(2));
    assert_eq!(feed_head(&cache, "CN")["sequence"], 1, "CN changed nothing");

    // US's next run publishes the handed-over tiles, now fresh at the edge, with its own.
    world.schema.execute(
        "UPDATE {schema}.places SET name = 'renamed too' WHERE id = (SELECT max(id) FROM {schema}.places WHERE country = 'US')",
    );
    world.run(&["seed", "--dirty"]).assert_success();
    // The run's segments: those it published while it rendered, and its delivery's.
    let newest = feed_head(&cache, "US")["sequence"].as_u64().unwrap();
    assert!(newest >= 2);
    let listed: std::collections::BTreeSet<String> = (2..=newest)
        .flat_map(|sequence| segment_tiles(&world, "US", sequence))
        .collect();
    assert!(moved.is_subset(&listed), "{moved:?} not in {listed:?}");
}

#[test]
#[ignore = "needs PostGIS and Varnish: run scripts/test.sh"]
fn a_partitions_feed_names_no_tile_whose_purge_waits_in_the_tilesets_outbox() {
    let mut world = World::new();
    let origin = Origin::start(&world.tree);
    let cache = Varnish::keeping(origin.port, "1d");
    let down = free_port();
    let feed = "[tileset.feed]\nretention = 20\n";
    world.write_config_with(cache.port, feed);
    world.run(&["changes", "install"]).assert_success();
    world.run(&["seed"]).assert_success();
    // A US row gets a private name, which the edge then serves.
    let us_row = |order: &str| {
        format!("(SELECT {order}(id) FROM {{schema}}.places WHERE country = 'US' AND name NOT LIKE 'PRIVATE-%')")
    };
    let private = us_row("max");
    world.schema.execute(&format!(
        "UPDATE {{schema}}.places SET name = 'PRIVATE-' || id WHERE id = {private}"
    ));
    world.run(&["seed", "--dirty"]).assert_success();
    for path in world.tiles_of("US").keys() {
        assert_eq!(cache.get_path(path).status, 200, "{path}");
    }
    let published = feed_head(&cache, "US")["sequence"].as_u64().unwrap();

    // With the CDN down: a row moves, the private row is deleted, another row moves. Each run
    // hands its purges to the tileset's outbox, which merges them while they wait.
    world.write_config_with(down, feed);
    let moves = [us_row("min"), "__DELETE__".to_string(), us_row("min")];
    for (run, change) in moves.iter().enumerate() {
        if change == "__DELETE__" {
            world
                .schema
                .execute("DELETE FROM {schema}.places WHERE name LIKE 'PRIVATE-%'");
        } else {
            world.schema.execute(&format!(
                "UPDATE {{schema}}.places SET pt = ST_Translate(pt, 2 + {run}, 1) WHERE id = {change}"
            ));
        }
        let failed = world.run(&["seed", "--dirty"]);
        assert_eq!(failed.code, 1, "run {run}: {}", failed.stderr);
        // Every tile a segment names must be fresh at the edge: a map told "changed" refetches
        // it, and must not get the deleted row back.
        let head: serde_json::Value = serde_json::from_slice(
            &std::fs::read(world.tree.join("US/changes/head.json")).unwrap(),
        )
        .unwrap();
        let newest = head["sequence"].as_u64().unwrap();
        for sequence in published + 1..=newest {
            let listed: BTreeMap<String, Vec<u8>> = segment_tiles(&world, "US", sequence)
                .into_iter()
                .map(|tile| (format!("/US/{tile}.pbf"), Vec::new()))
                .collect();
            let stale = stale(&cache, &world, &listed);
            assert!(
                stale.is_empty(),
                "run {run}: segment {sequence} names tiles the edge still serves stale: {stale:?}\n{}",
                failed.stderr
            );
        }
    }

    // The CDN is back: the tileset's purges go out, and US's next run publishes what they
    // covered; no tile the edge serves holds the deleted row.
    world.write_config_with(cache.port, feed);
    world.schema.execute(&format!(
        "UPDATE {{schema}}.places SET name = 'renamed' WHERE id = {}",
        us_row("max")
    ));
    let back = world.run(&["seed", "--dirty"]);
    back.assert_success();
    let us = world.tiles_of("US");
    assert_fresh(
        &cache,
        &world,
        &us,
        "US tiles stale after the CDN came back",
        &back,
    );
    for path in us.keys() {
        let body = cache.get_path(path).body;
        assert!(
            !body.windows(8).any(|w| w == b"PRIVATE-"),
            "{path} still carries the deleted row"
        );
    }
    // US's next run publishes what waited, now that the edge serves it anew.
    world.schema.execute(&format!(
        "UPDATE {{schema}}.places SET name = 'renamed again' WHERE id = {}",
        us_row("min")
    ));
    world.run(&["seed", "--dirty"]).assert_success();
    let newest = feed_head(&cache, "US")["sequence"].as_u64().unwrap();
    let listed: std::collections::BTreeSet<String> = (published + 1..=newest)
        .flat_map(|sequence| segment_tiles(&world, "US", sequence))
        .collect();
    assert!(!listed.is_empty(), "the changes never reached the feed");
}

#[test]
#[ignore = "needs PostGIS and Varnish: run scripts/test.sh"]
fn a_killed_seeds_leftovers_are_purged_by_a_dirty_run_whatever_partitions_its_changes_touch() {
    let mut world = World::new();
    let origin = Origin::start(&world.tree);
    let cache = Varnish::keeping(origin.port, "1d");
    world.write_config(cache.port);
    world.run(&["changes", "install"]).assert_success();
    world.run(&["seed"]).assert_success();
    let cn = world.tiles_of("CN");
    for path in cn.keys() {
        assert_eq!(cache.get_path(path).status, 200, "{path}");
    }
    // CN's rows change without their triggers (a restore, a bulk fix): the change log knows
    // nothing, and a full seed killed in the middle of CN is all that wrote them.
    world.schema.execute(
        "ALTER TABLE {schema}.places DISABLE TRIGGER USER;
         UPDATE {schema}.places SET name = name || ' (fixed)' WHERE country = 'CN';
         ALTER TABLE {schema}.places ENABLE TRIGGER USER;",
    );
    kill_a_seed_in_the_middle_of(&world, "CN", &cn);

    // The next cron run is a `--dirty` one, and nothing was logged: it must still find what the
    // killed run left in CN and purge it.
    let dirty = world.run(&["seed", "--dirty"]);
    dirty.assert_success();
    assert_fresh(
        &cache,
        &world,
        &world.tiles_of("CN"),
        "CN tiles the killed seed replaced stale at the edge after `seed --dirty`",
        &dirty,
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_hung_cdn_is_waited_on_once_per_run_not_once_per_partition_delivery_and_head() {
    use crate::common::recorder::{Answer, Recorder};
    let mut world = World::new();
    let hung = Recorder::answering(Answer::Never);
    let feed = "request_timeout = \"1s\"\npurge_timeout = \"2s\"\n[tileset.feed]\nretention = 10\n";
    world.write_config_with(hung.port, feed);
    world.run(&["changes", "install"]).assert_success();
    // The first seed's purges fail too: then the CDN's hold is what this test looks at.
    let first = world.run(&["seed", "--concurrency", "1"]);
    assert_eq!(first.code, 1, "{}", first.stderr);
    let seen_before = hung.requests.lock().unwrap().len();

    // A change in every partition, with the CDN still hung: the first purge that fails holds the
    // CDN back for the other partitions, the tileset's own delivery and the feeds' heads.
    world
        .schema
        .execute("UPDATE {schema}.places SET name = name || '!' WHERE id <= 9");
    let dirty = world.run(&["seed", "--dirty", "--concurrency", "1"]);
    assert_eq!(dirty.code, 1, "{}", dirty.stderr);
    let requests = hung.requests.lock().unwrap();
    let prefixes: std::collections::BTreeSet<&str> = requests[seen_before..]
        .iter()
        .map(|r| {
            r.target
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("")
        })
        .collect();
    assert!(
        prefixes.len() == 1 && !prefixes.contains("partitions.json"),
        "the hung CDN was asked for {} purge(s) over {prefixes:?}:\n{}",
        requests.len() - seen_before,
        dirty.stderr
    );
    assert!(
        requests[seen_before..]
            .iter()
            .all(|r| !r.target.contains("changes/head.json")),
        "a feed's head was purged from the held CDN"
    );
}

#[test]
#[ignore = "needs PostGIS and Varnish: run scripts/test.sh"]
fn a_vanished_partitions_changes_feed_leaves_the_edge_with_it() {
    let mut world = World::new();
    let origin = Origin::start(&world.tree);
    let cache = Varnish::keeping(origin.port, "1d");
    world.write_config_with(cache.port, "[tileset.feed]\nretention = 10\n");
    world.run(&["changes", "install"]).assert_success();
    world.run(&["seed"]).assert_success();
    let feed = ["/CN/changes/head.json", "/CN/changes/1.json"];
    for path in feed {
        assert_eq!(cache.get_path(path).status, 200, "{path}");
    }
    // Every CN row goes: the partition and its feed are removed, and the edge must follow.
    world
        .schema
        .execute("DELETE FROM {schema}.places WHERE country = 'CN'");
    let run = world.run(&["seed", "--dirty"]);
    run.assert_success();
    assert!(!world.tree.join("CN").exists(), "the partition stays");
    for path in feed {
        assert_ne!(
            cache.get_path(path).status,
            200,
            "{path} still served by the edge\n{}",
            run.stderr
        );
    }
}
