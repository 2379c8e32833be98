//! Golden tiles (issue 46): a small fixed data set whose tiles' bytes are pinned against
//! `SETTINGS_VERSION` (`src/state/digest.rs`). An output records the settings digest it was made
//! under, and `seed --dirty` re-renders everything only when that digest changes; the version is
//! part of it. So a change to the SQL that changes what tiles hold must come with a new version,
//! or outputs made before it keep their old tiles forever, beside new ones from the same config.
//!
//! The data are made by SQL (no randomness): points, clustered points with a breakdown, lines,
//! polygons (one detailed enough that every low zoom simplifies it, one with a hole, a
//! multipolygon, one under `min_area` above z8, a text id), and, in EPSG:2263, a mixed column of
//! polygons, a line and a point at city zooms. Each tile's *uncompressed* MVT is hashed (the gzip
//! bytes depend on the compressor's version, not on what is drawn).
//!
//! PostGIS decides bytes too (GEOS, wagyu, `ST_AsMVTGeom`'s snapping), so the pins are keyed by
//! PostGIS major.minor as well, and a failure prints the full version.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use oar_tiles::testing::SETTINGS_VERSION;

use crate::common::mvt::{decode_tile, gunzip_if_needed, DecodedFeature, PropValue};
use crate::common::pg::TestSchema;
use crate::common::run::{oar_tiles, read_mbtiles_raw};

/// Per (SETTINGS_VERSION, PostGIS major.minor, tileset): one line per zoom, `z<zoom> <tiles>
/// <first 16 hex digits of the SHA-256 of the zoom's "z/x/y sha256(mvt)" lines>`.
///
/// A bump of SETTINGS_VERSION adds lines here and keeps the old ones: they record what each
/// version drew.
const PINS: &[(u32, &str, &str, &str)] = &[
    (
        2,
        "3.3",
        "europe",
        "
z0 1 b2743b0aed0a01b0
z1 2 d7929e763cc6687d
z2 2 04c7bca9d576744f
z3 4 f0a69160b2ac25ae
z4 6 5e680e21566062e9
z5 13 543e734a33ef44a6
z6 42 88823140aae6619d
z7 121 143911c4a8846bc1
z8 264 52136f6e888920bc
",
    ),
    (
        2,
        "3.3",
        "city",
        "
z0 1 2067f0c19e3e09e1
z1 1 ed9a4d106a0154e0
z2 1 dee90a2199a71982
z3 2 071cffbd2e117f71
z4 2 3543f59dd4e152d3
z5 1 ebc297be495003cc
z6 1 4e14afaaf4d97e22
z7 1 5c36b7cefece2079
z8 1 e0b5776ce4b9a475
z9 2 801a3bf83c6c9d47
z10 4 2da651e96f791e53
z11 6 13007ad9d2f5e883
z12 13 a8cef64073113d57
z13 38 3e5d537dcb01d0ec
z14 95 9bff00809e269a29
",
    ),
    (
        3,
        "3.3",
        "europe",
        "
z0 1 2e0558777146bfc3
z1 2 b11e8348c16944fb
z2 2 8979837a290b2776
z3 4 bca7f754d433dc11
z4 6 0f6ef3b4ae114adb
z5 13 cb66457bc3dd8914
z6 42 5ead8fdeaf27b283
z7 121 87f6f83924df3d41
z8 264 b4dca4344b446abd
",
    ),
    (
        3,
        "3.3",
        "city",
        "
z0 1 2067f0c19e3e09e1
z1 1 ed9a4d106a0154e0
z2 1 dee90a2199a71982
z3 2 cf9df177435e4b30
z4 2 f6f820b9651ad5cd
z5 1 c51b3973120d3cd2
z6 1 66911554a24f55e5
z7 1 1bd08280bd5050ae
z8 1 4719d7848eb174e5
z9 2 6cd16b9aa2024ad6
z10 4 f27296fc515c6553
z11 6 335ea3673a32b880
z12 13 6050227732da8c60
z13 38 aee41a9dfb42ed63
z14 95 894659c8a5d0d215
",
    ),
];

