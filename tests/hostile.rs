//! Hostile conditions around the outputs and the database: a file a killed SQLite writer left
//! behind, an MBTiles file without a unique tile index, sessions with unusual string settings,
//! names PostgreSQL would cut, tile lists beyond the zooms and relative tree paths.

use std::path::Path;

use rusqlite::Connection;

use crate::common::fixture::Fixture;
use crate::common::journal::{companion, leave_a_killed_writers_journal};
use crate::common::pg::{hub_with_scatter, Point};
use crate::common::run::{
    assert_same_tiles, oar_tiles, oar_tiles_command, oar_tiles_with, read_mbtiles_raw, run_from,
    single_layer_config, Run,
};

const ZOOMS: &str = "0-6";

fn points() -> Vec<Point> {
    hub_with_scatter(400, 32, 3, [5.8, 45.7, 6.4, 46.3])
}

fn fixture(label: &str) -> Fixture {
    Fixture::new(label, &points(), "hostile.toml", |schema| {
        single_layer_config(&schema.name, "sites", "", "")
    })
}

fn seed(fixture: &Fixture, output: &Path, extra: &[&str]) -> Run {
    let run = oar_tiles(
        Some(&fixture.schema.url),
        &fixture.seed_args(output.to_str().unwrap(), ZOOMS, extra),
    );
    run.assert_success();
    run
}

/// Whether SQLite reads the file as a sound database, opened read-only as a tile server would.
fn integrity(path: &Path) -> Result<String, String> {
    let reader = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| e.to_string())?;
    reader
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_seed_over_a_file_a_killed_writer_left_rolls_its_journal_back_and_leaves_none() {
    let setup = fixture("hot_journal");
    let output = setup.path("out.mbtiles");
    seed(&setup, &output, &[]);
    let clean = read_mbtiles_raw(&output);

    // A full seed builds a copy of the file and moves it into place.
    leave_a_killed_writers_journal(&output);
    seed(&setup, &output, &[]);
    assert!(
        !companion(&output, "-journal").exists(),
        "the killed writer's journal is left beside the new file"
    );
    assert_eq!(integrity(&output).as_deref(), Ok("ok"));
    assert_same_tiles(&clean, &read_mbtiles_raw(&output), "after a full seed");

    // A tile list changes the file in place; SQLite itself rolls the journal back first.
    leave_a_killed_writers_journal(&output);
    let list = setup.path("tiles.txt");
    std::fs::write(&list, "0/0/0\n").unwrap();
    seed(&setup, &output, &["--tiles-from", list.to_str().unwrap()]);
    assert_eq!(integrity(&output).as_deref(), Ok("ok"));
    assert_same_tiles(&clean, &read_mbtiles_raw(&output), "after a tile list");
}

/// Rows of `tiles` beyond one per tile.
fn duplicate_rows(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT zoom_level, tile_column, tile_row FROM tiles)) FROM tiles",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn an_mbtiles_file_without_a_unique_tile_index_ends_with_each_tile_once() {
    let setup = fixture("tile_index");
    let output = setup.path("out.mbtiles");
    seed(&setup, &output, &[]);
    let clean = read_mbtiles_raw(&output);
    let without_index = || {
        Connection::open(&output)
            .unwrap()
            .execute_batch(
                "DROP INDEX tile_index;
                 INSERT INTO tiles SELECT * FROM tiles WHERE zoom_level <= 2;",
            )
            .unwrap();
        assert!(duplicate_rows(&output) > 0);
    };

    without_index();
    seed(&setup, &output, &[]);
    assert_eq!(duplicate_rows(&output), 0, "after a full seed");
    assert_same_tiles(&clean, &read_mbtiles_raw(&output), "after a full seed");

    without_index();
    let list = setup.path("tiles.txt");
    std::fs::write(&list, "0/0/0\n1/1/0\n").unwrap();
    seed(&setup, &output, &["--tiles-from", list.to_str().unwrap()]);
    assert_eq!(duplicate_rows(&output), 0, "after a tile list");
    // The index is back, so the next writer cannot add a second copy either.
    Connection::open(&output)
        .unwrap()
        .execute_batch("INSERT OR REPLACE INTO tiles SELECT * FROM tiles WHERE zoom_level = 0;")
        .unwrap();
    assert_eq!(duplicate_rows(&output), 0, "the unique index is there");

    // A `tiles` view (the deduplicated layout) cannot be written: a clear error, the file unchanged.
    let view = setup.path("view.mbtiles");
    Connection::open(&view)
        .unwrap()
        .execute_batch(
            "CREATE TABLE metadata (name TEXT, value TEXT);
             CREATE TABLE map (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_id TEXT);
             CREATE TABLE images (tile_id TEXT, tile_data BLOB);
             CREATE VIEW tiles AS SELECT zoom_level, tile_column, tile_row, tile_data
                 FROM map JOIN images USING (tile_id);",
        )
        .unwrap();
    let before = std::fs::read(&view).unwrap();
    let refused = oar_tiles(
        Some(&setup.schema.url),
        &setup.seed_args(view.to_str().unwrap(), ZOOMS, &[]),
    );
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("view.mbtiles") && refused.stderr.contains("is a view"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read(&view).unwrap(), before);
}

