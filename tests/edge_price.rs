//! Purges priced against what they evict, and a bill the operator sets: CloudFront on moto's
//! server (its API as AWS documents it), Fastly and Cloudflare on a recording server.

use std::collections::BTreeSet;

use crate::common::cloudfront::{
    changed, cloudfront_client, covered, distribution, invalidations, moto_env, moto_url,
    summary_path,
};
use crate::common::edge::{seed_tree, tree_world};
use crate::common::recorder::Recorder;
use crate::common::run::summary;

/// A CloudFront target under `/v1` with `extra` keys.
fn cloudfront(id: &str, extra: &str) -> String {
    format!(
        "[[tileset.cdn]]\nkind = \"cloudfront\"\ndistribution_id = \"{id}\"\npath_prefix = \"/v1\"\n{extra}"
    )
}

/// The paths of every tile in the tree, as CloudFront sees them.
fn tile_paths(tree: &std::path::Path) -> BTreeSet<String> {
    crate::common::run::read_tree(tree, "pbf")
        .keys()
        .map(|(z, x, y)| format!("/v1/{z}/{x}/{y}.pbf"))
        .collect()
}

#[test]
#[ignore = "needs PostGIS and moto's server: run scripts/test.sh"]
fn a_full_seed_behind_cloudfront_is_one_wildcard_and_dense_changes_fold_by_price() {
    let endpoint = moto_url();
    let client = cloudfront_client(&endpoint);
    let id = distribution(
        &endpoint,
        &format!("oar-tiles-price-{}", std::process::id()),
    );
    let (mut fixture, tree) = tree_world("edge_price_seed", &cloudfront(&id, ""));
    let env = moto_env(&endpoint);
    let (report, report_arg) = summary_path(&fixture, "seed.json");
    seed_tree(&fixture, &tree, &["--summary-json", &report_arg], &env).assert_success();
    // Every stored tile is new: one wildcard over the output evicts nothing that did not change.
    let sent = invalidations(&client, &id);
    assert_eq!(sent, vec![vec!["/v1/*".to_string()]]);
    let purge = &summary(&report)[0]["purges"][0];
    assert_eq!(purge["paths"].as_u64(), Some(1), "{purge}");
    assert!(
        (purge["price_usd"].as_f64().unwrap() - 0.005).abs() < 1e-12,
        "{purge}"
    );
    assert_eq!(purge["evicted"].as_u64(), Some(0), "{purge}");

    // Every facility moves: most tiles change. The plan folds where a wildcard costs less than
    // its paths plus what it evicts, and names its price before anything is sent.
    let before = crate::common::run::read_tree(&tree, "pbf");
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.01, 0.005)");
    let dry = seed_tree(&fixture, &tree, &["--dirty", "--dry-run"], &env);
    dry.assert_success();
    assert!(dry.stdout.contains("as planned, $"), "{}", dry.stdout);
    let (report, report_arg) = summary_path(&fixture, "dirty.json");
    seed_tree(
        &fixture,
        &tree,
        &["--dirty", "--summary-json", &report_arg],
        &env,
    )
    .assert_success();
    let after = crate::common::run::read_tree(&tree, "pbf");
    let changed = changed(&before, &after);
    let sent = invalidations(&client, &id);
    // The seed's wildcard, then the tiles with `tiles.json`, which names the digest kept from
    // the changed tiles and so goes out with them.
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(covered("/v1/tiles.json", &sent[1]), "{sent:?}");
    for path in &changed {
        assert!(
            covered(path, &sent[1]),
            "{path} is invalidated: {:?}",
            sent[1]
        );
    }
    let purge = &summary(&report)[0]["purges"][0];
    let price = purge["price_usd"].as_f64().unwrap();
    assert!(
        price <= changed.len() as f64 * 0.005 / 4.0,
        "{} changed tiles cost ${price}: {:?}",
        changed.len(),
        sent[1]
    );
    assert!(sent[1].iter().any(|p| p.ends_with('*')), "{:?}", sent[1]);
}

