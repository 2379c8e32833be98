//! `oar-tiles merge`: the MBTiles part files of a sharded run combined into one MBTiles file.
//!
//! Parts of one run hold disjoint tiles and the same settings digest; a tile found in two parts, or
//! parts of different settings, mean they are not parts of one run, and the merge refuses rather
//! than pick one. The merged watermark's snapshot sees only what every part's snapshot saw
//! ([`earliest_snapshot`]), so a later `seed --dirty` re-renders what one shard saw and another did
//! not. The file is built under its `.partial` name and moved into place at the end, so a failed
//! merge leaves no output behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{Import, COVERAGE_KEYS, STATE_KEY};
use crate::error::{Error, Result};
use crate::sink::agg_hash::AGG_TILES_HASH_KEY;
use crate::state::watermark::earliest_snapshot;
use crate::state::Watermark;
use crate::tile::{tile_key, TileCoord};

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeReport {
    /// Tiles written to the merged file.
    pub tiles: u64,
    /// The merged watermark's snapshot.
    pub snapshot: String,
}

/// Merges the MBTiles `parts` into a new file at `out`, refusing overlapping tiles, parts without a
/// finished state, and parts of different settings.
pub fn merge_mbtiles(out: &Path, parts: &[PathBuf]) -> Result<MergeReport> {
    if parts.is_empty() {
        return Err(Error::Usage("merge needs at least one part file".into()));
    }
    if let Some(part) = parts.iter().find(|part| same_file(part, out)) {
        return Err(Error::Usage(format!(
            "merge: the output {} is also given as a part",
            part.display()
        )));
    }
    let mut opened = Vec::new();
    for part in parts {
        opened.push(Part::open(part)?);
    }
    let first = &opened[0];
    for part in &opened[1..] {
        if part.watermark.settings != first.watermark.settings {
            return Err(Error::output(
                &part.path,
                format!(
                    "settings digest {} differs from {}'s {}: the parts are not of one run",
                    part.watermark.settings.as_deref().unwrap_or("(none)"),
                    first.path.display(),
                    first.watermark.settings.as_deref().unwrap_or("(none)")
                ),
            ));
        }
        if part.metadata != first.metadata {
            return Err(Error::output(
                &part.path,
                format!(
                    "its metadata differs from {}'s: the parts are not of one tileset",
                    first.path.display()
                ),
            ));
        }
    }
    let snapshot = earliest_snapshot(opened.iter().map(|p| p.watermark.snapshot.as_str()))
        .ok_or_else(|| {
            Error::output(
                &first.path,
                "a part's watermark snapshot is not a PostgreSQL snapshot",
            )
        })?;
    let mut import = Import::create(out)?;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut tiles = 0u64;
    for (index, part) in opened.iter().enumerate() {
        let fail = |e: rusqlite::Error| Error::output(&part.path, format!("reading tiles: {e}"));
        let mut select = part
            .connection
            .prepare("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")
            .map_err(fail)?;
        let mut rows = select.query([]).map_err(fail)?;
        while let Some(row) = rows.next().map_err(fail)? {
            let (z, x, tms_row): (i64, i64, i64) = (
                row.get(0).map_err(fail)?,
                row.get(1).map_err(fail)?,
                row.get(2).map_err(fail)?,
            );
            let tile = TileCoord::from_tms(z, x, tms_row)
                .map_err(|e| Error::output(&part.path, format!("a tile row: {e}")))?;
            if let Some(other) = seen.insert(tile_key(tile), index) {
                return Err(Error::output(
                    &part.path,
                    format!(
                        "tile {tile} is also in {}: shards of one run write disjoint tiles",
                        opened[other].path.display()
                    ),
                ));
            }
            let data: Vec<u8> = row.get(3).map_err(fail)?;
            import.add(tile, &data)?;
            tiles += 1;
        }
    }
    let watermark = Watermark {
        snapshot: snapshot.clone(),
        ..first.watermark.clone()
    };
    let json = first
        .metadata
        .iter()
        .find(|(name, _)| name == "json")
        .and_then(|(_, json)| merged_json(json, &opened));
    let rows: Vec<(&str, &str)> = first
        .metadata
        .iter()
        .map(|(name, value)| match (name.as_str(), &json) {
            ("json", Some(json)) => (name.as_str(), json.as_str()),
            _ => (name.as_str(), value.as_str()),
        })
        .collect();
    import.finish(Some(&watermark.to_state()), &rows)?;
    Ok(MergeReport { tiles, snapshot })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// One part file, opened read-only, with its state and its other metadata rows.
struct Part {
    path: PathBuf,
    connection: Connection,
    watermark: Watermark,
    metadata: Vec<(String, String)>,
    /// Each layer's `[minzoom, maxzoom]` in `vector_layers`, in order: a part declares only the
    /// zooms its own tiles hold, so they are compared without them and merged as the widest.
    layer_zooms: Vec<[Option<u64>; 2]>,
}

/// The `json` row without the layers' zooms, and those zooms in order.
fn without_layer_zooms(json: &str) -> Option<(String, Vec<[Option<u64>; 2]>)> {
    let mut value: serde_json::Value = serde_json::from_str(json).ok()?;
    let mut zooms = Vec::new();
    for layer in value.get_mut("vector_layers")?.as_array_mut()? {
        let layer = layer.as_object_mut()?;
        zooms.push(["minzoom", "maxzoom"].map(|key| layer.remove(key).and_then(|z| z.as_u64())));
    }
    Some((value.to_string(), zooms))
}

/// The `json` row of the merged file: the parts' (equal without the layers' zooms), each layer
/// declared from the lowest zoom any part holds it at to the highest.
fn merged_json(json: &str, parts: &[Part]) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(json).ok()?;
    for (index, layer) in value
        .get_mut("vector_layers")?
        .as_array_mut()?
        .iter_mut()
        .enumerate()
    {
        let zooms = parts.iter().filter_map(|p| p.layer_zooms.get(index));
        let min = zooms.clone().filter_map(|[min, _]| *min).min();
        let max = zooms.filter_map(|[_, max]| *max).max();
        let layer = layer.as_object_mut()?;
        for (key, zoom) in [("minzoom", min), ("maxzoom", max)] {
            if let Some(zoom) = zoom {
                layer.insert(key.to_string(), zoom.into());
            }
        }
    }
    Some(value.to_string())
}

