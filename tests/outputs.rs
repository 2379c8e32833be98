//! Directory and MBTiles outputs: the same tiles either way, TileJSON beside the tree, tiles that
//! became empty deleted, the changed-tile list exact, `inspect` truthful, and GDAL able to read both.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::fixture::{wraps_fixture, Fixture};
use crate::common::mvt::decode_tile;
use crate::common::pg::{hub_with_scatter, Point};
use crate::common::run::{
    assert_same_tiles, differences, oar_tiles, read_mbtiles_raw, read_tree, single_layer_config,
};

fn points(count: i64, seed: u64) -> Vec<Point> {
    hub_with_scatter(count, seed, 4, [106.5, 10.6, 106.9, 11.0])
}

/// The shared fixture over 400 points, seeded at zooms 0-9.
struct Setup(Fixture);

wraps_fixture!(Setup, 0);

impl Setup {
    fn new(label: &str, extra_tileset: &str) -> Setup {
        Setup(Fixture::new(
            label,
            &points(400, 11),
            "oar.toml",
            |schema| single_layer_config(&schema.name, "sites", extra_tileset, ""),
        ))
    }

    fn seed(&self, output: &str, extra: &[&str]) -> crate::common::run::Run {
        let run = oar_tiles(
            Some(&self.schema.url),
            &self.seed_args(output, "0-9", extra),
        );
        run.assert_success();
        run
    }
}

