//! An archive in a store updated from a machine that has no working copy of it, without
//! downloading it: the header, the root directory, the metadata and the leaf directories are read
//! by range and laid at their offsets in a local file of the object's length whose tile data is a
//! hole (a *skeleton*), and the working copy's store holds one *placeholder* row (empty
//! `tile_data`) per tile the directories address. An update in place needs no more: a placeholder
//! keeps its tile where the old archive holds it, and the store rebuilds the object from its own
//! ranges. Rendered tiles replace placeholders as any run replaces rows.
//!
//! What needs the old tiles' bytes (writing the archive whole, at a compaction or where the store
//! keeps no range) first downloads the object and fills the placeholders from it. Until then the
//! archive's `agg_tiles_hash`, one MD5 over every tile, cannot be computed: an archive updated from
//! a skeleton declares it pending instead, and the next archive written whole declares it again.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rusqlite::{params, OpenFlags};

use super::append::{Appended, Moved};
use super::layout::{Header, Section, HEADER_LEN, SECTION_CAP};
use super::tile_store::open_store;
use super::Filler;
use crate::error::{Error, Result};
use crate::sink::mbtiles::{partial_path, record_agg_hash};
use crate::store::ObjectStore;

/// What is read first: the header and, as writers lay archives out, the root directory, which the
/// spec keeps within the first 16 KiB.
const FIRST_READ: u64 = 16_384;

/// Store metadata row: the `agg_tiles_hash` the archive declared when its skeleton was read (empty
/// when it declared none), while the store holds placeholders and so cannot compute it.
const DECLARED_HASH_KEY: &str = "oar_tiles_pmtiles_declared_hash";

/// Why an archive updated from a skeleton declares no `agg_tiles_hash`.
pub(super) const PENDING_REASON: &str = "the archive was updated in place from its directories \
     alone (a machine without its tiles); the next archive written whole computes agg_tiles_hash";

/// Reads the header, directories and metadata of object `key`, `size` bytes long, by range, and
/// writes them at their offsets into `working_copy`, a file of `size` bytes whose other bytes are
/// a hole, listed beside it ([`read_holes`]). Returns the bytes read.
pub(super) async fn read_skeleton(
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
    working_copy: &Path,
) -> Result<u64> {
    let target = format!("{}/{key}", store.bucket());
    let fail = |message: String| Error::output(&target, message);
    if size < HEADER_LEN as u64 {
        return Err(fail(format!(
            "the object is {size} bytes, shorter than a PMTiles header"
        )));
    }
    let first = store
        .get_range(key, 0..size.min(FIRST_READ))
        .await
        .map_err(|e| Error::output_caused(&target, e))?;
    let header_bytes: &[u8; HEADER_LEN] = first
        .get(..HEADER_LEN)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| fail("the store answered fewer bytes than a PMTiles header".into()))?;
    if !header_bytes.starts_with(b"PMTiles") {
        return Err(fail("the object is not a PMTiles archive".into()));
    }
    let header = Header::parse(header_bytes);
    if header.version != 3 {
        return Err(fail(format!(
            "the header says PMTiles version {}; this tool updates version 3",
            header.version
        )));
    }
    let mut pieces = vec![(0, first)];
    for section in [header.root, header.metadata, header.leaves] {
        let Section {
            name,
            offset,
            length,
        } = section;
        if length > SECTION_CAP {
            return Err(fail(format!(
                "its {name} is {length} bytes, past the {} MiB cap on PMTiles directories and \
                 metadata",
                SECTION_CAP >> 20
            )));
        }
        let end = offset
            .checked_add(length)
            .filter(|end| *end <= size)
            .ok_or_else(|| {
                fail(format!(
                    "its {name} (offset {offset}, length {length}) reaches past the object's \
                     {size} bytes"
                ))
            })?;
        if length == 0 || end <= FIRST_READ.min(size) {
            continue;
        }
        let bytes = store
            .get_range(key, offset..end)
            .await
            .map_err(|e| Error::output_caused(&target, e))?;
        if bytes.len() as u64 != length {
            return Err(fail(format!(
                "the store answered {} bytes of its {length}-byte {name}",
                bytes.len()
            )));
        }
        pieces.push((offset, bytes));
    }
    let read = pieces.iter().map(|(_, bytes)| bytes.len() as u64).sum();
    write_skeleton(working_copy, size, &pieces)?;
    let mut holes: Vec<Range<u64>> = std::iter::once(0..size).collect();
    for (offset, bytes) in &pieces {
        holes = without(&holes, *offset..offset + bytes.len() as u64);
    }
    write_holes(working_copy, &holes)?;
    Ok(read)
}

