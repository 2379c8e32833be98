//! Polygons and lines from real data (issue 36): Natural Earth's 177 countries and their boundaries
//! as lines, over the world at z0-6, and New York's five boroughs (detailed multipolygons stored in
//! EPSG:2263) and their outlines, z0-12. `scripts/geodata.sh` unpacks the shapefiles and
//! `scripts/test.sh` exports `OAR_TILES_TEST_GEODATA`; each test loads them with `ogr2ogr` into a
//! schema of its own. The oracle is PostGIS itself: which tiles' buffered envelopes a geometry
//! intersects, and its Mercator area or length against the layer's thresholds, never the tool's SQL.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

mod oracle;

use oracle::{bytes_per_zoom, expected, measures, placements, tile_polygons};

use crate::common::fixture::{wraps_fixture, Fixture};
use crate::common::geodata::{geodata, ogr2ogr};
use crate::common::pg::TestSchema;
use crate::common::run::{assert_same_tiles, differences, oar_tiles, read_mbtiles_raw, Run, Tiles};

/// Half the width of the Web-Mercator world, in metres.
const HALF: f64 = 20_037_508.342_789_244;
const EXTENT: u32 = 4096;
const BUFFER: u32 = 64;
/// Zooms of the two tilesets (their configured `minzoom`/`maxzoom`).
const WORLD_ZOOMS: (u8, u8) = (0, 6);
const NYC_ZOOMS: (u8, u8) = (0, 12);

/// Generalisation keys written into every layer: the defaults (no keys), everything off, and the
/// thresholds alone (so the presence oracle needs no model of simplification).
const DEFAULTS: &str = "";
const OFF: &str = "simplify = 0.0\nmin_area = 0.0\nmin_length = 0.0";
const THRESHOLDS_ONLY: &str = "simplify = 0.0\nmin_area = 0.25\nmin_length = 0.25";
/// The default thresholds, in (square) pixels.
const MIN_AREA: f64 = 0.25;
const MIN_LENGTH: f64 = 0.25;

/// One layer as the tests see it: its name in the tiles and its table.
#[derive(Clone, Copy)]
struct Layer {
    name: &'static str,
    table: &'static str,
    tileset: &'static str,
    /// Polygons (`min_area`) rather than lines (`min_length`).
    polygonal: bool,
}

const COUNTRIES: Layer = Layer {
    name: "countries",
    table: "countries",
    polygonal: true,
    tileset: "world",
};
const BORDERS: Layer = Layer {
    name: "borders",
    table: "borders",
    polygonal: false,
    tileset: "world",
};
const BOROUGHS: Layer = Layer {
    name: "boroughs",
    table: "boroughs",
    polygonal: true,
    tileset: "nyc",
};
const OUTLINES: Layer = Layer {
    name: "outlines",
    table: "outlines",
    polygonal: false,
    tileset: "nyc",
};
const LAYERS: [Layer; 4] = [COUNTRIES, BORDERS, BOROUGHS, OUTLINES];

/// The countries, the boroughs and their outlines in a schema, and a config of two tilesets
/// (`world`, `nyc`) whose layers all carry the same generalisation keys.
struct Geo {
    base: Fixture,
}

wraps_fixture!(Geo, base);