fn changed_list(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn directory_and_mbtiles_outputs_hold_the_same_tiles() {
    let setup = Setup::new("sameoutputs", "");
    let mbtiles = setup.path("out.mbtiles");
    let tree = setup.path("tree");
    setup.seed(mbtiles.to_str().unwrap(), &[]);
    let run = setup.seed(&format!("dir:{}", tree.display()), &[]);
    assert!(
        run.stderr.contains("names relative tile URLs") && run.stderr.contains("set tiles_url"),
        "a tree that cannot know its address says how to give it one:\n{}",
        run.stderr
    );
    let from_mbtiles = read_mbtiles_raw(&mbtiles);
    let from_tree = read_tree(&tree, "pbf");
    assert!(from_mbtiles.len() > 20);
    assert_same_tiles(&from_mbtiles, &from_tree, "the two outputs differ");

    let tilejson: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.join("tiles.json")).unwrap()).unwrap();
    assert_eq!(tilejson["tilejson"], "3.0.0");
    assert_eq!(tilejson["tiles"][0], "{z}/{x}/{y}.pbf");
    assert_eq!(
        (tilejson["minzoom"].as_u64(), tilejson["maxzoom"].as_u64()),
        (Some(0), Some(9))
    );
    assert_eq!(tilejson["vector_layers"][0]["id"], "sites");
    assert_eq!(tilejson["vector_layers"][0]["fields"]["score"], "Number");
    assert_eq!(tilejson["bounds"].as_array().unwrap().len(), 4);
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn uncompressed_tiles_with_another_extension_for_plain_web_servers() {
    let setup = Setup::new("plain", "compress = false\ntile_extension = \"mvt\"\ntiles_url = \"https://cdn.example/t/{z}/{x}/{y}.mvt\"");
    let tree = setup.path("plain");
    setup.seed(&format!("{}/", tree.display()), &[]);
    let tiles = read_tree(&tree, "mvt");
    assert!(!tiles.is_empty());
    for (key, data) in &tiles {
        assert_ne!(&data[..2], &[0x1f, 0x8b], "{key:?} is gzip-compressed");
        assert!(!decode_tile(data).unwrap()[0].features.is_empty());
    }
    let tilejson: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.join("tiles.json")).unwrap()).unwrap();
    assert_eq!(
        tilejson["tiles"][0],
        "https://cdn.example/t/{z}/{x}/{y}.mvt"
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_second_seed_deletes_emptied_tiles_and_lists_exactly_what_changed() {
    let mut setup = Setup::new("changes", "");
    let tree = setup.path("tree");
    let mbtiles = setup.path("out.mbtiles");
    let tree_arg = format!("dir:{}", tree.display());
    setup.seed(&tree_arg, &[]);
    setup.seed(mbtiles.to_str().unwrap(), &[]);
    let tree_before = read_tree(&tree, "pbf");
    let mbtiles_before = read_mbtiles_raw(&mbtiles);

    // Remove every scattered facility, move one clustered facility, rename another.
    setup.schema.execute(
        "DELETE FROM {schema}.sites WHERE site_id % 4 = 0;
         UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(2.35, 48.85), 4326) WHERE site_id = 1;
         UPDATE {schema}.sites SET label = 'Renamed' WHERE site_id = 2;",
    );
    let tree_list = setup.path("tree-changes.txt");
    let mbtiles_list = setup.path("mbtiles-changes.txt");
    let unchanged_run = setup.seed(&tree_arg, &["--changed-list", tree_list.to_str().unwrap()]);
    setup.seed(
        mbtiles.to_str().unwrap(),
        &["--changed-list", mbtiles_list.to_str().unwrap()],
    );
    let tree_after = read_tree(&tree, "pbf");
    let mbtiles_after = read_mbtiles_raw(&mbtiles);

    assert_same_tiles(
        &tree_after,
        &mbtiles_after,
        "the outputs agree after the second seed",
    );
    let expected = differences(&tree_before, &tree_after);
    assert!(
        tree_before.len() > tree_after.len(),
        "emptied tiles are gone"
    );
    assert!(!expected.is_empty());
    // With the scattered facilities gone the tiles cover less, so both documents declare smaller
    // bounds, and are listed with the tiles.
    let mut expected_tree = expected.clone();
    expected_tree.extend(["tiles.json".to_string(), "metadata.json".to_string()]);
    assert_eq!(changed_list(&tree_list), expected_tree);
    assert_eq!(
        changed_list(&mbtiles_list),
        differences(&mbtiles_before, &mbtiles_after)
    );
    assert!(
        unchanged_run.stdout.contains("unchanged"),
        "{}",
        unchanged_run.stdout
    );

    // A third seed over unchanged data changes nothing.
    let third = setup.path("third.txt");
    setup.seed(&tree_arg, &["--changed-list", third.to_str().unwrap()]);
    assert!(changed_list(&third).is_empty());
    assert_same_tiles(
        &tree_after,
        &read_tree(&tree, "pbf"),
        "the tree after a rerun",
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn inspect_reports_what_each_output_holds() {
    let setup = Setup::new("inspect", "");
    let mbtiles = setup.path("out.mbtiles");
    let tree = setup.path("tree");
    setup.seed(mbtiles.to_str().unwrap(), &[]);
    setup.seed(&format!("dir:{}", tree.display()), &[]);
    let tiles = read_mbtiles_raw(&mbtiles);
    for output in [
        mbtiles.to_str().unwrap().to_string(),
        format!("dir:{}", tree.display()),
    ] {
        let run = oar_tiles(None, &["inspect", &output, "--json"]);
        run.assert_success();
        let inventory: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(
            inventory["tiles"].as_u64().unwrap(),
            tiles.len() as u64,
            "{output}"
        );
        let bytes: usize = tiles.values().map(Vec::len).sum();
        assert_eq!(
            inventory["bytes"].as_u64().unwrap(),
            bytes as u64,
            "{output}"
        );
        for zoom in inventory["zooms"].as_array().unwrap() {
            let z = zoom["zoom"].as_u64().unwrap() as u8;
            let at_zoom: Vec<_> = tiles.iter().filter(|((tz, _, _), _)| *tz == z).collect();
            assert_eq!(zoom["tiles"].as_u64().unwrap(), at_zoom.len() as u64);
            let largest = at_zoom.iter().map(|(_, d)| d.len()).max().unwrap();
            assert_eq!(zoom["largest_bytes"].as_u64().unwrap(), largest as u64);
        }
        assert_eq!(inventory["bounds"].as_array().unwrap().len(), 4, "{output}");
        let text = oar_tiles(None, &["inspect", &output]);
        text.assert_success();
        assert!(
            text.stdout.contains("layer sites (zoom 0-9)"),
            "{}",
            text.stdout
        );
    }
    let before = std::fs::read(&mbtiles).unwrap();
    oar_tiles(None, &["inspect", mbtiles.to_str().unwrap()]).assert_success();
    assert_eq!(
        std::fs::read(&mbtiles).unwrap(),
        before,
        "inspect changes nothing"
    );
    let missing = oar_tiles(
        None,
        &["inspect", setup.path("nope.mbtiles").to_str().unwrap()],
    );
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("no such MBTiles file"),
        "{}",
        missing.stderr
    );
}

/// `ogrinfo`, a reader nobody here wrote, or `None` (outside CI) when GDAL is not installed.
fn ogrinfo(args: &[&str]) -> String {
    let output = std::process::Command::new("ogrinfo")
        .args(args)
        .output()
        .expect("ogrinfo (Debian's gdal-bin, which scripts/test.sh installs) runs");
    assert!(
        output.status.success(),
        "ogrinfo {args:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn feature_count(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("Feature Count: "))
        .expect("ogrinfo reports a feature count")
        .trim()
        .parse()
        .unwrap()
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn gdal_reads_the_mbtiles_file_and_the_directory_tree() {
    let setup = Setup::new("gdal", "");
    let mbtiles = setup.path("out.mbtiles");
    let tree = setup.path("tree");
    setup.seed(mbtiles.to_str().unwrap(), &[]);
    setup.seed(&format!("dir:{}", tree.display()), &[]);
    // GDAL reads the deepest zoom by default and counts each tile's features, buffers included.
    let expected: usize = read_mbtiles_raw(&mbtiles)
        .iter()
        .filter(|((z, _, _), _)| *z == 9)
        .map(|(_, data)| decode_tile(data).unwrap()[0].features.len())
        .sum();
    let report = ogrinfo(&["-ro", "-so", "-al", mbtiles.to_str().unwrap()]);
    assert!(report.contains("Layer name: sites"), "{report}");
    assert_eq!(feature_count(&report), expected as u64, "{report}");
    assert!(report.contains("label: String"), "{report}");
    // GDAL opens one zoom level of a tree and reads its fields from ../metadata.json.
    let report = ogrinfo(&[
        "-ro",
        "-so",
        "-al",
        &format!("MVT:{}", tree.join("9").display()),
    ]);
    assert!(report.contains("Layer name: sites"), "{report}");
    assert_eq!(feature_count(&report), expected as u64, "{report}");
    assert!(
        report.contains("score: Real"),
        "field types come from metadata.json: {report}"
    );
}