/// Where the byte ranges of a working copy that this machine does not hold are listed.
fn holes_path(working_copy: &Path) -> PathBuf {
    let mut name = working_copy.as_os_str().to_os_string();
    name.push(".holes.json");
    PathBuf::from(name)
}

/// The byte ranges of the working copy that stand for the object's bytes without holding them;
/// `None` when it holds every byte (made from the whole object, or written whole since).
pub(super) fn read_holes(working_copy: &Path) -> Result<Option<Vec<Range<u64>>>> {
    let path = holes_path(working_copy);
    match crate::store::document::read_capped(&path, crate::store::document::DOCUMENT_CAP) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::output(&path, format!("cannot read it: {e}"))),
        Ok(None) => Ok(None),
        Err(e) => Err(Error::output(&path, format!("cannot read it: {e}"))),
    }
}

/// Lists `holes` as the working copy's ([`read_holes`]).
pub(super) fn write_holes(working_copy: &Path, holes: &[Range<u64>]) -> Result<()> {
    let path = holes_path(working_copy);
    let json = serde_json::to_vec(holes).expect("JSON serializes");
    crate::store::durable::replace(&path, &json)
        .map_err(|e| Error::output(&path, format!("cannot write it: {e}")))
}

/// The holes of the working copy once `appended` moved its old bytes: those listed, moved; all
/// of the old bytes for a store of placeholders that lists none; `None` for a working copy that
/// holds every byte.
pub(super) fn holes_after(
    working_copy: &Path,
    appended: &Appended,
) -> Result<Option<Vec<Range<u64>>>> {
    let moved = appended.moved;
    Ok(match read_holes(working_copy)? {
        Some(holes) => Some(moved_holes(&holes, moved)),
        None if holds_placeholders(&super::store_path(working_copy))? => {
            Some(std::iter::once(moved.to..moved.to + moved.len).collect())
        }
        None => None,
    })
}

/// Reads the parts of the padding (the last `appended.padding` of the `sent` bytes: the old tile
/// data's first bytes) that lie in `holes` from the object, whose version the splice that sends
/// them is conditional on, into the bytes to send and into the working copy.
pub(super) fn read_padding(
    (store, key, handle): (&dyn ObjectStore, &str, &tokio::runtime::Handle),
    holes: &[Range<u64>],
    appended: &Appended,
    (new, file, working_copy): (&mut [u8], &std::fs::File, &Path),
) -> Result<()> {
    let target = format!("{}/{key}", store.bucket());
    let moved = appended.moved;
    for hole in within(holes, appended.sent - appended.padding..appended.sent) {
        let old = hole.start - moved.to + moved.from..hole.end - moved.to + moved.from;
        let bytes = handle
            .block_on(store.get_range(key, old))
            .map_err(|e| Error::output_caused(&target, e))?;
        let wanted = hole.end - hole.start;
        if bytes.len() as u64 != wanted {
            let answered = bytes.len();
            return Err(Error::output(
                &target,
                format!("the store answered {answered} of the {wanted} bytes asked for"),
            ));
        }
        new[hole.start as usize..hole.end as usize].copy_from_slice(&bytes);
        file.write_all_at(&bytes, hole.start)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::output(working_copy, format!("cannot write it: {e}")))?;
    }
    Ok(())
}

/// Says the working copy holds every byte (it was written whole).
pub(super) fn forget_holes(working_copy: &Path) {
    let _ = std::fs::remove_file(holes_path(working_copy));
}

/// The holes of an archive updated in place, whose old bytes `moved` and whose bytes before them
/// are new.
pub(super) fn moved_holes(holes: &[Range<u64>], moved: Moved) -> Vec<Range<u64>> {
    let kept = moved.from..moved.from + moved.len;
    within(holes, kept)
        .into_iter()
        .map(|hole| hole.start - moved.from + moved.to..hole.end - moved.from + moved.to)
        .collect()
}

/// The parts of `holes` inside `range`.
pub(super) fn within(holes: &[Range<u64>], range: Range<u64>) -> Vec<Range<u64>> {
    holes
        .iter()
        .map(|hole| hole.start.max(range.start)..hole.end.min(range.end))
        .filter(|part| !part.is_empty())
        .collect()
}

