//! CloudFront as it is, on moto's server extended by `scripts/moto_cloudfront.py`: invalidations
//! stay in progress for their distribution's propagation time, and CloudFront's quotas of paths
//! in flight hold. A purge never waits for room or for propagation: what finds no room waits in
//! the outbox, the origin stays fresh, and a later run sends it and sees it completed.

use crate::common::block_on;
use crate::common::cloudfront::{
    changed, cloudfront_client, covered, distribution, invalidations, moto_env, moto_url,
    set_propagation, summary_path,
};
use crate::common::edge::{metric, seed_tree, tree_in_config, tree_world, Watching};
use crate::common::run::summary;

/// A CloudFront target under `/v1`.
fn cloudfront(id: &str) -> String {
    format!(
        "[[tileset.cdn]]\nkind = \"cloudfront\"\ndistribution_id = \"{id}\"\npath_prefix = \"/v1\""
    )
}

/// Another tool's invalidations: `files` file paths and `wildcards` wildcards outside the
/// output's `/v1` (at most 3,000 file paths an invalidation).
fn occupy(client: &aws_sdk_cloudfront::Client, id: &str, files: usize, wildcards: usize) {
    use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};
    let mut batches: Vec<Vec<String>> = (0..files)
        .map(|i| format!("/other/{i}.pbf"))
        .collect::<Vec<_>>()
        .chunks(3000)
        .map(<[String]>::to_vec)
        .collect();
    batches.push((0..wildcards).map(|i| format!("/other/{i}/*")).collect());
    block_on(async {
        for (index, batch) in batches.into_iter().filter(|b| !b.is_empty()).enumerate() {
            let millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            let paths = Paths::builder()
                .quantity(batch.len() as i32)
                .set_items(Some(batch))
                .build()
                .unwrap();
            let batch = InvalidationBatch::builder()
                .paths(paths)
                .caller_reference(format!("oar-tiles-{millis:015}-other-{index}"))
                .build()
                .unwrap();
            client
                .create_invalidation()
                .distribution_id(id)
                .invalidation_batch(batch)
                .send()
                .await
                .unwrap();
        }
    });
}

/// The status of each of the distribution's invalidations.
fn statuses(client: &aws_sdk_cloudfront::Client, id: &str) -> Vec<String> {
    block_on(async {
        let listed = client
            .list_invalidations()
            .distribution_id(id)
            .send()
            .await
            .unwrap();
        listed
            .invalidation_list()
            .unwrap()
            .items()
            .iter()
            .map(|s| s.status().to_string())
            .collect()
    })
}

/// The invalidations holding the output's paths (under `/v1`), oldest first.
fn ours(client: &aws_sdk_cloudfront::Client, id: &str) -> Vec<Vec<String>> {
    invalidations(client, id)
        .into_iter()
        .filter(|paths| paths.iter().any(|p| p.starts_with("/v1/")))
        .collect()
}

const CHANGE: &str =
    "UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.05, 0.02) WHERE site_id % 29 = 1";

#[test]
#[ignore = "needs PostGIS and moto's server (scripts/moto-server.sh): run scripts/test.sh"]
fn a_full_quota_leaves_the_paths_in_the_outbox_until_a_later_run_finds_room() {
    let endpoint = moto_url();
    let client = cloudfront_client(&endpoint);
    let id = distribution(
        &endpoint,
        &format!("oar-tiles-cf-quota-{} propagation=3600", std::process::id()),
    );
    let (mut fixture, tree) = tree_world("cloudfront_quota", &cloudfront(&id));
    let env = moto_env(&endpoint);
    seed_tree(&fixture, &tree, &[], &env).assert_success();
    assert_eq!(ours(&client, &id), vec![vec!["/v1/*".to_string()]]);
    // With the seed's `/v1/*`, another tool's invalidations fill both quotas.
    occupy(&client, &id, 3000, 14);

    let before = crate::common::run::read_tree(&tree, "pbf");
    fixture.schema.execute(CHANGE);
    let (report, report_arg) = summary_path(&fixture, "no-room.json");
    seed_tree(
        &fixture,
        &tree,
        &["--dirty", "--summary-json", &report_arg],
        &env,
    )
    .assert_success();
    // The origin holds the change; CloudFront was not sent anything, and nothing failed.
    let changed = changed(&before, &crate::common::run::read_tree(&tree, "pbf"));
    assert!(changed.len() > 2, "{changed:?}");
    let tileset = &summary(&report)[0];
    let purge = &tileset["purges"][0];
    assert_eq!(purge["no_room"], true, "{purge}");
    assert!(purge["failed"].is_null(), "{purge}");
    assert_eq!(purge["requests"].as_u64(), Some(0), "{purge}");
    assert!(
        tileset["outbox"]["entries"].as_u64().unwrap() > 0,
        "{tileset}"
    );
    assert_eq!(ours(&client, &id).len(), 1);

    // The invalidations in flight complete: the next run sends what waited, every changed tile.
    set_propagation(&endpoint, &id, 0);
    let (report, report_arg) = summary_path(&fixture, "sent.json");
    seed_tree(
        &fixture,
        &tree,
        &["--dirty", "--summary-json", &report_arg],
        &env,
    )
    .assert_success();
    let sent = ours(&client, &id);
    assert_eq!(sent.len(), 2, "{sent:?}");
    for path in &changed {
        assert!(
            covered(path, &sent[1]),
            "{path} is invalidated: {:?}",
            sent[1]
        );
    }
    let tileset = &summary(&report)[0];
    assert_eq!(
        tileset["purges"][0]["requests"].as_u64(),
        Some(1),
        "{tileset}"
    );
    assert_eq!(
        tileset["purges"][0]["in_flight"].as_u64(),
        Some(1),
        "{tileset}"
    );
    assert_eq!(tileset["outbox"]["entries"].as_u64(), Some(0), "{tileset}");

    // The run after sees it completed: the change's commit → completed, in the summary and the
    // metrics.
    let (report, report_arg) = summary_path(&fixture, "completed.json");
    let metrics = fixture.path("metrics.prom");
    seed_tree(
        &fixture,
        &tree,
        &[
            "--dirty",
            "--summary-json",
            &report_arg,
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
        &env,
    )
    .assert_success();
    let purge = &summary(&report)[0]["purges"][0];
    assert_eq!(purge["completed"].as_u64(), Some(1), "{purge}");
    assert_eq!(purge["in_flight"].as_u64(), Some(0), "{purge}");
    let seconds = purge["completed_seconds"].as_array().unwrap();
    assert_eq!(seconds.len(), 1, "one UPDATE, one change: {purge}");
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        metric(&text, "oar_tiles_purge_completed_seconds_count"),
        1.0,
        "{text}"
    );
}