/// The tilesets of the data set and their zooms.
const TILESETS: [(&str, u8, u8); 2] = [("europe", 0, 8), ("city", 0, 14)];

/// The data set in `schema`. Every coordinate is a closed-form function of a row number.
const DATA: &str = "
CREATE TABLE {schema}.spots (id integer PRIMARY KEY, name text, rank integer, weight float8,
                             geom geometry(Point, 4326) NOT NULL);
INSERT INTO {schema}.spots
  SELECT i, CASE WHEN i % 9 = 0 THEN NULL ELSE 'spot ' || i END, (i * 7) % 5 - 2, i / 8.0,
         ST_SetSRID(ST_MakePoint(-9.5 + (i % 10) * 2.9 + 0.3 * sin(i), 36 + (i / 10) * 3.7 + 0.2 * cos(i * 1.7)), 4326)
  FROM generate_series(1, 70) i;

CREATE TABLE {schema}.sites (id bigint PRIMARY KEY, kind text, score integer,
                             geom geometry(Point, 4326) NOT NULL);
INSERT INTO {schema}.sites
  SELECT i, (ARRAY['mill', 'farm', 'port'])[1 + i % 3], i % 11,
         ST_SetSRID(ST_MakePoint(2.35 + 0.8 * sin(i * 0.37) * (1 + i % 7) / 7.0,
                                 48.85 + 0.5 * cos(i * 0.53) * (1 + i % 5) / 5.0), 4326)
  FROM generate_series(1, 300) i
  UNION ALL
  SELECT i, CASE WHEN i % 4 = 0 THEN NULL ELSE 'port' END, i % 11,
         ST_SetSRID(ST_MakePoint(-8 + ((i * 37) % 280) / 10.0, 37 + ((i * 53) % 220) / 10.0), 4326)
  FROM generate_series(301, 360) i
  UNION ALL
  SELECT i, 'mill', 1, ST_SetSRID(ST_MakePoint(12.5, 41.9), 4326) FROM generate_series(361, 364) i;

CREATE TABLE {schema}.roads (id integer PRIMARY KEY, name text, lanes integer,
                             geom geometry(Geometry, 4326) NOT NULL);
INSERT INTO {schema}.roads
  SELECT r, 'road ' || r, r % 3 + 1,
         ST_SetSRID(ST_MakeLine(array_agg(ST_MakePoint(-8 + k * 0.1,
             40 + r * 4 + 0.4 * sin(k / 4.0) + 0.05 * sin(k * 1.3)) ORDER BY k)), 4326)
  FROM generate_series(0, 260) k, generate_series(1, 4) r GROUP BY r;
INSERT INTO {schema}.roads VALUES
  (10, 'lane', 1, ST_SetSRID(ST_MakeLine(ST_MakePoint(5.0, 50.0), ST_MakePoint(5.0015, 50.0)), 4326)),
  (11, 'ring road', 2, ST_SetSRID(ST_ExteriorRing(ST_Buffer(ST_MakePoint(7.0, 45.0), 0.02, 8)), 4326)),
  (12, NULL, 2, ST_SetSRID(ST_Multi(ST_Collect(
      ST_MakeLine(ST_MakePoint(-3, 55), ST_MakePoint(1, 57)),
      ST_MakeLine(ST_MakePoint(1, 57), ST_MakePoint(3, 54.5)))), 4326));

CREATE TABLE {schema}.parcels (code text PRIMARY KEY, kind text, level integer,
                               geom geometry(Geometry, 3857) NOT NULL);
INSERT INTO {schema}.parcels
  SELECT 'big', 'forest', 3, ST_Transform(ST_SetSRID(ST_MakePolygon(ST_MakeLine(array_agg(
      ST_MakePoint(10 + r * cos(t), 47 + 0.7 * r * sin(t)) ORDER BY k))), 4326), 3857)
  FROM (SELECT k, radians(k / 2.0) AS t,
               3 + 0.15 * sin(7 * radians(k / 2.0)) + 0.05 * sin(31 * radians(k / 2.0)) AS r
        FROM generate_series(0, 719) k
        UNION ALL SELECT 720, 0, 3) ring;
