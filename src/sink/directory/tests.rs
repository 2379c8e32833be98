use std::collections::BTreeMap;

use super::*;
use crate::tile::{BBox, ZoomRange};

fn metadata(zooms: ZoomRange) -> TilesetMetadata {
    TilesetMetadata::bare("t", BBox::WORLD, zooms)
}

#[test]
fn a_killed_runs_temporaries_are_removed_in_its_planned_columns_or_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let dead = 4_194_301;
    let file = |path: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"x").unwrap();
        path
    };
    let planned_column = file(&format!("3/2/.5.pbf.{dead}.tmp"));
    let other_column = file(&format!("3/4/.1.pbf.{dead}.tmp"));
    let another_writer = file("3/2/.6.pbf.17.tmp");
    let tile = file("3/2/5.pbf");
    let outside = tempfile::tempdir().unwrap();
    let linked = outside.path().join(format!(".0.pbf.{dead}.tmp"));
    std::fs::write(&linked, b"x").unwrap();
    std::fs::create_dir_all(root.join("4")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("4/0")).unwrap();

    let planned = [TileCoord::new(3, 2, 5).unwrap()];
    remove_temporaries_of(root, dead, Some(&planned)).unwrap();
    assert!(!planned_column.exists());
    assert!(
        other_column.exists(),
        "a column the run did not plan is not read"
    );
    assert!(another_writer.exists() && tile.exists());

    remove_temporaries_of(root, dead, None).unwrap();
    assert!(!other_column.exists());
    assert!(another_writer.exists() && tile.exists());
    assert!(linked.exists(), "a linked column is not entered");
}

#[test]
fn tiles_land_in_an_xyz_tree_and_unchanged_ones_are_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tiles");
    let list = dir.path().join("changed.txt");
    let tile = TileCoord::new(3, 5, 2).unwrap();
    let mut sink = Box::new(
        DirectorySink::create(
            &root,
            &OutputSettings::default(),
            ChangedList::create(&list).unwrap(),
            None,
            None,
        )
        .unwrap(),
    );
    sink.write_tile(tile, b"abc").unwrap();
    sink.write_tile(tile, b"abc").unwrap();
    let report = sink
        .finish(Finish {
            metadata: &metadata(ZoomRange::new(0, 3).unwrap()),
            sweep: &crate::sink::Sweep::Everything,
            state: None,
            defer_hash: false,
        })
        .unwrap();
    assert_eq!(std::fs::read(root.join("3/5/2.pbf")).unwrap(), b"abc");
    assert_eq!((report.changed, report.unchanged), (1, 1));
    assert!(root.join("tiles.json").exists());
}

#[test]
fn a_full_seed_sweeps_tiles_it_no_longer_produces_within_its_zooms() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tiles");
    let changes = ChangedList::create(&dir.path().join("changed.txt")).unwrap();
    let settings = OutputSettings::default();
    let mut first = Box::new(
        DirectorySink::create(&root, &settings, ChangedList::disabled(), None, None).unwrap(),
    );
    for (z, x, y) in [(1, 0, 0), (1, 1, 1), (2, 3, 3)] {
        first
            .write_tile(TileCoord::new(z, x, y).unwrap(), b"x")
            .unwrap();
    }
    first
        .finish(Finish {
            metadata: &metadata(ZoomRange::new(0, 2).unwrap()),
            sweep: &crate::sink::Sweep::Everything,
            state: None,
            defer_hash: false,
        })
        .unwrap();
    // What a writer killed mid-tile leaves beside the tiles.
    let leftover = root.join("1/1/.0.pbf.4194305.tmp");
    std::fs::write(&leftover, b"half").unwrap();
    let ours = root.join(format!("1/1/.0.pbf.{}.tmp", std::process::id()));
    std::fs::write(&ours, b"in flight").unwrap();
    let mut second =
        Box::new(DirectorySink::create(&root, &settings, changes.clone(), None, None).unwrap());
    second
        .write_tile(TileCoord::new(1, 0, 0).unwrap(), b"x")
        .unwrap();
    let report = second
        .finish(Finish {
            metadata: &metadata(ZoomRange::new(1, 1).unwrap()),
            sweep: &crate::sink::Sweep::Everything,
            state: None,
            defer_hash: false,
        })
        .unwrap();
    changes.close().unwrap();
    assert_eq!(
        report,
        SinkReport {
            changed: 0,
            unchanged: 1,
            deleted: 1,
            throttled: None,
        }
    );
    assert!(!root.join("1/1/1.pbf").exists());
    assert!(
        !leftover.exists(),
        "a killed writer's temporary file is swept"
    );
    assert!(
        ours.exists(),
        "this process's own temporary files are left alone"
    );
    assert!(
        root.join("2/3/3.pbf").exists(),
        "zoom 2 was outside the second run"
    );
    // tiles.json was rewritten with the tiles' new hash, which the edge must not keep old, so it
    // is announced; both documents still declare the zooms and bounds of the tiles the tree
    // holds, which zoom 2 keeps as they were (metadata.json is not announced: it is unchanged).
    assert_eq!(
        std::fs::read_to_string(dir.path().join("changed.txt")).unwrap(),
        "1/1/1\ntiles.json\n"
    );
}

