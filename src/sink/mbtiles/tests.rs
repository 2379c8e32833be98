//! The MBTiles sink's lifecycle on real SQLite files.

use std::sync::atomic::AtomicBool;

use super::staging::read_state;
use super::*;
use crate::sink::HashRefresh;
use crate::tile::{BBox, ZoomRange};

fn metadata() -> TilesetMetadata {
    TilesetMetadata::bare("t", BBox::WORLD, ZoomRange::new(0, 3).unwrap())
}

#[test]
fn a_finished_file_replaces_the_target_and_an_aborted_one_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.mbtiles");
    let mut sink = open(&target);
    sink.write_tile(TileCoord::new(1, 0, 0).unwrap(), b"abc")
        .unwrap();
    assert!(!target.exists());
    sink.finish(Finish {
        metadata: &metadata(),
        sweep: &crate::sink::Sweep::Everything,
        state: None,
        defer_hash: false,
    })
    .unwrap();
    let connection = Connection::open(&target).unwrap();
    let row: (u32, u32, u32) = connection
        .query_row(
            "SELECT zoom_level, tile_column, tile_row FROM tiles",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(row, (1, 0, 1));
    drop(connection);

    let mut sink = open(&target);
    sink.write_tile(TileCoord::new(0, 0, 0).unwrap(), b"x")
        .unwrap();
    sink.abort();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("out.mbtiles")]);
}

fn tile_count(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM tiles", [], |r| r.get(0))
        .unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A finished file holding tile 0/0/0 and the state `w1`, in a directory of its own.
fn file_holding_one_tile() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.mbtiles");
    let mut sink = open(&target);
    sink.write_tile(TileCoord::new(0, 0, 0).unwrap(), b"old")
        .unwrap();
    sink.finish(Finish {
        metadata: &metadata(),
        sweep: &crate::sink::Sweep::Everything,
        state: Some("w1"),
        defer_hash: false,
    })
    .unwrap();
    (dir, target)
}

/// A sink without a journal, as a reseed or a tile list opens it.
fn open(target: &Path) -> Box<MbtilesSink> {
    Box::new(MbtilesSink::create(target, ChangedList::disabled(), None).unwrap())
}