INSERT INTO {schema}.parcels VALUES
  ('holed', 'lake', 1, ST_Transform(ST_SetSRID(ST_Difference(ST_Buffer(ST_MakePoint(-4, 42), 1.0, 32),
                                                             ST_Buffer(ST_MakePoint(-4, 42), 0.4, 16)), 4326), 3857)),
  ('multi', NULL, 2, ST_Transform(ST_SetSRID(ST_Collect(
      ST_MakeEnvelope(15, 53, 17, 54.5), ST_MakeEnvelope(17.5, 53.2, 18.5, 54)), 4326), 3857)),
  ('tiny', 'hut', -1, ST_Translate(ST_MakeEnvelope(0, 0, 400, 400, 3857), 0, 5621521));

CREATE TABLE {schema}.lots (id integer PRIMARY KEY, name text, floors integer,
                            geom geometry(Geometry, 2263) NOT NULL);
INSERT INTO {schema}.lots
  SELECT 1, 'park', 0, ST_Transform(ST_SetSRID(ST_MakePolygon(ST_MakeLine(array_agg(
      ST_MakePoint(-73.95 + r * cos(t), 40.70 + 0.76 * r * sin(t)) ORDER BY k))), 4326), 2263)
  FROM (SELECT k, radians(k * 0.72) AS t,
               0.08 + 0.006 * sin(9 * radians(k * 0.72)) + 0.002 * sin(41 * radians(k * 0.72)) AS r
        FROM generate_series(0, 499) k
        UNION ALL SELECT 500, 0, 0.08) ring;
INSERT INTO {schema}.lots
  SELECT 2, 'canal', NULL, ST_Transform(ST_SetSRID(ST_MakeLine(array_agg(
      ST_MakePoint(-74.1 + k * 0.001, 40.62 + 0.01 * sin(k / 9.0)) ORDER BY k)), 4326), 2263)
  FROM generate_series(0, 300) k;
INSERT INTO {schema}.lots VALUES
  (3, 'tower', 90, ST_Transform(ST_SetSRID(ST_MakePoint(-73.9857, 40.7484), 4326), 2263)),
  (4, 'yard', 2, ST_Transform(ST_SetSRID(ST_Difference(ST_Buffer(ST_MakePoint(-73.8, 40.8), 0.02, 24),
                                                       ST_Buffer(ST_MakePoint(-73.8, 40.8), 0.005, 8)), 4326), 2263)),
  (5, 'shed', 1, ST_SetSRID(ST_MakeEnvelope(1000000, 200000, 1000030, 200030), 2263));

CREATE INDEX ON {schema}.spots USING gist (geom);
CREATE INDEX ON {schema}.sites USING gist (geom);
CREATE INDEX ON {schema}.roads USING gist (geom);
CREATE INDEX ON {schema}.parcels USING gist (geom);
CREATE INDEX ON {schema}.lots USING gist (geom);
ANALYZE {schema}.spots; ANALYZE {schema}.sites; ANALYZE {schema}.roads;
ANALYZE {schema}.parcels; ANALYZE {schema}.lots;
";

/// The config of the two tilesets over `schema`, every layer with the default generalisation.
fn config_text(schema: &str) -> String {
    let layer = |name: &str, id: &str, attributes: &str, extra: &str| {
        format!(
            "\n[[tileset.layer]]\nname = \"{name}\"\ntable = \"{schema}.{name}\"\n\
             geometry_column = \"geom\"\nid_column = \"{id}\"\nattributes = [{attributes}]\n{extra}"
        )
    };
    let mut text = String::from(
        "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\npool_size = 2\n",
    );
    for (name, min, max) in TILESETS {
        text += &format!(
            "\n[[tileset]]\nname = \"{name}\"\noutput = \"{name}.mbtiles\"\nminzoom = {min}\n\
             maxzoom = {max}\nextent = 4096\nbuffer = 64\n"
        );
        if name == "europe" {
            text += &layer("spots", "id", "\"name\", \"rank\", \"weight\"", "");
            text += &layer(
                "sites",
                "id",
                "\"kind\", \"score\"",
                "cluster_maxzoom = 6\ncluster_cell = 512\ncluster_breakdown = \"kind\"\n",
            );
            text += &layer("roads", "id", "\"name\", \"lanes\"", "");
            text += &layer("parcels", "code", "\"kind\", \"level\"", "");
        } else {
            text += &layer("lots", "id", "\"name\", \"floors\"", "");
        }
    }
    text
}

