//! A partition holds exactly the rows whose column holds its value, whatever the column's type:
//! `character(n)` (which pads), `varchar(n)`, `text`, integers, `numeric(p,s)`, `uuid`, `date`, a
//! domain, an enum, and arrays of each, with values that carry trailing spaces, quotes, `/`, `..`
//! and non-ASCII text. Each partition is compared tile for tile with a whole tileset filtered by
//! its value as text, after a full seed, a `seed --dirty` whose changes an application made under
//! another `DateStyle`, and a `watch`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::fixture::Fixture;
use crate::common::pg::TestSchema;
use crate::common::run::{assert_same_tiles, oar_tiles, read_mbtiles_raw, Run};
use crate::common::watcher::{Watcher, PACING};

/// Per type: its SQL type (`{schema}` for the test's own types) and three values as SQL
/// literals; a fourth row in five holds '' (where the type has it) and the fifth NULL.
const TYPES: &[(&str, &str, [&str; 3])] = &[
    ("char", "character(2)", ["'CN'", "'US'", "'D '"]),
    ("varchar", "varchar(12)", ["'ab '", "'O''Hara'", "'a/b'"]),
    ("text", "text", ["'..'", "'Zürich'", "'東京 '"]),
    ("int", "integer", ["7", "-3", "2147483647"]),
    ("bigint", "bigint", ["9007199254740993", "-1", "0"]),
    ("numeric", "numeric(8,2)", ["1.5", "-2", "1000"]),
    (
        "uuid",
        "uuid",
        [
            "'0b7d1a8e-1f2c-4a52-9d3e-5c6f7a8b9c0d'",
            "'00000000-0000-0000-0000-000000000000'",
            "'ffffffff-ffff-4fff-bfff-ffffffffffff'",
        ],
    ),
    (
        "date",
        "date",
        ["'2024-01-02'", "'1999-12-31'", "'0044-03-15 BC'"],
    ),
    ("domain", "{schema}.code", ["'x y'", "'a''b'", "'../c'"]),
    (
        "enum",
        "{schema}.tier",
        ["'gold'", "'silver'", "'bronze z'"],
    ),
];

/// Whether the type has an empty value ('' belongs to no partition).
fn has_empty(sql_type: &str) -> bool {
    ["character", "varchar", "text", "{schema}.code"]
        .iter()
        .any(|t| sql_type.starts_with(t))
}

const ZOOMS: &str = "0-5";

fn table_sql() -> String {
    let mut columns = Vec::new();
    let mut values = Vec::new();
    for (name, sql_type, literals) in TYPES {
        columns.push(format!("c_{name} {sql_type}, a_{name} {sql_type}[]"));
        let pick = |shift: &str| {
            let empty = if has_empty(sql_type) { "''" } else { "NULL" };
            format!(
                "(ARRAY[{}, {}, {}, {empty}, NULL]::{sql_type}[])[1 + (g{shift}) % 5]",
                literals[0], literals[1], literals[2]
            )
        };
        values.push(pick(""));
        // Two elements a row (one may be NULL); every seventh row an empty array.
        values.push(format!(
            "CASE WHEN g % 7 = 0 THEN '{{}}'::{sql_type}[] ELSE ARRAY[{}, {}] END",
            pick(" * 3"),
            pick(" + 1")
        ));
    }
    format!(
        "CREATE TYPE {{schema}}.tier AS ENUM ('gold', 'silver', 'bronze z');
         CREATE DOMAIN {{schema}}.code AS text CHECK (VALUE <> 'forbidden');
         CREATE TABLE {{schema}}.typed (id bigint PRIMARY KEY, name text,
                                        pt geometry(Point, 4326) NOT NULL, {});
         CREATE INDEX ON {{schema}}.typed USING gist (pt);
         CREATE INDEX ON {{schema}}.typed (c_char);
         CREATE INDEX ON {{schema}}.typed USING gin (a_char);
         INSERT INTO {{schema}}.typed
         SELECT g, 'place ' || g,
                ST_SetSRID(ST_MakePoint(-20 + ((g * 37) % 400) / 10.0, 30 + ((g * 53) % 200) / 10.0), 4326),
                {}
         FROM generate_series(1, 300) g;",
        columns.join(", "),
        values.join(",\n                ")
    )
}

/// Every column the tests partition by.
fn columns() -> Vec<String> {
    TYPES
        .iter()
        .flat_map(|(name, _, _)| [format!("c_{name}"), format!("a_{name}")])
        .collect()
}

struct World {
    base: Fixture,
    changes: String,
}

impl World {
    fn new() -> World {
        let mut schema = TestSchema::create("parttypes");
        schema.execute(&table_sql());
        let changes = schema.companion("cdc");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("partitioned.toml");
        let world = World {
            base: Fixture {
                schema,
                dir,
                config: config.clone(),
            },
            changes,
        };
        let tilesets: String = columns()
            .iter()
            .map(|column| {
                let output = world.output(column);
                world.tileset(
                    &format!("p_{column}"),
                    &format!(
                        "partition_by = \"{column}\"\noutput = {}",
                        toml_string(output.to_str().unwrap())
                    ),
                    None,
                )
            })
            .collect();
        let text = world.header() + &tilesets;
        std::fs::write(&config, text).unwrap();
        world
    }

