//! An archive updated in place: the tiles a run changed are written before the archive's tile
//! data, which is kept byte for byte, and new directories and a new header point at both (the v3
//! layout lets tile data lie in any order, with `clustered` false). A store that rebuilds an object
//! from ranges it holds ([`crate::store::ObjectStore::splice`]) is then sent only the header, the
//! directories, the changed tiles and what pads them to the store's smallest first part.
//!
//! A store that keeps only whole objects (GCS's compose concatenates objects; Azure commits a new
//! block before all of the blob's own) keeps the whole old archive after the new bytes instead: its
//! header and directories become bytes no directory references, counted against the share below
//! like replaced tiles.
//!
//! Bytes no directory references pile up with each update: when they pass the tileset's
//! `pmtiles_compact_above` share of the tile data, the archive is written whole and clustered
//! again instead.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use integer_encoding::VarInt;
use md5::{Digest, Md5};
use rusqlite::OpenFlags;

use super::layout::pmtiles_id;
use super::layout::{Section, HEADER_LEN};
use super::read::Placed;
use super::tile_store::open_store;
use crate::error::{Error, Result};
use crate::sink::mbtiles::partial_path;
use crate::sink::TilesetMetadata;
use crate::tile::{Coverage, TileCoord};

/// The header and root directory together fit in the first 16 KiB, which readers fetch at once.
const ROOT_ROOM: usize = 16_384 - HEADER_LEN;

/// How an update in place may go: the store's smallest first piece, whether it keeps only the
/// whole old object, and when to compact instead.
#[derive(Debug, Clone, Copy)]
pub struct InPlace {
    /// The first piece sent must be at least this long (S3's part minimum).
    pub min_first: u64,
    /// The store keeps the whole old object after the new bytes, never a range of it (GCS, Azure).
    pub keeps_whole: bool,
    /// The unreferenced share of tile data above which the archive is written whole.
    pub compact_above: f64,
}

/// An archive written in place: its first `sent` bytes are new, and the rest are the old
/// archive's bytes `kept`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// How many of the archive's first bytes must be sent.
    pub sent: u64,
    /// Where the rest lies in the archive as it was.
    pub kept: Range<u64>,
    /// How many of the `sent` bytes, the last ones, pad the new bytes to the store's smallest
    /// first piece: the old tile data's first bytes, which `kept` then follows.
    pub padding: u64,
    /// Where the old archive's bytes the new one keeps went in the file.
    pub moved: Moved,
}

/// Old bytes `from..from + len` of an archive, now at `to..to + len` of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Where they were.
    pub from: u64,
    /// Where they are.
    pub to: u64,
    /// How many.
    pub len: u64,
}

/// One entry of a directory being written.
#[derive(Clone, Copy)]
struct Run {
    tile_id: u64,
    offset: u64,
    length: u64,
    run_length: u64,
}

/// What the store holds, sorted by tile id, against the old archive.
struct Planned {
    /// Each tile's id, and where its bytes are: `Ok` in the old data, `Err` in the new.
    tiles: Vec<(u64, std::result::Result<u64, u64>, u64)>,
    /// The changed tiles' bytes, each distinct content once.
    fresh: Vec<u8>,
    coverage: Coverage,
    /// Whether the store held placeholders (`skeleton.rs`): tiles whose bytes only the old
    /// archive in the store has.
    placeholders: bool,
}

