//! `seed --dirty` after a long diagonal line and an L-shaped polygon (a `geography` column) moved,
//! their ids changed too (an edit of more than the geometry; `moved_shapes.rs` has the edits of the
//! geometry alone): it renders exactly the tiles whose buffered envelopes the old and new shapes
//! meet, which PostGIS counts here, far fewer than the tiles of their boxes, and the result equals
//! a full seed.

use crate::common::fixture::{wraps_fixture, Fixture};
use crate::common::run::{assert_same_tiles, oar_tiles, read_mbtiles_raw, Run};

const ZOOMS: (u8, u8) = (0, 9);

struct Shapes {
    base: Fixture,
}

wraps_fixture!(Shapes, base);

impl Shapes {
    fn new() -> Shapes {
        let base = Fixture::new("dirtyshapes", &[], "shapes.toml", |schema| {
            schema.execute(
                "CREATE TABLE {schema}.routes (id int PRIMARY KEY, geom geometry(LineString, 4326));
                 CREATE INDEX ON {schema}.routes USING gist (geom);
                 INSERT INTO {schema}.routes VALUES
                     (1, 'SRID=4326;LINESTRING(-60 -40, 60 50)'),
                     (2, 'SRID=4326;LINESTRING(100 10, 101 11)');
                 CREATE TABLE {schema}.areas (id int PRIMARY KEY, geog geography(Polygon, 4326));
                 CREATE INDEX ON {schema}.areas USING gist ((geog::geometry));
                 INSERT INTO {schema}.areas VALUES
                     (1, 'SRID=4326;POLYGON((0 0, 40 0, 40 2, 2 2, 2 40, 0 40, 0 0))');
                 CREATE TABLE {schema}.before AS
                     SELECT geom FROM {schema}.routes WHERE id = 1
                     UNION ALL SELECT geog::geometry FROM {schema}.areas;",
            );
            let changes = schema.companion("cdc");
            let s = &schema.name;
            format!(
                "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\npool_size = 2\n\
                 [changes]\nschema = \"{}\"\n\
                 [[tileset]]\nname = \"shapes\"\noutput = \"shapes.mbtiles\"\nminzoom = {}\nmaxzoom = {}\n\
                 [[tileset.layer]]\nname = \"routes\"\ntable = \"{s}.routes\"\nsimplify = 0\n\
                 [[tileset.layer]]\nname = \"areas\"\ntable = \"{s}.areas\"\ngeometry_column = \"geog\"\n\
                 simplify = 0\n",
                changes,
                ZOOMS.0,
                ZOOMS.1,
            )
        });
        Shapes { base }
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut full = vec![args[0], "--config", self.config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        oar_tiles(Some(&self.schema.url), &full)
    }

    /// How many tiles of the zooms have a buffered envelope (64 of 4096) that one of `shapes`
    /// (SQL of a set of geometries in EPSG:4326) meets, and how many lie in their boxes.
    fn tiles_met(&mut self, shapes: &str) -> (i64, i64) {
        let sql = format!(
            "WITH s AS ({shapes}), m AS (SELECT ST_Transform(g, 3857) AS g FROM s AS s(g)),
             c AS (
                 SELECT z, x, y, bool_or(ST_Intersects(m.g,
                            ST_TileEnvelope(z, x, y, margin => 64.0 / 4096))) AS met
                 FROM m, generate_series({}, {}) AS z,
                      LATERAL (SELECT 20037508.342789244 * 2 / (1 << z) AS size) k,
                      LATERAL generate_series(
                          greatest(0, floor((ST_XMin(m.g) + 20037508.342789244) / k.size - 1)::int),
                          least((1 << z) - 1, floor((ST_XMax(m.g) + 20037508.342789244) / k.size + 1)::int)) AS x,
                      LATERAL generate_series(
                          greatest(0, floor((20037508.342789244 - ST_YMax(m.g)) / k.size - 1)::int),
                          least((1 << z) - 1, floor((20037508.342789244 - ST_YMin(m.g)) / k.size + 1)::int)) AS y
                 GROUP BY z, x, y)
             SELECT count(*) FILTER (WHERE met), count(*) FROM c",
            ZOOMS.0, ZOOMS.1
        );
        let sql = sql.replace("{schema}", &format!("\"{}\"", self.schema.name));
        let row = self.schema.client().query_one(&sql, &[]).unwrap();
        (row.get(0), row.get(1))
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_moved_line_and_polygon_dirty_only_the_tiles_their_shapes_meet() {
    let mut shapes = Shapes::new();
    shapes.run(&["changes", "install"]).assert_success();
    let output = shapes.path("reseeded.mbtiles");
    let output = output.to_str().unwrap();
    shapes.run(&["seed", "--output", output]).assert_success();
    shapes.schema.execute(
        "UPDATE {schema}.routes SET id = 11, geom = ST_Translate(geom, 0.5, 0.25) WHERE id = 1;
         UPDATE {schema}.areas SET id = 11, geog = ST_Translate(geog::geometry, -0.5, 0.5)::geography;",
    );
    let (met, boxed) = shapes.tiles_met(
        "SELECT geom FROM {schema}.before
         UNION ALL SELECT geom FROM {schema}.routes WHERE id = 11
         UNION ALL SELECT geog::geometry FROM {schema}.areas",
    );
    let summary = shapes.path("summary.json");
    shapes
        .run(&[
            "seed",
            "--dirty",
            "--output",
            output,
            "--summary-json",
            summary.to_str().unwrap(),
        ])
        .assert_success();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let queried = json[0]["tiles_queried"].as_i64().unwrap();
    println!("dirty tiles: {queried} rendered, {met} met by the shapes, {boxed} in their boxes");
    // The tool tests closed rectangles with a hair of slack where PostGIS tests exactly: a tile
    // whose buffer the shape grazes may differ, never more than a handful.
    assert!(
        queried >= met && queried <= met + met / 100 + 4,
        "{queried} tiles rendered, the shapes meet {met}"
    );
    assert!(
        queried * 4 < boxed,
        "{queried} tiles rendered, {boxed} in the boxes"
    );
    let full = shapes.path("full.mbtiles");
    shapes
        .run(&["seed", "--output", full.to_str().unwrap()])
        .assert_success();
    assert_same_tiles(
        &read_mbtiles_raw(&full),
        &read_mbtiles_raw(std::path::Path::new(output)),
        "the reseed against a full seed",
    );
}