impl Geo {
    /// With `[changes]` in a schema of the test's own when `capture`, and a third tileset
    /// `world_geog` whose countries and borders come from `geography` columns when `geography`.
    fn new(label: &str, keys: &str, capture: bool, geography: bool) -> Geo {
        let base = Fixture::new(label, &[], "geo.toml", |schema| {
            load(schema);
            let mut text = String::from(
                "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\npool_size = 2\n",
            );
            if capture {
                text.push_str(&format!(
                    "[changes]\nschema = \"{}\"\n",
                    schema.companion("cdc")
                ));
            }
            let s = schema.name.clone();
            let layer = |name: &str, table: &str, column: &str, attributes: &str| {
                format!(
                    "\n[[tileset.layer]]\nname = \"{name}\"\ntable = \"{s}.{table}\"\n\
                     geometry_column = \"{column}\"\nid_column = \"id\"\nattributes = [{attributes}]\n{keys}\n"
                )
            };
            let tileset = |name: &str, (min, max): (u8, u8)| {
                format!(
                    "\n[[tileset]]\nname = \"{name}\"\noutput = \"{name}.mbtiles\"\nminzoom = {min}\n\
                     maxzoom = {max}\nextent = {EXTENT}\nbuffer = {BUFFER}\n"
                )
            };
            text += &tileset("world", WORLD_ZOOMS);
            text += &layer("countries", "countries", "geom", "\"name\", \"iso_a3\"");
            text += &layer("borders", "borders", "geom", "\"name\"");
            text += &tileset("nyc", NYC_ZOOMS);
            text += &layer("boroughs", "boroughs", "geom", "\"boroname\"");
            text += &layer("outlines", "outlines", "geom", "\"boroname\"");
            if geography {
                schema.execute(
                    "CREATE TABLE {schema}.countries_geog AS
                         SELECT id, name, iso_a3, geom::geography AS geog FROM {schema}.countries;
                     ALTER TABLE {schema}.countries_geog ADD PRIMARY KEY (id);
                     CREATE INDEX ON {schema}.countries_geog USING gist ((geog::geometry));
                     CREATE TABLE {schema}.borders_geog AS
                         SELECT id, name, geom::geography AS geog FROM {schema}.borders;
                     ALTER TABLE {schema}.borders_geog ADD PRIMARY KEY (id);
                     CREATE INDEX ON {schema}.borders_geog USING gist ((geog::geometry));
                     ANALYZE {schema}.countries_geog; ANALYZE {schema}.borders_geog;",
                );
                text += &tileset("world_geog", WORLD_ZOOMS);
                text += &layer(
                    "countries",
                    "countries_geog",
                    "geog",
                    "\"name\", \"iso_a3\"",
                );
                text += &layer("borders", "borders_geog", "geog", "\"name\"");
            }
            text
        });
        let geo = Geo { base };
        if capture {
            geo.run(&["changes", "install"]).assert_success();
        }
        geo
    }

