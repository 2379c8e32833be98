//! The outbox: every tile a run changes reaches the `--changed-list` of a later run when the list
//! could not be written, when the run was stopped by SIGTERM or killed by SIGKILL, and a single
//! file left as it was by a killed run adds nothing to it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::common::disk::TinyDisk;
use crate::common::fixture::Fixture;
use crate::common::run::{
    differences, oar_tiles, oar_tiles_command, read_mbtiles_raw, read_tree, read_tree_after_a_kill,
    run_from, send_signal, single_layer_config, wait_for_file_clock_past, Run,
};
use crate::common::slow::{many_points, SLOW_ROWS};

const ZOOMS: &str = "0-12";

/// A schema of points under change capture, with a layer slow enough to stop mid-run.
fn world(label: &str) -> Fixture {
    let fixture = Fixture::new(label, &many_points(3000), "outbox.toml", |schema| {
        let changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(&schema.name, "sites", "", SLOW_ROWS)
        )
    });
    let config = fixture.config.to_str().unwrap();
    oar_tiles(
        Some(&fixture.schema.url),
        &["changes", "install", "--config", config],
    )
    .assert_success();
    fixture
}

fn seed(fixture: &Fixture, output: &str, extra: &[&str]) -> Run {
    oar_tiles(
        Some(&fixture.schema.url),
        &fixture.seed_args(output, ZOOMS, extra),
    )
}

/// Moves every point a little: most tiles of the pyramid change.
fn move_everything(fixture: &mut Fixture) {
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.013, 0.007)");
}

fn listed(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

/// `*` in a list names every tile: what a killed walk (a full seed, or a bulk reseed walking
/// subtrees) leaves, since no short list names what it may have replaced.
fn assert_lists_every(list: &BTreeSet<String>, changed: &BTreeSet<String>, what: &str) {
    if list.contains("*") {
        return;
    }
    let missing: Vec<&String> = changed.difference(list).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} changed tile(s) never listed, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
}

/// Whether a tile file of the tree was replaced after `since`. Temporary files are skipped, and so
/// is `tiles.json`, which a reseed rewrites (taking its hash out) just before it places its first
/// tile: a kill then would find no tile replaced.
fn tree_changed_since(root: &Path, since: SystemTime) -> bool {
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                folders.push(entry.path());
            } else if entry.file_name().to_string_lossy().ends_with(".pbf")
                && meta.modified().is_ok_and(|m| m > since)
            {
                return true;
            }
        }
    }
    false
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_changed_list_on_a_full_disk_loses_nothing_the_next_run_lists_it() {
    let mut fixture = world("outbox_full");
    let tree = fixture.path("tree");
    let output = format!("dir:{}", tree.display());
    seed(&fixture, &output, &[]).assert_success();
    move_everything(&mut fixture);
    let before = read_tree(&tree, "pbf");

    let disk = TinyDisk::mount("1m");
    let filler = disk.dir.path().join("filler");
    let _ = std::fs::write(&filler, vec![7u8; 2 << 20]);
    let full_list = disk.dir.path().join("changed.txt");
    let run = seed(
        &fixture,
        &output,
        &["--dirty", "--changed-list", full_list.to_str().unwrap()],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("changed.txt"), "{}", run.stderr);
    let changed = differences(&before, &read_tree(&tree, "pbf"));
    assert!(
        !changed.is_empty(),
        "the run changed tiles before the list failed"
    );

    // Nothing changed since: the next run renders nothing new, yet lists what the first changed.
    let list = fixture.path("changed.txt");
    seed(
        &fixture,
        &output,
        &["--dirty", "--changed-list", list.to_str().unwrap()],
    )
    .assert_success();
    assert_lists_every(&listed(&list), &changed, "after a full disk");
    // Taken once: a third run lists nothing more.
    seed(
        &fixture,
        &output,
        &["--dirty", "--changed-list", list.to_str().unwrap()],
    )
    .assert_success();
    assert!(listed(&list).is_empty(), "{:?}", listed(&list));
}