impl Part {
    fn open(path: &Path) -> Result<Part> {
        let fail = |e: rusqlite::Error| Error::output(path, format!("cannot read the part: {e}"));
        if !path.is_file() {
            return Err(Error::output(path, "no such part file"));
        }
        let connection =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(fail)?;
        let mut metadata: Vec<(String, String)> = connection
            .prepare("SELECT name, value FROM metadata")
            .and_then(|mut select| {
                select
                    .query_map([], |row| {
                        Ok((
                            row.get(0)?,
                            row.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        ))
                    })?
                    .collect()
            })
            .map_err(fail)?;
        let state = metadata
            .iter()
            .find(|(name, _)| name == STATE_KEY)
            .map(|(_, value)| value.clone());
        let watermark = state
            .as_deref()
            .and_then(Watermark::from_state)
            .filter(|w| !w.snapshot.is_empty())
            .ok_or_else(|| {
                Error::output(
                    path,
                    "the part has no finished seed's state: is its shard done?",
                )
            })?;
        // Each part hashes, and declares the zooms and bounds of, only its own tiles; the merged
        // file's are computed afresh from all of them.
        metadata.retain(|(name, _)| {
            name != STATE_KEY
                && name != AGG_TILES_HASH_KEY
                && !COVERAGE_KEYS.contains(&name.as_str())
        });
        let mut layer_zooms = Vec::new();
        for (name, value) in &mut metadata {
            if name == "json" {
                if let Some((normalised, zooms)) = without_layer_zooms(value) {
                    *value = normalised;
                    layer_zooms = zooms;
                }
            }
        }
        metadata.sort();
        Ok(Part {
            path: path.to_path_buf(),
            connection,
            watermark,
            metadata,
            layer_zooms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(dir: &Path, name: &str, tiles: &[&str], settings: &str, snapshot: &str) -> PathBuf {
        let path = dir.join(name);
        let mut import = Import::create(&path).unwrap();
        for tile in tiles {
            import.add(tile.parse().unwrap(), tile.as_bytes()).unwrap();
        }
        let watermark = Watermark {
            snapshot: snapshot.into(),
            settings: Some(settings.into()),
            ..Watermark::default()
        };
        import
            .finish(
                Some(&watermark.to_state()),
                &[("name", "t"), ("format", "pbf")],
            )
            .unwrap();
        path
    }

    fn tiles_of(path: &Path) -> Vec<(String, Vec<u8>)> {
        let connection = Connection::open(path).unwrap();
        let mut select = connection
            .prepare("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")
            .unwrap();
        let mut tiles: Vec<(String, Vec<u8>)> = select
            .query_map([], |row| {
                let tile = TileCoord::from_tms(row.get(0)?, row.get(1)?, row.get(2)?).unwrap();
                Ok((tile.to_string(), row.get(3)?))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        tiles.sort();
        tiles
    }

    /// Each part declares a layer at the zooms its own tiles hold; the merged file declares it
    /// over all of them, and parts that differ only there are one tileset.
    #[test]
    fn the_merged_layer_zooms_span_the_parts() {
        let dir = tempfile::tempdir().unwrap();
        let with_json = |name: &str, tiles: &[&str], zooms: (u8, u8)| {
            let path = dir.path().join(name);
            let mut import = Import::create(&path).unwrap();
            for tile in tiles {
                import.add(tile.parse().unwrap(), tile.as_bytes()).unwrap();
            }
            let state = Watermark {
                snapshot: "5:5:".into(),
                settings: Some("s".into()),
                ..Watermark::default()
            }
            .to_state();
            let json = format!(
                r#"{{"vector_layers":[{{"id":"l","fields":{{}},"minzoom":{},"maxzoom":{}}}]}}"#,
                zooms.0, zooms.1
            );
            import.finish(Some(&state), &[("json", &json)]).unwrap();
            path
        };
        let a = with_json("a.mbtiles", &["2/0/0", "3/1/1"], (2, 3));
        let b = with_json("b.mbtiles", &["4/15/15", "5/31/31"], (4, 5));
        let out = dir.path().join("out.mbtiles");
        merge_mbtiles(&out, &[a, b]).unwrap();
        let json: String = Connection::open(&out)
            .unwrap()
            .query_row(
                "SELECT value FROM metadata WHERE name = 'json'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let layer = &value["vector_layers"][0];
        assert_eq!(
            (layer["minzoom"].as_u64(), layer["maxzoom"].as_u64()),
            (Some(2), Some(5))
        );
        assert_eq!(layer["id"], "l");
    }

    #[test]
    fn parts_merge_into_one_file_with_the_earliest_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let a = part(
            dir.path(),
            "a.mbtiles",
            &["0/0/0", "3/1/2"],
            "s",
            "12:20:12",
        );
        let b = part(
            dir.path(),
            "b.mbtiles",
            &["3/7/7", "4/15/0"],
            "s",
            "18:25:18,22",
        );
        let out = dir.path().join("out.mbtiles");
        let report = merge_mbtiles(&out, &[a, b]).unwrap();
        assert_eq!(report.tiles, 4);
        let tiles = tiles_of(&out);
        let names: Vec<&str> = tiles.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["0/0/0", "3/1/2", "3/7/7", "4/15/0"]);
        assert!(tiles
            .iter()
            .all(|(t, data)| t.as_bytes() == data.as_slice()));
        let connection = Connection::open(&out).unwrap();
        let state: String = connection
            .query_row(
                "SELECT value FROM metadata WHERE name = ?1",
                [STATE_KEY],
                |row| row.get(0),
            )
            .unwrap();
        let watermark = Watermark::from_state(&state).unwrap();
        assert_eq!(watermark.snapshot, "12:20:12,18");
        assert_eq!(watermark.settings.as_deref(), Some("s"));
        let name: String = connection
            .query_row(
                "SELECT value FROM metadata WHERE name = 'name'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(name, "t");
        let hash: String = connection
            .query_row(
                "SELECT value FROM metadata WHERE name = 'agg_tiles_hash'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        let mut expected = crate::sink::agg_hash::AggHasher::new();
        // Already in hash order: by zoom, then column.
        for tile in ["0/0/0", "3/1/2", "3/7/7", "4/15/0"] {
            expected.add(tile.parse().unwrap(), tile.as_bytes());
        }
        assert_eq!(
            hash,
            expected.finish(),
            "the merged file hashes all its tiles"
        );
    }

    #[test]
    fn overlapping_tiles_mixed_settings_and_unfinished_parts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = part(dir.path(), "a.mbtiles", &["3/1/2"], "s", "12:20:");
        let b = part(dir.path(), "b.mbtiles", &["3/1/2"], "s", "12:20:");
        let c = part(dir.path(), "c.mbtiles", &["3/0/0"], "other", "12:20:");
        let out = dir.path().join("out.mbtiles");
        let err = merge_mbtiles(&out, &[a.clone(), b.clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("tile 3/1/2 is also in"), "{err}");
        assert!(err.contains("b.mbtiles"), "{err}");
        assert!(!out.exists(), "a refused merge leaves no output");
        let err = merge_mbtiles(&out, &[a.clone(), c])
            .unwrap_err()
            .to_string();
        assert!(err.contains("settings digest other"), "{err}");
        let unfinished = dir.path().join("d.mbtiles");
        let import = Import::create(&unfinished).unwrap();
        import.finish(None, &[("name", "t")]).unwrap();
        let err = merge_mbtiles(&out, &[a.clone(), unfinished])
            .unwrap_err()
            .to_string();
        assert!(err.contains("is its shard done"), "{err}");
        let err = merge_mbtiles(&a, std::slice::from_ref(&a))
            .unwrap_err()
            .to_string();
        assert!(err.contains("also given as a part"), "{err}");
        assert!(!out.exists());
    }
}
