//! A CDN account is never locked out: Cloudflare takes 1,200 API calls per five minutes from a
//! user, all tools together, and refuses every call for five minutes past them. Behind a stand-in
//! that enforces that limit (scaled down in time, the same logic), run after run of small changes
//! keeps to the target's share of the calls, a reseed's tiles go in one call rather than one per
//! chunk, and every changed tile is still purged; and when another tool on the user leaves fewer
//! calls than the share, as the answers' headers say, the target keeps to those.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::api_limits::ApiLimits;
use crate::common::edge::{metric, seed_tree, tree_in_config, tree_world, Watching};
use crate::common::recorder::Recorder;
use crate::common::run::{differences, read_tree, read_tree_being_written};

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const PUBLIC: &str = "https://tiles.example.org/v1";
const OK: &str = r#"{"success": true, "errors": [], "result": {"id": "x"}}"#;

/// What the calls purged: their URLs, and their prefixes (without the scheme).
fn purged(api: &Recorder) -> (BTreeSet<String>, Vec<String>) {
    let (mut urls, mut prefixes) = (BTreeSet::new(), Vec::new());
    for call in api.requests.lock().unwrap().iter() {
        let body = call.json();
        let listed = |key: &str| -> Vec<String> {
            body[key].as_array().map_or(Vec::new(), |items| {
                items
                    .iter()
                    .map(|i| i.as_str().unwrap().to_string())
                    .collect()
            })
        };
        urls.extend(listed("files"));
        prefixes.extend(listed("prefixes"));
    }
    (urls, prefixes)
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn dirty_runs_one_after_another_keep_to_their_share_of_cloudflares_calls_and_purge_every_change() {
    // The account's limit scaled down from 1,200 per five minutes to 10 per 20 s, every call
    // refused for 20 s past it; the target keeps to half of it, 5 calls per 20 s.
    let window = Duration::from_secs(20);
    let api = Recorder::limited(OK, ApiLimits::cloudflare(10, window));
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"cloudflare\"\nplan = \"free\"\nzone_id = \"{ZONE}\"\n\
         api_url = \"http://127.0.0.1:{}/client/v4\"\npublic_url = \"{PUBLIC}\"\n\
         token_env = \"OAR_TEST_CF_TOKEN\"\napi_limit = \"10/20s\"\napi_share = 0.5\n",
        api.port
    );
    let (mut fixture, tree) = tree_world("edge_calls_dirty", &cdn);
    let env = [("OAR_TEST_CF_TOKEN", "t")];
    seed_tree(&fixture, &tree, &[], &env).assert_success();
    // The full seed's URLs, 100 a call.
    let seeded = api.requests.lock().unwrap().len();
    let mut changed = BTreeSet::new();
    let runs = 8;
    for run in 0..runs {
        let before = read_tree(&tree, "pbf");
        fixture.schema.execute(&format!(
            "UPDATE {{schema}}.sites SET pt = ST_Translate(pt, 0.02, 0.01) WHERE site_id = {}",
            10 + run
        ));
        seed_tree(&fixture, &tree, &["--dirty"], &env).assert_success();
        let after = read_tree(&tree, "pbf");
        let moved = differences(&before, &after);
        assert!(!moved.is_empty(), "run {run} changed no tile");
        changed.extend(moved.into_iter().map(|tile| format!("{PUBLIC}/{tile}.pbf")));
    }
    let calls = api.requests.lock().unwrap().len();
    let limiter = api.limiter.as_ref().unwrap().lock().unwrap();
    assert_eq!(limiter.refused, 0, "the API refused calls: {calls} sent");
    let most = limiter.most_within(window);
    assert!(
        most <= 5,
        "{most} calls within {window:?}, past the share of 5 ({calls} calls in all)"
    );
    // Each small reseed's tiles at every zoom and the tree's `tiles.json`, which names the
    // digest its changes left: one call, not one per chunk, zoom or document.
    assert_eq!(calls - seeded, runs as usize, "calls for {runs} reseeds");
    drop(limiter);
    let (urls, prefixes) = purged(&api);
    for url in &changed {
        let bare = url.split_once("://").unwrap().1;
        assert!(
            urls.contains(url) || prefixes.iter().any(|p| bare.starts_with(p.as_str())),
            "{url} changed and was not purged"
        );
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_watcher_under_two_edits_a_second_keeps_to_its_share_of_cloudflares_calls_and_purges_every_change(
) {
    // 10 calls per 10 s, every call refused for 10 s past them; the target keeps to 5.
    let window = Duration::from_secs(10);
    let api = Recorder::limited(OK, ApiLimits::cloudflare(10, window));
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"cloudflare\"\nplan = \"free\"\nzone_id = \"{ZONE}\"\n\
         api_url = \"http://127.0.0.1:{}/client/v4\"\npublic_url = \"{PUBLIC}\"\n\
         token_env = \"OAR_TEST_CF_TOKEN\"\napi_limit = \"10/10s\"\napi_share = 0.5\n",
        api.port
    );
    let (mut fixture, tree) = tree_world("edge_calls_watch", &cdn);
    let env = [("OAR_TEST_CF_TOKEN", "t")];
    seed_tree(&fixture, &tree, &[], &env).assert_success();
    tree_in_config(&fixture, &tree, "");
    let before = read_tree(&tree, "pbf");
    let mut watching = Watching::start(&fixture, &env);
    watching.wait_until("/health 200", |w| {
        w.listening() && w.get("/health").status == 200
    });
    // Two edits a second for 15 s, each moving one facility.
    for i in 0..30 {
        fixture.schema.execute(&format!(
            "UPDATE {{schema}}.sites SET pt = ST_Translate(pt, 0.02, 0.01) WHERE site_id = {}",
            100 + i
        ));
        std::thread::sleep(Duration::from_millis(500));
    }
    watching.wait_until("every change applied and purged", |w| {
        let metrics = w.get("/metrics").text();
        if metric(&metrics, "oar_tiles_pending_changes") > 0.0
            || metric(&metrics, "oar_tiles_outbox_entries") > 0.0
        {
            return false;
        }
        let changed: BTreeSet<String> =
            differences(&before, &read_tree_being_written(&tree, "pbf"))
                .into_iter()
                .map(|tile| format!("{PUBLIC}/{tile}.pbf"))
                .collect();
        let (urls, _) = purged(&api);
        !changed.is_empty() && changed.is_subset(&urls)
    });
    let limiter = api.limiter.as_ref().unwrap().lock().unwrap();
    assert_eq!(limiter.refused, 0, "the API refused calls");
    let most = limiter.most_within(window);
    assert!(
        most <= 5,
        "{most} calls within {window:?}, past the share of 5"
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_watcher_keeps_to_the_calls_cloudflare_says_are_left_and_purges_every_change_after_the_reset() {
    // 20 calls per 10 s, every call refused for 10 s past them; the target's share is 10, but
    // another tool on the same user takes 15 as the edits begin, so the answers' `Ratelimit`
    // says 5 are left (the issue's 50 of 1,200, scaled down as the window is).
    let window = Duration::from_secs(10);
    let api = Recorder::limited(OK, ApiLimits::cloudflare(20, window));
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"cloudflare\"\nplan = \"free\"\nzone_id = \"{ZONE}\"\n\
         api_url = \"http://127.0.0.1:{}/client/v4\"\npublic_url = \"{PUBLIC}\"\n\
         token_env = \"OAR_TEST_CF_TOKEN\"\napi_limit = \"20/10s\"\napi_share = 0.5\n",
        api.port
    );
    let (mut fixture, tree) = tree_world("edge_calls_left", &cdn);
    let env = [("OAR_TEST_CF_TOKEN", "t")];
    seed_tree(&fixture, &tree, &[], &env).assert_success();
    tree_in_config(&fixture, &tree, "");
    let before = read_tree(&tree, "pbf");
    let mut watching = Watching::start(&fixture, &env);
    watching.wait_until("/health 200", |w| {
        w.listening() && w.get("/health").status == 200
    });
    // The seed's calls leave the window first.
    std::thread::sleep(window);
    let limiter = api.limiter.as_ref().unwrap();
    limiter.lock().unwrap().taken_by_others(15);
    for i in 0..16 {
        fixture.schema.execute(&format!(
            "UPDATE {{schema}}.sites SET pt = ST_Translate(pt, 0.02, 0.01) WHERE site_id = {}",
            100 + i
        ));
        std::thread::sleep(Duration::from_millis(500));
    }
    watching.wait_until("every change applied and purged", |w| {
        let metrics = w.get("/metrics").text();
        if metric(&metrics, "oar_tiles_pending_changes") > 0.0
            || metric(&metrics, "oar_tiles_outbox_entries") > 0.0
        {
            return false;
        }
        let changed: BTreeSet<String> =
            differences(&before, &read_tree_being_written(&tree, "pbf"))
                .into_iter()
                .map(|tile| format!("{PUBLIC}/{tile}.pbf"))
                .collect();
        let (urls, _) = purged(&api);
        !changed.is_empty() && changed.is_subset(&urls)
    });
    let limiter = limiter.lock().unwrap();
    assert_eq!(limiter.refused, 0, "the API refused calls");
    // Past the 5 left, the target's calls waited for the window to reset.
    assert!(
        limiter.admitted.len() > 5,
        "{} calls",
        limiter.admitted.len()
    );
}