    fn header(&self) -> String {
        format!(
            "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\npool_size = 2\n\
             [changes]\nschema = \"{}\"\n{PACING}",
            self.changes
        )
    }

    /// One tileset over `typed`, clustered up to zoom 2, with `extra` tileset keys and an optional
    /// layer filter.
    fn tileset(&self, name: &str, extra: &str, filter: Option<&str>) -> String {
        let filter = filter
            .map(|f| format!("filter = {}\n", toml_string(f)))
            .unwrap_or_default();
        format!(
            "[[tileset]]\nname = \"{name}\"\nminzoom = 0\nmaxzoom = 5\n{extra}\n\
             [[tileset.layer]]\nname = \"typed\"\ntable = \"{}.typed\"\ngeometry_column = \"pt\"\n\
             attributes = [\"name\"]\ncluster_maxzoom = 2\n{filter}\n",
            self.base.schema.name
        )
    }

    fn output(&self, column: &str) -> PathBuf {
        self.base.path(&format!("{column}.mbtiles"))
    }

    fn run(&self, config: &Path, args: &[&str]) -> Run {
        let mut full = vec![args[0], "--config", config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        oar_tiles(Some(&self.base.schema.url), &full)
    }

    /// `value -> rows` of a column now, its values as text (an array's elements).
    fn values(&mut self, column: &str) -> BTreeMap<String, i64> {
        let value = if column.starts_with("a_") {
            format!("unnest({column})::text")
        } else {
            format!("{column}::text")
        };
        let sql = format!(
            "SET DateStyle = 'ISO, YMD';
             SELECT v, count(*) FROM (SELECT {value} AS v FROM \"{}\".typed) s
             WHERE v IS NOT NULL AND v <> '' GROUP BY v",
            self.base.schema.name
        );
        let client = self.base.schema.client();
        let mut found = BTreeMap::new();
        for message in client.simple_query(&sql).unwrap() {
            if let postgres::SimpleQueryMessage::Row(row) = message {
                found.insert(
                    row.get(0).unwrap().to_string(),
                    row.get(1).unwrap().parse().unwrap(),
                );
            }
        }
        found
    }

    /// Each partitioned tileset's index against the rows, and each partition against a whole
    /// tileset filtered by its value as text, all references seeded in one run.
    fn assert_partitions_exact(&mut self, round: &str) {
        let mut expected = Vec::new();
        let mut references = self.header();
        for column in columns() {
            let values = self.values(&column);
            assert!(values.len() >= 3, "{column}: {values:?}");
            for (i, (value, rows)) in values.into_iter().enumerate() {
                let holds = if column.starts_with("a_") {
                    format!("{} = ANY({column}::text[])", literal(&value))
                } else {
                    format!("{column}::text = {}", literal(&value))
                };
                let output = self.base.path(&format!("{round}-{column}-{i}.mbtiles"));
                references.push_str(&self.tileset(
                    &format!("r_{column}_{i}"),
                    &format!("output = {}", toml_string(output.to_str().unwrap())),
                    Some(&holds),
                ));
                expected.push((column.clone(), value, rows, output));
            }
        }
        let config = self.base.path(&format!("{round}-references.toml"));
        std::fs::write(&config, references).unwrap();
        self.run(&config, &["seed", "--zoom", ZOOMS])
            .assert_success();
        for (column, value, rows, reference) in expected {
            let index = self.index(&column);
            let entry = index["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["value"] == value.as_str())
                .unwrap_or_else(|| panic!("{round}: {column} = {value:?} is not indexed: {index}"));
            assert_eq!(entry["features"], rows, "{round}: {column} = {value:?}");
            let tiles = read_mbtiles_raw(&reference);
            assert!(!tiles.is_empty(), "{round}: {column} = {value:?} has tiles");
            let segment = entry["path"].as_str().unwrap();
            let partition = self.base.path(&format!("{column}.{segment}.mbtiles"));
            assert_same_tiles(
                &tiles,
                &read_mbtiles_raw(&partition),
                &format!("{round}: partition {column} = {value:?}"),
            );
        }
        // Nothing else: '' and NULL belong to no partition.
        for column in columns() {
            let listed = self.index(&column)["partitions"].as_array().unwrap().len();
            assert_eq!(listed, self.values(&column).len(), "{round}: {column}");
        }
    }

    fn index(&self, column: &str) -> Value {
        let path = self.base.path(&format!("{column}.partitions.json"));
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    /// Runs `sql` as an application would, in a session whose `DateStyle`, `TimeZone` and
    /// `extra_float_digits` differ from the tool's.
    fn application(&mut self, sql: &str) {
        self.base.schema.execute(&format!(
            "SET DateStyle = 'SQL, DMY'; SET TimeZone = 'Asia/Kolkata'; SET extra_float_digits = -3;
             {sql}
             RESET DateStyle; RESET TimeZone; RESET extra_float_digits;"
        ));
    }
}

fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Moves rows between values of every column, deletes some and inserts others.
const CHANGES: &str = "
    UPDATE {schema}.typed t SET c_char = 'US', c_date = '31/12/1999', a_char = ARRAY['US', 'CN']::character(2)[],
                                a_date = ARRAY['02/01/2024'::date], c_numeric = 1000, a_numeric = '{-2.00}',
                                c_text = 'Zürich', c_enum = 'silver', c_varchar = 'O''Hara', a_uuid = '{}'
    WHERE id % 11 = 3;
    DELETE FROM {schema}.typed WHERE id % 13 = 5;
    INSERT INTO {schema}.typed (id, name, pt, c_char, c_date, a_date, c_domain, a_enum, c_int, a_bigint)
    SELECT 1000 + g, 'new ' || g, ST_SetSRID(ST_MakePoint(-5 + g, 40 + g / 2.0), 4326),
           'D', '15/03/0044 BC', ARRAY['31/12/1999'::date], '../c', '{gold, \"bronze z\"}', 7, '{0}'
    FROM generate_series(1, 6) g;";

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn partitions_of_every_column_type_equal_a_filtered_tileset_after_seed_reseed_and_watch() {
    let mut world = World::new();
    let config = world.base.config.clone();
    world.run(&config, &["changes", "install"]).assert_success();
    world
        .run(&config, &["seed", "--zoom", ZOOMS])
        .assert_success();
    world.assert_partitions_exact("seed");

    // An application with other session settings changes rows of every partition column.
    world.application(CHANGES);
    world
        .run(&config, &["seed", "--zoom", ZOOMS, "--dirty"])
        .assert_success();
    world.assert_partitions_exact("dirty");

    let mut watcher = Watcher::start(&world.base);
    watcher.wait_until("/health 200", |w| w.health() == Some(200));
    world.application(
        "UPDATE {schema}.typed SET c_char = 'CN', a_char = '{US}', c_date = '01/02/2024 BC',
                                   c_bigint = -1, a_domain = '{x y}', c_uuid = '00000000-0000-0000-0000-000000000000'
         WHERE id % 17 = 2;",
    );
    // The DELETE comes once c_char's tileset applied the UPDATE, so it is read by a later cycle.
    watcher.wait_until("c_char's tileset applied the UPDATE", |w| {
        w.metrics()
            .with("oar_tiles_changes_applied_total", "c_char")
            >= 1.0
    });
    world.application("DELETE FROM {schema}.typed WHERE c_char = 'D' AND id < 1003;");
    // Both statements change c_char's values, so its own tileset must have applied both: the sum
    // over every column's tilesets reaches 2 with the UPDATE alone, before the DELETE is read.
    watcher.wait_until("c_char's tileset applied both changes", |w| {
        let metrics = w.metrics();
        metrics.with("oar_tiles_changes_applied_total", "c_char") >= 2.0
            && metrics.sum("oar_tiles_pending_changes") == 0.0
    });
    let run = watcher.stop(libc::SIGTERM);
    assert_eq!(run.code, 143, "{}", run.stderr);
    world.assert_partitions_exact("watch");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_partition_that_renders_nothing_while_rows_hold_its_value_fails_the_run() {
    // A filter that hides CN's rows from the tile statements (whose text calls ST_AsMVT) and from
    // the copy into a partition's row set (an INSERT) but not from the other queries: the
    // partition comes out empty, as a wrong cast made it before.
    let mut schema = TestSchema::create("partempty");
    schema.execute(
        "CREATE TABLE {schema}.places (id bigint PRIMARY KEY, country character(2),
                                       pt geometry(Point, 4326) NOT NULL);
         INSERT INTO {schema}.places
         SELECT g, (ARRAY['CN', 'US'])[1 + g % 2], ST_SetSRID(ST_MakePoint(g, g / 2.0), 4326)
         FROM generate_series(1, 40) g;",
    );
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("places.mbtiles");
    let config = dir.path().join("empty.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\n\
             [[tileset]]\nname = \"places\"\nmaxzoom = 4\npartition_by = \"country\"\noutput = {}\n\
             [[tileset.layer]]\nname = \"places\"\ntable = \"{}.places\"\ngeometry_column = \"pt\"\n\
             filter = \"country <> 'CN' OR (current_query() NOT LIKE '%' || 'ST_As' || 'MVT(' || '%' \
             AND current_query() NOT LIKE '%' || 'INSERT' || ' INTO' || '%')\"\n",
            toml_string(output.to_str().unwrap()),
            schema.name
        ),
    )
    .unwrap();
    let run = oar_tiles(
        Some(&schema.url),
        &["seed", "--config", config.to_str().unwrap()],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("partition \"CN\" of tileset `places` holds no tile")
            && run
                .stderr
                .contains("20 row(s) of layer `places` hold country = \"CN\""),
        "{}",
        run.stderr
    );
    // The other partition and the index are written all the same.
    assert!(dir.path().join("places.US.mbtiles").is_file());
    assert!(dir.path().join("places.partitions.json").is_file());
}