/// The pin lines of a seed's tiles: per zoom, the tile count and a digest of every tile's key and
/// the SHA-256 of its uncompressed MVT, in key order.
fn pin_lines(tiles: &BTreeMap<(u8, u32, u32), Vec<u8>>) -> (String, String) {
    let mut zooms: BTreeMap<u8, (usize, String)> = BTreeMap::new();
    let mut listing = String::new();
    for (&(z, x, y), stored) in tiles {
        let hash = hex(&Sha256::digest(gunzip_if_needed(stored)));
        let line = format!("{z}/{x}/{y} {hash}\n");
        listing.push_str(&line);
        let entry = zooms.entry(z).or_default();
        entry.0 += 1;
        entry.1.push_str(&line);
    }
    let mut pins = String::new();
    for (z, (count, lines)) in zooms {
        let digest = hex(&Sha256::digest(lines.as_bytes()));
        let _ = writeln!(pins, "z{z} {count} {}", &digest[..16]);
    }
    (pins, listing)
}

/// Per zoom and layer, features and vertices: printed, so a failure shows what moved.
fn census(tiles: &BTreeMap<(u8, u32, u32), Vec<u8>>) -> BTreeMap<(u8, String), (usize, usize)> {
    let mut counts: BTreeMap<(u8, String), (usize, usize)> = BTreeMap::new();
    for (&(z, _, _), stored) in tiles {
        for layer in decode_tile(stored).unwrap() {
            let entry = counts.entry((z, layer.name)).or_default();
            entry.0 += layer.features.len();
            entry.1 += layer.features.iter().map(|f| f.points.len()).sum::<usize>();
        }
    }
    counts
}

/// Whether any tile of zoom `z` holds a feature of `layer` that `matches`.
fn drawn_at(
    tiles: &BTreeMap<(u8, u32, u32), Vec<u8>>,
    z: u8,
    layer: &str,
    matches: impl Fn(&DecodedFeature) -> bool,
) -> bool {
    tiles
        .iter()
        .filter(|((zoom, _, _), _)| *zoom == z)
        .flat_map(|(_, stored)| decode_tile(stored).unwrap())
        .filter(|decoded| decoded.name == layer)
        .any(|decoded| decoded.features.iter().any(&matches))
}

