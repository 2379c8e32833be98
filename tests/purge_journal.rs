//! A purge killed part way: a full seed of a tree behind a slow cache that takes one path a
//! `PURGE` is killed (`kill -9`) while it purges, and the next run purges what is left. What the
//! cache accepted before the kill is journaled in the outbox as it was accepted, so the next run
//! sends again at most the requests that were in flight (`concurrency`), and nothing is lost.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::edge::{seed_tree, tree_world, ZOOMS};
use crate::common::recorder::{Answer, Recorder};
use crate::common::run::{oar_tiles_command, read_tree_after_a_kill, send_signal};

/// Purge requests in flight at once: at most this many are sent twice.
const CONCURRENCY: usize = 4;
/// Requests the slow cache has seen when the run is killed.
const KILL_AFTER: usize = 40;

fn cdn(port: u16) -> String {
    format!(
        "[[tileset.cdn]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/t/{{path}}\"\n\
         concurrency = {CONCURRENCY}\n"
    )
}

fn purged(cache: &Recorder) -> Vec<String> {
    cache
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.target.trim_start_matches("/t/").to_string())
        .collect()
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_seed_killed_while_it_purges_resends_only_what_the_cache_had_not_accepted() {
    let slow = Recorder::answering(Answer::Slow {
        body: "purged",
        millis: 50,
    });
    let (fixture, tree) = tree_world("purge_journal", &cdn(slow.port));
    let output = format!("dir:{}", tree.display());
    let args = fixture.seed_args(&output, ZOOMS, &[]);
    let mut child = oar_tiles_command(Some(&fixture.schema.url), &args, &[])
        .spawn()
        .unwrap();
    let started = Instant::now();
    while slow.requests.lock().unwrap().len() < KILL_AFTER {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the seed ended before {KILL_AFTER} purges"
        );
        assert!(started.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(5));
    }
    send_signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let first: BTreeSet<String> = purged(&slow).into_iter().collect();
    let (stored, _) = read_tree_after_a_kill(&tree, "pbf");
    let tiles: BTreeSet<String> = stored
        .keys()
        .map(|(z, x, y)| format!("{z}/{x}/{y}.pbf"))
        .collect();
    assert!(
        tiles.len() > 2 * KILL_AFTER,
        "only {} tiles: too few to kill part way",
        tiles.len()
    );

    // The next run, nothing changed since, purges what the killed one did not get accepted.
    let fast = Recorder::start("purged", 0);
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    let text = text.replace(
        &format!("127.0.0.1:{}/t/", slow.port),
        &format!("127.0.0.1:{}/t/", fast.port),
    );
    std::fs::write(&fixture.config, text).unwrap();
    seed_tree(&fixture, &tree, &["--dirty"], &[]).assert_success();
    let second = purged(&fast);
    let again: Vec<&String> = second.iter().filter(|p| first.contains(*p)).collect();
    assert!(
        again.len() <= CONCURRENCY,
        "{} of the {} paths sent before the kill were sent again (at most {CONCURRENCY} were in \
         flight): {again:?}",
        again.len(),
        first.len()
    );
    let missed: Vec<&String> = tiles
        .iter()
        .filter(|t| !first.contains(*t) && !second.contains(t))
        .collect();
    assert!(missed.is_empty(), "never purged: {missed:?}");
    let unique: BTreeSet<&String> = second.iter().collect();
    assert_eq!(unique.len(), second.len(), "a path sent twice by one run");
}
