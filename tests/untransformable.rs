//! A row PostGIS cannot transform: a polygon in SRID 4326 whose latitudes pass 90 (a buffer
//! drawn around a point near the pole), beside healthy rows. Every tile that holds it fails; the
//! error names the layer, its table and the row's id, `--keep-going` finishes every other tile
//! (the tiles below a failed one too), and `validate --against-db` and `watch` name the row alike.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::fixture::Fixture;
use crate::common::pg::{Point, Rng};
use crate::common::run::{oar_tiles, read_mbtiles_raw, Run};
use crate::common::watcher::{Watcher, PACING};

const ZOOMS: &str = "0-5";
const BAD_ID: i64 = 9001;
/// The healthy rows: small squares scattered over the world, a few of them near the bad one.
const SHAPES: i64 = 300;

/// Creates `{schema}.shapes`, healthy polygons in SRID 4326 with a GiST index.
fn shapes_table(schema: &mut crate::common::pg::TestSchema) {
    let mut rng = Rng::new(46);
    let mut values = Vec::new();
    for id in 1..=SHAPES {
        // Every tenth square near the pole's tiles, the rest anywhere.
        let (lon, lat) = if id % 10 == 0 {
            (rng.range(-20.0, 20.0), rng.range(75.0, 83.0))
        } else {
            (rng.range(-175.0, 175.0), rng.range(-80.0, 80.0))
        };
        values.push(format!(
            "({id}, 'shape {id}', ST_Buffer(ST_SetSRID(ST_MakePoint({lon:.6}, {lat:.6}), 4326), 0.3, 2))"
        ));
    }
    schema.execute(&format!(
        "CREATE TABLE {{schema}}.shapes (id bigint PRIMARY KEY, name text NOT NULL,
             geom geometry(Geometry, 4326) NOT NULL);
         CREATE INDEX ON {{schema}}.shapes USING gist (geom);
         INSERT INTO {{schema}}.shapes VALUES {};
         ANALYZE {{schema}}.shapes;",
        values.join(", ")
    ));
}

/// Adds the row PostGIS cannot transform to Web Mercator: latitudes from 84.5 to 94.5.
fn add_bad_row(schema: &mut crate::common::pg::TestSchema) {
    schema.execute(&format!(
        "INSERT INTO {{schema}}.shapes VALUES ({BAD_ID}, 'polar',
             ST_Buffer('SRID=4326;POINT(0 89.5)'::geometry, 5))"
    ));
}

/// A config with one tileset `shapes` of one layer `shapes`; `extra` goes before it, `tileset`
/// into the tileset.
fn config(schema: &str, extra: &str, tileset: &str) -> String {
    format!(
        r#"{extra}
[database]
url = "postgresql://unused@127.0.0.1:1/unused"
pool_size = 2

[[tileset]]
name = "shapes"
{tileset}

[[tileset.layer]]
name = "shapes"
table = "{schema}.shapes"
geometry_column = "geom"
id_column = "id"
attributes = ["name"]
"#
    )
}

fn fixture(label: &str, bad: bool) -> Fixture {
    let no_points: [Point; 0] = [];
    Fixture::new(label, &no_points, "shapes.toml", |schema| {
        shapes_table(schema);
        if bad {
            add_bad_row(schema);
        }
        config(&schema.name, "", "")
    })
}

fn seed(setup: &Fixture, output: &Path, extra: &[&str]) -> Run {
    oar_tiles(
        Some(&setup.schema.url),
        &setup.seed_args(output.to_str().unwrap(), ZOOMS, extra),
    )
}