#[test]
fn a_small_run_changes_the_file_in_place_and_readers_see_it_only_once_committed() {
    let (dir, target) = file_holding_one_tile();

    let mut sink = open(&target);
    assert_eq!(sink.state().as_deref(), Some("w1"));
    sink.prepare(Some(2)).unwrap();
    sink.write_tile(TileCoord::new(1, 0, 0).unwrap(), b"new")
        .unwrap();
    sink.delete_tile(TileCoord::new(0, 0, 0).unwrap()).unwrap();
    assert!(
        !files_in(dir.path()).iter().any(|f| f.ends_with(".partial")),
        "{:?}",
        files_in(dir.path())
    );
    assert_eq!(tile_count(&target), 1, "the uncommitted run is invisible");
    let report = sink
        .finish(Finish {
            metadata: &metadata(),
            sweep: &crate::sink::Sweep::Nothing,
            state: Some("w2"),
            defer_hash: false,
        })
        .unwrap();
    assert_eq!((report.changed, report.deleted), (1, 1));
    assert_eq!(files_in(dir.path()), vec!["out.mbtiles".to_string()]);
    let connection = Connection::open(&target).unwrap();
    assert_eq!(read_state(&connection).as_deref(), Some("w2"));
    let tile: (u32, Vec<u8>) = connection
        .query_row("SELECT zoom_level, tile_data FROM tiles", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(tile, (1, b"new".to_vec()));
}

#[test]
fn an_aborted_in_place_run_rolls_back_and_a_big_one_builds_a_copy() {
    let (dir, target) = file_holding_one_tile();
    let before = std::fs::read(&target).unwrap();

    let mut sink = open(&target);
    sink.prepare(Some(1)).unwrap();
    sink.delete_tile(TileCoord::new(0, 0, 0).unwrap()).unwrap();
    sink.write_tile(TileCoord::new(1, 1, 1).unwrap(), b"new")
        .unwrap();
    sink.abort();
    assert_eq!(std::fs::read(&target).unwrap(), before);
    assert_eq!(files_in(dir.path()), vec!["out.mbtiles".to_string()]);

    let mut sink = open(&target);
    sink.prepare(None).unwrap();
    sink.write_tile(TileCoord::new(1, 1, 1).unwrap(), b"new")
        .unwrap();
    assert!(dir.path().join("out.mbtiles.partial").exists());
    assert_eq!(std::fs::read(&target).unwrap(), before);
    sink.finish(Finish {
        metadata: &metadata(),
        sweep: &crate::sink::Sweep::Everything,
        state: Some("w2"),
        defer_hash: false,
    })
    .unwrap();
    assert_eq!(tile_count(&target), 1, "the sweep removed 0/0/0");
    assert_eq!(files_in(dir.path()), vec!["out.mbtiles".to_string()]);
}

#[test]
fn a_missing_directory_is_reported_before_anything_is_written() {
    let err = MbtilesSink::create(
        Path::new("/nonexistent-dir/x.mbtiles"),
        ChangedList::disabled(),
        None,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn a_deferred_hash_is_removed_with_the_tiles_that_changed_it_then_recorded_by_a_refresh() {
    let (_dir, target) = file_holding_one_tile();
    let named = |key: &str| read_metadata(&target, key);
    let before = named(AGG_TILES_HASH_KEY).expect("a finished file names its hash");

    let mut sink = open(&target);
    sink.write_tile(TileCoord::new(2, 1, 1).unwrap(), b"new")
        .unwrap();
    sink.finish(Finish {
        metadata: &metadata(),
        sweep: &crate::sink::Sweep::Nothing,
        state: None,
        defer_hash: true,
    })
    .unwrap();
    assert_eq!(named(AGG_TILES_HASH_KEY), None, "no stale hash is left");
    assert!(named(HASH_PENDING_KEY).is_some());

    // Cancelled, the refresh changes nothing.
    let cancelled = AtomicBool::new(true);
    assert_eq!(
        refresh_agg_hash(&target, &cancelled).unwrap(),
        HashRefresh::Cancelled
    );
    assert_eq!(named(AGG_TILES_HASH_KEY), None);

    let go = AtomicBool::new(false);
    let HashRefresh::Computed(hash) = refresh_agg_hash(&target, &go).unwrap() else {
        panic!("the pending hash is computed");
    };
    assert_ne!(hash, before);
    assert_eq!(named(AGG_TILES_HASH_KEY), Some(hash.clone()));
    assert_eq!(named(HASH_PENDING_KEY), None);
    let connection = Connection::open(&target).unwrap();
    assert_eq!(record_agg_hash(&connection).unwrap(), hash, "of the tiles");
    drop(connection);
    assert_eq!(
        refresh_agg_hash(&target, &go).unwrap(),
        HashRefresh::Current,
        "a second refresh reads nothing"
    );
}

fn read_metadata(path: &Path, key: &str) -> Option<String> {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT value FROM metadata WHERE name = ?1", [key], |r| {
            r.get(0)
        })
        .ok()
}

/// The `bounds`, `minzoom` and `maxzoom` rows a scan of the file's tiles gives.
fn scanned_coverage(path: &Path) -> Vec<(&'static str, String)> {
    let mut metadata = metadata();
    metadata.cover(&tile_coverage(&Connection::open(path).unwrap()).unwrap());
    metadata
        .mbtiles_rows()
        .into_iter()
        .filter(|(name, _)| ["bounds", "minzoom", "maxzoom"].contains(name))
        .collect()
}

fn declared_coverage(path: &Path) -> Vec<(&'static str, String)> {
    ["bounds", "minzoom", "maxzoom"]
        .into_iter()
        .map(|name| (name, read_metadata(path, name).unwrap()))
        .collect()
}

#[test]
fn runs_in_place_declare_what_a_scan_of_their_tiles_finds() {
    let (_dir, target) = file_holding_one_tile();
    type Tiles = &'static [(u8, u32, u32)];
    let steps: [(Tiles, Tiles); 4] = [
        (&[(2, 1, 1)], &[]),
        (&[(2, 3, 2), (1, 0, 0)], &[]),
        (&[(1, 1, 1)], &[]),
        (&[], &[(2, 3, 2)]),
    ];
    for (written, deleted) in steps {
        let mut sink = open(&target);
        for &(z, x, y) in written {
            sink.write_tile(TileCoord::new(z, x, y).unwrap(), b"t")
                .unwrap();
        }
        for &(z, x, y) in deleted {
            sink.delete_tile(TileCoord::new(z, x, y).unwrap()).unwrap();
        }
        assert!(sink.in_place);
        sink.finish(Finish {
            metadata: &metadata(),
            sweep: &crate::sink::Sweep::Nothing,
            state: Some("w"),
            defer_hash: false,
        })
        .unwrap();
        assert_eq!(
            declared_coverage(&target),
            scanned_coverage(&target),
            "after writing {written:?} and deleting {deleted:?}"
        );
    }
}