/// `holes` less `range`.
pub(super) fn without(holes: &[Range<u64>], range: Range<u64>) -> Vec<Range<u64>> {
    let mut left = Vec::new();
    for hole in holes {
        for part in [
            hole.start..hole.end.min(range.start),
            hole.start.max(range.end)..hole.end,
        ] {
            if !part.is_empty() {
                left.push(part);
            }
        }
    }
    left
}

/// Reads the skeleton of object `key`, whose ETag was `etag`, into `working_copy`; that version,
/// or `None` when it cannot be read so (another writer replaced the object meanwhile, say) and
/// the archive is to be downloaded instead.
pub(super) async fn try_read_object(
    store: &dyn ObjectStore,
    key: &str,
    etag: &str,
    working_copy: &Path,
) -> Option<String> {
    let target = format!("{}/{key}", store.bucket());
    match read_object(store, key, etag, working_copy).await {
        Ok((read, size)) => {
            tracing::info!(
                "{target}: read the archive's header and directories ({read} of its {size} bytes) \
                 to update it in place"
            );
            Some(etag.to_string())
        }
        Err(err) => {
            tracing::info!("{err}; reading its directories alone did not work");
            None
        }
    }
}

/// [`try_read_object`]: the object's size from a listing of its folder, then [`read_skeleton`],
/// then its ETag again, which must not have changed. Returns the bytes read and the size.
async fn read_object(
    store: &dyn ObjectStore,
    key: &str,
    etag: &str,
    working_copy: &Path,
) -> Result<(u64, u64)> {
    let target = format!("{}/{key}", store.bucket());
    let folder = match key.rsplit_once('/') {
        Some((folder, _)) => format!("{folder}/"),
        None => String::new(),
    };
    let listed = store
        .list(&folder, true)
        .await
        .map_err(|e| Error::output_caused(&target, e))?;
    let size = listed
        .iter()
        .find(|object| object.key == key)
        .map(|object| object.size)
        .ok_or_else(|| Error::output(&target, "the object is not listed"))?;
    let read = read_skeleton(store, key, size, working_copy).await?;
    let after = store
        .etag(key)
        .await
        .map_err(|e| Error::output_caused(&target, e))?;
    if after.as_deref() != Some(etag) {
        return Err(Error::output(
            &target,
            "another writer replaced it meanwhile",
        ));
    }
    Ok((read, size))
}

/// Downloads object `key` of `store` and fills the placeholders of the store it is given from
/// it, unless the object is no longer version `expected`: for an archive updated from a skeleton
/// that must be written whole.
pub(super) fn filler(
    store: std::sync::Arc<dyn ObjectStore>,
    key: String,
    handle: tokio::runtime::Handle,
    expected: Option<String>,
) -> Filler {
    let target = format!("{}/{key}", store.bucket());
    Box::new(move |tiles: &Path| {
        tracing::info!("{target}: downloading the archive to write it whole");
        let (file, etag) = handle.block_on(super::read::download_privately(
            store.as_ref(),
            &target,
            &key,
        ))?;
        if Some(&etag) != expected.as_ref() {
            return Err(Error::output(
                &target,
                "another writer replaced it while this run worked: nothing was written; run \
                 again",
            ));
        }
        fill_placeholders(tiles, file.path())
    })
}

