//! PMTiles archives read back by an independent reader: the PyPI `pmtiles` package (pure Python),
//! which `scripts/test.sh` installs into a venv and names in `OAR_TILES_TEST_PYTHON`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use md5::{Digest, Md5};
use serde_json::Value;

/// Tiles keyed by XYZ `(z, x, y)`, as the MD5 of their stored bytes.
pub(crate) type Digests = BTreeMap<(u8, u32, u32), String>;

/// What the Python reader finds in an archive.
pub(crate) struct Archive {
    pub header: Value,
    pub metadata: Value,
    pub tiles: Digests,
}

const READER: &str = r#"
import hashlib, json, sys
from pmtiles.reader import Reader, MmapSource, all_tiles
with open(sys.argv[1], "rb") as f:
    reader = Reader(MmapSource(f))
    header = {k: (v if isinstance(v, (int, float, bool)) else str(v)) for k, v in reader.header().items()}
    tiles = {"%d/%d/%d" % zxy: hashlib.md5(data).hexdigest() for zxy, data in all_tiles(reader.get_bytes)}
    json.dump({"header": header, "metadata": reader.metadata(), "tiles": tiles}, sys.stdout)
"#;

pub(crate) fn read_archive(path: &Path) -> Archive {
    let python = match std::env::var("OAR_TILES_TEST_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ => panic!(
            "OAR_TILES_TEST_PYTHON is not set: run scripts/test.sh, which installs the PyPI \
             pmtiles reader into a venv"
        ),
    };
    let output = Command::new(python)
        .args(["-c", READER])
        .arg(path)
        .output()
        .expect("run the Python pmtiles reader");
    assert!(
        output.status.success(),
        "the Python reader failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let tiles = json["tiles"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, digest)| {
            let mut parts = key.split('/').map(|p| p.parse::<u32>().unwrap());
            let (z, x, y) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            ((z as u8, x, y), digest.as_str().unwrap().to_string())
        })
        .collect();
    Archive {
        header: json["header"].take(),
        metadata: json["metadata"].take(),
        tiles,
    }
}

/// The MD5 of each tile of an MBTiles file, to hold against a PMTiles archive's [`Digests`].
pub(crate) fn digests_of_mbtiles(path: &Path) -> Digests {
    super::run::read_mbtiles_raw(path)
        .into_iter()
        .map(|(key, data)| (key, hex::encode(Md5::digest(&data))))
        .collect()
}

/// Fails naming the first tiles that differ when `actual` is not `expected`.
#[track_caller]
pub(crate) fn assert_same_digests(expected: &Digests, actual: &Digests, what: &str) {
    if expected == actual {
        return;
    }
    let differing: Vec<_> = expected
        .iter()
        .filter(|(key, digest)| actual.get(*key) != Some(digest))
        .map(|(key, _)| *key)
        .chain(
            actual
                .keys()
                .filter(|key| !expected.contains_key(key))
                .copied(),
        )
        .take(10)
        .collect();
    panic!(
        "{what}: {} tiles expected, {} found; first differing: {differing:?}",
        expected.len(),
        actual.len()
    );
}

/// An archive as the independent reader sees it, with what a sharded run may change set aside:
/// the state (the finalized snapshot sees only what every shard saw) and so the metadata's
/// length and the offsets after it. Every other header field, the metadata and the bytes of the
/// root directory, the leaf directories and the tile data must be a single run's.
fn archive_layout(path: &std::path::Path) -> (serde_json::Value, Vec<Vec<u8>>) {
    let archive = read_archive(path);
    let bytes = std::fs::read(path).unwrap();
    let field = |name: &str| archive.header[name].as_u64().unwrap() as usize;
    let sections = ["root", "leaf_directory", "tile_data"]
        .iter()
        .map(|section| {
            let offset = field(&format!("{section}_offset"));
            bytes[offset..offset + field(&format!("{section}_length"))].to_vec()
        })
        .collect();
    let mut header = archive.header.clone();
    for derived in [
        "metadata_length",
        "leaf_directory_offset",
        "tile_data_offset",
    ] {
        header.as_object_mut().unwrap().remove(derived);
    }
    let mut metadata = archive.metadata.clone();
    let state = metadata.as_object_mut().unwrap().remove("oar_tiles_state");
    assert!(
        state.is_some(),
        "{}: the archive records its state",
        path.display()
    );
    (
        serde_json::json!({"header": header, "metadata": metadata}),
        sections,
    )
}

/// Fails unless the archive at `actual` is the one at `expected` but for its state (see
/// [`archive_layout`]) and passes `oar-tiles validate`.
#[track_caller]
pub(crate) fn assert_same_archive(
    expected: &std::path::Path,
    actual: &std::path::Path,
    what: &str,
) {
    let (expected_json, expected_sections) = archive_layout(expected);
    let (json, sections) = archive_layout(actual);
    let expected_tiles = read_archive(expected).tiles;
    let tiles = read_archive(actual).tiles;
    assert_same_digests(&expected_tiles, &tiles, what);
    assert_eq!(expected_json, json, "{what}: header or metadata");
    for (index, name) in ["root directory", "leaf directories", "tile data"]
        .iter()
        .enumerate()
    {
        assert!(
            expected_sections[index] == sections[index],
            "{what}: the {name} differ"
        );
    }
    let valid = super::run::oar_tiles(None, &["validate", actual.to_str().unwrap()]);
    valid.assert_success();
}
