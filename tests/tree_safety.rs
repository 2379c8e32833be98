//! The `{z}/{x}/{y}` tree under hostile conditions: symbolic links planted inside the tree never
//! let a seed write or delete outside it, and every tile a state file claims was synced to disk
//! (with its directory) before that state file was renamed into place, as `strace` sees it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::common::env::strace;
use crate::common::fixture::{wraps_fixture, Fixture};
use crate::common::pg::hub_with_scatter;
use crate::common::run::{
    assert_same_tiles, oar_tiles, read_tree, run_from, single_layer_config, wrapped_command, Run,
};

/// Every point in one hub, so which tiles exist (and which columns stay empty) is known.
const HUB: [f64; 4] = [106.55, 10.65, 106.85, 10.95];

struct Setup(Fixture);

wraps_fixture!(Setup, 0);

impl Setup {
    fn new(label: &str) -> Setup {
        let points = hub_with_scatter(300, 5, i64::MAX, HUB);
        Setup(Fixture::new(label, &points, "tree.toml", |schema| {
            single_layer_config(&schema.name, "sites", "", "")
        }))
    }

    fn tree_arg(&self) -> String {
        format!("dir:{}", self.path("tree").display())
    }

    fn seed(&self) -> Run {
        oar_tiles(
            Some(&self.schema.url),
            &self.seed_args(&self.tree_arg(), "0-6", &[]),
        )
    }
}

/// Every file under `dir` (following nothing), with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            files.extend(snapshot(&path));
        } else {
            files.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    files
}

/// A directory outside the tree holding tile-named files `0.pbf`..`{n-1}.pbf`, each saying so.
fn tile_named_files(dir: &Path, n: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for y in 0..n {
        std::fs::write(dir.join(format!("{y}.pbf")), b"outside the tree").unwrap();
    }
}

#[track_caller]
fn assert_untouched(outside: &Path, before: &BTreeMap<PathBuf, Vec<u8>>, what: &str) {
    let after = snapshot(outside);
    let removed: Vec<_> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    let changed: Vec<_> = before
        .iter()
        .filter(|(p, bytes)| after.get(*p).is_some_and(|now| now != *bytes))
        .map(|(p, _)| p)
        .collect();
    let added: Vec<_> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    assert!(
        removed.is_empty() && changed.is_empty() && added.is_empty(),
        "{what}: files outside the tree were touched: removed {removed:?}, rewritten {changed:?}, \
         created {added:?}"
    );
}