/// Writes `pieces` at their offsets into a new file of `size` bytes, moved into place at `path`.
fn write_skeleton(path: &Path, size: u64, pieces: &[(u64, Vec<u8>)]) -> Result<()> {
    let partial = partial_path(path);
    let fail = |e: std::io::Error| Error::output(&partial, format!("cannot write it: {e}"));
    let written = (|| -> Result<()> {
        let file = std::fs::File::create(&partial).map_err(fail)?;
        file.set_len(size).map_err(fail)?;
        for (offset, bytes) in pieces {
            file.write_all_at(bytes, *offset).map_err(fail)?;
        }
        file.sync_all().map_err(fail)?;
        crate::store::durable::rename(&partial, path).map_err(fail)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Whether the store holds a placeholder: a tile only the object in the store has the bytes of.
pub(super) fn holds_placeholders(store: &Path) -> Result<bool> {
    let connection = open_store(store, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let found = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM tiles WHERE length(tile_data) = 0)",
        [],
        |row| row.get::<_, bool>(0),
    );
    found.map_err(|e| Error::output(store, format!("cannot read the tile store: {e}")))
}

/// Records in a store just filled with placeholders the `agg_tiles_hash` its archive declares
/// (`None`: it declares none, the hash is pending).
pub(super) fn record_declared_hash(store: &Path, hash: Option<&str>) -> Result<()> {
    open_store(store, OpenFlags::SQLITE_OPEN_READ_WRITE)?
        .execute(
            "INSERT OR REPLACE INTO metadata (name, value) VALUES (?1, ?2)",
            params![DECLARED_HASH_KEY, hash.unwrap_or("")],
        )
        .map_err(|e| Error::output(store, e))?;
    Ok(())
}

/// The `agg_tiles_hash` the archive declares, as [`record_declared_hash`] last recorded it.
pub(super) fn declared_hash(store: &Path) -> Result<Option<String>> {
    let connection = open_store(store, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let value: Option<String> = connection
        .query_row(
            "SELECT value FROM metadata WHERE name = ?1",
            params![DECLARED_HASH_KEY],
            |row| row.get(0),
        )
        .ok();
    Ok(value.filter(|hash| !hash.is_empty()))
}

/// Fills every placeholder of the store from `archive`, the object's bytes downloaded, and records
/// the store's `agg_tiles_hash` again; an error names a placeholder the archive does not hold.
pub(super) fn fill_placeholders(store: &Path, archive: &Path) -> Result<()> {
    let (data, placed) = super::read::placed_tiles(archive)?;
    let file = std::fs::File::open(archive)
        .map_err(|e| Error::output(archive, format!("cannot open it: {e}")))?;
    let mut connection = open_store(store, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let fail = |e: &dyn std::fmt::Display| Error::output(store, e.to_string());
    let transaction = connection.transaction().map_err(|e| fail(&e))?;
    let placeholders: Vec<(i64, i64, i64)> = {
        let mut statement = transaction
            .prepare(
                "SELECT zoom_level, tile_column, tile_row FROM tiles WHERE length(tile_data) = 0",
            )
            .map_err(|e| fail(&e))?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .map_err(|e| fail(&e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| fail(&e))?
    };
    for (z, x, tms) in placeholders {
        let tile = crate::tile::TileCoord::from_tms(z, x, tms).map_err(|e| fail(&e))?;
        let (offset, length) = *placed
            .get(&super::layout::pmtiles_id(tile)?)
            .ok_or_else(|| {
                Error::output(
                    archive,
                    format!("it does not hold tile {tile}, which its directories addressed before"),
                )
            })?;
        let mut bytes = vec![0; usize::try_from(length).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut bytes, data.offset + offset)
            .map_err(|e| Error::output(archive, format!("cannot read tile {tile}: {e}")))?;
        transaction
            .execute(
                "UPDATE tiles SET tile_data = ?4 WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3",
                params![z, x, tms, bytes],
            )
            .map_err(|e| fail(&e))?;
    }
    transaction
        .execute("DELETE FROM metadata WHERE name = ?1", [DECLARED_HASH_KEY])
        .map_err(|e| fail(&e))?;
    record_agg_hash(&transaction).map_err(|e| fail(&e))?;
    transaction.commit().map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_follow_the_bytes_an_update_moves_and_the_bytes_filled() {
        // A skeleton of 100 bytes holding 0..20 and 50..60.
        let whole: Vec<Range<u64>> = std::iter::once(0..100).collect();
        let holes = without(&without(&whole, 0..20), 50..60);
        assert_eq!(holes, [20..50, 60..100]);
        // An update keeps the old 10..100 after 30 new bytes: old 20 is new 40.
        let moved = Moved {
            from: 10,
            to: 30,
            len: 90,
        };
        let holes = moved_holes(&holes, moved);
        assert_eq!(holes, [40..70, 80..120]);
        // Its padding, new bytes 30..75, is read: what is left.
        let ends = |ranges: Vec<Range<u64>>| -> Vec<(u64, u64)> {
            ranges.into_iter().map(|r| (r.start, r.end)).collect()
        };
        assert_eq!(ends(within(&holes, 30..75)), [(40, 70)]);
        assert_eq!(ends(without(&holes, 30..75)), [(80, 120)]);
    }
}