/// Whether a message names the tile's layer, the table and the bad row, with PostGIS's reason.
fn names_the_row(text: &str, schema: &str) -> bool {
    text.contains("layer `shapes`")
        && text.contains(&format!("table `{schema}.shapes`"))
        && text.contains(&format!("row id {BAD_ID}"))
        && text.contains("transform")
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_seed_fails_naming_the_tile_the_layer_its_table_and_the_row_postgis_cannot_transform() {
    let setup = fixture("untransformable_seed", true);
    let output = setup.path("out.mbtiles");
    let run = seed(&setup, &output, &[]);
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let error = run
        .stderr
        .lines()
        .find(|line| line.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line:\n{}", run.stderr));
    assert!(error.contains("of tileset `shapes`"), "{error}");
    assert!(error.contains("error: tile "), "{error}");
    assert!(names_the_row(error, &setup.schema.name), "{error}");
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(!output.exists(), "a failed seed leaves no output");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn keep_going_writes_every_tile_but_those_holding_the_row_and_lists_them() {
    let mut setup = fixture("untransformable_keep_going", true);
    let output = setup.path("kept.mbtiles");
    let list = setup.path("failed.txt");
    let run = seed(&setup, &output, &["--keep-going", list.to_str().unwrap()]);
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains("tile(s) failed; they are listed in"),
        "{}",
        run.stderr
    );
    // The log names the row for each failed tile, and the summary each cause once.
    assert!(
        names_the_row(&run.stderr, &setup.schema.name),
        "{}",
        run.stderr
    );
    let both = format!("{}{}", run.stdout, run.stderr);
    let because: Vec<&str> = both
        .lines()
        .filter(|line| line.trim_start().starts_with("because:"))
        .collect();
    assert!(!because.is_empty(), "{both}");
    assert!(
        because
            .iter()
            .all(|line| names_the_row(line, &setup.schema.name)),
        "{because:?}"
    );
    assert!(
        !run.stderr.contains("--max-duration"),
        "a failed tile is not a deadline: {}",
        run.stderr
    );

    let failed: BTreeSet<(u8, u32, u32)> = std::fs::read_to_string(&list)
        .unwrap()
        .lines()
        .map(|line| {
            let parts: Vec<u32> = line.split('/').map(|p| p.parse().unwrap()).collect();
            (parts[0] as u8, parts[1], parts[2])
        })
        .collect();
    // The row spans longitudes -5 to 5 north of 84.5: two tiles in the top row of each zoom
    // but the first, one at z0.
    let max_zoom = 5;
    assert_eq!(failed.len(), 1 + 2 * max_zoom, "{failed:?}");
    for z in 0..=5u8 {
        let middle = (1u32 << z) / 2;
        let expected: BTreeSet<(u8, u32, u32)> = if z == 0 {
            BTreeSet::from([(0, 0, 0)])
        } else {
            BTreeSet::from([(z, middle - 1, 0), (z, middle, 0)])
        };
        let at_z: BTreeSet<(u8, u32, u32)> = failed.iter().copied().filter(|t| t.0 == z).collect();
        assert_eq!(at_z, expected, "failed tiles at zoom {z}");
    }

    // The same table without the row, seeded whole: every other tile is the same, below the
    // failed ones too.
    setup.schema.execute(&format!(
        "DELETE FROM {{schema}}.shapes WHERE id = {BAD_ID}"
    ));
    let clean = setup.path("clean.mbtiles");
    let run = seed(&setup, &clean, &[]);
    run.assert_success();
    let kept = read_mbtiles_raw(&output);
    let expected = read_mbtiles_raw(&clean);
    let mut compared = 0;
    for (tile, bytes) in &expected {
        if failed.contains(tile) {
            assert!(!kept.contains_key(tile), "failed tile {tile:?} was written");
            continue;
        }
        let Some(stored) = kept.get(tile) else {
            panic!("tile {tile:?} is missing though it does not hold the row");
        };
        assert!(stored == bytes, "tile {tile:?} differs");
        compared += 1;
    }
    let extra: Vec<_> = kept.keys().filter(|t| !expected.contains_key(t)).collect();
    assert!(
        extra.is_empty(),
        "tiles a clean seed does not write: {extra:?}"
    );
    // Healthy rows lie beside the bad one: some tiles below a failed tile are among those kept.
    let below_failed = kept
        .keys()
        .filter(|(z, x, y)| {
            *z > 1 && failed.contains(&(z - 1, x / 2, y / 2)) && !failed.contains(&(*z, *x, *y))
        })
        .count();
    assert!(below_failed > 0, "no tile below a failed one was checked");
    assert!(compared > 100, "only {compared} tiles compared");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn validate_against_db_names_the_same_layer_and_row() {
    let mut setup = fixture("untransformable_validate", false);
    let output = setup.path("out.mbtiles");
    seed(&setup, &output, &[]).assert_success();
    add_bad_row(&mut setup.schema);
    let run = oar_tiles(
        Some(&setup.schema.url),
        &[
            "validate",
            "--config",
            setup.config.to_str().unwrap(),
            "--tileset",
            "shapes",
            output.to_str().unwrap(),
            "--against-db",
            "--all",
        ],
    );
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        names_the_row(&run.stderr, &setup.schema.name),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn watch_names_the_same_layer_and_row_and_keeps_running() {
    let no_points: [Point; 0] = [];
    let mut setup = Fixture::new(
        "untransformable_watch",
        &no_points,
        "watch.toml",
        |schema| {
            shapes_table(schema);
            let changes = schema.companion("cdc");
            config(
                &schema.name,
                &format!("[changes]\nschema = \"{changes}\"\n{PACING}"),
                "maxzoom = 5\noutput = \"watched.mbtiles\"",
            )
        },
    );
    let config = setup.config.to_str().unwrap().to_string();
    let url = setup.schema.url.clone();
    oar_tiles(Some(&url), &["changes", "install", "--config", &config]).assert_success();
    oar_tiles(Some(&url), &["seed", "--config", &config]).assert_success();
    let mut watcher = Watcher::start(&setup);
    add_bad_row(&mut setup.schema);
    let schema = setup.schema.name.clone();
    watcher.wait_until("the failed cycle's error naming the row", |w| {
        names_the_row(&w.log(), &schema)
    });
    // A failed cycle is retried with backoff, not the end of the watcher.
    assert!(watcher.health().is_some(), "{}", watcher.log());
    let run = watcher.stop(libc::SIGTERM);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let line = run
        .stderr
        .lines()
        .find(|line| names_the_row(line, &schema))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("tile "), "{line}");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn the_error_names_every_bad_row_of_the_tile_in_id_order() {
    let mut setup = fixture("untransformable_two", true);
    setup.schema.execute(
        "INSERT INTO {schema}.shapes VALUES (8000, 'polar too',
             ST_Buffer('SRID=4326;POINT(10 89.5)'::geometry, 5))",
    );
    let output = setup.path("out.mbtiles");
    let run = oar_tiles(
        Some(&setup.schema.url),
        &setup.seed_args(output.to_str().unwrap(), "0", &[]),
    );
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let expected = format!(
        "error: tile 0/0/0 of tileset `shapes`: layer `shapes` (table `{}.shapes`): row ids 8000, \
         {BAD_ID}: transform",
        setup.schema.name
    );
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
}
