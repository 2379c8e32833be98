//! `watch` keeps a partitioned tileset fresh: each cycle reads the change log once for the values
//! its changes touched, reseeds only those partitions (new values get their pyramid, vanished
//! ones are emptied and removed) and rewrites the index; untouched partitions are not opened.
//! Contributors are an array column, as in the registry: a facility belongs to several, a few
//! contributors hold most facilities and a long tail holds a few each.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::Value;

use crate::common::env::required_env;
use crate::common::fixture::Fixture;
use crate::common::pg::TestSchema;
use crate::common::run::{
    assert_same_tiles, oar_tiles, read_mbtiles_raw, wait_for_file_clock_past, Run,
};
use crate::common::watcher::{Watcher, PACING};

/// 900 facilities; contributor 1 holds about half, 2 a quarter, 3 an eighth, and 4-40 the tail;
/// every fifth and seventh facility has a second or third contributor.
const FACILITIES: &str = "
    CREATE TABLE {schema}.facilities (id bigint PRIMARY KEY, contributor_ids int[], name text,
                                      pt geometry(Point, 4326) NOT NULL);
    CREATE INDEX ON {schema}.facilities USING gist (pt);
    INSERT INTO {schema}.facilities
    SELECT g,
           ARRAY(SELECT DISTINCT c FROM unnest(ARRAY[
                   CASE WHEN g % 2 = 0 THEN 1 WHEN g % 4 = 1 THEN 2 WHEN g % 8 = 3 THEN 3
                        ELSE 4 + (g * 7919) % 37 END,
                   CASE WHEN (g * 31) % 5 = 0 THEN 4 + (g * 13) % 37 END,
                   CASE WHEN (g * 17) % 7 = 0 THEN 2 END]) c
                 WHERE c IS NOT NULL ORDER BY c),
           'facility ' || g,
           ST_SetSRID(ST_MakePoint(80 + ((g * 37) % 400) / 10.0, 0 + ((g * 53) % 300) / 10.0), 4326)
    FROM generate_series(1, 900) g;";

/// Partitions written as `watched.VALUE.mbtiles` beside `watched.partitions.json`.
const OUTPUT: &str = "watched.mbtiles";

struct World {
    base: Fixture,
}