#[test]
#[ignore = "needs PostGIS and moto's server (scripts/moto-server.sh): run scripts/test.sh"]
fn seed_returns_once_cloudfront_accepts_and_never_waits_for_room_or_propagation() {
    let endpoint = moto_url();
    let client = cloudfront_client(&endpoint);
    let id = distribution(
        &endpoint,
        &format!(
            "oar-tiles-cf-nowait-{} propagation=3600",
            std::process::id()
        ),
    );
    let (mut fixture, tree) = tree_world("cloudfront_nowait", &cloudfront(&id));
    let env = moto_env(&endpoint);
    let (report, report_arg) = summary_path(&fixture, "seed.json");
    seed_tree(&fixture, &tree, &["--summary-json", &report_arg], &env).assert_success();
    let purge = &summary(&report)[0]["purges"][0];
    assert_eq!(purge["requests"].as_u64(), Some(1), "{purge}");
    // Accepted, and still propagating when seed returned.
    assert_eq!(statuses(&client, &id), vec!["InProgress".to_string()]);

    // No room at all: seed neither waits for it nor fails; the change waits in the outbox.
    occupy(&client, &id, 3000, 14);
    fixture.schema.execute(CHANGE);
    let (report, report_arg) = summary_path(&fixture, "dirty.json");
    seed_tree(
        &fixture,
        &tree,
        &["--dirty", "--summary-json", &report_arg],
        &env,
    )
    .assert_success();
    let purge = &summary(&report)[0]["purges"][0];
    assert!(purge["failed"].is_null(), "{purge}");
    assert_eq!(purge["no_room"], true, "{purge}");
    assert!(
        statuses(&client, &id).iter().all(|s| s == "InProgress"),
        "seed returned before anything in flight completed"
    );
}

#[test]
#[ignore = "needs PostGIS and moto's server (scripts/moto-server.sh): run scripts/test.sh"]
fn a_watch_cycle_keeps_the_origin_fresh_while_cloudfront_has_no_room_and_purges_when_it_has() {
    let endpoint = moto_url();
    let client = cloudfront_client(&endpoint);
    let id = distribution(
        &endpoint,
        &format!("oar-tiles-cf-watch-{} propagation=3600", std::process::id()),
    );
    let (mut fixture, tree) = tree_world("cloudfront_watch", &cloudfront(&id));
    // `watch` takes its output and zooms from the config, as `seed_tree` gives them.
    tree_in_config(&fixture, &tree, "");
    let env = moto_env(&endpoint);
    seed_tree(&fixture, &tree, &[], &env).assert_success();
    occupy(&client, &id, 3000, 14);
    let mut watching = Watching::start(&fixture, &env);
    watching.wait_until("/health 200", |w| {
        w.listening() && w.get("/health").status == 200
    });

    let before = crate::common::run::read_tree_being_written(&tree, "pbf");
    fixture.schema.execute(CHANGE);
    watching.wait_until("a cycle that found no room", |w| {
        let text = w.get("/metrics").text();
        metric(&text, "oar_tiles_changes_applied_total") >= 1.0
            && metric(&text, "oar_tiles_purge_no_room_total") >= 1.0
    });
    // The cycle stored the change at the origin and did not wait for CloudFront.
    let changed = changed(
        &before,
        &crate::common::run::read_tree_being_written(&tree, "pbf"),
    );
    assert!(!changed.is_empty());
    assert_eq!(ours(&client, &id).len(), 1);
    let text = watching.get("/metrics").text();
    assert_eq!(
        metric(&text, "oar_tiles_purge_failures_total"),
        0.0,
        "{text}"
    );

    // Room comes back without another change: the watcher's poll sends what waited, then sees
    // it completed.
    set_propagation(&endpoint, &id, 0);
    watching.wait_until("the waiting paths invalidated", |_| {
        ours(&client, &id).len() == 2
    });
    let sent = ours(&client, &id);
    for path in &changed {
        assert!(
            covered(path, &sent[1]),
            "{path} is invalidated: {:?}",
            sent[1]
        );
    }
    watching.wait_until("the invalidation seen completed", |w| {
        metric(
            &w.get("/metrics").text(),
            "oar_tiles_purge_completed_seconds_count",
        ) >= 1.0
    });
    let text = watching.get("/metrics").text();
    assert_eq!(metric(&text, "oar_tiles_outbox_entries"), 0.0, "{text}");
}