#[test]
#[ignore = "needs PostGIS and moto's server: run scripts/test.sh"]
fn a_budget_buys_later_or_coarser_purges_and_never_loses_a_change() {
    let endpoint = moto_url();
    let client = cloudfront_client(&endpoint);
    let id = distribution(
        &endpoint,
        &format!("oar-tiles-budget-{}", std::process::id()),
    );
    // $0.024 a day buys one path at first, then one every five hours.
    let (mut fixture, tree) = tree_world(
        "edge_price_budget",
        &cloudfront(&id, "budget_per_day = 0.024"),
    );
    let env = moto_env(&endpoint);
    seed_tree(&fixture, &tree, &[], &env).assert_success();
    assert_eq!(invalidations(&client, &id), vec![vec!["/v1/*".to_string()]]);

    // The day's allowance is spent: a sparse change waits in the outbox.
    let before = crate::common::run::read_tree(&tree, "pbf");
    fixture.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.05, 0.02) WHERE site_id % 29 = 1",
    );
    let (report, report_arg) = summary_path(&fixture, "waiting.json");
    let waiting = seed_tree(
        &fixture,
        &tree,
        &["--dirty", "--summary-json", &report_arg],
        &env,
    );
    waiting.assert_success();
    let changed = changed(&before, &crate::common::run::read_tree(&tree, "pbf"));
    assert!(changed.len() > 2, "{changed:?}");
    assert_eq!(
        invalidations(&client, &id).len(),
        1,
        "nothing sent over budget"
    );
    let tileset = &summary(&report)[0];
    let purge = &tileset["purges"][0];
    assert_eq!(purge["over_budget"], true, "{purge}");
    assert!(
        (purge["budget"]["path_interval_seconds"].as_f64().unwrap() - 18_000.0).abs() < 1e-6,
        "{purge}"
    );
    assert!(
        tileset["outbox"]["entries"].as_u64().unwrap() > 0,
        "{tileset}"
    );
    assert!(
        waiting.stderr.contains("wait in the outbox"),
        "{}",
        waiting.stderr
    );

    // A larger day, but at most one cent a run: the waiting changes go out, coarser, all covered.
    let config = std::fs::read_to_string(&fixture.config).unwrap();
    std::fs::write(
        &fixture.config,
        config.replace(
            "budget_per_day = 0.024",
            "budget_per_day = 100\nbudget_per_run = 0.01",
        ),
    )
    .unwrap();
    let (report, report_arg) = summary_path(&fixture, "paid.json");
    seed_tree(
        &fixture,
        &tree,
        &["--dirty", "--summary-json", &report_arg],
        &env,
    )
    .assert_success();
    let sent = invalidations(&client, &id);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[1].len() <= 2, "one cent buys two paths: {:?}", sent[1]);
    for path in &changed {
        assert!(
            covered(path, &sent[1]),
            "{path} is invalidated: {:?}",
            sent[1]
        );
    }
    let tileset = &summary(&report)[0];
    assert_eq!(tileset["outbox"]["entries"].as_u64(), Some(0), "{tileset}");
    assert!(tileset["purges"][0]["price_usd"].as_f64().unwrap() <= 0.01);
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn fastly_soft_purges_and_cloudflare_enterprise_takes_500_urls_a_call() {
    let fastly = Recorder::start(r#"{"status": "ok"}"#, 0);
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"fastly\"\nservice_id = \"SU1Z0isxPaozGVKXdv0eY\"\napi_url = \"http://127.0.0.1:{}\"\npublic_url = \"https://tiles.example.org\"\nsoft_purge = true\ntoken_env = \"OAR_TEST_FASTLY_TOKEN\"",
        fastly.port
    );
    let (fixture, tree) = tree_world("edge_price_fastly", &cdn);
    seed_tree(&fixture, &tree, &[], &[("OAR_TEST_FASTLY_TOKEN", "t")]).assert_success();
    let calls = fastly.answered(0);
    assert!(!calls.is_empty());
    for call in &calls {
        assert_eq!(call.header("fastly-soft-purge"), "1", "{}", call.target);
    }

    let cloudflare = Recorder::start(r#"{"success": true, "errors": [], "result": {}}"#, 0);
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"cloudflare\"\nprefixes = false\nplan = \"enterprise\"\nzone_id = \"023e105f4ecef8ad9ca31a8372d0c353\"\napi_url = \"http://127.0.0.1:{}/client/v4\"\npublic_url = \"https://tiles.example.org/v1\"\ntoken_env = \"OAR_TEST_CF_TOKEN\"",
        cloudflare.port
    );
    let (fixture, tree) = tree_world("edge_price_cloudflare", &cdn);
    seed_tree(&fixture, &tree, &[], &[("OAR_TEST_CF_TOKEN", "t")]).assert_success();
    let tiles = tile_paths(&tree).len();
    assert!(tiles > 100, "{tiles} tiles");
    let calls = cloudflare.answered(0);
    let sizes: Vec<usize> = calls
        .iter()
        .map(|c| c.json()["files"].as_array().unwrap().len())
        .collect();
    assert!(sizes.iter().all(|n| *n <= 500), "{sizes:?}");
    assert_eq!(calls.len(), (tiles + 2).div_ceil(500), "{sizes:?}");

    // A plan Cloudflare does not have is refused at its line.
    let config = std::fs::read_to_string(&fixture.config).unwrap();
    std::fs::write(&fixture.config, config.replace("enterprise", "platinum")).unwrap();
    let refused = seed_tree(&fixture, &tree, &[], &[("OAR_TEST_CF_TOKEN", "t")]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("plan `platinum`"),
        "{}",
        refused.stderr
    );
}
