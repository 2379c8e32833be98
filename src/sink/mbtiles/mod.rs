//! MBTiles 1.3 output: one SQLite file, tiles in TMS row order, gzip-compressed PBF.
//!
//! A seed builds the file under a `.partial` name beside the target (starting from a copy of the
//! existing file, if any) and renames it into place in [`Sink::finish`], so a reader never sees half a
//! tileset and a failed job leaves the previous file as it was. Inserts are batched into transactions
//! so the single writer keeps up with the renderers.
//!
//! A run that writes a known, small set of tiles into an existing file (a reseed, a tile list) instead
//! changes the file in place in one SQLite transaction: copying a large file would cost more than the
//! tiles, and the rollback journal gives the same all-or-nothing outcome.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

pub mod check;
mod import;
pub mod kind;
pub mod merge;
mod metadata;
pub mod read;
mod staging;

pub use import::Import;
use metadata::PENDING_REASON;
pub(crate) use metadata::{
    record_agg_hash, record_coverage, refresh_agg_hash, stored_agg_hash, tile_coverage,
    COVERAGE_KEYS,
};
pub use staging::{partial_path, remove_sqlite_files};

use super::agg_hash::{AGG_TILES_HASH_KEY, HASH_PENDING_KEY};
use super::{ChangedList, Finish, Resume, Sink, SinkReport, Sweep, TilesetMetadata};
use crate::error::{Error, Result};
use crate::state::journal::{children_from_mask, children_mask};
use crate::tile::{tile_key, BBox, Coverage, TileCoord, ZoomRange};

/// MBTiles 1.3 says `application_id` is 0x4d504258 ("MPBX").
const MBTILES_APPLICATION_ID: i32 = 0x4d50_4258;
const BATCH_TILES: usize = 2_000;
const BATCH_AGE: Duration = Duration::from_secs(2);
/// Most tiles a run writes in place. Past SQLite's page cache a transaction holds readers off until
/// it commits, so bigger runs build a copy instead.
const IN_PLACE_TILES: usize = 20_000;

/// The MBTiles 1.3 tables, as every file this tool creates holds them.
const SCHEMA: &str = concat!(
    "CREATE TABLE metadata (name TEXT NOT NULL, value TEXT);
     CREATE UNIQUE INDEX name ON metadata (name);
     CREATE TABLE tiles (zoom_level INTEGER NOT NULL, tile_column INTEGER NOT NULL,
                         tile_row INTEGER NOT NULL, tile_data BLOB NOT NULL);",
    tile_index!(),
);

/// The unique index readers look tiles up by (also added to copies of files that lack it).
macro_rules! tile_index {
    () => {
        "CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);"
    };
}
use tile_index;

/// A sink writing one MBTiles file.
pub struct MbtilesSink {
    target: PathBuf,
    partial: PathBuf,
    connection: Option<Connection>,
    /// Whether the file started empty, so there is nothing to compare with or sweep.
    fresh: bool,
    changes: ChangedList,
    report: SinkReport,
    in_batch: usize,
    batch_started: Instant,
    state: Option<String>,
    /// Whether the file keeps a journal, and so survives an interruption to be resumed.
    journaled: bool,
    /// Whether the target itself is being changed, in one transaction, rather than a `.partial` copy.
    in_place: bool,
    /// The tiles this run stored new or different bytes for, so a finish in place that deleted
    /// nothing widens what the file declared instead of reading its tiles.
    written: Coverage,
}

/// Per-connection set-up: a rollback journal, and the tiles this run produced (for the sweep). Only
/// the writer uses a `.partial` file, so WAL's concurrent readers buy nothing, and WAL wrote every
/// page twice (into the log, then at checkpoints into the file): on the 100k sample 79,000 writes
/// and 31,000 reads against about 20,000 writes with the rollback journal. A batch's tiles go
/// mostly to fresh pages, which the rollback journal need not copy. TRUNCATE spares re-creating the
/// journal file at each commit.
const SESSION: &str = "
    PRAGMA journal_mode = TRUNCATE;
    PRAGMA synchronous = NORMAL;
    CREATE TEMP TABLE seen (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,
                            PRIMARY KEY (zoom_level, tile_column, tile_row)) WITHOUT ROWID;
";

/// Set-up for changing the target in place: the rollback journal it already has, a page cache big
/// enough that a reseed's changes rarely spill before commit, and patience with readers at commit.
const IN_PLACE_SESSION: &str = "
    PRAGMA cache_size = -65536;
    PRAGMA busy_timeout = 30000;
    CREATE TEMP TABLE seen (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,
                            PRIMARY KEY (zoom_level, tile_column, tile_row)) WITHOUT ROWID;