#[test]
#[ignore = "needs PostGIS and moto's server (scripts/moto-server.sh): run scripts/test.sh"]
fn with_room_for_one_wildcard_only_the_changes_go_out_as_one_wildcard() {
    let endpoint = moto_url();
    let client = cloudfront_client(&endpoint);
    let id = distribution(
        &endpoint,
        &format!("oar-tiles-cf-room-{} propagation=3600", std::process::id()),
    );
    let (mut fixture, tree) = tree_world("cloudfront_room", &cloudfront(&id));
    let env = moto_env(&endpoint);
    seed_tree(&fixture, &tree, &[], &env).assert_success();
    // Every file path is taken, and 14 of 15 wildcards (the seed's `/v1/*` among them).
    occupy(&client, &id, 3000, 13);

    let before = crate::common::run::read_tree(&tree, "pbf");
    fixture.schema.execute(CHANGE);
    let (report, report_arg) = summary_path(&fixture, "one-wildcard.json");
    seed_tree(
        &fixture,
        &tree,
        &["--dirty", "--summary-json", &report_arg],
        &env,
    )
    .assert_success();
    let changed = changed(&before, &crate::common::run::read_tree(&tree, "pbf"));
    assert!(changed.len() > 2, "{changed:?}");
    let sent = ours(&client, &id);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1].len(), 1, "one wildcard fits: {:?}", sent[1]);
    assert!(sent[1][0].ends_with('*'), "{:?}", sent[1]);
    for path in &changed {
        assert!(
            covered(path, &sent[1]),
            "{path} is invalidated: {:?}",
            sent[1]
        );
    }
    // `tiles.json`, naming the digest kept from the changed tiles, goes in the same wildcard:
    // nothing waits for room.
    assert!(covered("/v1/tiles.json", &sent[1]), "{:?}", sent[1]);
    let tileset = &summary(&report)[0];
    assert_eq!(tileset["outbox"]["entries"].as_u64(), Some(0), "{tileset}");
}

#[test]
#[ignore = "needs PostGIS and moto's server (scripts/moto-server.sh): run scripts/test.sh"]
fn the_changes_feed_waits_until_cloudfronts_invalidations_completed() {
    let endpoint = moto_url();
    let client = cloudfront_client(&endpoint);
    let id = distribution(
        &endpoint,
        &format!("oar-tiles-cf-feed-{} propagation=3600", std::process::id()),
    );
    let (mut fixture, tree) = tree_world(
        "cloudfront_feed",
        &format!("{}\n\n[tileset.feed]\n", cloudfront(&id)),
    );
    let env = moto_env(&endpoint);
    let head = tree.join("changes/head.json");
    seed_tree(&fixture, &tree, &[], &env).assert_success();
    assert_eq!(statuses(&client, &id), vec!["InProgress".to_string()]);
    assert!(!head.exists(), "listed while its invalidation propagates");
    fixture.schema.execute(CHANGE);
    seed_tree(&fixture, &tree, &["--dirty"], &env).assert_success();
    assert!(!head.exists(), "listed while an invalidation propagates");

    // Both invalidations complete: the next run (no change of its own) publishes both batches.
    set_propagation(&endpoint, &id, 0);
    seed_tree(&fixture, &tree, &["--dirty"], &env).assert_success();
    let published: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&head).expect("published once completed")).unwrap();
    assert_eq!(published["sequence"], 1, "{published}");
    // CloudFront's paths cost money: the head is left to its max-age, never invalidated.
    assert!(
        ours(&client, &id)
            .iter()
            .flatten()
            .all(|path| !path.contains("changes")),
        "{:?}",
        ours(&client, &id)
    );
}