/// Writes `archive` again as its old tile data plus the tiles of `store` that differ from it,
/// unless the archive is not one this can extend, or the bytes no directory would reference pass
/// `policy.compact_above`: `None` then, and the caller writes it whole.
pub(super) fn write_in_place(
    store: &Path,
    archive: &Path,
    metadata: &TilesetMetadata,
    metadata_json_text: &str,
    policy: InPlace,
) -> Result<Option<Appended>> {
    let Ok((data, placed)) = super::read::placed_tiles(archive) else {
        return Ok(None);
    };
    let old = std::fs::File::open(archive)
        .map_err(|e| Error::output(archive, format!("cannot open it: {e}")))?;
    let (data, placed) = if policy.keeps_whole {
        let length = old
            .metadata()
            .map_err(|e| Error::output(archive, format!("cannot read its size: {e}")))?
            .len();
        whole_archive(data, placed, length)
    } else {
        (data, placed)
    };
    let planned = plan(store, &old, data, &placed)?;
    let fresh_len = planned.fresh.len() as u64;
    let total = fresh_len + data.length;
    let mut referenced: HashMap<u64, u64> = HashMap::new();
    for (_, at, length) in &planned.tiles {
        let offset = match at {
            Ok(old) => fresh_len + old,
            Err(new) => *new,
        };
        referenced.insert(offset, *length);
    }
    let used: u64 = referenced.values().sum();
    if total == 0 || (total - used) as f64 > policy.compact_above * total as f64 {
        return Ok(None);
    }
    let runs = runs_of(&planned.tiles, fresh_len);
    let mut metadata = metadata.clone();
    metadata.cover(&planned.coverage);
    let counts = [
        planned.tiles.len() as u64,
        runs.len() as u64,
        referenced.len() as u64,
    ];
    let head = head_bytes(&runs, &metadata, metadata_json_text, total, counts)
        .map_err(|e| Error::output(archive, e))?;
    let first = head.len() as u64 + fresh_len;
    let sent = first.max(policy.min_first).min(first + data.length);
    let kept = data.offset + (sent - first)..data.offset + data.length;
    if planned.placeholders && kept.is_empty() {
        // All of it would be sent, and this machine lacks the old tiles' bytes: written whole.
        return Ok(None);
    }
    write_file(archive, &old, &head, &planned.fresh, data)?;
    Ok(Some(Appended {
        sent,
        kept,
        padding: sent - first,
        moved: Moved {
            from: data.offset,
            to: first,
            len: data.length,
        },
    }))
}

/// The old archive's tile data taken as all of its `length` bytes, from its header on, with each
/// tile's offset moved to count from there.
fn whole_archive(data: Section, placed: Placed, length: u64) -> (Section, Placed) {
    let placed = placed
        .into_iter()
        .map(|(id, (offset, tile_length))| (id, (data.offset + offset, tile_length)))
        .collect();
    let whole = Section {
        name: "archive",
        offset: 0,
        length,
    };
    (whole, placed)
}

