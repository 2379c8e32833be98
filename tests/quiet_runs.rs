//! A run that changes nothing writes and purges nothing: a stored `tiles.json` that says what the
//! run would write, with a number differing only in its last digit (as a number read back from
//! the document and written again can), is neither rewritten nor listed for the CDNs.

use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::run::{lines, oar_tiles, single_layer_config};

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_tilejson_differing_only_in_a_last_digit_is_neither_rewritten_nor_purged() {
    let points = hub_with_scatter(120, 5, 5, [-0.3, 51.3, 0.2, 51.7]);
    let fixture = Fixture::new("quiet_tilejson", &points, "quiet.toml", |schema| {
        single_layer_config(&schema.name, "sites", "", "")
    });
    let tree = fixture.path("tree");
    let tree_arg = format!("{}/", tree.display());
    oar_tiles(
        Some(&fixture.schema.url),
        &fixture.seed_args(&tree_arg, "0-5", &[]),
    )
    .assert_success();

    // The centre's longitude one unit in its last place away: the same place.
    let path = tree.join("tiles.json");
    let mut document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let lon = document["center"][0].as_f64().unwrap();
    document["center"][0] = f64::from_bits(lon.to_bits() + 1).into();
    let stored = serde_json::to_vec_pretty(&document).unwrap();
    std::fs::write(&path, &stored).unwrap();

    let list = fixture.path("changed.txt");
    let again = fixture.seed_args(
        &tree_arg,
        "0-5",
        &["--changed-list", list.to_str().unwrap()],
    );
    oar_tiles(Some(&fixture.schema.url), &again).assert_success();
    let changed = lines(&list);
    assert!(
        !changed.iter().any(|line| line.contains("tiles.json")),
        "{changed:?}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        stored,
        "tiles.json is left as it was"
    );
}
