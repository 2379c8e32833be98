//! A bulk reseed walks where walking is cheaper (issue 76, item 1): every site of a hub moved a
//! little, so at the deep zooms each dirties its old tile and its new one while only the new ones
//! hold anything. `seed --dirty` weighs the walk against the list per zoom, walks the deep zooms,
//! says so in its summary, and leaves exactly what a full seed leaves, listing as changed only the
//! tiles whose bytes changed (MBTiles and a tree).

use std::collections::BTreeSet;

use crate::common::fixture::{wraps_fixture, Fixture};
use crate::common::pg::hub_with_scatter;
use crate::common::run::{assert_same_tiles, oar_tiles, read_mbtiles_raw, read_tree, Run, Tiles};

struct Walked {
    base: Fixture,
}

wraps_fixture!(Walked, base);

impl Walked {
    fn new() -> Walked {
        let points = hub_with_scatter(1000, 76, 10, [100.0, 10.0, 110.0, 20.0]);
        let base = Fixture::new("reseed_walk", &points, "walk.toml", |schema| {
            let changes = schema.companion("cdc");
            let s = &schema.name;
            format!(
                "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\npool_size = 2\n\
                 [changes]\nschema = \"{changes}\"\n\
                 [[tileset]]\nname = \"walk\"\noutput = \"walk.mbtiles\"\nminzoom = 0\nmaxzoom = 10\n\
                 [[tileset.layer]]\nname = \"sites\"\ntable = \"{s}.sites\"\ngeometry_column = \"pt\"\nid_column = \"site_id\"\n\
                 attributes = [\"label\"]\n",
            )
        });
        Walked { base }
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut full = vec![args[0], "--config", self.config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        oar_tiles(Some(&self.schema.url), &full)
    }

    fn tiles(&self, output: &str) -> Tiles {
        match output.strip_prefix("dir:") {
            Some(root) => read_tree(std::path::Path::new(root), "pbf"),
            None => read_mbtiles_raw(std::path::Path::new(output)),
        }
    }
}

#[test]
#[ignore = "needs PostGIS: set OAR_TILES_TEST_DATABASE_URL"]
fn a_bulk_reseed_walks_its_mostly_dirty_zooms_and_equals_a_full_seed() {
    let mut walked = Walked::new();
    walked.run(&["changes", "install"]).assert_success();
    let outputs = [
        walked.path("reseeded.mbtiles").display().to_string(),
        format!("dir:{}", walked.path("tree").display()),
    ];
    for output in &outputs {
        walked.run(&["seed", "--output", output]).assert_success();
    }
    // Nine sites in ten a little east and north: each one's old tile and its new one are dirty at
    // deep zooms; the tenth stay, so some walked tiles keep their bytes.
    walked.base.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_Translate(pt, 0.3, 0.2), 4326) \
             WHERE site_id % 10 <> 5",
    );
    for (n, output) in outputs.iter().enumerate() {
        let summary = walked.path("summary.json");
        let listed = walked.path("changed.txt");
        let before = walked.tiles(output);
        let reseed = walked.run(&[
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
        assert!(
            reseed.stdout.contains("walked (about") && reseed.stdout.contains("reseed: zoom"),
            "{output}: the summary names the zooms walked: {}",
            reseed.stdout
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        let ways = json[0]["ways"]
            .as_array()
            .expect("ways in the JSON summary");
        let walked_zooms: Vec<u64> = ways
            .iter()
            .filter(|w| w["walked"] == true)
            .map(|w| w["zoom"].as_u64().unwrap())
            .collect();
        assert!(
            walked_zooms.contains(&10),
            "{output}: the deepest zoom, mostly dirty, is walked: {ways:?}"
        );
        // The walk renders fewer tiles than the list would have.
        let dirty: u64 = ways.iter().map(|w| w["dirty"].as_u64().unwrap()).sum();
        let queried = json[0]["tiles_queried"].as_u64().unwrap();
        assert!(
            queried < dirty,
            "{output}: {queried} rendered, {dirty} dirty"
        );

        // The list names exactly the tiles whose bytes the reseed changed or deleted.
        let after = walked.tiles(output);
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
                (tile.split('/').count() == 3 && tile.split('/').all(|p| p.parse::<u32>().is_ok()))
                    .then(|| tile.to_string())
            })
            .collect();
        assert!(!changed.is_empty(), "{output}: nothing changed");
        assert_eq!(lines, changed, "{output}: the changed-tile list");
        // Walked tiles rendered with the bytes they held are not rewritten (nor listed, above).
        let unchanged = json[0]["stored"]["unchanged"].as_u64().unwrap();
        assert!(
            unchanged > 0,
            "{output}: no tile kept its bytes: {}",
            json[0]["stored"]
        );

        let full = match n {
            0 => walked.path("full.mbtiles").display().to_string(),
            _ => format!("dir:{}", walked.path("full-tree").display()),
        };
        walked.run(&["seed", "--output", &full]).assert_success();
        assert_same_tiles(
            &walked.tiles(&full),
            &after,
            &format!("{output} reseeded against a full seed"),
        );
    }
}