/// A source partitioned by a text column, with change capture in `changes`.
fn partitioned_fixture(label: &str, changes: impl FnOnce(&str) -> String) -> Fixture {
    Fixture::new(label, &points(), "hostile.toml", |schema| {
        schema.execute("ALTER TABLE {schema}.sites ADD COLUMN country text DEFAULT 'CH'");
        let changes = changes(&schema.companion("cdc"));
        format!(
            "[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(&schema.name, "sites", "partition_by = \"country\"", "")
        )
    })
}

/// An INSERT of facility `id` as the application sends it, in a session with `options`.
fn application_insert(fixture: &Fixture, id: i64, options: &str) -> Result<u64, String> {
    let url = &fixture.schema.url;
    let separator = if url.contains('?') { '&' } else { '?' };
    let options = options.replace(' ', "%20").replace('=', "%3D");
    let url = format!("{url}{separator}options={options}");
    let mut client =
        postgres::Client::connect(&url, postgres::NoTls).map_err(|e| format!("connect: {e}"))?;
    client
        .execute(
            &format!(
                "INSERT INTO \"{}\".sites (site_id, label, kind, score, pt)
                 VALUES ($1, 'new', 'mill', 1, ST_SetSRID(ST_MakePoint(6, 46), 4326))",
                fixture.schema.name
            ),
            &[&id],
        )
        .map_err(|e| format!("{e:?}"))
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn change_capture_installed_without_standard_conforming_strings_keeps_the_applications_writes_working(
) {
    let setup = partitioned_fixture("nonstandard_strings", str::to_string);
    let off = "-c standard_conforming_strings=off";
    let install = oar_tiles_with(
        Some(&setup.schema.url),
        &[
            "changes",
            "install",
            "--config",
            setup.config.to_str().unwrap(),
        ],
        &[("PGOPTIONS", off)],
    );
    install.assert_success();
    assert_eq!(application_insert(&setup, 100_001, off), Ok(1));
    assert_eq!(application_insert(&setup, 100_002, ""), Ok(1));
    // The change log holds the partition value as text, not split into characters.
    let mut schema = setup.schema;
    let changes = format!("{}_cdc", schema.name);
    let logged: Vec<String> = schema
        .client()
        .query(
            &format!("SELECT partitions::text FROM \"{changes}\".change_log WHERE partitions IS NOT NULL"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert!(logged.iter().all(|p| p.contains("\"CH\"")), "{logged:?}");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_change_schema_postgresql_would_cut_is_refused_before_any_ddl() {
    let long = |base: &str| format!("{base}_{}", "x".repeat(70usize.saturating_sub(base.len())));
    let setup = partitioned_fixture("long_schema", long);
    let install = oar_tiles(
        Some(&setup.schema.url),
        &[
            "changes",
            "install",
            "--config",
            setup.config.to_str().unwrap(),
        ],
    );
    assert_eq!(install.code, 2, "{}", install.stderr);
    assert!(
        install.stderr.contains("hostile.toml") && install.stderr.contains("63 bytes"),
        "{}",
        install.stderr
    );
    assert_eq!(application_insert(&setup, 100_001, ""), Ok(1));
    let mut schema = setup.schema;
    assert_eq!(
        triggers_on(&mut schema, "sites"),
        0,
        "no trigger was installed"
    );
}

/// How many triggers the test schema's `table` has.
fn triggers_on(schema: &mut crate::common::pg::TestSchema, table: &str) -> i64 {
    let table = format!("\"{}\".{table}", schema.name);
    schema
        .client()
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1)",
            &[&table],
        )
        .unwrap()
        .get(0)
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn listed_tiles_outside_the_tilesets_zooms_are_named_in_a_warning() {
    let setup = fixture("list_zooms");
    let output = setup.path("out.mbtiles");
    seed(&setup, &output, &[]);
    let list = setup.path("tiles.txt");
    std::fs::write(&list, "0/0/0\n9/266/180\n12/2130/1445\n").unwrap();
    let run = seed(&setup, &output, &["--tiles-from", list.to_str().unwrap()]);
    assert!(
        run.stderr.contains("2 listed tile(s)") && run.stderr.contains("9/266/180"),
        "{}",
        run.stderr
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_partitioned_tree_given_as_a_bare_relative_path_is_seeded_in_the_working_directory() {
    let setup = partitioned_fixture("relative_tree", str::to_string);
    let mut command = oar_tiles_command(
        Some(&setup.schema.url),
        &setup.seed_args("dir:out", ZOOMS, &[]),
        &[],
    );
    let run = run_from(command.current_dir(setup.dir.path()).output().unwrap());
    run.assert_success();
    assert!(
        setup.path("out").join("CH").join("0").join("0").is_dir(),
        "the partition CH's tree is under the working directory"
    );
}

/// The layer of [`attributes_fixture`]'s `things` table, rendering `attributes`.
/// Rows in the change log of the change schema `changes`.
fn log_rows(schema: &mut crate::common::pg::TestSchema, changes: &str) -> i64 {
    schema
        .client()
        .query_one(
            &format!("SELECT count(*) FROM \"{changes}\".change_log"),
            &[],
        )
        .unwrap()
        .get(0)
}

fn things_config(schema: &str, changes: &str, attributes: &str) -> String {
    format!(
        "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\npool_size = 2\n\
         [changes]\nschema = \"{changes}\"\n\
         [[tileset]]\nname = \"things\"\noutput = \"things.mbtiles\"\nmaxzoom = 6\n\
         [[tileset.layer]]\nname = \"things\"\ntable = \"{schema}.things\"\nattributes = [{attributes}]\n"
    )
}

/// Rendered columns of types without an equality operator (`json`, `point`, `xml`, a domain over
/// `json`, an array of `point`) and a config naming a column the table lacks: change capture must
/// never make the application's writes fail. The first are compared by their text forms (every
/// UPDATE used to fail with `operator does not exist: json = json`); the second is refused at
/// install, naming the column (every UPDATE used to fail with `record "o" has no field`).
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn change_capture_never_fails_the_applications_writes_over_column_types_or_names() {
    let mut changes = String::new();
    let setup = Fixture::new("capture_types", &[], "things.toml", |schema| {
        schema.execute(
            "CREATE DOMAIN {schema}.props AS json;
             CREATE TABLE {schema}.things (id int PRIMARY KEY, doc json, spot point, note xml,
                                           extra {schema}.props, spots point[],
                                           geom geometry(Point, 4326));
             CREATE INDEX ON {schema}.things USING gist (geom);
             INSERT INTO {schema}.things
                 SELECT i, '{\"a\": 1}', point(i, i), '<a/>', '{}', ARRAY[point(1, 2)],
                        ST_SetSRID(ST_MakePoint(i * 0.5, i * 0.3), 4326)
                 FROM generate_series(1, 20) i;",
        );
        changes = schema.companion("cdc");
        things_config(
            &schema.name,
            &changes,
            "\"doc\", \"spot\", \"note\", \"extra\", \"spots\"",
        )
    });
    let config = setup.config.to_str().unwrap().to_string();
    let url = setup.schema.url.clone();
    oar_tiles(Some(&url), &["changes", "install", "--config", &config]).assert_success();
    let output = setup.path("things.mbtiles");
    let output = output.to_str().unwrap();
    oar_tiles(
        Some(&url),
        &["seed", "--config", &config, "--output", output],
    )
    .assert_success();
    let mut schema = setup.schema;
    // One row and many, each column alone, and the geometry alone.
    for update in [
        "UPDATE {schema}.things SET doc = '{\"a\": 2}' WHERE id = 1",
        "UPDATE {schema}.things SET spot = point(0, 9) WHERE id <= 5",
        "UPDATE {schema}.things SET note = '<b/>' WHERE id = 2",
        "UPDATE {schema}.things SET extra = '{\"b\": 1}' WHERE id > 15",
        "UPDATE {schema}.things SET spots = ARRAY[point(3, 4)] WHERE id = 3",
        "UPDATE {schema}.things SET geom = ST_Translate(geom, 1, 1) WHERE id IN (6, 7)",
        "UPDATE {schema}.things SET doc = doc, spot = spot WHERE id <= 10",
    ] {
        let sql = update.replace("{schema}", &format!("\"{}\"", schema.name));
        if let Err(e) = schema.client().batch_execute(&sql) {
            panic!("the application's `{update}` failed under change capture: {e}");
        }
    }
    let logged = log_rows(&mut schema, &changes);
    assert_eq!(
        logged, 6,
        "one log row per statement that changed a rendered column"
    );
    oar_tiles(
        Some(&url),
        &["seed", "--config", &config, "--output", output, "--dirty"],
    )
    .assert_success();
    let full = setup.dir.path().join("full.mbtiles");
    let full = full.to_str().unwrap();
    oar_tiles(Some(&url), &["seed", "--config", &config, "--output", full]).assert_success();
    assert_same_tiles(
        &read_mbtiles_raw(Path::new(full)),
        &read_mbtiles_raw(Path::new(output)),
        "the reseed against a full seed",
    );

    // A column the table lacks: refused before any trigger is made, naming it.
    oar_tiles(Some(&url), &["changes", "uninstall", "--config", &config]).assert_success();
    std::fs::write(
        &setup.config,
        things_config(&schema.name, &changes, "\"doc\", \"colour\""),
    )
    .unwrap();
    let install = oar_tiles(Some(&url), &["changes", "install", "--config", &config]);
    assert_eq!(install.code, 2, "{}", install.stderr);
    assert!(install.stderr.contains("`colour`"), "{}", install.stderr);
    assert_eq!(
        triggers_on(&mut schema, "things"),
        0,
        "no trigger was installed"
    );
    schema.execute("UPDATE {schema}.things SET doc = '{\"c\": 3}' WHERE id = 4");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_bulk_write_under_change_capture_leaves_the_applications_jit_setting_as_it_chose() {
    let mut changes = String::new();
    let setup = Fixture::new("capture_jit", &[], "things.toml", |schema| {
        schema.execute(
            "CREATE TABLE {schema}.things (id int PRIMARY KEY, doc text,
                                           geom geometry(Point, 4326));
             CREATE INDEX ON {schema}.things USING gist (geom);
             INSERT INTO {schema}.things
                 SELECT i, 'a', ST_SetSRID(ST_MakePoint(i * 0.5, i * 0.3), 4326)
                 FROM generate_series(1, 20) i;",
        );
        changes = schema.companion("cdc");
        things_config(&schema.name, &changes, "\"doc\"")
    });
    let config = setup.config.to_str().unwrap().to_string();
    oar_tiles(
        Some(&setup.schema.url),
        &["changes", "install", "--config", &config],
    )
    .assert_success();
    let mut schema = setup.schema;
    let table = format!("\"{}\".things", schema.name);
    // The trigger turns JIT off around its bulk statement only; the application's choice, made
    // for its transaction, holds before and after, whichever it was.
    for (chosen, rows) in [("on", "id <= 10"), ("off", "id > 10"), ("on", "id = 1")] {
        let mut transaction = schema.client().transaction().unwrap();
        transaction
            .batch_execute(&format!(
                "SET LOCAL jit = {chosen}; SET LOCAL jit_above_cost = 0;
                 UPDATE {table} SET doc = doc || 'b' WHERE {rows}"
            ))
            .unwrap();
        let after: String = transaction
            .query_one("SELECT current_setting('jit')", &[])
            .unwrap()
            .get(0);
        assert_eq!(after, chosen, "jit after `UPDATE ... WHERE {rows}`");
        transaction.commit().unwrap();
    }
    let logged = log_rows(&mut schema, &changes);
    assert_eq!(logged, 3, "each UPDATE logged");
}