    /// `args` (a subcommand first) with the fixture's config.
    fn run(&self, args: &[&str]) -> Run {
        let mut full = vec![args[0], "--config", self.config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        oar_tiles(Some(&self.schema.url), &full)
    }

    /// A seed of `tileset` at its configured zooms into `name` in the test's directory, which must
    /// succeed; returns the output's path.
    fn seed(&self, tileset: &str, name: &str, extra: &[&str]) -> PathBuf {
        let output = self.path(name);
        let mut args = vec![
            "seed",
            "--tileset",
            tileset,
            "--output",
            output.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.run(&args).assert_success();
        output
    }
}

/// The data sets in `schema`: polygons as ogr2ogr loads them, and lines made from their boundaries.
fn load(schema: &mut TestSchema) {
    let dir = geodata();
    ogr2ogr(
        schema,
        &dir.join("naturalearth_lowres/naturalearth_lowres.shp"),
        "countries",
    );
    ogr2ogr(schema, &dir.join("nybb/nybb.shp"), "boroughs");
    schema.execute(
        "CREATE TABLE {schema}.borders AS
             SELECT id, name, iso_a3, ST_Multi(ST_Boundary(geom))::geometry(MultiLineString, 4326) AS geom
             FROM {schema}.countries;
         CREATE TABLE {schema}.outlines AS
             SELECT id, boroname, ST_Multi(ST_Boundary(geom))::geometry(MultiLineString, 2263) AS geom
             FROM {schema}.boroughs;
         ALTER TABLE {schema}.borders ADD PRIMARY KEY (id);
         ALTER TABLE {schema}.outlines ADD PRIMARY KEY (id);
         CREATE INDEX ON {schema}.borders USING gist (geom);
         CREATE INDEX ON {schema}.outlines USING gist (geom);
         ANALYZE {schema}.countries; ANALYZE {schema}.boroughs;
         ANALYZE {schema}.borders; ANALYZE {schema}.outlines;",
    );
}

/// Every feature is in exactly the tiles whose buffered envelope its geometry intersects, at
/// every zoom where the thresholds keep it: no tile more, and a tile less only where the part
/// inside the envelope is under one grid unit (of area for polygons, of length for lines), which
/// ST_AsMVTGeom snaps away.
#[test]
#[ignore = "needs PostGIS and the data: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL and OAR_TILES_TEST_GEODATA"]
fn every_feature_is_in_exactly_the_tiles_its_geometry_touches_unless_under_the_thresholds() {
    let mut geo = Geo::new("geopresence", THRESHOLDS_ONLY, false, false);
    let world = read_mbtiles_raw(&geo.seed("world", "world.mbtiles", &[]));
    let nyc = read_mbtiles_raw(&geo.seed("nyc", "nyc.mbtiles", &[]));
    let mut failures = Vec::new();
    for layer in LAYERS {
        let (tiles, zooms) = match layer.tileset {
            "world" => (&world, WORLD_ZOOMS),
            _ => (&nyc, NYC_ZOOMS),
        };
        let oracle = expected(&mut geo.schema, layer, zooms, MIN_AREA, MIN_LENGTH);
        let found = placements(tiles, layer.name);
        let kept: BTreeSet<_> = oracle
            .iter()
            .filter(|(_, e)| !e.dropped)
            .map(|(k, _)| *k)
            .collect();
        let dropped: BTreeSet<(u8, u64)> = oracle
            .iter()
            .filter(|(_, e)| e.dropped)
            .map(|(&(z, _, _, id), _)| (z, id))
            .collect();
        let extra: Vec<_> = found.difference(&kept).collect();
        let missing: Vec<_> = kept.difference(&found).collect();
        let (slivers, wrong): (Vec<_>, Vec<_>) =
            missing.iter().partition(|key| oracle[**key].part < 1.0);
        println!(
            "{}: {} placements expected, {} found; {} (zoom, feature) pairs under the thresholds; \
             {} missing as slivers under one grid unit",
            layer.name,
            kept.len(),
            found.len(),
            dropped.len(),
            slivers.len()
        );
        let name = |&&(z, x, y, id): &&(u8, u32, u32, u64)| {
            let why = match oracle.get(&(z, x, y, id)) {
                Some(e) if e.dropped => " (under a threshold)".to_string(),
                Some(e) => format!(" (part {:.3})", e.part),
                None => " (outside the buffered envelope)".to_string(),
            };
            format!("{z}/{x}/{y} #{id}{why}")
        };
        if !extra.is_empty() {
            let listed: Vec<_> = extra.iter().take(10).map(name).collect();
            failures.push(format!("{}: {} extra: {listed:?}", layer.name, extra.len()));
        }
        if !wrong.is_empty() {
            let listed: Vec<_> = wrong.iter().take(10).map(name).collect();
            failures.push(format!(
                "{}: {} missing: {listed:?}",
                layer.name,
                wrong.len()
            ));
        }
        assert!(
            kept.len() > 10,
            "{}: the oracle expects almost nothing",
            layer.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// With the default generalisation, every polygon of every tile is valid by GEOS (read from the
/// tiles' own integer coordinates, so nothing is rounded on the way), and `validate` passes.
#[test]
#[ignore = "needs PostGIS and the data: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL and OAR_TILES_TEST_GEODATA"]
fn every_polygon_in_every_tile_is_valid_with_the_default_generalisation() {
    let mut geo = Geo::new("geovalid", DEFAULTS, false, false);
    for tileset in ["world", "nyc"] {
        let output = geo.seed(tileset, &format!("{tileset}.mbtiles"), &[]);
        let (polygons, unreadable) = tile_polygons(&read_mbtiles_raw(&output));
        assert!(unreadable.is_empty(), "{tileset}: {unreadable:#?}");
        let (keys, wkts): (Vec<String>, Vec<String>) = polygons.into_iter().unzip();
        let invalid: Vec<String> = geo
            .schema
            .client()
            .query(
                "SELECT k || ': ' || ST_IsValidReason(g) FROM unnest($1::text[], $2::text[]) u(k, w)
                 CROSS JOIN LATERAL (SELECT ST_GeomFromText(w) AS g) p WHERE NOT ST_IsValid(g)",
                &[&keys, &wkts],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        println!(
            "{tileset}: {} polygon features checked, {} invalid",
            keys.len(),
            invalid.len()
        );
        assert!(keys.len() > 100, "{tileset}: too few polygons to check");
        assert!(
            invalid.is_empty(),
            "{tileset}: invalid polygons: {invalid:#?}"
        );
        let run = oar_tiles(None, &["validate", output.to_str().unwrap()]);
        assert_eq!(
            run.code, 0,
            "validate {tileset}\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
    }
}

/// The defaults make the low zooms smaller than no generalisation; a feature under a threshold at
/// a zoom is in no tile of it, and small features are drawn from the first zoom over it.
#[test]
#[ignore = "needs PostGIS and the data: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL and OAR_TILES_TEST_GEODATA"]
fn generalisation_shrinks_low_zooms_and_small_features_appear_deeper() {
    let mut geo = Geo::new("geogeneral", DEFAULTS, false, false);
    let mut seeds = BTreeMap::new();
    for tileset in ["world", "nyc"] {
        seeds.insert(
            tileset,
            read_mbtiles_raw(&geo.seed(tileset, &format!("{tileset}.mbtiles"), &[])),
        );
    }
    // The same tilesets with generalisation off: a config of its own in the same schema.
    let text = std::fs::read_to_string(&geo.config).unwrap();
    let off_config = geo.path("off.toml");
    std::fs::write(
        &off_config,
        text.replace("attributes", &format!("{OFF}\nattributes")),
    )
    .unwrap();
    for (tileset, zooms) in [("world", 0..=3), ("nyc", 0..=12)] {
        let output = geo.path(&format!("{tileset}-off.mbtiles"));
        let args = [
            "seed",
            "--config",
            off_config.to_str().unwrap(),
            "--tileset",
            tileset,
            "--output",
            output.to_str().unwrap(),
        ];
        oar_tiles(Some(&geo.schema.url), &args).assert_success();
        let (on, off) = (
            bytes_per_zoom(&seeds[tileset]),
            bytes_per_zoom(&read_mbtiles_raw(&output)),
        );
        for z in zooms {
            let (a, b) = (on.get(&z).copied().unwrap_or(0), off[&z]);
            println!("{tileset} z{z}: {a} bytes with the defaults, {b} without generalisation");
            assert!(a < b, "{tileset} z{z}: {a} bytes generalised, {b} not");
        }
    }
    let census = threshold_census(&mut geo, &seeds);
    println!(
        "{} features left out at low zooms and drawn from the first zoom over the thresholds: {:?}",
        census.shown_deeper.len(),
        census.shown_deeper
    );
    assert!(
        census.drawn_under.is_empty(),
        "{} (feature, zoom) pairs drawn under a threshold:\n{}",
        census.drawn_under.len(),
        census.drawn_under.join("\n")
    );
    assert!(
        census
            .shown_deeper
            .iter()
            .any(|s| s.starts_with("countries"))
            && census
                .shown_deeper
                .iter()
                .any(|s| s.starts_with("boroughs")),
        "no country or borough is small enough at z0 to test min_area"
    );
}

/// Where the tiles disagree with the thresholds, feature by feature and zoom by zoom.
struct Census {
    /// Features under a threshold at the tileset's lowest zoom, drawn at the first zoom over it.
    shown_deeper: Vec<String>,
    /// (feature, zoom) pairs drawn although under the threshold there.
    drawn_under: Vec<String>,
    /// (feature, zoom) pairs in no tile although over the threshold there.
    missing_over: Vec<String>,
}

fn threshold_census(geo: &mut Geo, seeds: &BTreeMap<&str, Tiles>) -> Census {
    let mut census = Census {
        shown_deeper: Vec::new(),
        drawn_under: Vec::new(),
        missing_over: Vec::new(),
    };
    for layer in LAYERS {
        let (zmin, zmax) = if layer.tileset == "world" {
            WORLD_ZOOMS
        } else {
            NYC_ZOOMS
        };
        let found: BTreeSet<(u8, u64)> = placements(&seeds[layer.tileset], layer.name)
            .into_iter()
            .map(|(z, _, _, id)| (z, id))
            .collect();
        let threshold = |z: u8| {
            let pixel = 2.0 * HALF / (256.0 * f64::from(1u32 << z));
            if layer.polygonal {
                MIN_AREA * pixel * pixel
            } else {
                MIN_LENGTH * pixel
            }
        };
        for (id, measure) in measures(&mut geo.schema, layer) {
            for z in zmin..=zmax {
                let line = format!(
                    "{} #{id} at z{z}: Mercator {measure:.0}, threshold {:.0}",
                    layer.name,
                    threshold(z)
                );
                match (measure >= threshold(z), found.contains(&(z, id))) {
                    (false, true) => census.drawn_under.push(line),
                    (true, false) => census.missing_over.push(line),
                    _ => {}
                }
            }
            let first_over = (zmin..=zmax).find(|&z| measure >= threshold(z));
            if let Some(z) = first_over.filter(|&z| z > zmin && found.contains(&(z, id))) {
                census
                    .shown_deeper
                    .push(format!("{} #{id} from z{z}", layer.name));
            }
        }
    }
    census
}

/// With the default generalisation, every line and polygon over the thresholds at a zoom is drawn
/// in some tile of that zoom: simplification may thin a shape, never make it vanish. (With
/// `simplify = 0` the presence test holds exactly; this is what simplifying adds.)
#[test]
#[ignore = "needs PostGIS and the data: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL and OAR_TILES_TEST_GEODATA"]
fn every_feature_over_the_thresholds_is_drawn_at_every_zoom() {
    let mut geo = Geo::new("geodrawn", DEFAULTS, false, false);
    let seeds: BTreeMap<&str, Tiles> = ["world", "nyc"]
        .into_iter()
        .map(|t| {
            (
                t,
                read_mbtiles_raw(&geo.seed(t, &format!("{t}.mbtiles"), &[])),
            )
        })
        .collect();
    let census = threshold_census(&mut geo, &seeds);
    // Listed whole: a shape that vanishes at one zoom usually vanishes at several.
    assert!(
        census.missing_over.is_empty(),
        "{} (feature, zoom) pairs in no tile although over the thresholds:\n{}",
        census.missing_over.len(),
        census.missing_over.join("\n")
    );
}

/// Rounds of edits for the reseed test: moves (ST_Translate), reshapes (ST_Buffer, ST_Simplify),
/// deletes and inserts of polygons and lines, in degrees for the world and in feet for New York.
const EDITS: [(&str, &str); 2] = [
    (
        "moved, reshaped, deleted and new polygons and lines",
        "UPDATE {schema}.countries SET geom = ST_Translate(geom, 4, -2) WHERE iso_a3 = 'FRA';
         UPDATE {schema}.borders SET geom = ST_Translate(geom, 4, -2) WHERE iso_a3 = 'FRA';
         UPDATE {schema}.countries SET geom = ST_Multi(ST_Buffer(geom, 0.5)) WHERE iso_a3 = 'ITA';
         UPDATE {schema}.countries SET geom = ST_Multi(ST_Simplify(geom, 2)) WHERE iso_a3 = 'CAN';
         UPDATE {schema}.borders SET geom = ST_Multi(ST_Simplify(geom, 2)) WHERE iso_a3 = 'CAN';
         DELETE FROM {schema}.countries WHERE iso_a3 IN ('PRT', 'NZL');
         DELETE FROM {schema}.borders WHERE iso_a3 IN ('ESP', 'JPN');
         INSERT INTO {schema}.countries (id, name, iso_a3, geom)
             VALUES (1001, 'Atlantis', 'ATL', ST_Multi(ST_Buffer(ST_SetSRID(ST_Point(-30, 30), 4326), 3)));
         INSERT INTO {schema}.borders (id, name, iso_a3, geom)
             VALUES (1001, 'Route', 'RTE', 'SRID=4326;MULTILINESTRING((-40 20, -20 40, 0 35))');
         UPDATE {schema}.boroughs SET geom = ST_Translate(geom, 3000, -2000) WHERE boroname = 'Manhattan';
         UPDATE {schema}.outlines SET geom = ST_Translate(geom, 3000, -2000) WHERE boroname = 'Manhattan';
         UPDATE {schema}.boroughs SET geom = ST_Multi(ST_Buffer(geom, 1500)) WHERE boroname = 'Brooklyn';
         UPDATE {schema}.outlines SET geom = ST_Multi(ST_Simplify(geom, 800)) WHERE boroname = 'Queens';
         DELETE FROM {schema}.boroughs WHERE boroname = 'Staten Island';
         DELETE FROM {schema}.outlines WHERE boroname = 'Bronx';
         INSERT INTO {schema}.boroughs (id, boroname, geom) VALUES (100, 'Island',
             ST_Multi(ST_Buffer(ST_Transform(ST_SetSRID(ST_Point(-73.95, 40.55), 4326), 2263), 4000)));",
    ),
    (
        "moved back, the new ones deleted, a polygon and a line reshaped again",
        "UPDATE {schema}.countries SET geom = ST_Translate(geom, -4, 2) WHERE iso_a3 = 'FRA';
         UPDATE {schema}.countries SET geom = ST_Multi(ST_Buffer(geom, -0.3)) WHERE iso_a3 = 'ITA';
         DELETE FROM {schema}.countries WHERE id = 1001;
         UPDATE {schema}.borders SET geom = 'SRID=4326;MULTILINESTRING((-40 20, -20 40))' WHERE id = 1001;
         UPDATE {schema}.boroughs SET geom = ST_Translate(geom, -3000, 2000) WHERE boroname = 'Manhattan';
         UPDATE {schema}.outlines SET geom = ST_Multi(ST_Boundary(b.geom))
             FROM {schema}.boroughs b WHERE b.boroname = 'Brooklyn' AND outlines.boroname = 'Brooklyn';
         DELETE FROM {schema}.boroughs WHERE id = 100;",
    ),
];

/// After edits of every kind, `seed --dirty` leaves each output equal, tile for tile, to a full
/// seed of the edited data.
#[test]
#[ignore = "needs PostGIS and the data: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL and OAR_TILES_TEST_GEODATA"]
fn a_reseed_after_polygon_and_line_edits_equals_a_full_seed() {
    let mut geo = Geo::new("georeseed", DEFAULTS, true, false);
    // Seeded into their configured outputs, so `seed --dirty` finds them.
    geo.run(&["seed"]).assert_success();
    let mut before: BTreeMap<&str, Tiles> = ["world", "nyc"]
        .into_iter()
        .map(|t| (t, read_mbtiles_raw(&geo.path(&format!("{t}.mbtiles")))))
        .collect();
    for (round, (what, sql)) in EDITS.iter().enumerate() {
        geo.schema.execute(sql);
        geo.run(&["seed", "--dirty"]).assert_success();
        for tileset in ["world", "nyc"] {
            let reseeded = read_mbtiles_raw(&geo.path(&format!("{tileset}.mbtiles")));
            let full = read_mbtiles_raw(&geo.seed(
                tileset,
                &format!("full-{tileset}-{round}.mbtiles"),
                &[],
            ));
            let changed = differences(&before[tileset], &reseeded);
            println!(
                "{what}: {tileset}: {} tiles changed by the reseed, {} tiles in all",
                changed.len(),
                reseeded.len()
            );
            assert_same_tiles(
                &full,
                &reseeded,
                &format!("{what}: {tileset}: reseed against a full seed"),
            );
            assert!(
                !changed.is_empty(),
                "{what}: {tileset}: the edits changed no tile"
            );
            before.insert(tileset, reseeded);
        }
    }
}

/// Issue 36's `geography` columns: the countries and their borders as `geography` (with the GiST
/// index on `(geog::geometry)` that the tool's envelope test uses) seed the same bytes as the
/// `geometry` tables.
#[test]
#[ignore = "needs PostGIS and the data: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL and OAR_TILES_TEST_GEODATA"]
fn a_geography_column_seeds_the_same_tiles_as_a_geometry_column() {
    let geo = Geo::new("geogeog", DEFAULTS, false, true);
    let geometry = read_mbtiles_raw(&geo.seed("world", "world.mbtiles", &[]));
    let geography = read_mbtiles_raw(&geo.seed("world_geog", "world_geog.mbtiles", &[]));
    println!(
        "geography: {} tiles, geometry: {} tiles",
        geography.len(),
        geometry.len()
    );
    assert!(geometry.len() > 100, "too few tiles to compare");
    assert_same_tiles(&geometry, &geography, "geography against geometry");
}