/// A temporary tile file and the mark of `writer`, as a writer killed mid-tile leaves them.
fn killed_mid_tile(root: &Path, writer: &leftovers::Writer, tile: &str) -> (PathBuf, PathBuf) {
    let temporary = root.join(format!("{tile}.{}.tmp", writer.pid));
    std::fs::create_dir_all(temporary.parent().unwrap()).unwrap();
    std::fs::write(&temporary, b"half").unwrap();
    let mark = root.join(writer.mark_name());
    std::fs::write(&mark, b"").unwrap();
    (temporary, mark)
}

fn open_tree(root: &Path) -> Box<DirectorySink> {
    let settings = OutputSettings::default();
    Box::new(DirectorySink::create(root, &settings, ChangedList::disabled(), None, None).unwrap())
}

#[test]
fn the_trees_open_removes_the_temporaries_of_writers_that_are_gone_and_no_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tiles");
    std::fs::create_dir(&root).unwrap();
    let here = leftovers::Writer::this().host;
    // A process that ran and is gone, and one that runs until its input closes.
    let mut ended = std::process::Command::new("true").spawn().unwrap();
    ended.wait().unwrap();
    let mut running = std::process::Command::new("cat")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let gone = leftovers::Writer {
        pid: ended.id(),
        host: here.clone(),
    };
    let live = leftovers::Writer {
        pid: running.id(),
        host: here,
    };
    let (gone_tmp, gone_mark) = killed_mid_tile(&root, &gone, "7/3/.5.pbf");
    let (deep_tmp, _) = killed_mid_tile(&root, &gone, "12/40/.9.pbf");
    let (live_tmp, live_mark) = killed_mid_tile(&root, &live, "7/3/.6.pbf");
    std::fs::write(root.join("7/3/5.pbf"), b"tile").unwrap();

    let sink = open_tree(&root);
    assert!(
        !gone_tmp.exists() && !deep_tmp.exists(),
        "a gone writer's temporaries are removed, in every column"
    );
    assert!(!gone_mark.exists(), "and its mark");
    assert!(
        live_tmp.exists() && live_mark.exists(),
        "a live writer's temporary may be in flight: it stays"
    );
    assert!(root.join("7/3/5.pbf").exists());
    let ours = root.join(leftovers::Writer::this().mark_name());
    assert!(ours.exists(), "the open marks the tree as this writer's");
    drop(sink);
    assert!(!ours.exists(), "a writer that is done removes its mark");

    // Once the live writer ends (killed: its mark stays), the next open removes what it left.
    drop(running.stdin.take());
    running.wait().unwrap();
    drop(open_tree(&root));
    assert!(!live_tmp.exists() && !live_mark.exists());
}

#[test]
fn a_writer_elsewhere_is_gone_only_for_an_open_of_the_whole_output() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let elsewhere = leftovers::Writer {
        pid: 4_194_302,
        host: leftovers::host_digest("another-host"),
    };
    assert_ne!(elsewhere.host, leftovers::Writer::this().host);
    let (temporary, mark) = killed_mid_tile(root, &elsewhere, "3/2/.1.pbf");
    // A shard holds only its part: a shard on another machine may be writing that file.
    drop(leftovers::clear_gone_writers(root, false).unwrap());
    assert!(temporary.exists() && mark.exists());
    // An unsharded run holds the whole output: no writer elsewhere may be at work.
    drop(leftovers::clear_gone_writers(root, true).unwrap());
    assert!(!temporary.exists() && !mark.exists());

    // A gone writer whose process id a live writer shares: a temporary cannot tell them apart.
    let me = leftovers::Writer::this();
    let namesake = leftovers::Writer {
        pid: me.pid,
        host: elsewhere.host.clone(),
    };
    let (ours, mark) = killed_mid_tile(root, &namesake, "3/2/.2.pbf");
    drop(leftovers::clear_gone_writers(root, true).unwrap());
    assert!(
        ours.exists(),
        "{} is named as this process's are",
        ours.display()
    );
    assert!(mark.exists(), "left for a later open to judge");
}