/// Every tile of the store against the old archive: the same bytes keep their place, others go
/// into the new bytes.
fn plan(store: &Path, old: &std::fs::File, data: Section, placed: &Placed) -> Result<Planned> {
    let fail = |e: &dyn std::fmt::Display| Error::output(store, e.to_string());
    let connection = open_store(store, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut statement = connection
        .prepare("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")
        .map_err(|e| fail(&e))?;
    let mut rows = statement.query([]).map_err(|e| fail(&e))?;
    let mut planned = Planned {
        tiles: Vec::new(),
        fresh: Vec::new(),
        coverage: Coverage::default(),
        placeholders: false,
    };
    let mut fresh_at: HashMap<[u8; 16], u64> = HashMap::new();
    let mut stored = Vec::new();
    while let Some(row) = rows.next().map_err(|e| fail(&e))? {
        let (z, x, tms): (i64, i64, i64) = (
            row.get(0).map_err(|e| fail(&e))?,
            row.get(1).map_err(|e| fail(&e))?,
            row.get(2).map_err(|e| fail(&e))?,
        );
        let bytes: Vec<u8> = row.get(3).map_err(|e| fail(&e))?;
        let tile = TileCoord::from_tms(z, x, tms).map_err(|e| fail(&e))?;
        planned.coverage.add(tile);
        let id = pmtiles_id(tile)?;
        let length = bytes.len() as u64;
        if bytes.is_empty() {
            // A placeholder keeps its tile where the old archive holds it.
            let &(offset, old_length) = placed.get(&id).ok_or_else(|| {
                fail(&format!(
                    "tile {tile} has no bytes here and the archive does not hold it: run \
                     `seed --force`"
                ))
            })?;
            planned.placeholders = true;
            planned.tiles.push((id, Ok(offset), old_length));
            continue;
        }
        if let Some(&(offset, old_length)) = placed.get(&id) {
            if old_length == length && offset + length <= data.length {
                stored.resize(bytes.len(), 0);
                old.read_exact_at(&mut stored, data.offset + offset)
                    .map_err(|e| fail(&e))?;
                if stored == bytes {
                    planned.tiles.push((id, Ok(offset), length));
                    continue;
                }
            }
        }
        let digest: [u8; 16] = Md5::digest(&bytes).into();
        let at = *fresh_at.entry(digest).or_insert_with(|| {
            planned.fresh.extend_from_slice(&bytes);
            planned.fresh.len() as u64 - length
        });
        planned.tiles.push((id, Err(at), length));
    }
    planned.tiles.sort_unstable_by_key(|(id, _, _)| *id);
    Ok(planned)
}

/// The directory entries: consecutive tiles with the same bytes in one run.
fn runs_of(tiles: &[(u64, std::result::Result<u64, u64>, u64)], fresh_len: u64) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (id, at, length) in tiles {
        let offset = match at {
            Ok(old) => fresh_len + old,
            Err(new) => *new,
        };
        if let Some(last) = runs.last_mut() {
            if last.tile_id + last.run_length == *id
                && last.offset == offset
                && last.length == *length
            {
                last.run_length += 1;
                continue;
            }
        }
        runs.push(Run {
            tile_id: *id,
            offset,
            length: *length,
            run_length: 1,
        });
    }
    runs
}

/// A directory as the spec lays it: the count, then the id deltas, run lengths, lengths and
/// offsets (0 for "right after the previous entry", else the offset plus 1), gzipped.
fn encode_directory(runs: &[Run]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut push = |value: u64| bytes.extend_from_slice(&value.encode_var_vec());
    push(runs.len() as u64);
    let mut last = 0;
    for run in runs {
        push(run.tile_id - last);
        last = run.tile_id;
    }
    runs.iter().for_each(|run| push(run.run_length));
    runs.iter().for_each(|run| push(run.length));
    for (i, run) in runs.iter().enumerate() {
        let follows = i > 0 && runs[i - 1].offset + runs[i - 1].length == run.offset;
        push(if follows { 0 } else { run.offset + 1 });
    }
    crate::encode::gzip(&bytes, 6)
}

/// The root directory and the leaves: the root alone when it fits in the first 16 KiB, else
/// leaves of as many entries as keep the root within it.
fn directories(runs: &[Run]) -> std::result::Result<(Vec<u8>, Vec<u8>), String> {
    let root = encode_directory(runs);
    if root.len() <= ROOT_ROOM {
        return Ok((root, Vec::new()));
    }
    let mut per_leaf = 4096;
    while per_leaf <= runs.len() * 2 {
        let mut leaves = Vec::new();
        let mut entries = Vec::new();
        for chunk in runs.chunks(per_leaf) {
            let leaf = encode_directory(chunk);
            entries.push(Run {
                tile_id: chunk[0].tile_id,
                offset: leaves.len() as u64,
                length: leaf.len() as u64,
                run_length: 0,
            });
            leaves.extend_from_slice(&leaf);
        }
        let root = encode_directory(&entries);
        if root.len() <= ROOT_ROOM {
            return Ok((root, leaves));
        }
        per_leaf *= 2;
    }
    Err("its directories do not fit a root of 16 KiB with leaves".into())
}

