//! A geometry-only edit of a line or polygon (issue 46, item 2): `seed --dirty` renders only the
//! tiles where what the zooms draw of the old and the new shape differs, and still equals a full
//! seed tile for tile. Natural Earth's Russia, as a polygon and as its boundary line, with one
//! border vertex moved by about a kilometre, through a statement of one row and one of several;
//! then a whole country moved, and an attribute edit, which still renders every tile of the shape.

use std::path::Path;

use crate::common::fixture::{wraps_fixture, Fixture};
use crate::common::geodata::countries_and_borders;
use crate::common::run::{assert_same_tiles, oar_tiles, read_mbtiles_raw, Run};

struct Moved {
    base: Fixture,
    /// The moved vertex, as `ST_AsText` writes its coordinates (`x y`).
    vertex: String,
    /// Full seeds made so far, each into a file of its own.
    full_seeds: usize,
}

wraps_fixture!(Moved, base);

/// Where the test moves the vertex: north by 0.01°, about 1.1 km.
const SHIFT: f64 = 0.01;

impl Moved {
    fn new() -> Moved {
        let mut vertex = String::new();
        let base = Fixture::new("movedshapes", &[], "moved.toml", |schema| {
            countries_and_borders(schema);
            // A vertex inside a ring of Russia's largest part (neither a ring's first nor its
            // last), on its southern border.
            let sql = "SELECT ST_X(d.geom), ST_Y(d.geom),
                              substring(ST_AsText(d.geom) FROM '\\((.*)\\)')
                       FROM {schema}.countries c, ST_DumpPoints(c.geom) d
                       WHERE c.name = 'Russia' AND d.path[3] > 2
                         AND d.path[3] < ST_NPoints(ST_ExteriorRing(ST_GeometryN(c.geom, d.path[1]))) - 1
                       ORDER BY abs(ST_X(d.geom) - 90) + abs(ST_Y(d.geom) - 50) LIMIT 1"
                .replace("{schema}", &format!("\"{}\"", schema.name));
            let row = schema.client().query_one(&sql, &[]).unwrap();
            let (x, y): (f64, f64) = (row.get(0), row.get(1));
            vertex = row.get(2);
            let changes = schema.companion("cdc");
            let s = &schema.name;
            format!(
                "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\npool_size = 2\n\
                 [changes]\nschema = \"{changes}\"\n\
                 [[tileset]]\nname = \"moved\"\noutput = \"moved.mbtiles\"\nminzoom = 0\nmaxzoom = 12\n\
                 bbox = [{}, {}, {}, {}]\n\
                 [[tileset.layer]]\nname = \"countries\"\ntable = \"{s}.countries\"\nattributes = [\"name\"]\n\
                 [[tileset.layer]]\nname = \"borders\"\ntable = \"{s}.borders\"\nattributes = [\"name\"]\n",
                x - 1.5,
                y - 1.0,
                x + 1.5,
                y + 1.0,
            )
        });
        Moved {
            base,
            vertex,
            full_seeds: 0,
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut full = vec![args[0], "--config", self.config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        oar_tiles(Some(&self.schema.url), &full)
    }

    /// SQL of Russia's geometry in `table` with the vertex at `to` (`x y`) instead of `from`.
    fn with_vertex(table: &str, from: &str, to: &str) -> String {
        format!(
            "ST_GeomFromText(replace(ST_AsText(geom), ',{from},', ',{to},'), 4326)::geometry(Multi{}, 4326)",
            if table == "countries" {
                "Polygon"
            } else {
                "LineString"
            }
        )
    }

    /// The vertex moved north by [`SHIFT`], as `x y`.
    fn shifted(&self) -> String {
        let (x, y) = self.vertex.split_once(' ').unwrap();
        let y: f64 = y.parse().unwrap();
        format!("{x} {}", y + SHIFT)
    }

    /// `seed --dirty` into `reseeded`, then a full seed into a new file; asserts they hold the same
    /// tiles, and returns the tiles the reseed rendered and those the full seed stored.
    fn reseed_against_full(&mut self, reseeded: &Path, step: &str) -> (u64, usize) {
        let summary = self.path("summary.json");
        self.run(&[
            "seed",
            "--dirty",
            "--output",
            reseeded.to_str().unwrap(),
            "--summary-json",
            summary.to_str().unwrap(),
        ])
        .assert_success();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        let rendered = json[0]["tiles_queried"].as_u64().unwrap();
        self.full_seeds += 1;
        let full = self.path(&format!("full-{}.mbtiles", self.full_seeds));
        self.run(&["seed", "--output", full.to_str().unwrap()])
            .assert_success();
        let full = read_mbtiles_raw(&full);
        assert_same_tiles(
            &full,
            &read_mbtiles_raw(reseeded),
            &format!("after {step}: the reseed against a full seed"),
        );
        println!(
            "{step}: {rendered} tiles rendered, {} in the full seed",
            full.len()
        );
        (rendered, full.len())
    }
}

#[test]
#[ignore = "needs PostGIS and the data: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL and OAR_TILES_TEST_GEODATA"]
fn a_moved_vertex_renders_only_where_the_drawn_shapes_differ() {
    let mut moved = Moved::new();
    moved.run(&["changes", "install"]).assert_success();
    let reseeded = moved.path("reseeded.mbtiles");
    moved
        .run(&["seed", "--output", reseeded.to_str().unwrap()])
        .assert_success();
    let (vertex, shifted) = (moved.vertex.clone(), moved.shifted());

    // One row per statement: each logs its pair alone.
    for table in ["countries", "borders"] {
        moved.schema.execute(&format!(
            "UPDATE {{schema}}.{table} SET geom = {} WHERE name = 'Russia'",
            Moved::with_vertex(table, &vertex, &shifted)
        ));
    }
    let (one_vertex, _) = moved.reseed_against_full(&reseeded, "moving one vertex");
    assert!(one_vertex > 0, "the move changes some tile");

    // Several rows in one statement (one of them unchanged): the bulk statement's pairs.
    for table in ["countries", "borders"] {
        moved.schema.execute(&format!(
            "UPDATE {{schema}}.{table} SET geom = CASE WHEN name = 'Russia' THEN {} ELSE geom END
             WHERE name IN ('Russia', 'Mongolia')",
            Moved::with_vertex(table, &shifted, &vertex)
        ));
    }
    let (back, _) = moved.reseed_against_full(&reseeded, "moving it back in bulk");
    assert!(back > 0, "the move back changes some tile");

    // A whole shape moved, and another's vertex, in one statement.
    moved.schema.execute(&format!(
        "UPDATE {{schema}}.countries SET geom = CASE WHEN name = 'Russia' THEN {}
                                                     ELSE ST_Translate(geom, 0.3, -0.2) END
         WHERE name IN ('Russia', 'Mongolia', 'Kazakhstan')",
        Moved::with_vertex("countries", &vertex, &shifted)
    ));
    moved.reseed_against_full(&reseeded, "moving two countries and a vertex");

    // An attribute edit changes every tile the shape is drawn in: all of them are rendered, as
    // every geometry edit rendered them before.
    for table in ["countries", "borders"] {
        moved.schema.execute(&format!(
            "UPDATE {{schema}}.{table} SET name = 'Russian Federation' WHERE name = 'Russia'"
        ));
    }
    let (renamed, full) = moved.reseed_against_full(&reseeded, "renaming it");
    assert!(
        renamed * 4 > full as u64,
        "{renamed} tiles rendered after a rename, of {full}"
    );
    for rendered in [one_vertex, back] {
        assert!(
            rendered * 5 < renamed,
            "{rendered} tiles rendered for one vertex moved, {renamed} for the whole shape"
        );
    }
}
