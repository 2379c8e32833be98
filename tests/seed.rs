//! The seed pipeline against a real PostGIS: every facility lands in exactly the tiles that show it,
//! with its attributes; the walk stays proportional to the non-empty tiles; the MBTiles file is valid.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::common::mvt::{DecodedLayer, PropValue};
use crate::common::pg::{Point, Rng, TestSchema};
use crate::common::run::{
    assert_same_tiles, candidate_tiles, membership, oar_tiles, oar_tiles_with, pixel, read_mbtiles,
    read_mbtiles_raw, read_metadata, read_tree, seed_args, single_layer_config, strs,
};

const EXTENT: u32 = 4096;
const BUFFER: u32 = 64;

/// Lon/lat of a tile pixel, for placing points exactly on borders and buffer edges.
fn lonlat_of_pixel(z: u8, x: u32, y: u32, px: f64, py: f64) -> (f64, f64) {
    let n = (1u64 << z) as f64;
    let gx = (f64::from(x) + px / f64::from(EXTENT)) / n;
    let gy = (f64::from(y) + py / f64::from(EXTENT)) / n;
    let lon = gx * 360.0 - 180.0;
    let lat = (std::f64::consts::PI * (1.0 - 2.0 * gy))
        .sinh()
        .atan()
        .to_degrees();
    (lon, lat)
}

/// Clusters, a world scatter, shared coordinates, and points on tile borders and buffer edges.
fn awkward_points() -> Vec<Point> {
    let mut rng = Rng::new(7);
    let mut points = Vec::new();
    let mut id = 1;
    let mut push = |points: &mut Vec<Point>, lon: f64, lat: f64| {
        points.push(Point::new(id, lon, lat));
        id += 1;
    };
    for _ in 0..120 {
        push(&mut points, rng.range(90.2, 90.6), rng.range(23.6, 24.0));
    }
    for _ in 0..40 {
        push(
            &mut points,
            rng.range(-179.9, 179.9),
            rng.range(-80.0, 80.0),
        );
    }
    for i in 0..10 {
        let shared = points[i * 7].clone();
        push(&mut points, shared.lon, shared.lat);
    }
    for (lon, lat) in [
        (0.0, 0.0),
        (45.0, 10.0),
        (90.0, 23.0),
        (-180.0, 5.0),
        (180.0, -5.0),
        (179.99, 1.0),
    ] {
        push(&mut points, lon, lat);
    }
    for z in [4u8, 7, 10] {
        let (x, y) = (3u32 << (z - 2), 1u32 << (z - 1));
        for (px, py) in [
            (0.0, 2000.0),
            (-63.5, 100.0),
            (-64.5, 100.0),
            (4159.5, 3000.0),
            (2000.0, -63.7),
        ] {
            let (lon, lat) = lonlat_of_pixel(z, x, y, px, py);
            push(&mut points, lon, lat);
        }
    }
    points
}

fn number(value: &PropValue) -> i64 {
    match value {
        PropValue::Int(v) => *v,
        PropValue::UInt(v) => *v as i64,
        other => panic!("not an integer: {other:?}"),
    }
}

fn seed(schema: &TestSchema, dir: &Path, zoom: &str, extra_args: &[&str]) -> std::path::PathBuf {
    let config = dir.join("oar.toml");
    std::fs::write(&config, single_layer_config(&schema.name, "sites", "", "")).unwrap();
    let output = dir.join(format!("out-{zoom}-{}.mbtiles", extra_args.len()));
    let mut args = vec![
        "seed",
        "--config",
        config.to_str().unwrap(),
        "--zoom",
        zoom,
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra_args);
    oar_tiles(Some(&schema.url), &args).assert_success();
    output
}

