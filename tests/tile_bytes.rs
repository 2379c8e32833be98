//! One tile, one byte string, whatever path rendered it (issue 75, item 3). `ST_AsMVTGeom` clips
//! a polygon whole, and where its clipped rings start and which way they were found depends on
//! the whole shape, far outside the tile: the same square inside a band round the pole started at
//! one corner before an edit of the band's outline and at another after it. A reseed of a
//! geometry-only edit, which renders only the tiles where the drawn shapes differ, kept the old
//! bytes of the tiles inside, and a full seed wrote others. Tiles hold each polygon's rings in one
//! canonical order, so a tile's bytes depend only on what it draws.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::fixture::{wraps_fixture, Fixture};
use crate::common::pg::Point;
use crate::common::run::{
    assert_same_tiles, differences, lines, oar_tiles, read_mbtiles_raw, summary, Run,
};

struct Band {
    base: Fixture,
    /// Full seeds made so far, each into a file of its own.
    full_seeds: usize,
}

wraps_fixture!(Band, base);

/// What a `seed` reported: its summary's tileset entry and its changed-tile list.
struct Seeded {
    summary: serde_json::Value,
    listed: BTreeSet<String>,
}

impl Seeded {
    /// Tiles the run rendered.
    fn queried(&self) -> u64 {
        self.summary["tiles_queried"].as_u64().unwrap()
    }

    /// Tiles whose stored bytes the run changed.
    fn changed(&self) -> u64 {
        self.summary["stored"]["changed"].as_u64().unwrap()
    }
}

impl Band {
    /// A band round the north pole (the polygon) and a polygon with a hole beside a
    /// second part, one layer, zooms 0-8, with change capture.
    fn new() -> Band {
        let no_points: [Point; 0] = [];
        let base = Fixture::new("tilebytes", &no_points, "bytes.toml", |schema| {
            schema.execute(
                "CREATE TABLE {schema}.areas (id integer PRIMARY KEY, name text,
                                              geom geometry(Geometry, 4326) NOT NULL);
                 INSERT INTO {schema}.areas VALUES
                   (1, 'band', ST_GeomFromText('POLYGON((-170 80,170 80,170 89.5,-170 89.5,-170 80))', 4326)),
                   (2, 'lake', ST_GeomFromText('MULTIPOLYGON(((-60 -40,60 -40,60 40,-60 40,-60 -40),
                                                             (-20 -10,-20 10,20 10,20 -10,-20 -10)),
                                                            ((70 -30,100 -30,100 30,70 -30)))', 4326));",
            );
            let changes = schema.companion("cdc");
            format!(
                "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\npool_size = 2\n\
                 [changes]\nschema = \"{changes}\"\n\
                 [[tileset]]\nname = \"areas\"\noutput = \"areas.mbtiles\"\nminzoom = 0\nmaxzoom = 8\n\
                 [[tileset.layer]]\nname = \"areas\"\ntable = \"{}.areas\"\nattributes = [\"name\"]\n",
                schema.name
            )
        });
        Band {
            base,
            full_seeds: 0,
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut full = vec![args[0], "--config", self.config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        oar_tiles(Some(&self.schema.url), &full)
    }

    /// `seed --output OUTPUT EXTRA…` with a summary and a changed-tile list.
    fn seed(&self, output: &Path, extra: &[&str]) -> Seeded {
        let summary_path = self.path("summary.json");
        let changed_list = self.path("changed.txt");
        let mut args = vec![
            "seed",
            "--output",
            output.to_str().unwrap(),
            "--summary-json",
            summary_path.to_str().unwrap(),
            "--changed-list",
            changed_list.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.run(&args).assert_success();
        Seeded {
            summary: summary(&summary_path)[0].clone(),
            listed: lines(&changed_list),
        }
    }

    /// `seed --dirty` into `reseeded`, then a full seed into a new file; asserts they hold the same
    /// bytes, and that the reseed changed, and listed, exactly the tiles whose bytes changed.
    fn reseed_against_full(&mut self, reseeded: &Path, step: &str) -> Seeded {
        let before = read_mbtiles_raw(reseeded);
        let seeded = self.seed(reseeded, &["--dirty"]);
        let after = read_mbtiles_raw(reseeded);
        self.full_seeds += 1;
        let full = self.path(&format!("full-{}.mbtiles", self.full_seeds));
        self.seed(&full, &[]);
        assert_same_tiles(
            &read_mbtiles_raw(&full),
            &after,
            &format!("after {step}: the reseed against a full seed"),
        );
        let changed = differences(&before, &after);
        assert_eq!(
            seeded.listed, changed,
            "after {step}: the changed list names the tiles whose bytes changed, and no other"
        );
        assert_eq!(
            seeded.changed(),
            changed.len() as u64,
            "after {step}: tiles stored as changed"
        );
        seeded
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_tile_has_the_same_bytes_whichever_path_rendered_it() {
    let mut band = Band::new();
    band.run(&["changes", "install"]).assert_success();
    let reseeded = band.path("reseeded.mbtiles");
    band.seed(&reseeded, &[]);

    // The edit: every vertex moves, the tiles inside the band draw the same square.
    band.schema
        .execute("UPDATE {schema}.areas SET geom = ST_Buffer(geom, 0.3)");
    let buffered = band.reseed_against_full(&reseeded, "buffering both shapes");
    assert!(buffered.queried() > 0, "the edit changes some tile");

    // The same rings run the other way and start elsewhere: the shapes' tiles are rendered
    // again, and their bytes stay, so they are neither written nor listed. Only where
    // simplification keeps another vertex of a ring that starts elsewhere (the world tile, at a
    // tolerance of 39 km) is a tile drawn otherwise; without canonical rings, 1,822 were.
    band.schema.execute(
        "UPDATE {schema}.areas SET geom = ST_Reverse(CASE WHEN id = 1 THEN ST_Normalize(geom) ELSE geom END)",
    );
    let reversed = band.reseed_against_full(&reseeded, "reversing the rings");
    assert!(
        reversed.queried() > 100,
        "{} tiles rendered after reversing the rings",
        reversed.queried()
    );
    assert!(
        reversed.changed() <= 3,
        "reversed rings draw the same tiles, yet {:?} changed",
        reversed.listed
    );

    // A list of every tile, batched other than the walk batched them, renders the same bytes.
    let every_tile: Vec<String> = read_mbtiles_raw(&reseeded)
        .keys()
        .map(|(z, x, y)| format!("{z}/{x}/{y}"))
        .collect();
    let list = band.path("every-tile.txt");
    std::fs::write(&list, every_tile.join("\n") + "\n").unwrap();
    let listed = band.seed(&reseeded, &["--tiles-from", list.to_str().unwrap()]);
    assert_eq!(listed.queried(), every_tile.len() as u64);
    assert_eq!(
        (listed.changed(), listed.listed.len()),
        (0, 0),
        "a list of tiles against the walk"
    );

    // And `validate --against-db` finds every tile as the database draws it.
    let run = band.run(&[
        "validate",
        "--tileset",
        "areas",
        reseeded.to_str().unwrap(),
        "--against-db",
        "--all",
    ]);
    run.assert_success();
}