/// What the data set is there to exercise, so that a change to it cannot quietly stop pinning
/// one of the cases: thresholds that hide a feature until its zoom, clusters up to
/// `cluster_maxzoom` only, and the big polygon simplified at low zooms.
fn check_cases(tileset: &str, tiles: &BTreeMap<(u8, u32, u32), Vec<u8>>) {
    let text = |key: &'static str, value: &'static str| {
        move |f: &DecodedFeature| f.props.get(key) == Some(&PropValue::String(value.into()))
    };
    let id = |id: u64| move |f: &DecodedFeature| f.id == Some(id);
    let clustered = |f: &DecodedFeature| f.props.contains_key("count");
    let cases: Vec<(&str, bool)> = if tileset == "europe" {
        vec![
            (
                "tiny parcel hidden at z7",
                !drawn_at(tiles, 7, "parcels", text("kind", "hut")),
            ),
            (
                "tiny parcel drawn at z8",
                drawn_at(tiles, 8, "parcels", text("kind", "hut")),
            ),
            (
                "short lane hidden at z7",
                !drawn_at(tiles, 7, "roads", id(10)),
            ),
            (
                "short lane drawn at z8",
                drawn_at(tiles, 8, "roads", id(10)),
            ),
            (
                "sites clustered at z6",
                drawn_at(tiles, 6, "sites", clustered),
            ),
            ("sites whole at z7", !drawn_at(tiles, 7, "sites", clustered)),
        ]
    } else {
        vec![
            ("shed hidden at z12", !drawn_at(tiles, 12, "lots", id(5))),
            ("shed drawn at z13", drawn_at(tiles, 13, "lots", id(5))),
            ("tower drawn at z0", drawn_at(tiles, 0, "lots", id(3))),
        ]
    };
    let failed: Vec<&str> = cases
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(what, _)| *what)
        .collect();
    assert!(
        failed.is_empty(),
        "{tileset}: the data set no longer shows {failed:?}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// PostGIS `major.minor` and its full version line.
fn postgis(schema: &mut TestSchema) -> (String, String) {
    let row = schema
        .client()
        .query_one("SELECT postgis_lib_version(), postgis_full_version()", &[])
        .unwrap();
    let version: String = row.get(0);
    let minor: Vec<&str> = version.split('.').take(2).collect();
    (minor.join("."), row.get(1))
}

/// The seed's tiles, hashed, equal the ones pinned for this SETTINGS_VERSION on this PostGIS.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn tile_bytes_are_pinned_to_the_settings_version() {
    let mut schema = TestSchema::create("golden");
    schema.execute(DATA);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("golden.toml");
    std::fs::write(&config, config_text(&schema.name)).unwrap();
    let (minor, full) = postgis(&mut schema);
    let mut failures = Vec::new();
    for (tileset, _, _) in TILESETS {
        let output = dir.path().join(format!("{tileset}.mbtiles"));
        let args = [
            "seed",
            "--config",
            config.to_str().unwrap(),
            "--tileset",
            tileset,
            "--output",
            output.to_str().unwrap(),
        ];
        oar_tiles(Some(&schema.url), &args).assert_success();
        let tiles = read_mbtiles_raw(&output);
        for ((z, layer), (features, vertices)) in census(&tiles) {
            println!("{tileset} z{z} {layer}: {features} features, {vertices} vertices");
        }
        check_cases(tileset, &tiles);
        let (pins, listing) = pin_lines(&tiles);
        println!("{tileset} (SETTINGS_VERSION {SETTINGS_VERSION}, PostGIS {minor}):\n{pins}");
        if let Ok(folder) = std::env::var("OAR_TILES_GOLDEN_LISTING") {
            std::fs::write(format!("{folder}/{tileset}.txt"), &listing).unwrap();
        }
        let pinned = PINS
            .iter()
            .find(|(version, postgis, name, _)| {
                *version == SETTINGS_VERSION && *postgis == minor && *name == tileset
            })
            .map(|(_, _, _, lines)| lines.trim());
        let paste =
            |version: u32| format!("    ({version}, \"{minor}\", \"{tileset}\", \"\n{pins}\"),");
        match pinned {
            Some(lines) if lines == pins.trim() => {}
            Some(lines) => {
                let changed: Vec<&str> = pins
                    .lines()
                    .filter(|line| !lines.lines().any(|pinned| pinned == *line))
                    .collect();
                failures.push(format!(
                    "{tileset}: tile bytes changed while SETTINGS_VERSION stayed {SETTINGS_VERSION}: \
                     zooms {changed:?} differ from the pins. If the change is meant, bump \
                     SETTINGS_VERSION in src/state/digest.rs (every output's next --dirty run \
                     then re-renders everything) and add to PINS in tests/golden_tiles.rs:\n{}",
                    paste(SETTINGS_VERSION + 1)
                ));
            }
            None => failures.push(format!(
                "{tileset}: nothing is pinned for SETTINGS_VERSION {SETTINGS_VERSION} on PostGIS \
                 {minor} ({full}). After bumping SETTINGS_VERSION, or on a new PostGIS whose \
                 bytes you checked, add to PINS in tests/golden_tiles.rs:\n{}",
                paste(SETTINGS_VERSION)
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