fn layer(
    tiles: &BTreeMap<(u8, u32, u32), Vec<DecodedLayer>>,
    key: (u8, u32, u32),
) -> &DecodedLayer {
    let layers = &tiles[&key];
    assert_eq!(layers.len(), 1, "tile {key:?} has one layer");
    &layers[0]
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn every_facility_appears_in_the_tiles_that_show_it_and_nowhere_else() {
    let mut schema = TestSchema::create("membership");
    let points = awkward_points();
    schema.point_table("sites", &points);
    let dir = tempfile::tempdir().unwrap();
    let output = seed(&schema, dir.path(), "0-12", &[]);
    let tiles = read_mbtiles(&output);
    let by_id: BTreeMap<i64, &Point> = points.iter().map(|p| (p.id, p)).collect();

    for &(z, x, y) in tiles.keys() {
        let layer = layer(&tiles, (z, x, y));
        assert_eq!((layer.name.as_str(), layer.extent), ("sites", EXTENT));
        assert!(
            !layer.features.is_empty(),
            "tile {z}/{x}/{y} is written but empty"
        );
        let mut seen = BTreeSet::new();
        for feature in &layer.features {
            let id = feature.id.expect("integer ids become feature ids") as i64;
            assert!(seen.insert(id), "feature {id} twice in {z}/{x}/{y}");
            let point = by_id[&id];
            assert_ne!(
                membership(point, z, x, y, EXTENT, BUFFER),
                Some(false),
                "{id} must not be in {z}/{x}/{y}"
            );
            let (px, py) = pixel(point, z, x, y, EXTENT);
            let (fx, fy) = feature.points[0];
            assert!(
                (fx as f64 - px).abs() <= 1.0 && (fy as f64 - py).abs() <= 1.0,
                "{id} at {fx},{fy} not {px},{py}"
            );
            assert_eq!(
                feature.props["label"],
                PropValue::String(point.label.clone())
            );
            assert_eq!(number(&feature.props["score"]), i64::from(point.score));
            match &point.kind {
                Some(kind) => assert_eq!(feature.props["kind"], PropValue::String(kind.clone())),
                None => assert!(
                    !feature.props.contains_key("kind"),
                    "NULL attributes are left out"
                ),
            }
            assert!(
                matches!(&feature.props["seen_at"], PropValue::String(s) if s.starts_with("2024-01-0"))
            );
            assert!(
                !feature.props.contains_key("site_id"),
                "the feature id is not repeated as a property"
            );
        }
    }

    let mut checked = 0;
    for point in &points {
        for z in 0..=12u8 {
            for (x, y) in candidate_tiles(point, z) {
                if membership(point, z, x, y, EXTENT, BUFFER) == Some(true) {
                    let present = tiles.contains_key(&(z, x, y))
                        && layer(&tiles, (z, x, y))
                            .features
                            .iter()
                            .any(|f| f.id == Some(point.id as u64));
                    assert!(present, "facility {} missing from {z}/{x}/{y}", point.id);
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked > points.len() * 13,
        "every point was checked at every zoom ({checked})"
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_handful_of_points_over_the_world_queries_a_handful_of_tiles() {
    let mut schema = TestSchema::create("handful");
    let points: Vec<Point> = [
        (-73.99, 40.73),
        (2.35, 48.86),
        (90.41, 23.81),
        (151.2, -33.87),
        (-58.38, -34.6),
    ]
    .iter()
    .enumerate()
    .map(|(i, (lon, lat))| Point::new(i as i64 + 1, *lon, *lat))
    .collect();
    schema.point_table("sites", &points);
    let dir = tempfile::tempdir().unwrap();
    let summary_path = dir.path().join("summary.json");
    let output = seed(
        &schema,
        dir.path(),
        "0-14",
        &["--summary-json", summary_path.to_str().unwrap()],
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    let queried = summary[0]["tiles_queried"].as_u64().unwrap();
    let written = summary[0]["tiles_written"].as_u64().unwrap();
    let tiles = read_mbtiles_raw(&output);
    assert_eq!(written, tiles.len() as u64);
    // Five points at 15 zooms: about 75 tiles. A child is only queried when its parent saw rows in
    // the child's buffered envelope, so hardly any query comes back empty, except among the few
    // top tiles every walk queues at once.
    assert!((70..=5 * 15 * 4).contains(&written), "written {written}");
    let eager = oar_tiles::testing::EAGER_TILES;
    assert!(
        queried <= written + written / 20 + 2 + eager,
        "queried {queried} tiles for {written} written"
    );
    let empty_below_the_top: u64 = summary[0]["per_zoom"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|zoom| zoom["zoom"].as_u64().unwrap() > 2)
        .map(|zoom| zoom["empty"].as_u64().unwrap())
        .sum();
    assert!(
        empty_below_the_top <= written / 20 + 2,
        "{empty_below_the_top} empty tiles below zoom 2"
    );
    for zoom in summary[0]["per_zoom"].as_array().unwrap() {
        let z = zoom["zoom"].as_u64().unwrap();
        assert_eq!(
            zoom["queried"].as_u64().unwrap(),
            zoom["empty"].as_u64().unwrap() + zoom["written"].as_u64().unwrap(),
            "zoom {z}"
        );
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn mbtiles_metadata_and_tms_rows_follow_the_spec() {
    let mut schema = TestSchema::create("metadata");
    schema.point_table(
        "sites",
        &[Point::new(1, 90.4, 23.8), Point::new(2, -0.1, 51.5)],
    );
    let dir = tempfile::tempdir().unwrap();
    let output = seed(&schema, dir.path(), "0-10", &[]);
    let metadata = read_metadata(&output);
    assert_eq!(metadata["name"], "sites");
    assert_eq!(metadata["format"], "pbf");
    assert_eq!(
        (metadata["minzoom"].as_str(), metadata["maxzoom"].as_str()),
        ("0", "10")
    );
    let bounds: Vec<f64> = metadata["bounds"]
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(bounds.len(), 4);
    // The bounds are what the tiles cover (the zoom-10 tiles of the two points), not the world
    // the seed walked: -0.1 and 90.4 lie inside, within a zoom-10 tile (0.35°) of the edges.
    assert!(bounds[0] <= -0.1 && bounds[0] > -0.1 - 0.36, "{bounds:?}");
    assert!(bounds[2] >= 90.4 && bounds[2] < 90.4 + 0.36, "{bounds:?}");
    assert!(bounds[1] <= 23.8 && bounds[3] >= 51.5, "{bounds:?}");
    assert_eq!(metadata["center"].split(',').count(), 3);
    let json: serde_json::Value = serde_json::from_str(&metadata["json"]).unwrap();
    let layer = &json["vector_layers"][0];
    assert_eq!(layer["id"], "sites");
    assert_eq!(
        (layer["minzoom"].as_u64(), layer["maxzoom"].as_u64()),
        (Some(0), Some(10))
    );
    assert_eq!(layer["fields"]["label"], "String");
    assert_eq!(layer["fields"]["score"], "Number");
    assert_eq!(layer["fields"]["seen_at"], "String");

    let connection = rusqlite::Connection::open(&output).unwrap();
    // 90.4E 23.8N is XYZ tile 10/769/442, which MBTiles stores at TMS row 1023 - 442 = 581.
    let data: Vec<u8> = connection
        .query_row(
            "SELECT tile_data FROM tiles WHERE zoom_level = 10 AND tile_column = 769 AND tile_row = 581",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(&data[..2], &[0x1f, 0x8b], "tiles are gzip-compressed");
    let application_id: i64 = connection
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    assert_eq!(application_id, 0x4d50_4258);
    let indexes: i64 = connection
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tiles' AND sql LIKE '%UNIQUE%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 1);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.contains("partial") && !n.ends_with("-wal")),
        "{names:?}"
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_zoom_range_above_zero_gives_the_same_tiles_as_the_full_pyramid() {
    let mut schema = TestSchema::create("zoomstart");
    let points = awkward_points();
    schema.point_table("sites", &points);
    let dir = tempfile::tempdir().unwrap();
    let full = read_mbtiles_raw(&seed(&schema, dir.path(), "0-9", &[]));
    let summary_path = dir.path().join("s.json");
    let partial = read_mbtiles_raw(&seed(
        &schema,
        dir.path(),
        "6-9",
        &["--summary-json", summary_path.to_str().unwrap()],
    ));
    let expected: BTreeMap<_, _> = full.into_iter().filter(|((z, _, _), _)| *z >= 6).collect();
    assert_eq!(partial.len(), expected.len());
    assert_same_tiles(
        &partial,
        &expected,
        "tiles of zooms 6-9 differ between the two runs",
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    assert!(
        summary[0]["tiles_probed"].as_u64().unwrap() > 0,
        "zooms 0-5 are probed, not rendered"
    );
}

/// Where a point lies a fraction of a metre south of tile `z/x/y`'s buffered envelope in metres (so
/// a statement rendering the tile's parent does not count it for the tile) yet inside the
/// envelope in degrees the tile's own index scan reads (the degrees are converted, and `&&`
/// rounds both boxes outwards to single precision, on other grids): `(lon, lat)` as
/// `point_table` stores them, or `None` when no such point lies within a tenth of a tile unit.
/// The envelopes are the tool's (`TileCoord::mercator_envelope(margin).grown(1e-9)`), margin
/// `BUFFER / EXTENT`.
fn just_past_the_buffer(schema: &mut TestSchema, z: u8, x: u32, y: u32) -> Option<(f64, f64)> {
    const HALF_WORLD: f64 = 20_037_508.342_789_244;
    const RADIUS: f64 = 6_378_137.0;
    let size = 2.0 * HALF_WORLD / (1u64 << z) as f64;
    let margin = f64::from(BUFFER) / f64::from(EXTENT);
    let west = -HALF_WORLD + f64::from(x) * size - margin * size;
    let north = HALF_WORLD - f64::from(y) * size + margin * size;
    let (east, south) = (
        west + size * (1.0 + 2.0 * margin),
        north - size * (1.0 + 2.0 * margin),
    );
    let (dx, dy) = ((east - west) * 1e-9, (north - south) * 1e-9);
    let metres = [west - dx, south - dy, east + dx, north + dy];
    let lon = |m: f64| (m / RADIUS).to_degrees();
    let lat = |m: f64| (m / RADIUS).sinh().atan().to_degrees();
    let degrees = [
        lon(metres[0]),
        lat(metres[1]),
        lon(metres[2]),
        lat(metres[3]),
    ];
    let unit = size / f64::from(EXTENT);
    let row = schema
        .client()
        .query_opt(
            "SELECT lon, lat FROM (
                 SELECT round($9::float8::numeric, 9)::float8 AS lon,
                        round(degrees(atan(sinh(($2::float8 - k * 0.0005::float8) / 6378137.0::float8)))::numeric, 9)::float8 AS lat,
                        k
                 FROM generate_series(1, ($10::float8 / 0.0005::float8)::int) k) c
             WHERE NOT ST_Transform(ST_SetSRID(ST_MakePoint(lon, lat), 4326), 3857)
                       && ST_MakeEnvelope($1::float8, $2::float8, $3::float8, $4::float8, 3857)
               AND ST_SetSRID(ST_MakePoint(lon, lat), 4326) && ST_MakeEnvelope($5::float8, $6::float8, $7::float8, $8::float8, 4326)
             ORDER BY k LIMIT 1",
            &[
                &metres[0],
                &metres[1],
                &metres[2],
                &metres[3],
                &degrees[0],
                &degrees[1],
                &degrees[2],
                &degrees[3],
                &((degrees[0] + degrees[2]) / 2.0),
                &(unit / 10.0),
            ],
        )
        .unwrap();
    row.map(|row| (row.get(0), row.get(1)))
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_point_just_past_a_tiles_buffer_gives_the_same_tiles_whether_the_parent_is_rendered_or_probed()
{
    // A run probes the zooms above its minimum, and a shard every tile above its plan's split
    // zoom: the children a probe finds must be those a render of the same tile finds. A probe
    // that read the envelope in degrees alone had a shard write tiles that one run did not
    // (10 of 542,027 at 1M points, issue 65).
    let mut schema = TestSchema::create("bufferedge");
    let mut candidates = (8u8..=11).flat_map(|z| {
        let n = 1u32 << z;
        (0..40).map(move |i| (z, n / 2 + n / 8 + i, n / 2 - n / 10 + i))
    });
    let (tile, (lon, lat)) = candidates
        .find_map(|(z, x, y)| Some(((z, x, y), just_past_the_buffer(&mut schema, z, x, y)?)))
        .expect("some tile has a point just past its buffer in metres, inside it in degrees");
    schema.point_table("sites", &[Point::new(1, lon, lat)]);
    let dir = tempfile::tempdir().unwrap();
    let (z, _, _) = tile;
    let rendered = read_mbtiles_raw(&seed(&schema, dir.path(), &format!("{}-{z}", z - 1), &[]));
    let probed = read_mbtiles_raw(&seed(&schema, dir.path(), &format!("{z}-{z}"), &[]));
    let at_z = |tiles: BTreeMap<(u8, u32, u32), Vec<u8>>| -> BTreeMap<_, _> {
        tiles.into_iter().filter(|(key, _)| key.0 == z).collect()
    };
    let (rendered, probed) = (at_z(rendered), at_z(probed));
    assert!(
        !rendered.contains_key(&tile),
        "the point ({lon}, {lat}) lies past tile {tile:?}'s buffer: rendering the parent skips it"
    );
    assert_eq!(
        probed.keys().collect::<Vec<_>>(),
        rendered.keys().collect::<Vec<_>>(),
        "zoom {z} with its parent probed (--zoom {z}-{z}) against rendered (--zoom {}-{z}); the \
         point ({lon}, {lat}) lies just past tile {tile:?}'s buffer",
        z - 1
    );
    assert_same_tiles(&probed, &rendered, "the same tiles hold the same bytes");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_bbox_limits_the_tiles_and_leaves_them_unchanged() {
    let mut schema = TestSchema::create("bbox");
    let points = awkward_points();
    schema.point_table("sites", &points);
    let dir = tempfile::tempdir().unwrap();
    let world = read_mbtiles_raw(&seed(&schema, dir.path(), "0-10", &[]));
    let dhaka = read_mbtiles_raw(&seed(
        &schema,
        dir.path(),
        "0-10",
        &["--bbox", "90.3,23.7,90.5,23.9"],
    ));
    assert!(!dhaka.is_empty());
    for (&(z, x, y), data) in &dhaka {
        let n = f64::from(1u32 << z);
        let (west, east) = ((90.3 + 180.0) / 360.0 * n, (90.5 + 180.0) / 360.0 * n);
        assert!(
            f64::from(x) + 1.0 >= west && f64::from(x) <= east,
            "{z}/{x}/{y} outside the bbox"
        );
        assert_eq!(
            Some(data),
            world.get(&(z, x, y)),
            "{z}/{x}/{y} differs from the world run"
        );
    }
    let expected_z10 = world
        .keys()
        .filter(|(z, x, y)| *z == 10 && (768..=769).contains(x) && (441..=442).contains(y))
        .count();
    assert_eq!(
        dhaka.keys().filter(|(z, _, _)| *z == 10).count(),
        expected_z10
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_dry_run_counts_the_queries_a_real_run_makes_and_writes_nothing() {
    let mut schema = TestSchema::create("dryrun");
    schema.point_table("sites", &awkward_points());
    let dir = tempfile::tempdir().unwrap();
    let real_summary = dir.path().join("real.json");
    seed(
        &schema,
        dir.path(),
        "0-8",
        &["--summary-json", real_summary.to_str().unwrap()],
    );
    let config = dir.path().join("oar.toml");
    let dry_summary = dir.path().join("dry.json");
    let run = oar_tiles(
        Some(&schema.url),
        &[
            "seed",
            "--config",
            config.to_str().unwrap(),
            "--zoom",
            "0-8",
            "--dry-run",
            "--summary-json",
            dry_summary.to_str().unwrap(),
        ],
    );
    run.assert_success();
    assert!(run.stdout.contains("would query"), "{}", run.stdout);
    let real: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&real_summary).unwrap()).unwrap();
    let dry: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dry_summary).unwrap()).unwrap();
    for (r, d) in real[0]["per_zoom"]
        .as_array()
        .unwrap()
        .iter()
        .zip(dry[0]["per_zoom"].as_array().unwrap())
    {
        assert_eq!(r["queried"], d["probed"], "zoom {}", r["zoom"]);
    }
    let outputs = std::fs::read_dir(dir.path()).unwrap().filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".mbtiles")
    });
    assert_eq!(outputs.count(), 1, "the dry run wrote no output");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn the_same_data_seeds_to_the_same_bytes() {
    let mut schema = TestSchema::create("determinism");
    schema.point_table("sites", &awkward_points());
    let dir = tempfile::tempdir().unwrap();
    let first = read_mbtiles_raw(&seed(&schema, dir.path(), "0-8", &[]));
    let second = read_mbtiles_raw(&seed(&schema, dir.path(), "0-8", &["--concurrency", "1"]));
    assert!(!first.is_empty());
    assert_same_tiles(&first, &second, "two seeds of the same rows differ");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn layers_with_other_srids_text_ids_filters_and_zoom_ranges_render_as_configured() {
    let mut schema = TestSchema::create("layers");
    schema.point_table("sites", &awkward_points());
    schema.execute(
        "CREATE TABLE {schema}.depots (code text PRIMARY KEY, open boolean, geom geometry(Point, 3857));
         CREATE INDEX ON {schema}.depots USING gist (geom);
         INSERT INTO {schema}.depots VALUES
           ('A-1', true, ST_Transform(ST_SetSRID(ST_MakePoint(90.4, 23.8), 4326), 3857)),
           ('B-2', false, ST_Transform(ST_SetSRID(ST_MakePoint(90.41, 23.81), 4326), 3857)),
           ('C-3', true, ST_Transform(ST_SetSRID(ST_MakePoint(-3.7, 40.4), 4326), 3857));",
    );
    let config = format!(
        "{}\n[[tileset.layer]]\nname = \"depots\"\ntable = \"{}.depots\"\nid_column = \"code\"\nattributes = [\"open\"]\nfilter = \"open\"\nminzoom = 5\n",
        single_layer_config(&schema.name, "sites", "", "maxzoom = 6"),
        schema.name
    );
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("oar.toml");
    std::fs::write(&config_path, config).unwrap();
    let output = dir.path().join("layers.mbtiles");
    oar_tiles(
        Some(&schema.url),
        &[
            "seed",
            "--config",
            config_path.to_str().unwrap(),
            "--zoom",
            "0-8",
            "--output",
            output.to_str().unwrap(),
        ],
    )
    .assert_success();
    let tiles = read_mbtiles(&output);
    for (&(z, x, y), layers) in &tiles {
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        assert!(z >= 5 || names == ["sites"], "{z}/{x}/{y}: {names:?}");
        assert!(
            z <= 6 || !names.contains(&"sites"),
            "{z}/{x}/{y}: {names:?}"
        );
        if let Some(depots) = layers.iter().find(|l| l.name == "depots") {
            for feature in &depots.features {
                assert_eq!(feature.id, None, "text ids are properties, not feature ids");
                assert_eq!(
                    feature.props["open"],
                    PropValue::Bool(true),
                    "the filter keeps open depots only"
                );
                assert!(matches!(&feature.props["code"], PropValue::String(c) if c != "B-2"));
            }
        }
    }
    let depots_at_8: usize = tiles
        .iter()
        .filter(|((z, _, _), _)| *z == 8)
        .flat_map(|(_, layers)| layers.iter().filter(|l| l.name == "depots"))
        .map(|l| l.features.len())
        .sum();
    assert_eq!(depots_at_8, 2, "A-1 and C-3 at zoom 8");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn logs_written_to_a_pipe_are_plain_text_or_one_json_object_per_line() {
    let mut schema = TestSchema::create("logformat");
    schema.point_table("sites", &awkward_points()[..20]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("oar.toml");
    std::fs::write(&config, single_layer_config(&schema.name, "sites", "", "")).unwrap();
    let output = dir.path().join("out.mbtiles");
    let owned = seed_args(&config, "0-3", output.to_str().unwrap());
    let args = strs(&owned);

    let text = oar_tiles(Some(&schema.url), &args);
    text.assert_success();
    assert!(text.stderr.contains("INFO"), "{}", text.stderr);
    assert!(
        !text.stderr.contains('\x1b') && !text.stdout.contains('\x1b'),
        "no escape codes in a pipe:\n{:?}",
        text.stderr
    );

    let mut json_args = args.clone();
    json_args.extend(["--log-format", "json"]);
    let json = oar_tiles(Some(&schema.url), &json_args);
    json.assert_success();
    let lines: Vec<&str> = json.stderr.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["fields"]["message"].is_string(),
            "{line}"
        );
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn array_attributes_travel_as_delimited_lists_a_map_client_can_test_for_membership() {
    let mut schema = TestSchema::create("lists");
    schema.execute(
        "CREATE TABLE {schema}.makers (id bigint PRIMARY KEY, contributor_ids int[], tags text[],
                                       pt geometry(Point, 4326) NOT NULL);
         CREATE INDEX ON {schema}.makers USING gist (pt);
         INSERT INTO {schema}.makers VALUES
           (1, '{12,34}', '{\"a,b\",\"50%\"}', ST_SetSRID(ST_MakePoint(10, 10), 4326)),
           (2, '{}', NULL, ST_SetSRID(ST_MakePoint(12, 10), 4326)),
           (3, NULL, '{x,NULL}', ST_SetSRID(ST_MakePoint(14, 10), 4326)),
           (4, '{123}', '{}', ST_SetSRID(ST_MakePoint(16, 10), 4326));",
    );
    let config = format!(
        "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\n[[tileset]]\nname = \"makers\"\n\
         [[tileset.layer]]\nname = \"makers\"\ntable = \"{}.makers\"\ngeometry_column = \"pt\"\n\
         attributes = [\"contributor_ids\", \"tags\"]\ncluster_maxzoom = 5\n",
        schema.name
    );
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("oar.toml");
    std::fs::write(&config_path, config).unwrap();
    let output = dir.path().join("lists.mbtiles");
    let config_arg = config_path.to_str().unwrap();
    let output_arg = output.to_str().unwrap();
    oar_tiles(
        Some(&schema.url),
        &[
            "seed", "--config", config_arg, "--zoom", "0-6", "--output", output_arg,
        ],
    )
    .assert_success();
    let tiles = read_mbtiles(&output);
    let text = |value: &str| Some(PropValue::String(value.to_string()));
    let expected = [
        (1, text(",12,34,"), text(",a%2Cb,50%25,")),
        (2, text(""), None),
        (3, None, text(",x,")),
        (4, text(",123,"), text("")),
    ];
    // Unclustered zooms, and a clustered zoom where each maker is a cluster of one.
    for zoom in [5, 6] {
        let mut found = 0;
        for ((z, _, _), layers) in &tiles {
            if *z != zoom {
                continue;
            }
            for feature in layers.iter().flat_map(|l| &l.features) {
                let id = match zoom {
                    6 => feature.id.unwrap() as i64,
                    _ => match feature.props.get("id") {
                        Some(PropValue::Int(id)) => *id,
                        Some(PropValue::UInt(id)) => *id as i64,
                        other => panic!("a cluster of one names its member: {other:?}"),
                    },
                };
                let (_, contributors, tags) = &expected[id as usize - 1];
                assert_eq!(
                    &feature.props.get("contributor_ids").cloned(),
                    contributors,
                    "{id} at {zoom}"
                );
                assert_eq!(&feature.props.get("tags").cloned(), tags, "{id} at {zoom}");
                found += 1;
            }
        }
        assert_eq!(found, 4, "every maker at zoom {zoom}");
    }
    // The membership test a map client makes: ",12," finds maker 1 only, not maker 4's ",123,".
    let members = |needle: &str| -> Vec<u64> {
        tiles
            .iter()
            .filter(|((z, _, _), _)| *z == 6)
            .flat_map(|(_, layers)| layers.iter().flat_map(|l| &l.features))
            .filter(|f| matches!(f.props.get("contributor_ids"), Some(PropValue::String(v)) if v.contains(needle)))
            .map(|f| f.id.unwrap())
            .collect()
    };
    assert_eq!(members(",12,"), [1]);
    assert_eq!(members(",123,"), [4]);
    let connection = rusqlite::Connection::open(&output).unwrap();
    let json: String = connection
        .query_row("SELECT value FROM metadata WHERE name = 'json'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json["vector_layers"][0]["fields"]["contributor_ids"],
        "String"
    );
}

/// `count` points with ids from 1 in a lon/lat box, each with an 800-character label: a few
/// thousand make a tile of megabytes.
fn long_labelled_points(rng: &mut Rng, count: i64, lon: (f64, f64), lat: (f64, f64)) -> Vec<Point> {
    (1..=count)
        .map(|id| {
            let mut point = Point::new(id, rng.range(lon.0, lon.1), rng.range(lat.0, lat.1));
            let filler: String = (0..80)
                .map(|_| char::from(b'a' + (rng.next_f64() * 26.0) as u8))
                .collect();
            point.label = format!("{id}:{}", filler.repeat(10));
            point
        })
        .collect()
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_tile_of_several_megabytes_arrives_in_pieces_and_is_stored_whole() {
    // About 3.5 MB of MVT at zoom 0, which the tile statement returns in 1 MiB pieces over several
    // rows: the stored tile must be all of them, in order.
    let mut rng = Rng::new(7);
    let points: Vec<Point> = long_labelled_points(&mut rng, 4000, (10.0, 12.0), (40.0, 42.0));
    let mut schema = TestSchema::create("pieces");
    schema.point_table("sites", &points);
    let dir = tempfile::tempdir().unwrap();
    let output = seed(&schema, dir.path(), "0-1", &[]);
    let raw = read_mbtiles_raw(&output);
    let mvt_bytes = crate::common::mvt::gunzip_if_needed(&raw[&(0, 0, 0)]).len();
    assert!(mvt_bytes > 3 << 20, "the z0 tile is {mvt_bytes} bytes");
    let tiles = read_mbtiles(&output);
    for key in [(0, 0, 0), (1, 1, 0)] {
        let features = &layer(&tiles, key).features;
        assert_eq!(features.len(), points.len(), "tile {key:?}");
        for feature in features {
            let id = feature.id.expect("every feature has its id") as usize;
            assert_eq!(
                feature.props.get("label"),
                Some(&PropValue::String(points[id - 1].label.clone())),
                "feature {id} of tile {key:?}"
            );
        }
    }

    // Uncompressed, the pieces are joined rather than compressed as they arrive.
    let config = dir.path().join("plain.toml");
    let plain = single_layer_config(&schema.name, "sites", "compress = false", "");
    std::fs::write(&config, plain).unwrap();
    let tree = dir.path().join("plain");
    let tree_arg = format!("dir:{}", tree.display());
    let args = seed_args(&config, "0-1", &tree_arg);
    oar_tiles(Some(&schema.url), &strs(&args)).assert_success();
    let plain_tiles = read_tree(&tree, "pbf");
    assert_eq!(plain_tiles.len(), raw.len());
    for (key, data) in &raw {
        assert!(
            plain_tiles[key] == crate::common::mvt::gunzip_if_needed(data),
            "tile {key:?}: the uncompressed tree differs from the MBTiles"
        );
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_tile_in_pieces_between_other_tiles_of_its_statement_keeps_the_batch_whole() {
    // Small points all over the world fill statements of many tiles each below the eager zooms;
    // a dense patch of long labels makes one of their tiles several 1 MiB pieces long. A statement
    // whose rows a renderer miscounts is retried tile by tile, which the stored tiles would not
    // show: the debug log does.
    let mut rng = Rng::new(11);
    let mut points: Vec<Point> = long_labelled_points(&mut rng, 3000, (10.0, 11.0), (42.0, 43.0));
    points.extend(
        (3001..=4000).map(|id| Point::new(id, rng.range(-179.0, 179.0), rng.range(-80.0, 80.0))),
    );
    let mut schema = TestSchema::create("piecebatch");
    schema.point_table("sites", &points);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("oar.toml");
    std::fs::write(&config, single_layer_config(&schema.name, "sites", "", "")).unwrap();
    let output = dir.path().join("out.mbtiles");
    let args = seed_args(&config, "0-5", output.to_str().unwrap());
    let run = oar_tiles_with(
        Some(&schema.url),
        &strs(&args),
        &[("RUST_LOG", "oar_tiles=debug")],
    );
    run.assert_success();
    assert!(
        !run.stderr.contains("trying each alone"),
        "a statement was retried tile by tile:\n{}",
        run.stderr
            .lines()
            .filter(|line| line.contains("trying each alone"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let raw = read_mbtiles_raw(&output);
    let in_pieces: Vec<(u8, u32, u32)> = raw
        .iter()
        .filter(|(key, data)| {
            key.0 >= 3 && crate::common::mvt::gunzip_if_needed(data).len() > 1 << 20
        })
        .map(|(key, _)| *key)
        .collect();
    assert!(
        !in_pieces.is_empty(),
        "no tile below the eager zooms arrived in pieces"
    );
    assert!(
        raw.keys().filter(|key| key.0 == in_pieces[0].0).count() > 8,
        "the tile in pieces shares its zoom with enough tiles for statements of several"
    );
    let tiles = read_mbtiles(&output);
    for (key, layers) in &tiles {
        for feature in &layers[0].features {
            let id = feature.id.expect("every feature has its id") as usize;
            assert_eq!(
                feature.props.get("label"),
                Some(&PropValue::String(points[id - 1].label.clone())),
                "feature {id} of tile {key:?}"
            );
        }
    }
    for key in &in_pieces {
        let patch = tiles[key][0]
            .features
            .iter()
            .filter(|f| f.id.unwrap() <= 3000);
        assert_eq!(patch.count(), 3000, "tile {key:?} holds the whole patch");
    }
}
