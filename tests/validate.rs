//! `oar-tiles validate`: every kind of output from a real seed validates; copies damaged one way at
//! a time are each reported with the tile at fault and the reason; drift the change log never saw
//! is found by `--against-db --all` exactly, and its repair list makes the output equal to a full
//! seed; `--verify-sample` fails a seed and counts the wrong tiles in its metrics.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::common::fixture::{wraps_fixture, Fixture};
use crate::common::mvt::{tile, Tile};
use crate::common::pg::{hub_with_scatter, Point};
use crate::common::run::{
    assert_same_tiles, differences, oar_tiles, oar_tiles_with, problems, read_mbtiles_raw,
    single_layer_config, Run,
};
use crate::common::s3::S3Server;

const ZOOMS: &str = "0-8";
const BUCKET: &str = "tiles";

fn points() -> Vec<Point> {
    let mut points = hub_with_scatter(120, 33, 4, [3.1, 50.5, 3.4, 50.8]);
    points.push(Point::new(500, -60.0, -20.0));
    points
}

struct Setup {
    base: Fixture,
    changes_schema: String,
}

wraps_fixture!(Setup, base);

impl Setup {
    /// The points under change capture, in a layer with `extra_layer`'s settings.
    fn new(label: &str, extra_layer: &str, extra_config: &str) -> Setup {
        Setup::with_tileset(label, "", extra_layer, extra_config)
    }

    /// [`Setup::new`] with `extra_tileset` in the `[[tileset]]` table.
    fn with_tileset(
        label: &str,
        extra_tileset: &str,
        extra_layer: &str,
        extra_config: &str,
    ) -> Setup {
        let mut changes_schema = String::new();
        let base = Fixture::new(label, &points(), "validate.toml", |schema| {
            changes_schema = schema.companion("cdc");
            format!(
                "{extra_config}\n[changes]\nschema = \"{changes_schema}\"\n{}",
                single_layer_config(&schema.name, "sites", extra_tileset, extra_layer)
            )
        });
        let setup = Setup {
            base,
            changes_schema,
        };
        setup.run(&["changes", "install"]).assert_success();
        setup
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut full = vec![args[0], "--config", self.config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        oar_tiles_with(Some(&self.schema.url), &full, env)
    }

    fn seed(&self, output: &str, extra: &[&str]) -> Run {
        let mut args = vec!["seed", "--zoom", ZOOMS, "--output", output];
        args.extend_from_slice(extra);
        let run = self.run(&args);
        run.assert_success();
        run
    }

    /// `validate --json OUTPUT EXTRA…` and its parsed report.
    fn validate(&self, output: &str, extra: &[&str]) -> (Run, serde_json::Value) {
        self.validate_env(output, extra, &[])
    }

    fn validate_env(
        &self,
        output: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (Run, serde_json::Value) {
        let mut args = vec!["validate", "--json", "--tileset", "sites", output];
        args.extend_from_slice(extra);
        let run = self.run_env(&args, env);
        let report = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
            panic!(
                "validate printed no JSON ({e})\nstdout:\n{}\nstderr:\n{}",
                run.stdout, run.stderr
            )
        });
        (run, report)
    }
}

/// Asserts `run` exited 0 with a report of no problems.
fn assert_valid(run: &Run, report: &serde_json::Value, what: &str) {
    assert_eq!(
        (run.code, problems(report)),
        (0, vec![]),
        "{what}: validate should find nothing\nstderr:\n{}",
        run.stderr
    );
}

