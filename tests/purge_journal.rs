//! Purges behind a cache that takes one path a `PURGE`. Killed part way: a full seed of an MBTiles
//! file (purged when the run ends) is killed (`kill -9`) while it purges, and the next run purges
//! what is left. What the cache accepted before the kill is journaled in the outbox as it was
//! accepted, so the next run sends again at most the requests that were in flight
//! (`concurrency`), and nothing is lost. Beside the writer: a full seed of a tree, which serves
//! each tile as it is stored, purges its tiles while it still writes, each path once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::edge::{tree_world, ZOOMS};
use crate::common::recorder::{Answer, Recorder};
use crate::common::run::{
    oar_tiles, oar_tiles_command, read_mbtiles_raw, read_tree, read_tree_after_a_kill, send_signal,
};

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
    let (fixture, _) = tree_world("purge_journal", &cdn(slow.port));
    let file = fixture.path("sites.mbtiles");
    let output = file.to_str().unwrap().to_string();
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
    let tiles: BTreeSet<String> = read_mbtiles_raw(&file)
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
    oar_tiles(
        Some(&fixture.schema.url),
        &fixture.seed_args(&output, ZOOMS, &["--dirty"]),
    )
    .assert_success();
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

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_full_seed_of_a_tree_purges_each_tile_once_while_it_still_writes() {
    let cache = Recorder::answering(Answer::Slow {
        body: "purged",
        millis: 20,
    });
    let (fixture, tree) = tree_world("purge_beside", &cdn(cache.port));
    let output = format!("dir:{}", tree.display());
    let args = fixture.seed_args(&output, ZOOMS, &[]);
    let mut child = oar_tiles_command(Some(&fixture.schema.url), &args, &[])
        .spawn()
        .unwrap();
    let started = Instant::now();
    while cache.requests.lock().unwrap().is_empty() && child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(2));
    }
    // When the first purge came, the tree did not hold every tile yet.
    let (at_first_purge, _) = read_tree_after_a_kill(&tree, "pbf");
    let run = child.wait_with_output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let tiles: BTreeSet<String> = read_tree(&tree, "pbf")
        .keys()
        .map(|(z, x, y)| format!("{z}/{x}/{y}.pbf"))
        .collect();
    assert!(
        at_first_purge.len() < tiles.len(),
        "the first purge came once all {} tiles were stored",
        tiles.len()
    );
    let sent = purged(&cache);
    let unique: BTreeSet<&String> = sent.iter().collect();
    assert_eq!(unique.len(), sent.len(), "a path purged twice");
    let missed: Vec<&String> = tiles.iter().filter(|t| !unique.contains(t)).collect();
    assert!(missed.is_empty(), "never purged: {missed:?}");
}
