//! Partitions' row sets: each session copies a partition's rows into a temporary table and its
//! tiles read them there. Tiles must come out byte for byte as when read from the table filtered
//! by the value, which sessions behind a transaction pooler still do, whatever the layers hold:
//! points clustered with a breakdown, lines and polygons (large ones shared through a batch),
//! a `geography` column, a filter, and attributes of several types.

use std::path::Path;

use crate::common::pg::TestSchema;
use crate::common::run::{assert_same_tiles, oar_tiles_with, read_mbtiles_raw, Run};

/// Three layers over tables sharing an integer-array partition column `owners`: points (with a
/// filter), shapes (small polygons, long lines and a few polygons large enough to be shared
/// through a statement's batch) and sites, a `geography` column.
const TABLES: &str = "
    CREATE TABLE {schema}.points (id bigint PRIMARY KEY, owners int[], kind text, score numeric(6,2),
                                  hidden boolean NOT NULL, pt geometry(Point, 4326) NOT NULL);
    CREATE INDEX ON {schema}.points USING gist (pt);
    CREATE INDEX ON {schema}.points USING gin (owners);
    INSERT INTO {schema}.points
    SELECT g, ARRAY(SELECT o FROM unnest(ARRAY[1, 2, 3, 40]) o WHERE (g >> (o % 4)) & 1 = 1),
           (ARRAY['knit', 'woven', NULL])[1 + g % 3], (g % 97) / 4.0, g % 11 = 0,
           ST_SetSRID(ST_MakePoint(-20 + ((g * 37) % 600) / 10.0, -30 + ((g * 53) % 500) / 10.0), 4326)
    FROM generate_series(1, 900) g;

    CREATE TABLE {schema}.shapes (id bigint PRIMARY KEY, owners int[], label text,
                                  geom geometry(Geometry, 3857) NOT NULL);
    CREATE INDEX ON {schema}.shapes USING gist (geom);
    INSERT INTO {schema}.shapes
    SELECT g, ARRAY[1 + g % 3],  'shape ' || g,
           CASE g % 3
             WHEN 0 THEN ST_Buffer(ST_Transform(ST_SetSRID(ST_MakePoint(g % 40, g % 30), 4326), 3857),
                                   20000 + 500 * g, 2)
             WHEN 1 THEN ST_Transform(ST_SetSRID(ST_MakeLine(ST_MakePoint(-10 + g % 30, g % 20),
                                                              ST_MakePoint(10 + g % 25, 5 + g % 15)), 4326), 3857)
             ELSE ST_Transform(ST_SetSRID(ST_Buffer(ST_MakePoint(g % 35, g % 25), 4 + g % 3, 200), 4326), 3857)
           END
    FROM generate_series(1, 60) g;

    CREATE TABLE {schema}.sites (id text PRIMARY KEY, owners int[], loc geography(Point, 4326) NOT NULL);
    CREATE INDEX ON {schema}.sites USING gist ((loc::geometry));
    INSERT INTO {schema}.sites
    SELECT 's' || g, ARRAY[1 + g % 2, 3],
           ST_SetSRID(ST_MakePoint(-60 + (g * 13) % 120, -40 + (g * 7) % 80), 4326)::geography
    FROM generate_series(1, 120) g;";

fn config(schema: &TestSchema, dir: &Path, name: &str, database: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let output = dir.join(format!("{name}.mbtiles"));
    let text = format!(
        "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\npool_size = 2\n{database}\n\
         [[tileset]]\nname = \"owned\"\nmaxzoom = 7\npartition_by = \"owners\"\noutput = \"{}\"\n\
         [[tileset.layer]]\nname = \"points\"\ntable = \"{s}.points\"\ngeometry_column = \"pt\"\n\
         attributes = [\"kind\", \"score\"]\nfilter = \"NOT hidden\"\n\
         cluster_maxzoom = 3\ncluster_breakdown = \"kind\"\n\
         [[tileset.layer]]\nname = \"shapes\"\ntable = \"{s}.shapes\"\ngeometry_column = \"geom\"\n\
         srid = 3857\nattributes = [\"label\"]\n\
         [[tileset.layer]]\nname = \"sites\"\ntable = \"{s}.sites\"\ngeometry_column = \"loc\"\n\
         id_column = \"id\"\n",
        output.display(),
        s = schema.name
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A partitioned seed of `config` with the tile statements logged.
fn seed(schema: &TestSchema, config: &Path) -> Run {
    let run = oar_tiles_with(
        Some(&schema.url),
        &["seed", "--config", config.to_str().unwrap()],
        &[("RUST_LOG", "oar_tiles=debug")],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    run
}

#[test]
#[ignore = "needs PostgreSQL + PostGIS (OAR_TILES_TEST_DATABASE_URL)"]
fn partitions_read_from_row_sets_equal_partitions_read_from_the_table() {
    let mut schema = TestSchema::create("rowsets");
    schema.execute(TABLES);
    let dir = tempfile::tempdir().unwrap();

    let copied = seed(&schema, &config(&schema, dir.path(), "copied", ""));
    // Behind a transaction pooler a session keeps no temporary table from one statement to the
    // next: tiles read the table, filtered by the value.
    let direct = config(&schema, dir.path(), "direct", "pool_mode = \"transaction\"");
    let filtered = seed(&schema, &direct);

    let read_rows_from = |run: &Run| run.stderr.contains("FROM pg_temp.");
    assert!(
        read_rows_from(&copied),
        "the tile statements did not read row sets:\n{}",
        copied.stderr
    );
    assert!(
        !read_rows_from(&filtered),
        "behind a transaction pooler the tile statements read row sets:\n{}",
        filtered.stderr
    );

    let values = ["1", "2", "3", "40"];
    for value in values {
        let copied = read_mbtiles_raw(&dir.path().join(format!("copied.{value}.mbtiles")));
        let filtered = read_mbtiles_raw(&dir.path().join(format!("direct.{value}.mbtiles")));
        assert!(!copied.is_empty(), "partition {value} holds no tile");
        assert_same_tiles(&filtered, &copied, &format!("partition {value}"));
    }
    // The sessions that copied rows keep their tables to themselves: nothing is left behind.
    let leftover: i64 = schema
        .client()
        .query_one(
            "SELECT count(*) FROM pg_class \
             WHERE relname LIKE '\\_\\_oar\\_rows%' AND relpersistence <> 't'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(leftover, 0);
}