/// The header, directories and metadata of the new archive, whose tile data of `data_len` bytes
/// follows them; `counts` are the addressed tiles, the entries and the distinct contents.
fn head_bytes(
    runs: &[Run],
    metadata: &TilesetMetadata,
    metadata_json_text: &str,
    data_len: u64,
    counts: [u64; 3],
) -> std::result::Result<Vec<u8>, String> {
    let (root, leaves) = directories(runs)?;
    let json = crate::encode::gzip(metadata_json_text.as_bytes(), 6);
    let root_at = HEADER_LEN as u64;
    let metadata_at = root_at + root.len() as u64;
    let leaves_at = metadata_at + json.len() as u64;
    let data_at = leaves_at + leaves.len() as u64;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"PMTiles\x03");
    for value in [
        root_at,
        root.len() as u64,
        metadata_at,
        json.len() as u64,
        leaves_at,
        leaves.len() as u64,
        data_at,
        data_len,
        counts[0],
        counts[1],
        counts[2],
    ] {
        header.extend_from_slice(&value.to_le_bytes());
    }
    let (zooms, bounds) = (metadata.shown_zooms(), metadata.shown_bounds());
    let (lon, lat, zoom) = metadata.center();
    // Not clustered; gzip directories and tiles; vector tiles.
    header.extend_from_slice(&[0, 2, 2, 1, zooms.min, zooms.max]);
    let e7 = |degrees: f64| ((degrees * 1e7).round() as i32).to_le_bytes();
    for degrees in [bounds.west, bounds.south, bounds.east, bounds.north] {
        header.extend_from_slice(&e7(degrees));
    }
    header.push(zoom);
    header.extend_from_slice(&e7(lon));
    header.extend_from_slice(&e7(lat));
    debug_assert_eq!(header.len(), HEADER_LEN);
    let mut head = header;
    head.extend_from_slice(&root);
    head.extend_from_slice(&json);
    head.extend_from_slice(&leaves);
    Ok(head)
}

