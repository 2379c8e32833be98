//! Dirty subtrees (issue 46, item 2): past a tileset's `listed_tiles`, `seed --dirty` lists the
//! dirty tiles above a root zoom and walks subtrees below it as a seed walks them, deleting in
//! them what it did not write and nothing outside them. Natural Earth's countries and their
//! borders over Central Asia, into MBTiles, a tree and an S3 prefix: a country renamed (every tile
//! of its shape dirty), one deleted (its tiles emptied, which only the sweep of the subtrees
//! removes), each reseed equal to a full seed tile for tile.

use std::collections::BTreeSet;

use crate::common::fixture::{wraps_fixture, Fixture};
use crate::common::geodata::countries_and_borders;
use crate::common::run::{
    assert_same_tiles, oar_tiles_with, read_mbtiles_raw, read_tree, Run, Tiles,
};
use crate::common::s3::S3Server;

struct Subtrees {
    base: Fixture,
    server: S3Server,
    full_seeds: usize,
}

wraps_fixture!(Subtrees, base);

/// So few that every edit here is past it.
const LISTED_TILES: usize = 40;

impl Subtrees {
    fn new() -> Subtrees {
        let server = S3Server::start("tiles");
        let s3 = server.config_table("");
        let base = Fixture::new("subtrees", &[], "subtrees.toml", |schema| {
            countries_and_borders(schema);
            let changes = schema.companion("cdc");
            let s = &schema.name;
            format!(
                "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\npool_size = 2\n\
                 [changes]\nschema = \"{changes}\"\n{s3}\
                 [[tileset]]\nname = \"subtrees\"\noutput = \"subtrees.mbtiles\"\nminzoom = 1\nmaxzoom = 9\n\
                 bbox = [80, 36, 125, 56]\nlisted_tiles = {LISTED_TILES}\n\
                 [[tileset.layer]]\nname = \"countries\"\ntable = \"{s}.countries\"\nattributes = [\"name\"]\n\
                 [[tileset.layer]]\nname = \"borders\"\ntable = \"{s}.borders\"\nattributes = [\"name\"]\n\
                 minzoom = 3\n",
            )
        });
        Subtrees {
            base,
            server,
            full_seeds: 0,
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut full = vec![args[0], "--config", self.config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        oar_tiles_with(Some(&self.schema.url), &full, &self.server.env())
    }

    /// The outputs, each as `--output` names it.
    fn outputs(&self) -> [String; 3] {
        [
            self.path("reseeded.mbtiles").display().to_string(),
            format!("dir:{}", self.path("tree").display()),
            "s3://tiles/subtrees/v1".to_string(),
        ]
    }

    /// The tiles an output holds.
    fn tiles(&self, output: &str) -> Tiles {
        if let Some(root) = output.strip_prefix("dir:") {
            read_tree(std::path::Path::new(root), "pbf")
        } else if let Some(rest) = output.strip_prefix("s3://tiles/") {
            self.server.stored_tiles("tiles", rest)
        } else {
            read_mbtiles_raw(std::path::Path::new(output))
        }
    }

    /// `seed --dirty` into every output, then a full seed of each kind into a new place: asserts
    /// each reseed walked subtrees and equals its full seed; returns the tiles one reseed rendered
    /// and the tiles of the full seed.
    fn reseed_against_full(&mut self, step: &str) -> (u64, usize) {
        self.full_seeds += 1;
        let n = self.full_seeds;
        let fulls = [
            self.path(&format!("full-{n}.mbtiles"))
                .display()
                .to_string(),
            format!("dir:{}", self.path(&format!("full-tree-{n}")).display()),
            format!("s3://tiles/full/{n}"),
        ];
        let mut rendered = 0;
        let mut stored = 0;
        for (output, full) in self.outputs().iter().zip(&fulls) {
            let summary = self.path("summary.json");
            let listed = self.path("changed.txt");
            let before = self.tiles(output);
            let reseed = self.run(&[
                "seed",
                "--dirty",
                "--output",
                output,
                "--summary-json",
                summary.to_str().unwrap(),
                "--changed-list",
                listed.to_str().unwrap(),
            ]);
            reseed.assert_success();
            // The list names exactly the tiles whose bytes the reseed changed or deleted.
            let after = self.tiles(output);
            let changed: BTreeSet<String> = before
                .keys()
                .chain(after.keys())
                .filter(|k| before.get(k) != after.get(k))
                .map(|(z, x, y)| format!("{z}/{x}/{y}"))
                .collect();
            let lines: BTreeSet<String> = std::fs::read_to_string(&listed)
                .unwrap()
                .lines()
                .filter_map(|line| {
                    let tile = line.split('.').next()?;
                    (tile.split('/').count() == 3
                        && tile.split('/').all(|p| p.parse::<u32>().is_ok()))
                    .then(|| tile.to_string())
                })
                .collect();
            assert!(!changed.is_empty(), "{step}, {output}: nothing changed");
            assert_eq!(lines, changed, "{step}, {output}: the changed-tile list");
            assert!(
                reseed.stderr.contains("subtree(s) walked from zoom"),
                "{step}, {output}: no subtrees walked: {}",
                reseed.stderr
            );
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
            rendered = json[0]["tiles_queried"].as_u64().unwrap();
            self.run(&["seed", "--output", full]).assert_success();
            let expected = self.tiles(full);
            stored = expected.len();
            assert_same_tiles(
                &expected,
                &self.tiles(output),
                &format!("after {step}: {output} reseeded against a full seed"),
            );
        }
        println!("{step}: {rendered} tiles rendered, {stored} in the full seed");
        (rendered, stored)
    }
}

#[test]
#[ignore = "needs PostGIS, the data and an S3 server: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL and OAR_TILES_TEST_GEODATA"]
fn past_listed_tiles_a_reseed_walks_subtrees_and_equals_a_full_seed() {
    let mut subtrees = Subtrees::new();
    subtrees.run(&["changes", "install"]).assert_success();
    for output in subtrees.outputs() {
        subtrees
            .run(&["seed", "--output", &output])
            .assert_success();
    }

    // Every tile of Mongolia's shape is dirty: far more than are listed.
    for table in ["countries", "borders"] {
        subtrees.schema.execute(&format!(
            "UPDATE {{schema}}.{table} SET name = 'Mongol Uls' WHERE name = 'Mongolia'"
        ));
    }
    let plan = subtrees.run(&[
        "seed",
        "--dirty",
        "--dry-run",
        "--output",
        &subtrees.outputs()[0],
    ]);
    plan.assert_success();
    assert!(
        plan.stdout.contains("walked as a seed walks"),
        "the plan names its subtrees: {}",
        plan.stdout
    );
    let (renamed, full) = subtrees.reseed_against_full("renaming Mongolia");
    assert!(
        (renamed as usize) < full,
        "{renamed} tiles rendered, as many as a full seed's {full}"
    );

    // Deleted, Mongolia leaves tiles where nothing else is drawn: the subtrees' sweep removes them.
    for table in ["countries", "borders"] {
        subtrees.schema.execute(&format!(
            "DELETE FROM {{schema}}.{table} WHERE name = 'Mongol Uls'"
        ));
    }
    subtrees.reseed_against_full("deleting Mongolia");
}
