//! Unit tests of `versions`: publications on a temporary folder.

use super::*;
use crate::tile::{BBox, ZoomRange};

fn metadata() -> TilesetMetadata {
    TilesetMetadata::bare("f", BBox::WORLD, ZoomRange::new(0, 5).unwrap())
}

fn publication(keep: u64) -> Publication {
    Publication {
        keep: Duration::from_secs(keep),
        folder_url: None,
    }
}

fn pointer(folder: &Path) -> Pointer {
    serde_json::from_slice(&std::fs::read(folder.join("f.latest.json")).unwrap()).unwrap()
}

/// Writes `bytes` as the archive and publishes it at `now`.
fn run(folder: &Path, bytes: &[u8], keep: u64, now: u64) -> bool {
    let archive = folder.join("f.pmtiles");
    // As the sink does: a new file renamed over the archive.
    durable::replace(&archive, bytes).unwrap();
    let names = Names::of("f.pmtiles");
    publish(
        &LocalShelf { archive: &archive },
        &names,
        &names.version(&md5_of_file(&archive).unwrap()),
        &publication(keep),
        &metadata(),
        &ChangedList::disabled(),
        now,
    )
    .unwrap()
}

#[test]
fn versions_are_named_by_their_hash_and_nothing_else_passes_for_one() {
    let names = Names::of("facilities.pmtiles");
    let version = names.version("0123456789abcdef0123456789abcdef");
    assert_eq!(version, "facilities.0123456789abcdef.pmtiles");
    assert!(names.is_version(&version));
    for other in [
        "facilities.pmtiles",
        "../facilities.0123456789abcdef.pmtiles",
        "facilities.0123456789ABCDEF.pmtiles",
        "facilities.0123456789abcde.pmtiles",
        "other.0123456789abcdef.pmtiles",
        "facilities.latest.json",
    ] {
        assert!(!names.is_version(other), "{other}");
    }
    assert_eq!(names.pointer(), "facilities.latest.json");
    assert_eq!(names.tilejson(), "facilities.json");
}

#[test]
fn the_pointer_switches_after_the_version_is_whole_and_old_versions_go_after_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path();
    assert!(run(folder, b"first", 100, 1000));
    let first = pointer(folder);
    assert_eq!(
        std::fs::read(folder.join(&first.archive)).unwrap(),
        b"first"
    );
    assert!(first.superseded.is_empty());
    let tilejson: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("f.json")).unwrap()).unwrap();
    assert_eq!(
        tilejson["tiles"][0],
        format!("pmtiles://{}/{{z}}/{{x}}/{{y}}", first.archive),
        "{tilejson}"
    );

    // The same bytes again: the same version, the pointer untouched.
    assert!(!run(folder, b"first", 100, 1010));
    assert_eq!(pointer(folder), first);

    assert!(run(folder, b"second", 100, 1050));
    let second = pointer(folder);
    assert_ne!(second.archive, first.archive);
    assert_eq!(
        second.superseded,
        [Superseded {
            archive: first.archive.clone(),
            at: 1050
        }]
    );
    assert_eq!(
        std::fs::read(folder.join(&first.archive)).unwrap(),
        b"first",
        "a version stays what it was when the archive is replaced"
    );

    // 100 s after it was superseded, the first version goes; the second stays listed.
    assert!(run(folder, b"third", 100, 1150));
    let third = pointer(folder);
    assert!(!folder.join(&first.archive).exists());
    assert!(folder.join(&second.archive).exists());
    assert_eq!(
        third.superseded,
        [Superseded {
            archive: second.archive.clone(),
            at: 1150
        }]
    );

    // Back to the bytes of the second: current again, so no longer superseded.
    assert!(run(folder, b"second", 100, 1160));
    let back = pointer(folder);
    assert_eq!(back.archive, second.archive);
    assert_eq!(back.superseded.len(), 1);
    assert_eq!(back.superseded[0].archive, third.archive);
}

#[test]
fn a_new_tiles_url_rewrites_the_tilejson_and_leaves_the_pointer_alone() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path();
    assert!(run(folder, b"first", 100, 1000));
    let before = pointer(folder);
    let archive = folder.join("f.pmtiles");
    let publication = Publication {
        keep: Duration::from_secs(100),
        folder_url: Some("https://cdn.example.org/maps/".into()),
    };
    let moved = publish(
        &LocalShelf { archive: &archive },
        &Names::of("f.pmtiles"),
        &before.archive,
        &publication,
        &metadata(),
        &ChangedList::disabled(),
        1010,
    )
    .unwrap();
    assert!(!moved);
    assert_eq!(pointer(folder), before);
    let tilejson: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("f.json")).unwrap()).unwrap();
    assert_eq!(
        tilejson["tiles"][0],
        format!(
            "pmtiles://https://cdn.example.org/maps/{}/{{z}}/{{x}}/{{y}}",
            before.archive
        )
    );
}

#[test]
fn removing_a_versioned_archive_removes_its_versions_and_pointer_documents() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path();
    assert!(run(folder, b"first", 100, 1000));
    assert!(run(folder, b"second", 100, 1010));
    remove_local(&folder.join("f.pmtiles")).unwrap();
    let left: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        ["f.pmtiles"],
        "the archive itself is its kind's to remove"
    );
}

#[test]
fn a_pointer_naming_another_file_never_gets_it_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path();
    let victim = folder.join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    let planted = Pointer {
        archive: "f.0123456789abcdef.pmtiles".into(),
        published: 0,
        superseded: vec![Superseded {
            archive: "victim".into(),
            at: 0,
        }],
    };
    std::fs::write(
        folder.join("f.latest.json"),
        serde_json::to_vec(&planted).unwrap(),
    )
    .unwrap();
    assert!(run(folder, b"x", 0, 1000));
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
}