/// A tree reseed stopped by `signal` after it replaced some tiles; the next run's list (the same
/// cron line) names every tile that differs from before the first run.
fn stopped_tree_reseed_is_listed_by_the_next_run(signal: libc::c_int, label: &str) {
    let mut fixture = world(label);
    let tree = fixture.path("tree");
    let output = format!("dir:{}", tree.display());
    seed(&fixture, &output, &[]).assert_success();
    move_everything(&mut fixture);
    let before = read_tree(&tree, "pbf");

    let list = fixture.path("changed.txt");
    let list_arg = list.to_str().unwrap();
    let started = SystemTime::now();
    wait_for_file_clock_past(fixture.dir.path(), started);
    let mut child = oar_tiles_command(
        Some(&fixture.schema.url),
        &fixture.seed_args(&output, ZOOMS, &["--dirty", "--changed-list", list_arg]),
        &[],
    )
    .spawn()
    .unwrap();
    let waiting = Instant::now();
    while !tree_changed_since(&tree, started) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the reseed ended before it could be stopped"
        );
        assert!(
            waiting.elapsed() < Duration::from_secs(120),
            "no tile replaced in 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    send_signal(&child, signal);
    let stopped = run_from(child.wait_with_output().unwrap());
    assert_ne!(stopped.code, 0, "the run was stopped: {}", stopped.stderr);
    // A killed writer may leave the temporary of the tile it was placing; the next run removes it,
    // and the read after that run still refuses any.
    let (stopped_tree, _) = read_tree_after_a_kill(&tree, "pbf");
    let replaced = differences(&before, &stopped_tree);
    assert!(!replaced.is_empty(), "the stopped run replaced tiles");

    let _ = std::fs::remove_file(&list);
    seed(&fixture, &output, &["--dirty", "--changed-list", list_arg]).assert_success();
    let changed = differences(&before, &read_tree(&tree, "pbf"));
    assert_lists_every(&listed(&list), &changed, label);
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn tiles_a_tree_reseed_replaced_before_sigterm_are_in_the_next_changed_list() {
    stopped_tree_reseed_is_listed_by_the_next_run(libc::SIGTERM, "outbox_term");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn tiles_a_tree_reseed_replaced_before_sigkill_are_in_the_next_changed_list() {
    stopped_tree_reseed_is_listed_by_the_next_run(libc::SIGKILL, "outbox_kill");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn an_mbtiles_reseed_killed_before_it_finished_adds_nothing_to_the_next_list() {
    let mut fixture = world("outbox_mbtiles");
    let file = fixture.path("out.mbtiles");
    let output = file.to_str().unwrap().to_string();
    seed(&fixture, &output, &[]).assert_success();
    // Every row's label changes, and changes back after the kill: the next run renders every tile
    // the killed one planned and finds each as it was, so it must list nothing at all.
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = label || ' x'");
    let before = read_mbtiles_raw(&file);

    let mut child = oar_tiles_command(
        Some(&fixture.schema.url),
        &fixture.seed_args(&output, ZOOMS, &["--dirty"]),
        &[],
    )
    .spawn()
    .unwrap();
    // Until its intent is recorded, so the kill lands inside the run.
    let outbox = fixture.path("out.mbtiles.oar-tiles-outbox");
    let waiting = Instant::now();
    while !std::fs::read_dir(&outbox).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".intent")))
    }) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the reseed ended early"
        );
        assert!(
            waiting.elapsed() < Duration::from_secs(120),
            "no intent in 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    send_signal(&child, libc::SIGKILL);
    let _ = child.wait();
    assert_eq!(read_mbtiles_raw(&file), before, "the file is as it was");
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = left(label, length(label) - 2)");

    let list = fixture.path("changed.txt");
    seed(
        &fixture,
        &output,
        &["--dirty", "--changed-list", list.to_str().unwrap()],
    )
    .assert_success();
    assert_eq!(read_mbtiles_raw(&file), before);
    assert_eq!(
        listed(&list),
        BTreeSet::new(),
        "nothing: the killed run changed nothing and neither did this one"
    );
}
