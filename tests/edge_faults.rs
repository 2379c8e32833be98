//! Killed between storing and purging: `seed` and `watch` stored their tiles (the watermark moved
//! on) and were purging a cache that does not answer when SIGKILL came. The changes wait in the
//! output's outbox, and the next run, or the next watcher, purges every one of them.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::edge::{seed_tree, tree_world, Watching};
use crate::common::recorder::Recorder;
use crate::common::run::{
    differences, oar_tiles_command, read_tree, read_tree_after_a_kill, send_signal, Tiles,
};

/// A cache that takes connections and never answers: a purge sent to it hangs.
struct Silent {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Silent {
    fn start() -> Silent {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().map_while(Result::ok) {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        Silent { port, accepted }
    }

    /// Waits until a purge reached it (the run stored everything before it purges).
    fn wait_for_a_purge(&self, alive: &mut std::process::Child, since: usize) {
        let started = Instant::now();
        while self.accepted.load(Ordering::SeqCst) <= since {
            assert!(
                alive.try_wait().unwrap().is_none(),
                "the run ended before it purged"
            );
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "no purge began in 5 minutes"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A cache that takes `BAN`, so a full seed purges once it stored everything: one that takes
/// only `PURGE` is purged while the seed still writes (`purge_journal`), and the kill would land
/// in the middle of the writes instead.
fn cdn(port: u16) -> String {
    format!(
        "[[tileset.cdn]]\nkind = \"http\"\nmethod = \"BAN\"\nurl = \"http://127.0.0.1:{port}/t/{{path}}\"\n"
    )
}

/// Points the config's one CDN target at `port`.
fn retarget(config: &std::path::Path, from: u16, to: u16) {
    let text = std::fs::read_to_string(config).unwrap();
    let from = format!("127.0.0.1:{from}/t/");
    assert!(text.contains(&from));
    std::fs::write(config, text.replace(&from, &format!("127.0.0.1:{to}/t/"))).unwrap();
}

/// The tiles a recording cache was purged of (`*`, a BAN of the root, covers every one).
fn purged(cache: &Recorder) -> BTreeSet<String> {
    cache
        .paths_under("/t/")
        .into_iter()
        .map(|path| if path.is_empty() { "*".into() } else { path })
        .collect()
}

fn assert_purged(cache: &Recorder, tiles: &BTreeSet<String>, what: &str) {
    let purged = purged(cache);
    if purged.contains("*") {
        return;
    }
    let missed: Vec<&String> = tiles.iter().filter(|t| !purged.contains(*t)).collect();
    assert!(missed.is_empty(), "{what}: never purged: {missed:?}");
}

fn paths(tiles: &Tiles) -> BTreeSet<String> {
    tiles
        .keys()
        .map(|(z, x, y)| format!("{z}/{x}/{y}.pbf"))
        .collect()
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn changes_stored_by_a_seed_and_a_watcher_killed_while_purging_are_purged_by_the_next_run() {
    let silent = Silent::start();
    let cache = Recorder::start("purged", 0);
    let (mut fixture, tree) = tree_world("edge_killed", &cdn(silent.port));
    let text = std::fs::read_to_string(&fixture.config).unwrap().replacen(
        "[[tileset]]\nname = \"sites\"\n",
        &format!(
            "[[tileset]]\nname = \"sites\"\noutput = \"dir:{}\"\nmaxzoom = 9\n",
            tree.display()
        ),
        1,
    );
    std::fs::write(&fixture.config, text).unwrap();
    let config = fixture.config.to_str().unwrap().to_string();

    // A full seed stores every tile, then hangs on its purge: SIGKILL.
    let mut child = oar_tiles_command(
        Some(&fixture.schema.url),
        &["seed", "--config", &config],
        &[],
    )
    .spawn()
    .unwrap();
    silent.wait_for_a_purge(&mut child, 0);
    send_signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let seeded = read_tree(&tree, "pbf");
    assert!(!seeded.is_empty());
    // The next run (nothing changed since) purges what the killed one stored.
    retarget(&fixture.config, silent.port, cache.port);
    seed_tree(&fixture, &tree, &["--dirty"], &[]).assert_success();
    assert_purged(&cache, &paths(&seeded), "after a killed seed");

    // A watcher's cycle stores a change, then hangs on its purge: SIGKILL.
    retarget(&fixture.config, cache.port, silent.port);
    let before = read_tree(&tree, "pbf");
    let mut watching = Watching::start(&fixture, &[]);
    watching.wait_until("/health 200", |w| {
        w.listening() && w.get("/health").status == 200
    });
    let since = silent.accepted.load(Ordering::SeqCst);
    fixture.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.05, 0.02) WHERE site_id % 40 = 3",
    );
    silent.wait_for_a_purge(watching.child(), since);
    let killed = watching.child().id();
    send_signal(watching.child(), libc::SIGKILL);
    watching.child().wait().unwrap();
    drop(watching);
    // SIGKILL may land while a tile is written: its temporary file stays until the next run.
    let (after_kill, _) = read_tree_after_a_kill(&tree, "pbf");
    let changed: BTreeSet<String> = differences(&before, &after_kill)
        .into_iter()
        .map(|tile| format!("{tile}.pbf"))
        .collect();
    assert!(!changed.is_empty(), "the cycle stored nothing");
    // The next watcher purges them at its first cycle, with no new change to apply.
    cache.requests.lock().unwrap().clear();
    retarget(&fixture.config, silent.port, cache.port);
    let mut watching = Watching::start(&fixture, &[]);
    watching.wait_until("the killed cycle's tiles purged", |_| {
        let purged = purged(&cache);
        purged.contains("*") || changed.iter().all(|t| purged.contains(t))
    });
    assert_purged(&cache, &changed, "after a killed watcher");
    // The next watcher removed what the killed one left half written (its own may be in flight).
    let (_, temporaries) = read_tree_after_a_kill(&tree, "pbf");
    let left: Vec<&String> = temporaries
        .iter()
        .filter(|name| name.ends_with(&format!(".{killed}.tmp")))
        .collect();
    assert!(left.is_empty(), "the killed watcher's {left:?} left behind");
    // And its mark, which told the next watcher's open that it was gone.
    let marks: Vec<String> = std::fs::read_dir(&tree)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!(".oar-tiles-writer.{killed}.")))
        .collect();
    assert!(
        marks.is_empty(),
        "the killed watcher's mark {marks:?} left behind"
    );
}
