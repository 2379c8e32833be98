//! Purges behind a cache that takes one path a `PURGE`. Killed part way: a full seed of an MBTiles
//! file (purged when the run ends) is killed (`kill -9`) while it purges, and the next run purges
//! what is left. What the cache accepted before the kill is journaled in the outbox as it was
//! accepted, so the next run sends again at most the requests that were in flight
//! (`concurrency`), and nothing is lost. The same at the size issue 76 counted: 94,611 paths
//! waiting in the outbox, the purge killed once the cache took 40 % of them. Beside the writer: a
//! full seed of a tree, which serves each tile as it is stored, purges its tiles while it still
//! writes, each path once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::common::edge::{tree_world, ZOOMS};
use crate::common::fixture::Fixture;
use crate::common::recorder::{Answer, Recorder};
use crate::common::run::{
    oar_tiles, oar_tiles_command, read_mbtiles_raw, read_tree, read_tree_after_a_kill, send_signal,
};

/// Purge requests in flight at once: at most this many are sent twice.
const CONCURRENCY: usize = 4;
/// Requests the slow cache has seen when the run is killed.
const KILL_AFTER: usize = 40;

fn cdn(port: u16) -> String {
    cdn_with(port, CONCURRENCY)
}

fn cdn_with(port: u16, concurrency: usize) -> String {
    format!(
        "[[tileset.cdn]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/t/{{path}}\"\n\
         concurrency = {concurrency}\n"
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

/// The paths issue 76 counted: a full seed behind a cache that takes one path a request.
const PATHS: usize = 94_611;
/// Purge requests in flight at once in the purge of [`PATHS`]: at most this many are sent twice.
const WIDE: usize = 16;
/// Requests the cache has taken when the purge of [`PATHS`] is killed: about 40 %.
const KILL_AT: usize = PATHS * 2 / 5;

/// The first `count` tiles of the pyramid, zoom by zoom, as outbox lines (`z/x/y`).
fn pyramid_lines(count: usize) -> Vec<String> {
    (0u8..=20)
        .flat_map(|z| {
            let side = 1u32 << z;
            (0..side).flat_map(move |x| (0..side).map(move |y| format!("{z}/{x}/{y}")))
        })
        .take(count)
        .collect()
}

/// Leaves `lines` in the outbox of the MBTiles file `file` as one batch a run committed and no
/// consumer took: what a reseed that changed them leaves for its purge. Returns the outbox
/// folder and the batch's name.
fn a_waiting_batch(file: &Path, lines: &[String]) -> (PathBuf, String) {
    let outbox = PathBuf::from(format!("{}.oar-tiles-outbox", file.display()));
    std::fs::create_dir_all(&outbox).unwrap();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let batch = format!("{millis:015}-{}.batch", std::process::id());
    let mut body = lines.join("\n");
    body.push('\n');
    std::fs::write(outbox.join(&batch), body).unwrap();
    (outbox, batch)
}

/// The purge paths (`z/x/y.pbf`) the outbox's partial record says its CDN consumer took of
/// `batch`: what the purge journaled as the cache accepted it.
fn journaled(outbox: &Path, batch: &str) -> BTreeSet<String> {
    let done = format!("{batch}.done.");
    let mut paths = BTreeSet::new();
    for entry in std::fs::read_dir(outbox).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with(&done) {
            let text = std::fs::read_to_string(outbox.join(&name)).unwrap();
            // A line cut short by the kill has no newline, and the outbox does not count it.
            let whole = text.rsplit_once('\n').map_or("", |(whole, _)| whole);
            paths.extend(whole.lines().map(|line| format!("{line}.pbf")));
        }
    }
    paths
}

/// Sends the purges of the fixture's config to the cache on `to` instead of `from`.
fn move_cache(fixture: &Fixture, from: u16, to: u16) {
    let text = std::fs::read_to_string(&fixture.config).unwrap().replace(
        &format!("127.0.0.1:{from}/t/"),
        &format!("127.0.0.1:{to}/t/"),
    );
    std::fs::write(&fixture.config, text).unwrap();
}

/// Waits until `cache` has taken `count` requests, then kills the run (`kill -9`); fails with the
/// run's log if it ends before.
fn kill_after(child: &mut Child, cache: &Recorder, count: usize, log: &Path) {
    while cache.requests.lock().unwrap().len() < count {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before the cache took {count} purges:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    send_signal(child, libc::SIGKILL);
    child.wait().unwrap();
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_purge_of_94611_paths_killed_part_way_resends_at_most_what_was_in_flight() {
    let setup = Recorder::start("purged", 0);
    let (fixture, _) = tree_world("purge_journal_large", &cdn_with(setup.port, WIDE));
    let file = fixture.path("sites.mbtiles");
    let output = file.to_str().unwrap().to_string();
    oar_tiles(
        Some(&fixture.schema.url),
        &fixture.seed_args(&output, "0-3", &[]),
    )
    .assert_success();
    let lines = pyramid_lines(PATHS);
    let all: BTreeSet<String> = lines.iter().map(|l| format!("{l}.pbf")).collect();
    let (outbox, batch) = a_waiting_batch(&file, &lines);

    // A cache that answers each PURGE after a millisecond: the kill finds requests it has
    // taken and not yet answered.
    let slow = Recorder::answering(Answer::Slow {
        body: "purged",
        millis: 1,
    });
    move_cache(&fixture, setup.port, slow.port);
    let dirty = fixture.seed_args(&output, "0-3", &["--dirty"]);
    let log = fixture.path("killed.log");
    let mut child = oar_tiles_command(Some(&fixture.schema.url), &dirty, &[])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    kill_after(&mut child, &slow, KILL_AT, &log);
    let accepted = journaled(&outbox, &batch);

    let fast = Recorder::start("purged", 0);
    move_cache(&fixture, slow.port, fast.port);
    oar_tiles(Some(&fixture.schema.url), &dirty).assert_success();
    // Read after the second run: a request the killed run had written to its socket is taken
    // by the slow cache even after the kill.
    let taken = purged(&slow);
    let second = purged(&fast);
    check_the_two_runs(&all, &taken, &accepted, &second);
    // Once every consumer took every batch, the outbox folder goes too.
    let left: Vec<String> = std::fs::read_dir(&outbox)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.contains(".batch"))
        .collect();
    assert!(left.is_empty(), "still in the outbox: {left:?}");
}

/// The purge killed part way (`taken` by its cache, `accepted` as its journal says) and the run
/// after it (`second`) sent each of `all` at least once, the second only what the first had not
/// journaled, and again at most the [`WIDE`] requests in flight at the kill.
fn check_the_two_runs(
    all: &BTreeSet<String>,
    taken: &[String],
    accepted: &BTreeSet<String>,
    second: &[String],
) {
    let first: BTreeSet<&String> = taken.iter().collect();
    assert_eq!(
        first.len(),
        taken.len(),
        "a path sent twice by the killed run"
    );
    assert!(
        taken.len() < PATHS,
        "the first run sent all {PATHS} paths before the kill"
    );
    let unjournaled: Vec<&&String> = first.iter().filter(|p| !accepted.contains(**p)).collect();
    assert!(
        accepted.iter().all(|p| first.contains(p)),
        "journaled but never taken by the cache"
    );
    // Taken by the cache but not journaled: the requests in flight at the kill.
    assert!(
        unjournaled.len() <= WIDE,
        "{} of the {} paths the cache took before the kill were not journaled (at most {WIDE} \
         were in flight)",
        unjournaled.len(),
        taken.len()
    );
    let sent: BTreeSet<&String> = second.iter().collect();
    assert_eq!(
        sent.len(),
        second.len(),
        "a path sent twice by the next run"
    );
    // What the cache had not taken, and what it had taken but the journal had not recorded
    // (in flight at the kill): nothing else.
    let expected: BTreeSet<&String> = all.iter().filter(|p| !accepted.contains(*p)).collect();
    assert_eq!(
        sent, expected,
        "the next run must send exactly what the killed one had not journaled"
    );
    let again: Vec<&&String> = sent.iter().filter(|p| first.contains(**p)).collect();
    assert!(
        again.len() <= WIDE,
        "{} paths the cache took before the kill were sent again",
        again.len()
    );
    let missed = all
        .iter()
        .filter(|p| !first.contains(p) && !sent.contains(p))
        .count();
    assert_eq!(missed, 0, "paths never purged");
    eprintln!(
        "{PATHS} paths, {WIDE} in flight at most: the cache took {} before the kill, {} of them \
         journaled ({} in flight); the next run sent {}, {} of them again",
        taken.len(),
        accepted.len(),
        unjournaled.len(),
        second.len(),
        again.len()
    );
}
