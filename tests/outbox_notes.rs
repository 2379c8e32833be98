//! The outbox's notes are not trusted: a CloudFront target's record of its invalidations in flight
//! and its spend ledger, damaged, planted as a giant or as a link to a device, fail safe and loud.
//! A lost flights record keeps the changes feed waiting until CloudFront says the invalidations
//! completed; a ledger that cannot be read counts the day as spent. CloudFront is moto's server
//! (`scripts/moto-server.sh`), its invalidations in progress for their distribution's propagation.

use std::path::{Path, PathBuf};

use crate::common::cloudfront::{
    cloudfront_client, distribution, invalidations, moto_env, moto_url, set_propagation,
    summary_path,
};
use crate::common::edge::{seed_tree, tree_world};
use crate::common::run::summary;

const CHANGE: &str =
    "UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.05, 0.02) WHERE site_id % 29 = 1";

/// A CloudFront target under `/v1` with `extra` keys.
fn cloudfront(id: &str, extra: &str) -> String {
    format!(
        "[[tileset.cdn]]\nkind = \"cloudfront\"\ndistribution_id = \"{id}\"\npath_prefix = \"/v1\"\n{extra}"
    )
}

/// The one note of the tree's outbox whose name starts with `start`.
fn note(tree: &Path, start: &str) -> PathBuf {
    let outbox = tree.join(".oar-tiles-outbox");
    let found: Vec<PathBuf> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(start) && name.ends_with(".note.json")
        })
        .collect();
    assert_eq!(found.len(), 1, "one {start} note in {}", outbox.display());
    found.into_iter().next().unwrap()
}

/// Cuts the file at `path` to half its length, as a crash or a full disk might leave it.
fn truncate(path: &Path) {
    let text = std::fs::read(path).unwrap();
    std::fs::write(path, &text[..text.len() / 2]).unwrap();
}

#[test]
#[ignore = "needs PostGIS and moto's server (scripts/moto-server.sh): run scripts/test.sh"]
fn a_truncated_flights_note_keeps_the_feed_waiting_until_cloudfront_says_completed() {
    let endpoint = moto_url();
    let id = distribution(
        &endpoint,
        &format!(
            "oar-tiles-notes-feed-{} propagation=3600",
            std::process::id()
        ),
    );
    let (fixture, tree) = tree_world(
        "notes_flights",
        &format!("{}\n\n[tileset.feed]\n", cloudfront(&id, "")),
    );
    let env = moto_env(&endpoint);
    let head = tree.join("changes/head.json");
    seed_tree(&fixture, &tree, &[], &env).assert_success();
    assert!(!head.exists(), "listed while its invalidation propagates");

    // The record of the invalidation in flight is cut short: it still propagates.
    let flights = note(&tree, "flights.");
    truncate(&flights);
    let run = seed_tree(&fixture, &tree, &["--dirty"], &env);
    run.assert_success();
    assert!(
        !head.exists(),
        "listed while CloudFront still has the invalidation in progress:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&flights.display().to_string()) && run.stderr.contains("in flight"),
        "{}",
        run.stderr
    );
    // Still in progress at the next run: still waiting.
    seed_tree(&fixture, &tree, &["--dirty"], &env).assert_success();
    assert!(!head.exists(), "listed while the invalidation propagates");

    // CloudFront completes it: the next run publishes.
    set_propagation(&endpoint, &id, 0);
    seed_tree(&fixture, &tree, &["--dirty"], &env).assert_success();
    assert!(head.exists(), "published once CloudFront says completed");
}

#[test]
#[ignore = "needs PostGIS and moto's server (scripts/moto-server.sh): run scripts/test.sh"]
fn a_spend_ledger_that_cannot_be_read_counts_the_day_as_spent() {
    let endpoint = moto_url();
    let client = cloudfront_client(&endpoint);
    let id = distribution(
        &endpoint,
        &format!("oar-tiles-notes-ledger-{}", std::process::id()),
    );
    // $1 a day: an hour's allowance (4 cents) buys the seed's wildcard and any change's paths.
    let (mut fixture, tree) = tree_world("notes_ledger", &cloudfront(&id, "budget_per_day = 1.0"));
    let env = moto_env(&endpoint);
    seed_tree(&fixture, &tree, &[], &env).assert_success();
    assert_eq!(invalidations(&client, &id).len(), 1);
    let ledger = note(&tree, "spend.");

    let mut planted = 0;
    for (what, plant) in [
        (
            "cut short",
            &(|path: &Path| truncate(path)) as &dyn Fn(&Path),
        ),
        ("a sparse giant of 100 MiB", &|path: &Path| {
            std::fs::File::create(path)
                .unwrap()
                .set_len(100 << 20)
                .unwrap()
        }),
        ("a link to /dev/zero", &|path: &Path| {
            std::fs::remove_file(path).unwrap();
            std::os::unix::fs::symlink("/dev/zero", path).unwrap();
        }),
    ] {
        plant(&ledger);
        planted += 1;
        fixture
            .schema
            .execute(&CHANGE.replace("% 29 = 1", &format!("% 29 = {planted}")));
        let (report, report_arg) = summary_path(&fixture, &format!("ledger-{planted}.json"));
        let run = seed_tree(
            &fixture,
            &tree,
            &["--dirty", "--summary-json", &report_arg],
            &env,
        );
        run.assert_success();
        assert_eq!(
            invalidations(&client, &id).len(),
            1,
            "a ledger {what}: nothing is sent today\n{}",
            run.stderr
        );
        let purge = &summary(&report)[0]["purges"][0];
        assert_eq!(purge["over_budget"], true, "a ledger {what}: {purge}");
        assert!(
            run.stderr.contains(&ledger.display().to_string())
                && run.stderr.contains("cannot be read")
                && run.stderr.contains("remove that file"),
            "a ledger {what}: {}",
            run.stderr
        );
    }

    // The operator removes it, as the warning says: the waiting changes go out.
    std::fs::remove_file(&ledger).unwrap();
    seed_tree(&fixture, &tree, &["--dirty"], &env).assert_success();
    assert_eq!(invalidations(&client, &id).len(), 2);
}
