//! Low-zoom clustering, the tile size budget, and several filtered tilesets in one run.

use std::collections::BTreeMap;

use crate::common::mvt::{decode_tile, PropValue};
use crate::common::pg::{Point, Rng, TestSchema};
use crate::common::run::{
    oar_tiles, read_mbtiles, read_mbtiles_raw, seed_args, single_layer_config, strs,
};

const EXTENT: u32 = 4096;
const HALF: f64 = 20_037_508.342_789_244;

/// Clustered around two hubs, a scatter, and facilities sharing one building's coordinates.
fn facilities() -> Vec<Point> {
    let mut rng = Rng::new(99);
    let mut points = Vec::new();
    for id in 1..=600 {
        let (lon, lat) = match id % 10 {
            0..=5 => (rng.range(90.2, 90.6), rng.range(23.6, 24.0)),
            6..=7 => (rng.range(113.1, 113.5), rng.range(22.9, 23.3)),
            _ => (rng.range(-170.0, 170.0), rng.range(-60.0, 70.0)),
        };
        points.push(Point::new(id, lon, lat));
    }
    for id in 601..=640 {
        let shared = points[(id as usize) % 50].clone();
        points.push(Point::new(id, shared.lon, shared.lat));
    }
    points
}

fn mercator(point: &Point) -> (f64, f64) {
    let r = 6_378_137.0;
    (
        r * point.lon.to_radians(),
        r * (std::f64::consts::FRAC_PI_4 + point.lat.to_radians() / 2.0)
            .tan()
            .ln(),
    )
}

/// The grid cell of a point at zoom `z` with `cell`-unit cells, as its feature id.
fn cell_id(point: &Point, z: u8, cell: u32) -> u64 {
    let cells_per_row = (1u64 << z) * u64::from(EXTENT / cell);
    let size = 2.0 * HALF / cells_per_row as f64;
    let (x, y) = mercator(point);
    let cx = ((x + HALF) / size).floor() as u64;
    let cy = ((HALF - y) / size).floor() as u64;
    cy * cells_per_row + cx
}

fn number(value: &PropValue) -> f64 {
    match value {
        PropValue::Int(v) => *v as f64,
        PropValue::UInt(v) => *v as f64,
        PropValue::Double(v) => *v,
        PropValue::Float(v) => f64::from(*v),
        other => panic!("not a number: {other:?}"),
    }
}