impl World {
    fn new(schema: TestSchema, extra_layer: &str) -> World {
        let mut schema = schema;
        schema.execute(FACILITIES);
        let changes = schema.companion("cdc");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("watch.toml");
        let text = format!(
            "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\npool_size = 2\n\
             [changes]\nschema = \"{changes}\"\n{PACING}\
             [[tileset]]\nname = \"facilities\"\nmaxzoom = 6\npartition_by = \"contributor_ids\"\n\
             output = \"{OUTPUT}\"\n\
             [[tileset.layer]]\nname = \"facilities\"\ntable = \"{}.facilities\"\n\
             geometry_column = \"pt\"\nattributes = [\"name\", \"contributor_ids\"]\n\
             cluster_maxzoom = 3\n{extra_layer}\n",
            schema.name
        );
        std::fs::write(&config, text).unwrap();
        let world = World {
            base: Fixture {
                schema,
                dir,
                config,
            },
        };
        world.run(&["changes", "install"]).assert_success();
        world.run(&["seed"]).assert_success();
        world
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut full = vec![args[0], "--config", self.base.config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        oar_tiles(Some(&self.base.schema.url), &full)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.base.path(name)
    }

    /// The index beside `output`: value → (path segment, features).
    fn index(&self, output: &str) -> (BTreeMap<String, (String, i64)>, Value) {
        let stem = output.trim_end_matches(".mbtiles");
        let text = std::fs::read_to_string(self.path(&format!("{stem}.partitions.json"))).unwrap();
        let index: Value = serde_json::from_str(&text).unwrap();
        let entries = index["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["value"].as_str().unwrap().to_string(),
                    (
                        p["path"].as_str().unwrap().to_string(),
                        p["features"].as_i64().unwrap(),
                    ),
                )
            })
            .collect();
        (entries, index)
    }

    fn partition_file(&self, output: &str, segment: &str) -> PathBuf {
        let stem = output.trim_end_matches(".mbtiles");
        self.path(&format!("{stem}.{segment}.mbtiles"))
    }

    /// Each partition file's modification time, by value.
    fn modified(&self) -> BTreeMap<String, SystemTime> {
        self.index(OUTPUT)
            .0
            .into_iter()
            .map(|(value, (segment, _))| {
                let file = self.partition_file(OUTPUT, &segment);
                let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
                (value, modified)
            })
            .collect()
    }

    /// The contributors of the rows `ids` hold now.
    fn contributors_of(&mut self, ids: &[i64]) -> BTreeSet<String> {
        let sql = format!(
            "SELECT DISTINCT c::text FROM \"{}\".facilities, unnest(contributor_ids) c WHERE id = ANY($1)",
            self.base.schema.name
        );
        self.base
            .schema
            .client()
            .query(&sql, &[&ids])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Ids of rows holding contributor `value`.
    fn holding(&mut self, value: i32) -> Vec<i64> {
        let sql = format!(
            "SELECT id FROM \"{}\".facilities WHERE $1 = ANY(contributor_ids) ORDER BY id",
            self.base.schema.name
        );
        self.base
            .schema
            .client()
            .query(&sql, &[&value])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Runs `sql` on rows `ids` (bound as `$1`), adding the contributors they held before and
    /// after to `touched`.
    fn change(&mut self, touched: &mut BTreeSet<String>, ids: &[i64], sql: &str) {
        touched.extend(self.contributors_of(ids));
        let sql = sql.replace("{schema}", &format!("\"{}\"", self.base.schema.name));
        self.base.schema.client().execute(&sql, &[&ids]).unwrap();
        touched.extend(self.contributors_of(ids));
    }

    /// A full partitioned seed of the data as it is now, into `reference.mbtiles` and its
    /// partitions, against which the watched ones must hold the same tiles.
    fn assert_equal_to_a_full_seed(&self) {
        let reference = "reference.mbtiles";
        let path = self.path(reference);
        self.run(&["seed", "--output", path.to_str().unwrap()])
            .assert_success();
        let (expected, _) = self.index(reference);
        let (actual, _) = self.index(OUTPUT);
        assert_eq!(expected, actual, "the watched index against a full seed's");
        for (value, (segment, _)) in &expected {
            assert_same_tiles(
                &read_mbtiles_raw(&self.partition_file(reference, segment)),
                &read_mbtiles_raw(&self.partition_file(OUTPUT, segment)),
                &format!("partition {value} against a full seed"),
            );
        }
    }
}

/// Every tenth row costs the server a millisecond, but only in sessions that set `oar.slow`: a
/// watcher's started with [`slow_url`], whose cycles over many partitions then take a while, and
/// not the seeds'.
const SLOW_FILTER: &str = "filter = \"id % 10 <> 0 OR current_setting('oar.slow', true) IS NULL \
                           OR pg_sleep(0.001) IS NOT NULL\"";

/// The world's database URL with `oar.slow` set in every session.
fn slow_url(world: &World) -> String {
    let url = &world.base.schema.url;
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20oar.slow%3D1")
}

/// Whether a partition is being changed in place: it keeps a rollback journal from its first
/// tile to its commit.
fn journals(world: &World) -> bool {
    std::fs::read_dir(world.base.dir.path()).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with("-journal")
    })
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_watched_partitioned_tileset_equals_a_full_seed_and_untouched_partitions_are_never_opened() {
    let mut world = World::new(TestSchema::create("watchparts"), "");
    let (before, index) = world.index(OUTPUT);
    assert!(
        index["watermark"].is_string(),
        "a full seed records the tileset's watermark: {index}"
    );
    assert!(before.len() > 30, "{} partitions", before.len());
    let modified = world.modified();
    // Files written within the file system's timestamp granularity of the seed would look
    // untouched whatever the watcher did.
    wait_for_file_clock_past(world.base.dir.path(), *modified.values().max().unwrap());
    let mut watcher = Watcher::start(&world.base);
    watcher.wait_until("/health 200", |w| w.health() == Some(200));

    let mut touched = BTreeSet::new();
    let mut statements = 0.0;
    // A new facility of a large contributor and of a contributor nobody had: a new partition.
    world.change(
        &mut touched,
        &[5001],
        "INSERT INTO {schema}.facilities SELECT 5001, ARRAY[1, 500], 'new', ST_SetSRID(ST_MakePoint(100, 10), 4326)
         WHERE $1::bigint[] IS NOT NULL",
    );
    statements += 1.0;
    // Each change is applied before the next, so the cycles take them one by one.
    watcher.wait_for_applied(statements);
    // Moves, in one statement.
    let moved: Vec<i64> = vec![11, 13, 27];
    world.change(
        &mut touched,
        &moved,
        "UPDATE {schema}.facilities SET pt = ST_SetSRID(ST_MakePoint(ST_X(pt) + 1.5, ST_Y(pt) - 0.7), 4326)
         WHERE id = ANY($1)",
    );
    statements += 1.0;
    // Each change is applied before the next, so the cycles take them one by one.
    watcher.wait_for_applied(statements);
    // Every facility of a tail contributor deleted: its partition vanishes.
    let tail = world.holding(7);
    assert!(!tail.is_empty());
    world.change(
        &mut touched,
        &tail,
        "DELETE FROM {schema}.facilities WHERE id = ANY($1)",
    );
    statements += 1.0;
    // Each change is applied before the next, so the cycles take them one by one.
    watcher.wait_for_applied(statements);
    // Membership: one facility gains a contributor, and every facility of another tail
    // contributor loses it (that partition vanishes without a row being deleted).
    world.change(
        &mut touched,
        &[15],
        "UPDATE {schema}.facilities SET contributor_ids = contributor_ids || 9 WHERE id = ANY($1)",
    );
    statements += 1.0;
    let leaving = world.holding(12);
    assert!(!leaving.is_empty());
    world.change(
        &mut touched,
        &leaving,
        "UPDATE {schema}.facilities SET contributor_ids = array_remove(contributor_ids, 12) WHERE id = ANY($1)",
    );
    statements += 1.0;
    watcher.wait_for_applied(statements);
    let run = watcher.stop(libc::SIGTERM);
    assert_eq!(run.code, 143, "{}", run.stderr);

    world.assert_equal_to_a_full_seed();
    let (after, _) = world.index(OUTPUT);
    assert!(after.contains_key("500") && !before.contains_key("500"));
    for gone in ["7", "12"] {
        assert!(before.contains_key(gone) && !after.contains_key(gone));
        let file = world.partition_file(OUTPUT, gone);
        assert!(!file.exists(), "{} is left behind", file.display());
    }
    let untouched: Vec<&String> = modified.keys().filter(|v| !touched.contains(*v)).collect();
    assert!(
        untouched.len() > 10,
        "the test must leave most partitions untouched: {touched:?}"
    );
    let now = world.modified();
    for value in untouched {
        assert_eq!(
            modified[value], now[value],
            "partition {value} was rewritten although no change touched it"
        );
    }
    assert!(
        run.stderr.contains("partition(s) rendered"),
        "the cycles say how many partitions they rendered: {}",
        run.stderr
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn sigterm_mid_cycle_of_a_partitioned_tileset_keeps_its_index_and_a_restarted_watcher_catches_up() {
    let mut world = World::new(TestSchema::create("watchpartsterm"), SLOW_FILTER);
    let index_path = world.path("watched.partitions.json");
    let mut watcher = Watcher::start_on(&world.base, &slow_url(&world));
    watcher.wait_until("/health 200", |w| w.health() == Some(200));
    let index_before = std::fs::read(&index_path).unwrap();
    let mut touched = BTreeSet::new();
    let half: Vec<i64> = (1..=900).filter(|id| id % 2 == 1).collect();
    world.change(
        &mut touched,
        &half,
        "UPDATE {schema}.facilities SET pt = ST_SetSRID(ST_MakePoint(ST_X(pt) + 0.3, ST_Y(pt)), 4326)
         WHERE id = ANY($1)",
    );
    watcher.wait_until("a partition's first tiles", |_| journals(&world));
    let run = watcher.stop(libc::SIGTERM);
    assert_eq!(run.code, 143, "{}", run.stderr);
    assert_eq!(
        std::fs::read(&index_path).unwrap(),
        index_before,
        "an interrupted cycle leaves the index (and its watermark) as it was"
    );
    let mut again = Watcher::start(&world.base);
    again.wait_until("/health 200", |w| w.health() == Some(200));
    again.wait_for_applied(1.0);
    drop(again);
    world.assert_equal_to_a_full_seed();
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_partitioned_watcher_catches_up_after_postgres_restarts_mid_cycle() {
    let url = required_env("OAR_TILES_TEST_WATCH_URL");
    let cluster = crate::common::pg::Cluster::from_env();
    let mut world = World::new(TestSchema::create_on(url, "watchpartsdown"), SLOW_FILTER);
    let mut watcher = Watcher::start_on(&world.base, &slow_url(&world));
    watcher.wait_until("/health 200", |w| w.health() == Some(200));
    let mut touched = BTreeSet::new();
    let half: Vec<i64> = (1..=900).filter(|id| id % 2 == 0).collect();
    world.change(
        &mut touched,
        &half,
        "UPDATE {schema}.facilities SET pt = ST_SetSRID(ST_MakePoint(ST_X(pt), ST_Y(pt) + 0.2), 4326)
         WHERE id = ANY($1)",
    );
    watcher.wait_until("a partition's first tiles", |_| journals(&world));
    assert!(cluster.ctl("stop"), "pg_ctlcluster stop");
    watcher.wait_until("/health 503 with the server down", |w| {
        w.health() == Some(503)
    });
    assert!(cluster.ctl("start"), "pg_ctlcluster start");
    world.base.schema.reconnect();
    let some = world.holding(5);
    world.change(
        &mut touched,
        &some,
        "UPDATE {schema}.facilities SET contributor_ids = contributor_ids || 600 WHERE id = ANY($1)",
    );
    // The interrupted cycle applied nothing: the catch-up applies both changes.
    watcher.wait_for_applied(2.0);
    watcher.wait_until("/health 200 after the restart", |w| w.health() == Some(200));
    drop(watcher);
    world.assert_equal_to_a_full_seed();
    assert!(world.index(OUTPUT).0.contains_key("600"));
}
