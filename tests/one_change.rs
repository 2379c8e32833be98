//! A one-change run costs the change: a `seed --dirty` of a tree keeps the tiles' digest
//! (`oar_tiles_digest`) from the tiles it changes, without opening the others (as `strace` sees
//! it), and names the digest a full read gives, which `validate` checks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common::env::strace;
use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::run::{
    expected_digest, oar_tiles, read_tree, run_from, single_layer_config, wrapped_command,
};

/// Zooms 0-9: a few thousand tiles, against one tile per zoom that the change touches.
const ZOOMS: &str = "0-9";
const LEVELS: usize = 10;

fn tilejson(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root.join("tiles.json")).unwrap()).unwrap()
}

/// The tile files of `root` the traced run opened (any flags), from `strace -e trace=open,openat`.
fn opened_tiles(log: &str, root: &Path) -> BTreeSet<PathBuf> {
    let prefix = format!("\"{}/", root.display());
    log.lines()
        .filter_map(|line| {
            let start = line.find(&prefix)? + 1;
            let end = start + line[start..].find('"')?;
            let path = PathBuf::from(&line[start..end]);
            let name = path.file_name()?.to_str()?;
            // A tile's own name, not a temporary beside it.
            name.strip_suffix(".pbf")?.parse::<u32>().ok()?;
            Some(path)
        })
        .collect()
}

#[test]
#[ignore = "needs PostGIS and strace: run scripts/test.sh"]
fn a_one_change_reseed_of_a_tree_opens_only_the_touched_tiles_and_names_a_full_reads_digest() {
    let points = hub_with_scatter(1500, 11, i64::MAX, [-10.0, 35.0, 30.0, 60.0]);
    let fixture = Fixture::new("onechange", &points, "one.toml", |_| String::new());
    let mut schema = fixture.schema;
    let changes = schema.companion("cdc");
    let text = format!(
        "[changes]\nschema = \"{changes}\"\n{}",
        single_layer_config(&schema.name, "sites", "", "")
    );
    let mut fixture = Fixture { schema, ..fixture };
    std::fs::write(&fixture.config, text).unwrap();
    let config = fixture.config.to_str().unwrap().to_string();
    let url = fixture.schema.url.clone();
    oar_tiles(Some(&url), &["changes", "install", "--config", &config]).assert_success();
    let tree = fixture.path("tree");
    let tree_arg = format!("dir:{}", tree.display());
    oar_tiles(Some(&url), &fixture.seed_args(&tree_arg, ZOOMS, &[])).assert_success();
    let seeded = read_tree(&tree, "pbf");
    assert!(seeded.len() > 50 * LEVELS, "{} tiles", seeded.len());
    let first = tilejson(&tree);
    assert_eq!(
        first["oar_tiles_digest"].as_str(),
        Some(expected_digest(&seeded).as_str()),
        "a full seed names the digest"
    );

    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = 'renamed' WHERE site_id = 7");
    let log = fixture.path("strace.log");
    let (strace, log_arg) = (strace(), log.display().to_string());
    let wrapper = [
        strace.as_str(),
        "-f",
        "-qq",
        "-s",
        "4096",
        "-o",
        &log_arg,
        "-e",
        "trace=open,openat,openat2",
    ];
    let args = fixture.seed_args(&tree_arg, ZOOMS, &["--dirty"]);
    let traced = wrapped_command(&wrapper, Some(&url), &args, &[]).output();
    let run = run_from(traced.expect("run strace"));
    run.assert_success();

    let reseeded = read_tree(&tree, "pbf");
    let changed = reseeded.iter().filter(|(k, v)| seeded.get(k) != Some(v));
    assert!(changed.count() > 0, "the rename changed tiles");
    // The change touches one tile per zoom; each is opened to compare its bytes and to take its
    // old bytes out of the digest. No other tile is opened.
    let opened = opened_tiles(&std::fs::read_to_string(&log).unwrap(), &tree);
    assert!(
        opened.len() <= 4 * LEVELS,
        "a one-change run opened {} of {} tiles: {:?}",
        opened.len(),
        reseeded.len(),
        opened.iter().take(20).collect::<Vec<_>>()
    );

    // What it names is what a full read gives, and what a full seed of the same rows names.
    let document = tilejson(&tree);
    assert_eq!(
        document["oar_tiles_digest"].as_str(),
        Some(expected_digest(&reseeded).as_str()),
        "{document}"
    );
    assert!(!tree.join(".oar-tiles-hash-stale").exists());
    let fresh = fixture.path("fresh");
    let fresh_arg = format!("dir:{}", fresh.display());
    oar_tiles(Some(&url), &fixture.seed_args(&fresh_arg, ZOOMS, &[])).assert_success();
    assert_eq!(
        tilejson(&fresh)["oar_tiles_digest"],
        document["oar_tiles_digest"]
    );
    let validated = oar_tiles(Some(&url), &["validate", "--json", &tree_arg]);
    let report: serde_json::Value = serde_json::from_str(&validated.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", validated.stdout, validated.stderr));
    assert_eq!(validated.code, 0, "{report}");
    assert_eq!(report["outputs"][0]["hash_pending"], false, "{report}");
    assert_eq!(
        report["outputs"][0]["agg_tiles_hash"],
        tilejson(&fresh)["agg_tiles_hash"],
        "validate computes the hash a full seed names"
    );
}