";

/// The walk's journal, kept inside the `.partial` file so it commits together with the tiles.
const JOURNAL_SCHEMA: &str = "
    CREATE TABLE oar_tiles_job (key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE oar_tiles_journal (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,
                                    children INTEGER NOT NULL, written INTEGER NOT NULL,
                                    PRIMARY KEY (zoom_level, tile_column, tile_row)) WITHOUT ROWID;
";

/// The metadata key under which the job state (change watermark) is kept.
pub const STATE_KEY: &str = "oar_tiles_state";

impl MbtilesSink {
    fn connection(&self) -> &Connection {
        self.connection
            .as_ref()
            .expect("the connection lives until finish or abort")
    }

    /// Lets go of the file: an uncommitted transaction on the target rolls back; a `.partial` file
    /// is removed.
    fn discard(&mut self) {
        self.connection = None;
        if !self.in_place {
            remove_sqlite_files(&self.partial);
        }
    }

    fn fail(&self, err: impl std::fmt::Display) -> Error {
        Error::output(&self.target, err)
    }

    fn begin_batch(&mut self) -> Result<()> {
        if self.in_batch == 0 {
            self.connection()
                .execute_batch("BEGIN")
                .map_err(|e| self.fail(e))?;
            self.batch_started = Instant::now();
        }
        self.in_batch += 1;
        Ok(())
    }

    fn end_batch_if_due(&mut self) -> Result<()> {
        if self.in_place {
            return Ok(());
        }
        if self.in_batch >= BATCH_TILES || self.batch_started.elapsed() >= BATCH_AGE {
            self.commit_batch()?;
        }
        Ok(())
    }

    fn commit_batch(&mut self) -> Result<()> {
        if self.in_batch > 0 {
            self.connection()
                .execute_batch("COMMIT")
                .map_err(|e| self.fail(e))?;
            self.in_batch = 0;
        }
        Ok(())
    }

    /// What the file's last finish declared its tiles cover: its `minzoom`/`maxzoom` and its
    /// `bounds` rows, each when there and read as such (none for a file that started empty).
    fn declared(&self) -> (Option<ZoomRange>, Option<BBox>) {
        if self.fresh {
            return (None, None);
        }
        let value = |name: &str| -> Option<String> {
            self.connection()
                .query_row("SELECT value FROM metadata WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .ok()
        };
        let zoom = |name: &str| value(name).and_then(|v| v.parse::<u8>().ok());
        let zooms = zoom("minzoom")
            .zip(zoom("maxzoom"))
            .and_then(|(min, max)| ZoomRange::new(min, max).ok());
        (zooms, value("bounds").and_then(|b| b.parse::<BBox>().ok()))
    }

    /// `metadata` widened by what the file declared, so that a seed of part of the pyramid does
    /// not shrink its zooms and bounds.
    fn widen(
        metadata: &TilesetMetadata,
        (zooms, bounds): (Option<ZoomRange>, Option<BBox>),
    ) -> TilesetMetadata {
        let mut widened = metadata.clone();
        if let Some(old) = zooms {
            widened.zooms = ZoomRange::new(
                old.min.min(metadata.zooms.min),
                old.max.max(metadata.zooms.max),
            )
            .unwrap_or(metadata.zooms);
        }
        if let Some(old) = bounds {
            let new = metadata.bounds;
            widened.bounds = BBox::new(
                old.west.min(new.west),
                old.south.min(new.south),
                old.east.max(new.east),
                old.north.max(new.north),
            )
            .unwrap_or(new);
        }
        widened
    }

    fn sweep(&mut self, metadata: &TilesetMetadata, scope: &Sweep) -> Result<()> {
        if self.fresh {
            return Ok(());
        }
        let mut stale = Vec::new();
        {
            let mut select = self
                .connection()
                .prepare(
                    "SELECT zoom_level, tile_column, tile_row FROM tiles t
                     WHERE zoom_level BETWEEN ?1 AND ?2 AND NOT EXISTS (
                       SELECT 1 FROM seen s WHERE s.zoom_level = t.zoom_level
                         AND s.tile_column = t.tile_column AND s.tile_row = t.tile_row)",
                )
                .map_err(|e| self.fail(e))?;
            let rows = select
                .query_map(params![metadata.zooms.min, metadata.zooms.max], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(|e| self.fail(e))?;
            for row in rows {
                let (z, x, tms) = row.map_err(|e| self.fail(e))?;
                if let Ok(tile) = TileCoord::from_tms(z, x, tms) {
                    if scope.takes(tile, metadata) {
                        stale.push(tile);
                    }
                }
            }
        }
        for tile in stale {
            self.delete_tile(tile)?;
        }
        Ok(())
    }

    fn write_metadata(&self, metadata: &TilesetMetadata) -> Result<()> {
        let declared = self.declared();
        let mut metadata = Self::widen(metadata, declared);
        match declared {
            // Reading every zoom's ranges scans the tiles' index (the deepest zoom alone: 57 ms at 1M
            // rows): a watch cycle's change of one tile would cost more than its render. Only a deletion can shrink what tiles cover.
            (Some(zooms), Some(bounds)) if self.in_place && self.report.deleted == 0 => {
                metadata.cover_widened(zooms, bounds, &self.written);
            }
            _ => {
                let coverage = tile_coverage(self.connection())
                    .map_err(|e| self.fail(format!("reading what the tiles cover: {e}")))?;
                metadata.cover(&coverage);
            }
        }
        let metadata = &metadata;
        let rows = metadata.mbtiles_rows();
        let connection = self.connection();
        let mut insert = connection
            .prepare("INSERT OR REPLACE INTO metadata (name, value) VALUES (?1, ?2)")
            .map_err(|e| self.fail(e))?;
        for (name, value) in rows {
            insert
                .execute(params![name, value])
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }
}

impl Sink for MbtilesSink {
    fn state(&self) -> Option<String> {
        self.state.clone()
    }

    fn write_tile(&mut self, tile: TileCoord, data: &[u8]) -> Result<()> {
        self.begin_batch()?;
        let key = params![tile.z(), tile.x(), tile.tms_row()];
        let connection = self.connection();
        let fail =
            |e: rusqlite::Error| Error::output(&self.target, format!("writing tile {tile}: {e}"));
        let unchanged = !self.fresh
            && {
                connection
                .prepare_cached("INSERT OR IGNORE INTO seen (zoom_level, tile_column, tile_row) VALUES (?1, ?2, ?3)")
                .and_then(|mut insert| insert.execute(key))
                .map_err(fail)?;
                connection
                .prepare_cached(
                    "SELECT tile_data = ?4 FROM tiles WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3",
                )
                .and_then(|mut select| select.query_row(params![tile.z(), tile.x(), tile.tms_row(), data], |r| r.get(0)))
                .unwrap_or(false)
            };
        if unchanged {
            self.report.unchanged += 1;
        } else {
            connection
                .prepare_cached(
                    "INSERT OR REPLACE INTO tiles (zoom_level, tile_column, tile_row, tile_data) VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut insert| insert.execute(params![tile.z(), tile.x(), tile.tms_row(), data]))
                .map_err(fail)?;
            self.report.changed += 1;
            self.written.add(tile);
            self.changes.record(tile);
        }
        self.end_batch_if_due()
    }

    fn delete_tile(&mut self, tile: TileCoord) -> Result<()> {
        self.begin_batch()?;
        let deleted = self
            .connection()
            .prepare_cached(
                "DELETE FROM tiles WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3",
            )
            .and_then(|mut delete| delete.execute(params![tile.z(), tile.x(), tile.tms_row()]))
            .map_err(|e| self.fail(format!("deleting tile {tile}: {e}")))?;
        if deleted > 0 {
            self.report.deleted += 1;
            self.changes.record(tile);
        }
        self.end_batch_if_due()
    }

    fn finish(mut self: Box<Self>, end: Finish<'_>) -> Result<SinkReport> {
        let (metadata, sweep, state) = (end.metadata, end.sweep, end.state);
        let result = (|| {
            // The sweep, the metadata and the state commit together with the last tiles.
            self.begin_batch()?;
            if !sweep.is_nothing() {
                self.sweep(metadata, sweep)?;
            }
            if self.journaled {
                self.connection()
                    .execute_batch("DROP TABLE IF EXISTS oar_tiles_journal; DROP TABLE IF EXISTS oar_tiles_job;")
                    .map_err(|e| self.fail(e))?;
            }
            self.write_metadata(metadata)?;
            // A run in place that changed nothing leaves the tiles, and so their hash, as the
            // last finish recorded it; otherwise (a copy may hold an interrupted run's tiles) the
            // hash is computed afresh, or, deferred, removed with the tiles that made it wrong,
            // so the file never claims a hash its tiles do not have.
            let unchanged = self.in_place && self.report.changed == 0 && self.report.deleted == 0;
            if end.defer_hash && !unchanged {
                self.connection()
                    .execute("DELETE FROM metadata WHERE name = ?1", [AGG_TILES_HASH_KEY])
                    .and_then(|_| {
                        self.connection().execute(
                            "INSERT OR REPLACE INTO metadata (name, value) VALUES (?1, ?2)",
                            params![HASH_PENDING_KEY, PENDING_REASON],
                        )
                    })
                    .map_err(|e| self.fail(e))?;
            } else if !end.defer_hash
                && (!unchanged || stored_agg_hash(self.connection()).is_none())
            {
                record_agg_hash(self.connection())
                    .map_err(|e| self.fail(format!("computing agg_tiles_hash: {e}")))?;
            }
            if let Some(state) = state {
                self.connection()
                    .execute(
                        "INSERT OR REPLACE INTO metadata (name, value) VALUES (?1, ?2)",
                        params![STATE_KEY, state],
                    )
                    .map_err(|e| self.fail(e))?;
            }
            self.commit_batch()?;
            if !self.in_place {
                // No journal file is left beside the output.
                self.connection()
                    .execute_batch("PRAGMA journal_mode = DELETE; PRAGMA optimize;")
                    .map_err(|e| self.fail(e))?;
            }
            let connection = self.connection.take().expect("finish runs once");
            connection.close().map_err(|(_, e)| self.fail(e))?;
            if !self.in_place {
                staging::move_into_place(&self.partial, &self.target).map_err(|e| {
                    self.fail(format!(
                        "cannot move {} into place: {e}",
                        self.partial.display()
                    ))
                })?;
            }
            Ok(self.report)
        })();
        if result.is_err() {
            self.discard();
        }
        result
    }

    fn abort(mut self: Box<Self>) {
        if self.journaled {
            self.keep_for_resume();
            return;
        }
        self.discard();
    }

    fn prepare(&mut self, planned: Option<usize>) -> Result<()> {
        if !self.in_place || planned.is_some_and(|tiles| tiles <= IN_PLACE_TILES) {
            return Ok(());
        }
        self.connection = None;
        let partial = std::mem::take(&mut self.partial);
        *self = Self::start_partial(&self.target, partial, self.changes.clone(), None)?;
        Ok(())
    }

    fn begin_journal(&mut self, watermark: Option<&str>) -> Result<Option<Resume>> {
        if !self.journaled {
            return Ok(None);
        }
        let fail =
            |e: rusqlite::Error| Error::output(&self.target, format!("reading the journal: {e}"));
        let connection = self.connection();
        let stored: Option<String> = connection
            .query_row(
                "SELECT value FROM oar_tiles_job WHERE key = 'watermark'",
                [],
                |r| r.get(0),
            )
            .ok();
        if stored.is_none() {
            if let Some(watermark) = watermark {
                connection
                    .execute(
                        "INSERT OR REPLACE INTO oar_tiles_job (key, value) VALUES ('watermark', ?1)",
                        [watermark],
                    )
                    .map_err(fail)?;
            }
        }
        let mut done = std::collections::HashMap::new();
        let mut select = connection
            .prepare("SELECT zoom_level, tile_column, tile_row, children FROM oar_tiles_journal")
            .map_err(fail)?;
        let rows = select
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, u8>(3)?,
                ))
            })
            .map_err(fail)?;
        for row in rows {
            let (z, x, tms, mask) = row.map_err(fail)?;
            if let Ok(tile) = TileCoord::from_tms(z, x, tms) {
                done.insert(tile_key(tile), children_from_mask(mask));
            }
        }
        Ok(Some(Resume {
            done,
            watermark: stored.or(watermark.map(str::to_string)),
        }))
    }

    fn journal(&mut self, tile: TileCoord, children: [bool; 4], written: bool) -> Result<()> {
        if !self.journaled {
            return Ok(());
        }
        self.begin_batch()?;
        let mask = children_mask(children);
        self.connection()
            .prepare_cached(
                "INSERT OR REPLACE INTO oar_tiles_journal (zoom_level, tile_column, tile_row, children, written)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut insert| insert.execute(params![tile.z(), tile.x(), tile.tms_row(), mask, written]))
            .map_err(|e| self.fail(format!("journaling tile {tile}: {e}")))?;
        self.end_batch_if_due()
    }
}

impl Drop for MbtilesSink {
    fn drop(&mut self) {
        // Neither finished nor aborted (a panic, an early return): keep what a journal can resume,
        // leave nothing half-written otherwise.
        if self.connection.is_some() {
            if self.journaled {
                self.keep_for_resume();
            } else {
                self.discard();
            }
        }
    }
}

#[cfg(test)]
mod tests;