#[track_caller]
fn assert_refused(run: &Run, link: &Path) {
    assert_ne!(
        run.code,
        0,
        "a seed through the link {} must fail\n{}",
        link.display(),
        run.stderr
    );
    assert!(
        run.stderr.contains(&link.display().to_string()) && run.stderr.contains("symbolic link"),
        "the error names the link {}:\n{}",
        link.display(),
        run.stderr
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn symlinks_inside_the_tree_never_let_a_seed_write_or_delete_outside_it() {
    let setup = Setup::new("treelinks");
    let tree = setup.path("tree");
    let outside = setup.path("outside");
    setup.seed().assert_success();
    let tiles = read_tree(&tree, "pbf");
    let key = |z: u8| *tiles.keys().find(|(tz, _, _)| *tz == z).unwrap();

    // A whole zoom linked away: the full reseed would rewrite its tiles there and sweep the rest.
    tile_named_files(&outside.join("zoom/3"), 4);
    tile_named_files(&outside.join("zoom/0"), 4);
    // A produced tile's column linked away, and an empty column the sweep would list.
    let (_, x4, _) = key(4);
    tile_named_files(&outside.join("column"), 16);
    tile_named_files(&outside.join("empty-column"), 64);
    // Single tile files: one the seed produces, one it sweeps.
    std::fs::write(outside.join("tile.pbf"), b"outside the tree").unwrap();
    std::fs::write(outside.join("stale.pbf"), b"outside the tree").unwrap();
    let before = snapshot(&outside);

    let zoom_link = tree.join("2");
    std::fs::remove_dir_all(&zoom_link).unwrap();
    std::os::unix::fs::symlink(outside.join("zoom"), &zoom_link).unwrap();
    let run = setup.seed();
    assert_untouched(&outside, &before, "a linked zoom directory");
    assert_refused(&run, &zoom_link);
    std::fs::remove_file(&zoom_link).unwrap();

    let column_link = tree.join(format!("4/{x4}"));
    std::fs::remove_dir_all(&column_link).unwrap();
    std::os::unix::fs::symlink(outside.join("column"), &column_link).unwrap();
    let run = setup.seed();
    assert_untouched(&outside, &before, "a linked column directory");
    assert_refused(&run, &column_link);
    std::fs::remove_file(&column_link).unwrap();

    // Nothing is at zoom 6, column 0: only the sweep goes there.
    assert!(!tiles.keys().any(|&(z, x, _)| z == 6 && x == 0));
    let empty_link = tree.join("6/0");
    std::os::unix::fs::symlink(outside.join("empty-column"), &empty_link).unwrap();
    let run = setup.seed();
    assert_untouched(&outside, &before, "a linked column only the sweep visits");
    assert_refused(&run, &empty_link);
    std::fs::remove_file(&empty_link).unwrap();

    // A link where a tile file goes is replaced by the tile itself, and a swept one is unlinked.
    let (z5, x5, y5) = key(5);
    let tile_link = tree.join(format!("{z5}/{x5}/{y5}.pbf"));
    std::fs::remove_file(&tile_link).unwrap();
    std::os::unix::fs::symlink(outside.join("tile.pbf"), &tile_link).unwrap();
    let stale = (0..32)
        .map(|y| tree.join(format!("{z5}/{x5}/{y}.pbf")))
        .find(|path| !path.exists())
        .unwrap();
    std::os::unix::fs::symlink(outside.join("stale.pbf"), &stale).unwrap();
    setup.seed().assert_success();
    assert_untouched(&outside, &before, "linked tile files");
    assert!(
        std::fs::symlink_metadata(&tile_link).unwrap().is_file(),
        "the link is replaced by the tile"
    );
    assert!(
        std::fs::symlink_metadata(&stale).is_err(),
        "a swept link goes"
    );
    assert_same_tiles(
        &tiles,
        &read_tree(&tree, "pbf"),
        "after the links are gone the tree is the first seed's again",
    );
}

/// One traced call: a file synced (by the path its descriptor had), the whole file system of a
/// path synced (`syncfs`), or a rename.
#[derive(Debug)]
enum Call {
    Sync(PathBuf),
    SyncAll(PathBuf),
    Rename(PathBuf, PathBuf),
}

/// The sync and rename calls of an `strace -f -y -s …` log, in the order they started.
fn calls(log: &str) -> Vec<Call> {
    let quoted = |line: &str| -> Vec<PathBuf> {
        line.split('"')
            .skip(1)
            .step_by(2)
            .map(PathBuf::from)
            .collect()
    };
    let mut calls = Vec::new();
    for line in log.lines() {
        let call = line
            .split_once(' ')
            .map_or(line, |(_, rest)| rest.trim_start());
        let whole = call.starts_with("syncfs(");
        if whole || call.starts_with("fsync(") || call.starts_with("fdatasync(") {
            // fsync(5</path/to/file>) = 0, or cut short by another thread's call:
            // fsync(5</path/to/file> <unfinished ...>
            let Some((_, rest)) = call.split_once('<') else {
                continue;
            };
            let Some((path, _)) = rest.split_once('>') else {
                continue;
            };
            let path = PathBuf::from(path);
            calls.push(if whole {
                Call::SyncAll(path)
            } else {
                Call::Sync(path)
            });
        } else if call.starts_with("rename") && !call.contains("= -1") {
            let paths = quoted(call);
            if paths.len() >= 2 {
                calls.push(Call::Rename(paths[0].clone(), paths[1].clone()));
            }
        }
    }
    calls
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn every_tile_and_its_directory_are_synced_before_the_state_that_claims_them() {
    let setup = Setup::new("treesync");
    let tree = setup.path("tree");
    let log = setup.path("strace.log");
    let tree_arg = setup.tree_arg();
    let strace = strace();
    let log_arg = log.display().to_string();
    let wrapper = [
        strace.as_str(),
        "-f",
        "-y",
        "-qq",
        "-s",
        "4096",
        "-o",
        &log_arg,
        "-e",
        "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2",
    ];
    let args = setup.seed_args(&tree_arg, "0-6", &[]);
    let traced = wrapped_command(&wrapper, Some(&setup.schema.url), &args, &[]).output();
    let run = run_from(traced.expect("run strace"));
    run.assert_success();
    let calls = calls(&std::fs::read_to_string(&log).unwrap());

    let state = tree.join(".oar-tiles-state.json");
    let state_rename = calls
        .iter()
        .position(|call| matches!(call, Call::Rename(_, to) if *to == state))
        .unwrap_or_else(|| panic!("no rename to {} traced", state.display()));
    let (before, after) = calls.split_at(state_rename);
    // The last sync of each path, where each rename put its file, and the last rename into a file.
    let mut synced: HashMap<&Path, usize> = HashMap::new();
    let mut renamed: HashMap<&Path, &Path> = HashMap::new();
    let mut arrived: HashMap<&Path, usize> = HashMap::new();
    // The last syncfs of the tree's file system, which syncs every file and directory in it.
    let mut synced_all: Option<usize> = None;
    for (i, call) in before.iter().enumerate() {
        match call {
            Call::Sync(path) => {
                synced.insert(path, i);
            }
            Call::SyncAll(path) => {
                if tree.starts_with(path) || path.starts_with(&tree) {
                    synced_all = Some(i);
                }
            }
            Call::Rename(from, to) => {
                renamed.insert(from, to);
                arrived.insert(to, i);
            }
        }
    }
    let file_synced: HashSet<&Path> = synced
        .keys()
        .map(|path| renamed.get(path).copied().unwrap_or(path))
        .collect();
    let tiles = read_tree(&tree, "pbf");
    assert!(tiles.len() > 6);
    let mut unsynced = Vec::new();
    let mut unsynced_dirs = BTreeSet::new();
    for (z, x, y) in tiles.keys() {
        let file = tree.join(format!("{z}/{x}/{y}.pbf"));
        // Its directory, its zoom's and the root must each be synced after the tile arrived there.
        let arrival = arrived.get(file.as_path()).copied().unwrap_or(0);
        let all_after_arrival = synced_all.is_some_and(|i| i > arrival);
        if !file_synced.contains(file.as_path()) && !all_after_arrival {
            unsynced.push(file.clone());
        }
        for dir in [file.parent().unwrap(), &tree.join(z.to_string()), &tree] {
            if !all_after_arrival && synced.get(dir).is_none_or(|&i| i <= arrival) {
                unsynced_dirs.insert(dir.to_path_buf());
            }
        }
    }
    assert!(
        unsynced.is_empty() && unsynced_dirs.is_empty(),
        "before {} was renamed into place, {} of {} tiles were never synced (e.g. {:?}) and \
         these directories were not synced after a tile arrived: {:?}",
        state.display(),
        unsynced.len(),
        tiles.len(),
        unsynced.first(),
        unsynced_dirs
    );
    let Call::Rename(state_temporary, _) = &calls[state_rename] else {
        unreachable!()
    };
    assert!(
        synced.contains_key(state_temporary.as_path()),
        "the state file is synced before its rename"
    );
    assert!(
        after
            .iter()
            .any(|call| matches!(call, Call::Sync(path) if *path == tree)),
        "the tree's root is synced after the state file's rename"
    );
}
