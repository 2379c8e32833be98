//! An idle `watch` sends the edge nothing: a clustered tree (its cluster cells refreshed every
//! cycle) with a changes feed, behind CloudFront whose invalidations stay in flight, so the
//! watcher cycles every two seconds while its batches wait for the feed (issue 75).

use crate::common::cloudfront::{
    cloudfront_client, distribution, invalidations, moto_env, moto_url,
};
use crate::common::edge::{metric, points, seed_tree, tree_in_config, Watching};
use crate::common::fixture::Fixture;
use crate::common::run::{oar_tiles, single_layer_config};
use crate::common::watcher::PACING;

/// Cycles the watcher runs idle after it settled (about two seconds each while invalidations
/// are in flight).
const IDLE_CYCLES: f64 = 15.0;

/// A clustered tree with change capture and a feed, purged through CloudFront distribution `id`.
fn clustered_world(label: &str, id: &str) -> (Fixture, std::path::PathBuf) {
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"cloudfront\"\ndistribution_id = \"{id}\"\npath_prefix = \"/v1\"\n\n[tileset.feed]\n"
    );
    let fixture = Fixture::new(label, &points(), "edge.toml", |schema| {
        let changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(
                &schema.name,
                "sites",
                &cdn,
                "cluster_maxzoom = 6\ncluster_cell = 512"
            )
        )
    });
    let tree = fixture.path("tree");
    let config = fixture.config.to_str().unwrap().to_string();
    oar_tiles(
        Some(&fixture.schema.url),
        &["changes", "install", "--config", &config],
    )
    .assert_success();
    tree_in_config(&fixture, &tree, PACING);
    (fixture, tree)
}

/// The watcher's log, in the fixture's directory.
fn watch_log(fixture: &Fixture) -> String {
    std::fs::read_dir(fixture.dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().contains("watch-"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

/// The cycles the watcher ran.
fn cycles(watching: &Watching) -> f64 {
    metric(
        &watching.get("/metrics").text(),
        "oar_tiles_cycle_seconds_count",
    )
}

#[test]
#[ignore = "needs PostGIS and moto's server (scripts/moto-server.sh): run scripts/test.sh"]
fn an_idle_watch_of_a_clustered_tree_with_a_feed_creates_no_invalidation() {
    let endpoint = moto_url();
    let client = cloudfront_client(&endpoint);
    let id = distribution(
        &endpoint,
        &format!("oar-tiles-cf-idle-{} propagation=3600", std::process::id()),
    );
    let (mut fixture, tree) = clustered_world("idle_edge", &id);
    let env = moto_env(&endpoint);
    seed_tree(&fixture, &tree, &[], &env).assert_success();
    let mut watching = Watching::start(&fixture, &env);
    watching.wait_until("the first cycles", |w| w.listening() && cycles(w) >= 2.0);
    // One change, as in production: its tiles and `tiles.json`, naming the tree's digest the
    // change left, go out in its cycle; the cycles after it settle what waits.
    fixture.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.05, 0.02) WHERE site_id % 29 = 1",
    );
    watching.wait_until("the change applied", |w| {
        metric(&w.get("/metrics").text(), "oar_tiles_changes_applied_total") >= 1.0
    });
    let refreshed = cycles(&watching);
    watching.wait_until("the settle", |w| cycles(w) >= refreshed + 3.0);
    let settled = invalidations(&client, &id);
    let start = cycles(&watching);
    watching.wait_until("idle cycles", |w| cycles(w) >= start + IDLE_CYCLES);
    let after = invalidations(&client, &id);
    let log = watch_log(&fixture);
    assert_eq!(
        after.len(),
        settled.len(),
        "{} idle cycles created invalidations: {:?}\nthe watcher's log:\n{log}",
        IDLE_CYCLES,
        &after[settled.len().min(after.len())..]
    );
}