/// Every file of a tree's columns: the tiles with their bytes, and the names of anything else.
fn tree_files(root: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let (mut tiles, mut others) = (BTreeMap::new(), Vec::new());
    for tile in super::read::tiles(root, "pbf").unwrap() {
        let name = format!("{}/{}/{}.pbf", tile.z(), tile.x(), tile.y());
        tiles.insert(name.clone(), std::fs::read(root.join(&name)).unwrap());
    }
    for zoom in std::fs::read_dir(root).unwrap().flatten() {
        for column in std::fs::read_dir(zoom.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for entry in std::fs::read_dir(column.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    others.push(name);
                }
            }
        }
    }
    (tiles, others)
}

/// Writes `tiles` into the tree at `root` in one run (twice the first, as a walk may), and
/// returns the run's changed-tile list.
fn run(root: &Path, tiles: &[(&str, &[u8])]) -> String {
    let list = root.with_extension("changed.txt");
    let changes = ChangedList::create(&list).unwrap();
    let settings = OutputSettings::default();
    let mut sink = Box::new(DirectorySink::create(root, &settings, changes, None, None).unwrap());
    for (n, (tile, bytes)) in tiles.iter().enumerate() {
        let tile: TileCoord = tile.parse().unwrap();
        sink.write_tile(tile, bytes).unwrap();
        if n == 0 {
            sink.write_tile(tile, bytes).unwrap();
        }
    }
    let metadata = metadata(ZoomRange::new(0, 3).unwrap());
    sink.finish(Finish {
        metadata: &metadata,
        sweep: &crate::sink::Sweep::Nothing,
        state: None,
        defer_hash: false,
    })
    .unwrap();
    std::fs::read_to_string(&list).unwrap()
}

#[test]
fn a_reseed_replacing_tiles_leaves_a_fresh_seeds_bytes_lists_only_changes_and_no_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let (old, fresh) = (dir.path().join("old"), dir.path().join("fresh"));
    let first: Vec<(&str, &[u8])> = vec![
        ("3/1/1", b"same size A"),
        ("3/1/2", b"kept"),
        ("3/2/1", b"shorter"),
        ("2/1/1", b"x"),
    ];
    run(&old, &first);
    // A reader holding a tile open while it is replaced reads the old bytes to the end.
    let mut open = std::fs::File::open(old.join("3/1/1.pbf")).unwrap();
    let mut many = vec![("3/1/1", b"same size B".as_slice())];
    many.extend([("3/1/2", b"kept".as_slice()), ("3/2/1", b"now longer")]);
    many.extend([("2/1/1", b"y".as_slice()), ("3/3/3", b"new")]);
    // Far more replacements than the reaper's queue holds, each tile of a column replaced.
    let column: Vec<(String, Vec<u8>)> = (0..10_000)
        .map(|y| (format!("3/4/{}", y % 8), format!("v{y}").into_bytes()))
        .collect();
    let mut second = many.clone();
    second.extend(column.iter().map(|(t, b)| (t.as_str(), b.as_slice())));
    let listed = run(&old, &second);
    let mut read = Vec::new();
    std::io::Read::read_to_end(&mut open, &mut read).unwrap();
    assert_eq!(read, b"same size A");

    let mut last: BTreeMap<&str, &[u8]> = BTreeMap::new();
    last.extend(second.iter().map(|(t, b)| (*t, *b)));
    run(&fresh, &last.into_iter().collect::<Vec<_>>());
    let ((replaced, left), (seeded, _)) = (tree_files(&old), tree_files(&fresh));
    assert_eq!(replaced, seeded, "the reseeded tree against a fresh seed");
    assert!(
        left.is_empty(),
        "{} temporary file(s) left behind, as {:?}",
        left.len(),
        left.first()
    );
    let listed: BTreeSet<&str> = listed.lines().filter(|l| l.contains('/')).collect();
    let mut expected = BTreeSet::from(["2/1/1", "3/1/1", "3/2/1", "3/3/3"]);
    let column: Vec<String> = (0..8).map(|y| format!("3/4/{y}")).collect();
    expected.extend(column.iter().map(String::as_str));
    assert_eq!(listed, expected, "the changed-tile list");
}
