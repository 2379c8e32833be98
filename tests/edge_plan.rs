//! `seed --dirty --dry-run` plans a reseed without making it: the dirty tiles per zoom, the writes,
//! and what each CDN target would be sent after folding, with its price. The plan is then held
//! against the real reseed: the same tiles rendered, every path it invalidated covered by the plan.

use crate::common::cloudfront::{
    cloudfront_client, covered, distribution, invalidations, moto_env, moto_url,
};
use crate::common::edge::{seed_tree, tree_world};
use crate::common::recorder::Recorder;
use crate::common::run::{read_tree, summary};

#[test]
#[ignore = "needs PostGIS and moto's server: run scripts/test.sh"]
fn a_dirty_dry_run_plans_the_tiles_writes_and_folded_invalidations_the_reseed_then_makes() {
    let endpoint = moto_url();
    let client = cloudfront_client(&endpoint);
    let id = distribution(&endpoint, &format!("oar-tiles-plan-{}", std::process::id()));
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"cloudfront\"\nname = \"cf\"\ndistribution_id = \"{id}\"\npath_prefix = \"/v1\""
    );
    let (mut fixture, tree) = tree_world("edge_plan", &cdn);
    let env = moto_env(&endpoint);
    seed_tree(&fixture, &tree, &[], &env).assert_success();
    let seeded = read_tree(&tree, "pbf");
    let state = std::fs::read(tree.join(".oar-tiles-state.json")).unwrap();
    assert_eq!(invalidations(&client, &id).len(), 1);

    // A dense change (every site of one kind moves) and a sparse one.
    fixture.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.01, 0.01) WHERE site_id % 3 = 0",
    );
    fixture
        .schema
        .execute("DELETE FROM {schema}.sites WHERE site_id % 97 = 5");
    let plan_path = fixture.path("plan.json");
    let plan_arg = plan_path.to_str().unwrap().to_string();
    let planned = seed_tree(
        &fixture,
        &tree,
        &["--dirty", "--dry-run", "--summary-json", &plan_arg],
        &env,
    );
    planned.assert_success();
    // Nothing written, nothing sent.
    assert_eq!(
        read_tree(&tree, "pbf"),
        seeded,
        "the dry run changed the tree"
    );
    assert_eq!(
        std::fs::read(tree.join(".oar-tiles-state.json")).unwrap(),
        state,
        "the dry run moved the watermark"
    );
    assert_eq!(
        invalidations(&client, &id).len(),
        1,
        "the dry run invalidated"
    );
    assert!(
        planned.stdout.contains("dirty tile(s) would be rendered")
            && planned.stdout.contains("cdn `cf`"),
        "{}",
        planned.stdout
    );

    let plan = summary(&plan_path)[0]["plan"].clone();
    assert_eq!(plan["everything"], false, "{plan}");
    let dirty: u64 = plan["dirty_tiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["tiles"].as_u64().unwrap())
        .sum();
    assert!(dirty > 0, "{plan}");
    let cf = &plan["purges"][0];
    assert_eq!(cf["target"], "cf");
    let paths: Vec<String> = cf["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(paths.len() <= 3000 && !paths.is_empty(), "{cf}");
    assert!(paths.iter().all(|p| p.starts_with("/v1/")), "{cf}");
    assert!(
        paths.len() as u64 <= cf["changed"].as_u64().unwrap(),
        "folding never adds paths: {cf}"
    );
    let price = cf["price_usd"].as_f64().unwrap();
    assert!((price - paths.len() as f64 * 0.005).abs() < 1e-9, "{cf}");

    // The reseed renders exactly the planned tiles, and invalidates nothing the plan did not name.
    let real_path = fixture.path("real.json");
    let real_arg = real_path.to_str().unwrap().to_string();
    seed_tree(
        &fixture,
        &tree,
        &["--dirty", "--summary-json", &real_arg],
        &env,
    )
    .assert_success();
    let real = summary(&real_path)[0].clone();
    assert_eq!(real["tiles_queried"].as_u64().unwrap(), dirty, "{real}");
    let sent = invalidations(&client, &id);
    // The seed's wildcard, then the tiles with `tiles.json`, which names the digest kept from
    // the changed tiles and so goes out with them.
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(covered("/v1/tiles.json", &sent[1]), "{sent:?}");
    for path in sent[1..].iter().flatten() {
        assert!(
            covered(path, &paths),
            "{path} was invalidated but not planned: {paths:?}"
        );
    }
}

/// A dry run sends nothing, so it needs no secret: `seed --dirty --dry-run` prices a reseed behind
/// Cloudflare with its token unset, and still says what it would send.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_dirty_dry_run_needs_no_token() {
    let cloudflare = Recorder::start(r#"{"success": true, "errors": [], "result": {}}"#, 0);
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"cloudflare\"\nname = \"cf\"\nzone_id = \"023e105f4ecef8ad9ca31a8372d0c353\"\napi_url = \"http://127.0.0.1:{}/client/v4\"\npublic_url = \"https://tiles.example.org/v1\"\ntoken_env = \"OAR_TEST_DRY_CF_TOKEN\"",
        cloudflare.port
    );
    let (mut fixture, tree) = tree_world("edge_plan_no_token", &cdn);
    seed_tree(&fixture, &tree, &[], &[("OAR_TEST_DRY_CF_TOKEN", "t")]).assert_success();
    let sent = cloudflare.answered(0).len();
    fixture
        .schema
        .execute("DELETE FROM {schema}.sites WHERE site_id % 97 = 5");
    let planned = seed_tree(&fixture, &tree, &["--dirty", "--dry-run"], &[]);
    planned.assert_success();
    assert!(planned.stdout.contains("cdn `cf`"), "{}", planned.stdout);
    assert_eq!(
        cloudflare.answered(0).len(),
        sent,
        "the dry run sent a purge"
    );
    // The real reseed still needs it, and says which variable.
    let refused = seed_tree(&fixture, &tree, &["--dirty"], &[]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("OAR_TEST_DRY_CF_TOKEN"),
        "{}",
        refused.stderr
    );
}