fn seed_clusters(schema: &TestSchema, dir: &std::path::Path, cluster: &str) -> std::path::PathBuf {
    let config = dir.join("clusters.toml");
    std::fs::write(
        &config,
        single_layer_config(&schema.name, "sites", "", cluster),
    )
    .unwrap();
    let output = dir.join("clusters.mbtiles");
    let args = seed_args(&config, "0-8", output.to_str().unwrap());
    oar_tiles(Some(&schema.url), &strs(&args)).assert_success();
    output
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn clusters_count_every_facility_once_and_look_the_same_in_every_tile() {
    let mut schema = TestSchema::create("clusters");
    let points = facilities();
    schema.point_table("sites", &points);
    let dir = tempfile::tempdir().unwrap();
    let cell = 512;
    let output = seed_clusters(
        &schema,
        dir.path(),
        "cluster_maxzoom = 6\ncluster_cell = 512",
    );
    let tiles = read_mbtiles(&output);
    let by_id: BTreeMap<i64, &Point> = points.iter().map(|p| (p.id, p)).collect();

    for z in 0..=6u8 {
        let cells_per_tile = u64::from(EXTENT / cell);
        let cells_per_row = (1u64 << z) * cells_per_tile;
        let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
        for point in &points {
            *expected.entry(cell_id(point, z, cell)).or_default() += 1;
        }
        let mut owned_total = 0;
        let mut seen: BTreeMap<u64, (i64, i64, BTreeMap<String, PropValue>)> = BTreeMap::new();
        for (&(_, tx, ty), layers) in tiles.iter().filter(|((tz, _, _), _)| *tz == z) {
            for feature in &layers[0].features {
                let id = feature.id.expect("clusters carry their cell as feature id");
                let count = number(&feature.props["count"]) as u64;
                let (cx, cy) = (id % cells_per_row, id / cells_per_row);
                let owner = ((cx / cells_per_tile) as u32, (cy / cells_per_tile) as u32);
                if owner == (tx, ty) {
                    owned_total += count;
                    assert_eq!(Some(&count), expected.get(&id), "cell {id} at zoom {z}");
                }
                let (px, py) = feature.points[0];
                let global = (i64::from(tx) * 4096 + px, i64::from(ty) * 4096 + py);
                let entry = seen
                    .entry(id)
                    .or_insert((global.0, global.1, feature.props.clone()));
                assert_eq!(
                    (entry.0, entry.1),
                    global,
                    "cluster {id} moves between tiles at zoom {z}"
                );
                assert_eq!(
                    entry.2, feature.props,
                    "cluster {id} differs between tiles at zoom {z}"
                );
                if count == 1 {
                    let member = by_id[&(number(&feature.props["site_id"]) as i64)];
                    assert_eq!(cell_id(member, z, cell), id);
                    assert_eq!(
                        feature.props["label"],
                        PropValue::String(member.label.clone())
                    );
                } else {
                    assert!(
                        !feature.props.contains_key("site_id")
                            && !feature.props.contains_key("label")
                    );
                    let west = number(&feature.props["extent_west"]);
                    let east = number(&feature.props["extent_east"]);
                    assert!(west <= east && (-180.0..=180.0).contains(&west));
                }
            }
        }
        assert_eq!(
            owned_total,
            points.len() as u64,
            "zoom {z}: owned clusters count every facility"
        );
    }
    // Above the clustered zooms every facility is its own feature again.
    let z8: usize = tiles
        .iter()
        .filter(|((z, _, _), _)| *z == 8)
        .flat_map(|(_, layers)| &layers[0].features)
        .filter(|f| !f.props.contains_key("count"))
        .count();
    assert!(
        z8 >= points.len(),
        "zoom 8 shows individual facilities ({z8})"
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn cell_centre_clusters_sit_in_the_middle_of_their_cell() {
    let mut schema = TestSchema::create("cellcentre");
    let points = facilities();
    schema.point_table("sites", &points);
    let dir = tempfile::tempdir().unwrap();
    let cell: u32 = 64;
    let output = seed_clusters(
        &schema,
        dir.path(),
        "cluster_maxzoom = 5\ncluster_cell = 64\ncluster_position = \"cell-center\"",
    );
    // Per clustered zoom, the clusters checked and those of several members.
    let mut checked: BTreeMap<u8, (usize, usize)> = BTreeMap::new();
    for ((z, tx, ty), layers) in read_mbtiles(&output)
        .into_iter()
        .filter(|((z, _, _), _)| *z <= 5)
    {
        let cells_per_row = (1u64 << z) * u64::from(EXTENT / cell);
        for feature in &layers[0].features {
            let id = feature.id.unwrap();
            let (cx, cy) = ((id % cells_per_row) as i64, (id / cells_per_row) as i64);
            let (px, py) = feature.points[0];
            let global = (i64::from(tx) * 4096 + px, i64::from(ty) * 4096 + py);
            assert_eq!(
                global,
                (cx * 64 + 32, cy * 64 + 32),
                "cluster {id} at zoom {z}"
            );
            let members = feature.props.get("count").map_or(0.0, number);
            let entry = checked.entry(z).or_default();
            entry.0 += 1;
            entry.1 += usize::from(members > 1.0);
        }
    }
    for z in 0..=5u8 {
        let (clusters, shared) = checked.get(&z).copied().unwrap_or_default();
        assert!(
            clusters > 0 && shared > 0,
            "zoom {z} holds {clusters} clusters, {shared} of several facilities: {checked:?}"
        );
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn tiles_over_the_size_budget_are_listed_or_with_strict_size_fail_the_job() {
    let mut schema = TestSchema::create("budget");
    schema.point_table("sites", &facilities());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("budget.toml");
    std::fs::write(
        &config,
        single_layer_config(&schema.name, "sites", "size_budget = 2000", ""),
    )
    .unwrap();
    let output = dir.path().join("budget.mbtiles");
    let summary = dir.path().join("summary.json");
    let base = [
        "seed",
        "--config",
        config.to_str().unwrap(),
        "--zoom",
        "0-6",
        "--output",
        output.to_str().unwrap(),
    ];
    let mut args = base.to_vec();
    args.extend(["--summary-json", summary.to_str().unwrap()]);
    let run = oar_tiles(Some(&schema.url), &args);
    run.assert_success();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let over = json[0]["over_budget"].as_array().unwrap();
    let stored = read_mbtiles_raw(&output);
    let expected: Vec<_> = stored.iter().filter(|(_, d)| d.len() > 2000).collect();
    assert_eq!(over.len(), expected.len());
    assert!(!over.is_empty());
    assert!(
        run.stdout.contains("over the size budget"),
        "{}",
        run.stdout
    );

    std::fs::remove_file(&output).unwrap();
    let mut strict = base.to_vec();
    strict.push("--strict-size");
    let run = oar_tiles(Some(&schema.url), &strict);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("over the size budget"),
        "{}",
        run.stderr
    );
    assert!(!output.exists(), "no output after a strict failure");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn two_filtered_tilesets_render_to_their_own_outputs_in_one_run() {
    let mut schema = TestSchema::create("twosets");
    let points = facilities();
    schema.point_table("sites", &points);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"[database]
url = "postgresql://unused@127.0.0.1:1/unused"

[[tileset]]
name = "knit"
output = "knit.mbtiles"
[[tileset.layer]]
name = "sites"
table = "{schema}.sites"
geometry_column = "pt"
id_column = "site_id"
attributes = ["kind"]
filter = "kind = 'knit'"

[[tileset]]
name = "high-score"
output = "dir:high"
maxzoom = 5
[[tileset.layer]]
name = "sites"
table = "{schema}.sites"
geometry_column = "pt"
id_column = "site_id"
attributes = ["score"]
filter = "score >= 10"
"#,
        schema = schema.name
    );
    let config_path = dir.path().join("two.toml");
    std::fs::write(&config_path, config).unwrap();
    let run = oar_tiles(
        Some(&schema.url),
        &[
            "seed",
            "--config",
            config_path.to_str().unwrap(),
            "--zoom",
            "0-5",
        ],
    );
    run.assert_success();
    assert!(
        run.stdout.contains("tileset knit") && run.stdout.contains("tileset high-score"),
        "{}",
        run.stdout
    );

    let knit = read_mbtiles(&dir.path().join("knit.mbtiles"));
    let knit_ids: std::collections::BTreeSet<u64> = knit
        .values()
        .flat_map(|l| &l[0].features)
        .filter_map(|f| f.id)
        .collect();
    let expected: std::collections::BTreeSet<u64> = points
        .iter()
        .filter(|p| p.kind.as_deref() == Some("knit"))
        .map(|p| p.id as u64)
        .collect();
    assert_eq!(knit_ids, expected);

    let z5 = dir.path().join("high/5");
    let mut high_ids = std::collections::BTreeSet::new();
    for x in std::fs::read_dir(z5).unwrap() {
        for y in std::fs::read_dir(x.unwrap().path()).unwrap() {
            let data = std::fs::read(y.unwrap().path()).unwrap();
            for feature in &decode_tile(&data).unwrap()[0].features {
                assert!(number(&feature.props["score"]) >= 10.0);
                high_ids.insert(feature.id.unwrap());
            }
        }
    }
    let expected: std::collections::BTreeSet<u64> = points
        .iter()
        .filter(|p| p.score >= 10)
        .map(|p| p.id as u64)
        .collect();
    assert_eq!(high_ids, expected);
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn attributes_named_like_the_cell_sums_cluster_from_rows_and_from_cell_tables_alike() {
    let mut schema = TestSchema::create("cellnames");
    let points = facilities();
    schema.point_table("sites", &points);
    // Names the cluster statements and cell tables once used for their own columns.
    schema.execute(
        "ALTER TABLE {schema}.sites RENAME label TO n;
         ALTER TABLE {schema}.sites RENAME kind TO cx;
         ALTER TABLE {schema}.sites RENAME score TO z;
         ALTER TABLE {schema}.sites ADD COLUMN sx text DEFAULT 'sx';",
    );
    let changes_schema = schema.companion("cdc");
    let dir = tempfile::tempdir().unwrap();
    let layer =
        "cluster_maxzoom = 6\ncluster_cell = 512\nattributes = [\"n\", \"cx\", \"z\", \"sx\"]";
    let text = single_layer_config(&schema.name, "sites", "", "").replace(
        "attributes = [\"label\", \"kind\", \"score\", \"seen_at\"]",
        layer,
    );
    let from_rows = dir.path().join("rows.toml");
    std::fs::write(&from_rows, &text).unwrap();
    let with_cells = dir.path().join("cells.toml");
    std::fs::write(
        &with_cells,
        format!("[changes]\nschema = \"{changes_schema}\"\n{text}"),
    )
    .unwrap();
    let seed = |config: &std::path::Path, output: &str| {
        let output = dir.path().join(output);
        let args = seed_args(config, "0-8", output.to_str().unwrap());
        let run = oar_tiles(Some(&schema.url), &strs(&args));
        run.assert_success();
        (output, run)
    };
    let (rows_output, _) = seed(&from_rows, "rows.mbtiles");
    let install = [
        "changes",
        "install",
        "--config",
        with_cells.to_str().unwrap(),
    ];
    oar_tiles(Some(&schema.url), &install).assert_success();
    let (cells_output, run) = seed(&with_cells, "cells.mbtiles");
    assert!(
        !run.stderr.contains("aggregate rows"),
        "the cell table was not used: {}",
        run.stderr
    );
    assert_eq!(
        read_mbtiles_raw(&rows_output),
        read_mbtiles_raw(&cells_output)
    );

    let by_id: BTreeMap<i64, &Point> = points.iter().map(|p| (p.id, p)).collect();
    let tiles = read_mbtiles(&cells_output);
    let mut singles = 0;
    for layers in tiles.values() {
        for feature in &layers[0].features {
            let count = feature.props.get("count").map(number);
            if count == Some(1.0) && feature.props.contains_key("site_id") {
                let id = number(&feature.props["site_id"]) as i64;
                assert_eq!(
                    feature.props["n"],
                    PropValue::String(by_id[&id].label.clone())
                );
                assert_eq!(feature.props["sx"], PropValue::String("sx".into()));
                singles += 1;
            }
        }
    }
    assert!(singles > 0, "no cluster of one facility to check");
}