/// Asserts `run` exited 1 and reported `tile` (or no tile: "-") with a message containing `needle`.
fn assert_reported(run: &Run, report: &serde_json::Value, tile: &str, needle: &str, what: &str) {
    let found = problems(report);
    assert_eq!(
        run.code, 1,
        "{what}: exit 1 expected\n{found:#?}\n{}",
        run.stderr
    );
    assert!(
        found
            .iter()
            .any(|(t, _, m)| t == tile && m.to_lowercase().contains(needle)),
        "{what}: expected {tile} reported with `{needle}`, got {found:#?}"
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A copy of the MBTiles file at `source` named `name`, opened for damaging.
fn damaged_copy(setup: &Setup, source: &Path, name: &str) -> (PathBuf, rusqlite::Connection) {
    let path = setup.path(name);
    std::fs::copy(source, &path).unwrap();
    let connection = rusqlite::Connection::open(&path).unwrap();
    (path, connection)
}

/// The deepest tile holding the most features: one with features to damage.
fn busiest_tile(path: &Path) -> ((u8, u32, u32), Vec<u8>) {
    read_mbtiles_raw(path)
        .into_iter()
        .filter(|((z, _, _), _)| *z == 8)
        .max_by_key(|(_, bytes)| bytes.len())
        .unwrap()
}

fn replace_tile(connection: &rusqlite::Connection, (z, x, y): (u8, u32, u32), bytes: &[u8]) {
    let changed = connection
        .execute(
            "UPDATE tiles SET tile_data = ?4 WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3",
            rusqlite::params![z, x, (1u32 << z) - 1 - y, bytes],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

/// The tile `(z, x, y)` decoded, changed by `edit`, and stored again gzip-compressed.
fn edit_tile(
    connection: &rusqlite::Connection,
    (key, bytes): &((u8, u32, u32), Vec<u8>),
    edit: impl FnOnce(&mut Tile),
) {
    let mut tile = Tile::decode(gunzip(bytes).as_slice()).unwrap();
    edit(&mut tile);
    replace_tile(connection, *key, &gzip(&tile.encode_to_vec()));
}

/// A polygon feature whose one ring runs the way `exterior` says (MVT 2.1: an exterior ring has a
/// positive area by the surveyor's formula with y pointing down).
fn square(id: u64, exterior: bool) -> tile::Feature {
    let zigzag = |v: i32| ((v << 1) ^ (v >> 31)) as u32;
    let corners: [(i32, i32); 4] = if exterior {
        [(100, 100), (200, 100), (200, 200), (100, 200)]
    } else {
        [(100, 100), (100, 200), (200, 200), (200, 100)]
    };
    let mut geometry = vec![9, zigzag(corners[0].0), zigzag(corners[0].1), 2 | (3 << 3)];
    for pair in corners.windows(2) {
        geometry.push(zigzag(pair[1].0 - pair[0].0));
        geometry.push(zigzag(pair[1].1 - pair[0].1));
    }
    geometry.push(7 | (1 << 3));
    tile::Feature {
        id: Some(id),
        tags: vec![],
        r#type: Some(tile::GeomType::Polygon as i32),
        geometry,
    }
}

#[test]
#[ignore = "needs PostGIS and the S3 server: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn every_kind_of_output_from_a_real_seed_validates_with_one_agg_tiles_hash() {
    let server = S3Server::start(BUCKET);
    // TileJSON 3.0 wants absolute tile URLs: a tree names them only when told where it is served.
    let setup = Setup::with_tileset(
        "validatekinds",
        "tiles_url = \"https://tiles.example.org/sites/{z}/{x}/{y}.pbf\"",
        "",
        &server.config_table(""),
    );
    let env = server.env();
    let mbtiles = setup.path("sites.mbtiles");
    let tree = format!("{}/", setup.path("tree").display());
    let pmtiles = setup.path("sites.pmtiles");
    let outputs = [
        mbtiles.display().to_string(),
        tree,
        pmtiles.display().to_string(),
        format!("s3://{BUCKET}/prefix"),
        format!("s3://{BUCKET}/archive/sites.pmtiles"),
    ];
    let mut hashes = BTreeSet::new();
    for output in &outputs {
        setup
            .run_env(&["seed", "--zoom", ZOOMS, "--output", output], &env)
            .assert_success();
        let (run, report) = setup.validate_env(output, &[], &env);
        assert_valid(&run, &report, output);
        let validated = &report["outputs"][0];
        assert!(
            validated["tiles"].as_u64().unwrap() > 50,
            "{output}: {report}"
        );
        hashes.insert(validated["agg_tiles_hash"].as_str().unwrap().to_string());
        // The comparison with the database agrees on a sample too.
        let (run, report) = setup.validate_env(output, &["--against-db", "--sample", "20"], &env);
        assert_valid(&run, &report, &format!("{output} against the database"));
    }
    assert_eq!(
        hashes.len(),
        1,
        "every kind holds the same tiles: {hashes:?}"
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn each_kind_of_damage_is_reported_with_its_tile_and_reason() {
    let setup = Setup::new("validatedamage", "", "");
    let source = setup.path("sites.mbtiles");
    setup.seed(source.to_str().unwrap(), &[]);
    let (run, report) = setup.validate(source.to_str().unwrap(), &[]);
    assert_valid(&run, &report, "the seeded file");
    let busiest = busiest_tile(&source);
    let (z, x, y) = busiest.0;
    let name = format!("{z}/{x}/{y}");

    // A tile's gzip stream cut short.
    let (path, db) = damaged_copy(&setup, &source, "cut.mbtiles");
    replace_tile(&db, busiest.0, &busiest.1[..busiest.1.len() / 2]);
    let (run, report) = setup.validate(path.to_str().unwrap(), &[]);
    assert_reported(&run, &report, &name, "gzip", "a cut gzip stream");

    // A layer without `extent` written.
    let (path, db) = damaged_copy(&setup, &source, "no-extent.mbtiles");
    edit_tile(&db, &busiest, |tile| tile.layers[0].extent = None);
    let (run, report) = setup.validate(path.to_str().unwrap(), &[]);
    assert_reported(&run, &report, &name, "extent", "a layer without extent");

    // A duplicated feature id.
    let (path, db) = damaged_copy(&setup, &source, "duplicate-id.mbtiles");
    edit_tile(&db, &busiest, |tile| {
        let copy = tile.layers[0].features[0].clone();
        tile.layers[0].features.push(copy);
    });
    let (run, report) = setup.validate(path.to_str().unwrap(), &[]);
    assert_reported(&run, &report, &name, "id", "a duplicated feature id");

    // A polygon ring wound the wrong way; the same ring wound right passes.
    for (exterior, file) in [
        (true, "winding-right.mbtiles"),
        (false, "winding-wrong.mbtiles"),
    ] {
        let (path, db) = damaged_copy(&setup, &source, file);
        edit_tile(&db, &busiest, |tile| {
            let mut layer = tile.layers[0].clone();
            layer.name = "outlines".into();
            layer.keys.clear();
            layer.values.clear();
            layer.features = vec![square(1, exterior)];
            tile.layers.push(layer);
        });
        let (run, report) = setup.validate(path.to_str().unwrap(), &[]);
        let winding: Vec<_> = problems(&report)
            .into_iter()
            .filter(|(t, check, m)| t == &name && check == "mvt" && m.contains("wind"))
            .collect();
        assert_eq!(
            winding.is_empty(),
            exterior,
            "{file}: {:#?}\n{}",
            problems(&report),
            run.stderr
        );
    }

    // A metadata zoom that lies.
    let (path, db) = damaged_copy(&setup, &source, "maxzoom.mbtiles");
    db.execute(
        "UPDATE metadata SET value = '12' WHERE name = 'maxzoom'",
        [],
    )
    .unwrap();
    let (run, report) = setup.validate(path.to_str().unwrap(), &[]);
    assert_reported(&run, &report, "-", "maxzoom 12", "a lying maxzoom");

    // A TMS row flipped: the tile moves to where the data is not; the database comparison finds
    // the tile missing at its place and one that should not exist at the other.
    let (path, db) = damaged_copy(&setup, &source, "flipped.mbtiles");
    let flipped = (1u32 << z) - 1 - y;
    db.execute(
        "UPDATE tiles SET tile_row = ?3 WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?4",
        rusqlite::params![z, x, y, flipped],
    )
    .unwrap();
    let (run, report) = setup.validate(path.to_str().unwrap(), &["--against-db", "--all"]);
    assert_reported(
        &run,
        &report,
        &name,
        "missing",
        "a flipped TMS row (its place)",
    );
    assert_reported(
        &run,
        &report,
        &format!("{z}/{x}/{flipped}"),
        "should not exist",
        "a flipped TMS row (where it went)",
    );
    assert_reported(
        &run,
        &report,
        "-",
        "agg_tiles_hash",
        "a flipped TMS row (the hash)",
    );

    // A stale tile left behind where the data no longer is.
    let (path, db) = damaged_copy(&setup, &source, "stale.mbtiles");
    db.execute(
        "INSERT INTO tiles (zoom_level, tile_column, tile_row, tile_data) VALUES (?1, 3, 3, ?2)",
        rusqlite::params![z, busiest.1],
    )
    .unwrap();
    let (run, report) = setup.validate(path.to_str().unwrap(), &["--against-db", "--all"]);
    let stale = format!("{z}/3/{}", (1u32 << z) - 1 - 3);
    assert_reported(&run, &report, &stale, "should not exist", "a stale tile");
}

#[test]
#[ignore = "needs PostGIS and the S3 server: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_tile_deleted_from_s3_is_reported_missing() {
    let server = S3Server::start(BUCKET);
    let setup = Setup::new("validates3", "", &server.config_table(""));
    let env = server.env();
    let output = format!("s3://{BUCKET}/deleted");
    setup
        .run_env(&["seed", "--zoom", ZOOMS, "--output", &output], &env)
        .assert_success();
    let reference = setup.path("reference.mbtiles");
    setup.seed(reference.to_str().unwrap(), &[]);
    let ((z, x, y), _) = busiest_tile(&reference);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(
            server
                .client()
                .delete_object()
                .bucket(BUCKET)
                .key(format!("deleted/{z}/{x}/{y}.pbf"))
                .send(),
        )
        .unwrap();
    let (run, report) = setup.validate_env(&output, &[], &env);
    assert_reported(
        &run,
        &report,
        "-",
        "agg_tiles_hash",
        "a deleted object (the hash)",
    );
    let (run, report) = setup.validate_env(&output, &["--against-db", "--all"], &env);
    assert_reported(
        &run,
        &report,
        &format!("{z}/{x}/{y}"),
        "missing",
        "a deleted object",
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn drift_the_change_log_missed_is_found_exactly_and_its_repair_list_repairs_it() {
    let setup = Setup::new(
        "validatedrift",
        "cluster_maxzoom = 5\ncluster_cell = 256",
        "",
    );
    let output = setup.path("sites.mbtiles");
    let output = output.to_str().unwrap();
    setup.seed(output, &[]);
    let (run, report) = setup.validate(output, &["--against-db", "--all"]);
    assert_valid(&run, &report, "right after the seed");
    let before = read_mbtiles_raw(Path::new(output));

    // Edits whose log rows are deleted by hand in the same transaction: capture itself is intact
    // (a disabled trigger would be noticed and the output rendered whole), so nothing tells the
    // tool the log misses them.
    let schema = format!("\"{}\"", setup.schema.name);
    let changes = format!("\"{}\"", setup.changes_schema);
    let mut db = postgres::Client::connect(&setup.schema.url, postgres::NoTls).unwrap();
    db.batch_execute(&format!(
        "BEGIN;
         UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(-10.5, 40.2), 4326) WHERE site_id IN (3, 4);
         UPDATE {schema}.sites SET label = 'renamed' WHERE site_id = 7;
         DELETE FROM {schema}.sites WHERE site_id = 500;
         INSERT INTO {schema}.sites (site_id, label, kind, score, pt)
             VALUES (900, 'new', 'knit', 3, ST_SetSRID(ST_MakePoint(120.1, -30.4), 4326));
         DELETE FROM {changes}.change_log;
         COMMIT;"
    ))
    .unwrap();
    let reseed = setup.run(&["seed", "--zoom", ZOOMS, "--output", output, "--dirty"]);
    reseed.assert_success();
    assert_eq!(
        read_mbtiles_raw(Path::new(output)),
        before,
        "a reseed cannot see changes the log never held"
    );

    // What a full seed from the rows holds now is what the output should.
    let truth_path = setup.path("truth.mbtiles");
    setup.seed(truth_path.to_str().unwrap(), &["--rebuild-cells"]);
    let truth = read_mbtiles_raw(&truth_path);
    let expected = differences(&before, &truth);
    assert!(!expected.is_empty());

    let list = setup.path("repair.tiles");
    let (run, report) = setup.validate(
        output,
        &[
            "--against-db",
            "--all",
            "--repair-list",
            list.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let found: BTreeSet<String> = problems(&report)
        .into_iter()
        .filter(|(_, check, _)| check == "database")
        .map(|(tile, _, _)| tile)
        .collect();
    assert_eq!(found, expected, "exactly the tiles the drift changed");
    let listed: BTreeSet<String> = std::fs::read_to_string(&list)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(listed, expected, "the repair list");
    let repair = report["outputs"][0]["database"]["repair"].as_str().unwrap();
    assert!(
        repair.contains("--tiles-from") && repair.contains("--rebuild-cells"),
        "{repair}"
    );

    setup.seed(
        output,
        &["--tiles-from", list.to_str().unwrap(), "--rebuild-cells"],
    );
    assert_same_tiles(
        &truth,
        &read_mbtiles_raw(Path::new(output)),
        "repaired output",
    );
    let (run, report) = setup.validate(output, &["--against-db", "--all"]);
    assert_valid(&run, &report, "after the repair");

    // A change the log holds is pending, not wrong: the next reseed renders it.
    db.batch_execute(&format!(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(3.2, 50.6), 4326) WHERE site_id = 9;"
    ))
    .unwrap();
    let (run, report) = setup.validate(output, &["--against-db", "--all"]);
    assert_valid(&run, &report, "a change not yet reseeded");
    let pending = report["outputs"][0]["database"]["pending"]
        .as_array()
        .unwrap();
    assert!(!pending.is_empty(), "{report}");
    let _ = &setup.changes_schema;
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn verify_sample_after_a_seed_fails_it_and_counts_the_wrong_tiles() {
    let setup = Setup::new("validateverify", "", "");
    let output = setup.path("sites.mbtiles");
    let output_text = output.to_str().unwrap();
    let metrics = setup.path("metrics.prom");
    // Every stored tile is in a sample this large.
    let verify = [
        "--verify-sample",
        "100000",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ];
    setup.seed(output_text, &verify);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("oar_tiles_verify_wrong_tiles{"), "{text}");
    assert!(text.contains("} 0\n"), "{text}");

    let busiest = busiest_tile(&output);
    let (z, x, y) = busiest.0;
    let other = read_mbtiles_raw(&output)
        .into_iter()
        .find(|(key, bytes)| key.0 == z && bytes != &busiest.1)
        .unwrap();
    let db = rusqlite::Connection::open(&output).unwrap();
    replace_tile(&db, busiest.0, &other.1);
    drop(db);
    let mut args = vec!["seed", "--zoom", ZOOMS, "--output", output_text, "--dirty"];
    args.extend_from_slice(&verify);
    let run = setup.run(&args);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!("{z}/{x}/{y}")),
        "{}",
        run.stderr
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("oar_tiles_verify_wrong_tiles{"))
        .unwrap();
    assert!(line.ends_with(" 1"), "{line}");
}

#[test]
fn validate_without_outputs_or_with_a_missing_one_is_a_usage_or_read_error() {
    let run = oar_tiles(None, &["validate"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing.mbtiles");
    let run = oar_tiles(None, &["validate", missing.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("nothing.mbtiles"), "{}", run.stderr);
}