/// Writes `head`, the new tiles and the old archive's tile data into the archive's partial file
/// and moves it into place.
fn write_file(
    archive: &Path,
    old: &std::fs::File,
    head: &[u8],
    fresh: &[u8],
    data: Section,
) -> Result<()> {
    let partial = partial_path(archive);
    let fail = |e: std::io::Error| Error::output(&partial, format!("cannot write it: {e}"));
    let written = (|| -> Result<()> {
        let file = std::fs::File::create(&partial).map_err(fail)?;
        let mut out = std::io::BufWriter::new(file);
        out.write_all(head).map_err(fail)?;
        out.write_all(fresh).map_err(fail)?;
        let mut source = old;
        source.seek(SeekFrom::Start(data.offset)).map_err(fail)?;
        let copied = std::io::copy(&mut source.take(data.length), &mut out).map_err(fail)?;
        if copied != data.length {
            return Err(Error::output(
                archive,
                format!(
                    "its tile data ends {} bytes early: write it whole with `seed --force`",
                    data.length - copied
                ),
            ));
        }
        let file = out.into_inner().map_err(|e| fail(e.into_error()))?;
        file.sync_all().map_err(fail)?;
        crate::store::durable::rename(&partial, archive).map_err(fail)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tile::{BBox, ZoomRange};

    /// Four tiles of zoom 1, 1,000 distinct bytes each.
    fn old_tiles() -> Vec<(TileCoord, Vec<u8>)> {
        (0..4u8)
            .map(|i| {
                let tile = TileCoord::new(1, u32::from(i % 2), u32::from(i / 2)).unwrap();
                (tile, (0..1000).map(|b| (b % 251) as u8 ^ i).collect())
            })
            .collect()
    }

    /// An archive of `tiles` in their order, unclustered as updates in place leave it.
    fn write_archive(path: &Path, tiles: &[(TileCoord, Vec<u8>)], metadata: &TilesetMetadata) {
        let mut runs: Vec<Run> = Vec::new();
        let mut data = Vec::new();
        for (tile, bytes) in tiles {
            runs.push(Run {
                tile_id: pmtiles_id(*tile).unwrap(),
                offset: data.len() as u64,
                length: bytes.len() as u64,
                run_length: 1,
            });
            data.extend_from_slice(bytes);
        }
        runs.sort_unstable_by_key(|run| run.tile_id);
        let count = runs.len() as u64;
        let mut archive = head_bytes(&runs, metadata, "{}", data.len() as u64, [count; 3]).unwrap();
        archive.extend_from_slice(&data);
        std::fs::write(path, archive).unwrap();
    }

    /// A tile store holding `tiles`, as the sink's working copy keeps it.
    fn write_store(path: &Path, tiles: &[(TileCoord, Vec<u8>)]) {
        let connection = rusqlite::Connection::open(path).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, \
                 tile_data BLOB)",
            )
            .unwrap();
        for (tile, bytes) in tiles {
            connection
                .execute(
                    "INSERT INTO tiles VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![tile.z(), tile.x(), tile.tms_row(), bytes],
                )
                .unwrap();
        }
    }

    #[test]
    fn an_archive_kept_whole_counts_its_old_header_and_directories_as_unreferenced() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, store) = (dir.path().join("a.pmtiles"), dir.path().join("a.mbtiles"));
        let metadata = TilesetMetadata::bare("a", BBox::WORLD, ZoomRange::new(0, 2).unwrap());
        let old = old_tiles();
        write_archive(&archive, &old, &metadata);
        let old_bytes = std::fs::read(&archive).unwrap();
        let (data, _) = super::super::read::placed_tiles(&archive).unwrap();
        // One tile added, none replaced: the only bytes no directory would reference are the old
        // header and directories, which only a store keeping the whole object keeps.
        let mut tiles = old.clone();
        tiles.push((TileCoord::new(2, 3, 3).unwrap(), vec![7; 100]));
        write_store(&store, &tiles);
        let total = (100 + old_bytes.len()) as f64;
        let below_head = (data.offset as f64 - 1.0) / total;
        let policy = |keeps_whole, compact_above| InPlace {
            min_first: 0,
            keeps_whole,
            compact_above,
        };
        let write = |policy| write_in_place(&store, &archive, &metadata, "{}", policy).unwrap();
        assert_eq!(
            write(policy(true, below_head)),
            None,
            "the old head is counted"
        );
        let ranged = write(policy(false, 0.0)).expect("nothing unreferenced in a kept range");
        assert_eq!(ranged.kept, data.offset..old_bytes.len() as u64);

        write_archive(&archive, &old, &metadata);
        let whole = write(policy(true, below_head + 0.01)).expect("the old head under the share");
        assert_eq!(whole.kept, 0..old_bytes.len() as u64);
        let new_bytes = std::fs::read(&archive).unwrap();
        assert_eq!(new_bytes.len() as u64, whole.sent + old_bytes.len() as u64);
        assert!(
            new_bytes.ends_with(&old_bytes),
            "the old archive follows the new bytes"
        );
        let (data, placed) = super::super::read::placed_tiles(&archive).unwrap();
        for (tile, bytes) in &tiles {
            let (offset, length) = placed[&pmtiles_id(*tile).unwrap()];
            let at = (data.offset + offset) as usize;
            assert_eq!(&new_bytes[at..at + length as usize], bytes, "{tile:?}");
        }
    }

    #[test]
    fn directories_decode_as_written() {
        let runs: Vec<Run> = (0..10)
            .map(|i| Run {
                tile_id: i * 2,
                offset: i * 10,
                length: 10,
                run_length: 1 + i % 2,
            })
            .collect();
        let bytes = encode_directory(&runs);
        let plain = crate::encode::gunzip_capped(&bytes, 1 << 20).unwrap();
        let decoded = super::super::layout::decode_directory(&plain).unwrap();
        assert_eq!(decoded.len(), 10);
        for (run, entry) in runs.iter().zip(decoded) {
            assert_eq!(
                (run.tile_id, run.offset, run.length, run.run_length),
                (entry.tile_id, entry.offset, entry.length, entry.run_length)
            );
        }
    }
}
