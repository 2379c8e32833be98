//! The metadata rows a file's tiles decide: its `agg_tiles_hash` (recorded with the tiles, or
//! refreshed after a deferred finish) and what its tiles cover (zooms, bounds, center).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{params, Connection};

use crate::error::{Error, Result};
use crate::sink::agg_hash::{AggHasher, AGG_TILES_HASH_KEY, HASH_PENDING_KEY};
use crate::sink::{HashRefresh, TilesetMetadata};
use crate::tile::{BBox, Coverage, TileCoord};

/// Computes the file's `agg_tiles_hash` over its `tiles` table and records it in `metadata`, on
/// the caller's connection, so inside the transaction that changed the tiles the hash is never
/// stale in a committed file.
pub(crate) fn record_agg_hash(connection: &Connection) -> rusqlite::Result<String> {
    let never = AtomicBool::new(false);
    // Never cancelled, so always a hash.
    record_agg_hash_unless(connection, &never).map(Option::unwrap_or_default)
}

/// [`record_agg_hash`], giving up (`None`, nothing recorded) as soon as `cancel` is set.
fn record_agg_hash_unless(
    connection: &Connection,
    cancel: &AtomicBool,
) -> rusqlite::Result<Option<String>> {
    let mut hasher = AggHasher::new();
    let mut select = connection.prepare(
        "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles
         ORDER BY zoom_level, tile_column, tile_row",
    )?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let data = row.get_ref(3)?;
        let bytes = match data {
            rusqlite::types::ValueRef::Blob(bytes) | rusqlite::types::ValueRef::Text(bytes) => {
                bytes
            }
            _ => &[],
        };
        hasher.add_row(row.get(0)?, row.get(1)?, row.get(2)?, bytes);
    }
    let hash = hasher.finish();
    connection.execute(
        "INSERT OR REPLACE INTO metadata (name, value) VALUES (?1, ?2)",
        params![AGG_TILES_HASH_KEY, hash],
    )?;
    connection.execute("DELETE FROM metadata WHERE name = ?1", [HASH_PENDING_KEY])?;
    Ok(Some(hash))
}

/// Brings a file's `agg_tiles_hash` up to date when a deferred finish left it out: computed and
/// recorded in one write transaction, which readers share until its commit and no writer can
/// enter, so the hash is of the tiles it is recorded with. Does nothing to a file that names its
/// hash, or is not there; gives up, changing nothing, once `cancel` is set.
pub(crate) fn refresh_agg_hash(path: &Path, cancel: &AtomicBool) -> Result<HashRefresh> {
    if !path.exists() {
        return Ok(HashRefresh::Current);
    }
    let fail = |e: rusqlite::Error| Error::output(path, format!("computing agg_tiles_hash: {e}"));
    let connection = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(fail)?;
    connection
        .busy_timeout(Duration::from_secs(30))
        .map_err(fail)?;
    let current = |connection: &Connection| {
        stored_agg_hash(connection).is_some() && !metadata_holds(connection, HASH_PENDING_KEY)
    };
    if current(&connection) {
        return Ok(HashRefresh::Current);
    }
    connection.execute_batch("BEGIN IMMEDIATE").map_err(fail)?;
    // Read again inside the transaction: a writer may have recorded it in between.
    if current(&connection) {
        connection.execute_batch("ROLLBACK").map_err(fail)?;
        return Ok(HashRefresh::Current);
    }
    match record_agg_hash_unless(&connection, cancel).map_err(fail)? {
        Some(hash) => {
            connection.execute_batch("COMMIT").map_err(fail)?;
            Ok(HashRefresh::Computed(hash))
        }
        None => {
            connection.execute_batch("ROLLBACK").map_err(fail)?;
            Ok(HashRefresh::Cancelled)
        }
    }
}

/// The zooms and box a file's tiles cover: the column and row ranges of each zoom (an index
/// range scan per zoom).
pub(crate) fn tile_coverage(connection: &Connection) -> rusqlite::Result<Coverage> {
    let mut coverage = Coverage::default();
    let mut select = connection.prepare(
        "SELECT zoom_level, min(tile_column), max(tile_column), min(tile_row), max(tile_row)
         FROM tiles GROUP BY zoom_level",
    )?;
    let zooms = select.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for zoom in zooms {
        let (z, min_x, max_x, min_row, max_row) = zoom?;
        // Rows out of range are the container check's to report; they cover nothing here.
        for (x, row) in [(min_x, max_row), (max_x, min_row)] {
            if let Ok(tile) = TileCoord::from_tms(z, x, row) {
                coverage.add(tile);
            }
        }
    }
    Ok(coverage)
}

/// The metadata rows that declare what a file's tiles cover.
pub(crate) const COVERAGE_KEYS: [&str; 4] = ["bounds", "center", "minzoom", "maxzoom"];

/// Rewrites the [`COVERAGE_KEYS`] rows from the file's tiles (of a file whose tiles came from
/// elsewhere: merged parts, an imported store).
pub(crate) fn record_coverage(connection: &Connection) -> rusqlite::Result<()> {
    let coverage = tile_coverage(connection)?;
    let (Some(zooms), Some(bounds)) = (coverage.zooms(), coverage.bbox(&BBox::WORLD)) else {
        return Ok(());
    };
    let mut metadata = TilesetMetadata::bare("", bounds, zooms);
    (metadata.covered, metadata.covered_zooms) = (Some(bounds), Some(zooms));
    for (name, value) in metadata.mbtiles_rows() {
        if COVERAGE_KEYS.contains(&name) {
            connection.execute(
                "INSERT OR REPLACE INTO metadata (name, value) VALUES (?1, ?2)",
                params![name, value],
            )?;
        }
    }
    Ok(())
}

/// What a deferred finish records under [`HASH_PENDING_KEY`].
pub(super) const PENDING_REASON: &str =
    "tiles changed after agg_tiles_hash was computed; it is computed again after the purge";

/// Whether the file's metadata has a row `name`.
pub(super) fn metadata_holds(connection: &Connection, name: &str) -> bool {
    connection
        .query_row("SELECT 1 FROM metadata WHERE name = ?1", [name], |_| Ok(()))
        .is_ok()
}

/// The `agg_tiles_hash` a file records, if any.
pub(crate) fn stored_agg_hash(connection: &Connection) -> Option<String> {
    connection
        .query_row(
            "SELECT value FROM metadata WHERE name = ?1",
            [AGG_TILES_HASH_KEY],
            |row| row.get(0),
        )
        .ok()
}
