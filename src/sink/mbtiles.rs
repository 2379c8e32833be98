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

use super::{ChangedList, Resume, Sink, SinkReport, TilesetMetadata};
use crate::error::{Error, Result};
use crate::state::journal::{children_from_mask, children_mask};
use crate::tile::{in_scope, tile_key, BBox, TileCoord, ZoomRange};

/// MBTiles 1.3 says `application_id` is 0x4d504258 ("MPBX").
const MBTILES_APPLICATION_ID: i32 = 0x4d50_4258;
const BATCH_TILES: usize = 2_000;
const BATCH_AGE: Duration = Duration::from_secs(2);
/// Most tiles a run writes in place. Past SQLite's page cache a transaction holds readers off until
/// it commits, so bigger runs build a copy instead.
const IN_PLACE_TILES: usize = 20_000;

const SCHEMA: &str = "
    CREATE TABLE metadata (name TEXT NOT NULL, value TEXT);
    CREATE UNIQUE INDEX name ON metadata (name);
    CREATE TABLE tiles (zoom_level INTEGER NOT NULL, tile_column INTEGER NOT NULL,
                        tile_row INTEGER NOT NULL, tile_data BLOB NOT NULL);
    CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);
";

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
}

/// Per-connection set-up: WAL for batched writers, and the tiles this run produced (for the sweep).
const SESSION: &str = "
    PRAGMA journal_mode = WAL;
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
const STATE_KEY: &str = "oar_tiles_state";

impl MbtilesSink {
    /// Starts the new state of `target`: a copy of the existing file, or an empty one. The target itself
    /// is only replaced on finish.
    ///
    /// With `journal` (a fingerprint of the job), the file also keeps a journal of the walk, and a
    /// `.partial` file left by an interrupted run of the same job is picked up instead of started anew.
    /// Without one, an existing target is opened in place until [`Sink::prepare`] learns the run is
    /// too big for that.
    pub fn create(target: &Path, changes: ChangedList, journal: Option<&str>) -> Result<Self> {
        let partial = partial_path(target);
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(Error::output(
                    target,
                    format!("directory {} does not exist", dir.display()),
                ));
            }
        }
        if target.is_dir() {
            return Err(Error::output(target, "is a directory"));
        }
        if let Some(sink) = Self::resume_partial(target, &partial, &changes, journal) {
            return Ok(sink);
        }
        remove_sqlite_files(&partial);
        if journal.is_none() && target.exists() {
            return Self::open_in_place(target, partial, changes);
        }
        Self::start_partial(target, partial, changes, journal)
    }

    /// Opens the target itself; nothing is written until the first tile begins the transaction.
    fn open_in_place(target: &Path, partial: PathBuf, changes: ChangedList) -> Result<Self> {
        let fail = |err: rusqlite::Error| Error::output(target, format!("cannot open it: {err}"));
        let connection = Connection::open(target).map_err(fail)?;
        connection.execute_batch(IN_PLACE_SESSION).map_err(fail)?;
        if !is_mbtiles(&connection) {
            return Err(Error::output(target, NOT_MBTILES));
        }
        let state = read_state(&connection);
        Ok(Self {
            target: target.to_path_buf(),
            partial,
            connection: Some(connection),
            fresh: false,
            changes,
            report: SinkReport::default(),
            in_batch: 0,
            batch_started: Instant::now(),
            state,
            journaled: false,
            in_place: true,
        })
    }

    /// Starts a `.partial` file: a copy of the target, or a new file.
    fn start_partial(
        target: &Path,
        partial: PathBuf,
        changes: ChangedList,
        journal: Option<&str>,
    ) -> Result<Self> {
        let fresh = !target.exists();
        if !fresh {
            std::fs::copy(target, &partial).map_err(|e| {
                Error::output(
                    target,
                    format!("cannot copy it to {}: {e}", partial.display()),
                )
            })?;
        }
        let fail = |err: rusqlite::Error| {
            remove_sqlite_files(&partial);
            Error::output(
                target,
                format!("cannot prepare {}: {err}", partial.display()),
            )
        };
        let connection = Connection::open(&partial).map_err(fail)?;
        let schema = if fresh { SCHEMA } else { "" };
        let setup = format!(
            "PRAGMA application_id = {MBTILES_APPLICATION_ID};
             {SESSION}
             {schema}"
        );
        if let Err(err) = connection.execute_batch(&setup) {
            drop(connection);
            return Err(fail(err));
        }
        if !fresh && !is_mbtiles(&connection) {
            drop(connection);
            remove_sqlite_files(&partial);
            return Err(Error::output(target, NOT_MBTILES));
        }
        if let Some(fingerprint) = journal {
            let created = connection.execute_batch(JOURNAL_SCHEMA).and_then(|()| {
                connection.execute(
                    "INSERT INTO oar_tiles_job (key, value) VALUES ('fingerprint', ?1), ('fresh', ?2)",
                    params![fingerprint, if fresh { "1" } else { "0" }],
                )
            });
            if let Err(err) = created {
                drop(connection);
                return Err(fail(err));
            }
        }
        let state = read_state(&connection);
        Ok(Self {
            target: target.to_path_buf(),
            partial,
            connection: Some(connection),
            fresh,
            changes,
            report: SinkReport::default(),
            in_batch: 0,
            batch_started: Instant::now(),
            state,
            journaled: journal.is_some(),
            in_place: false,
        })
    }

    /// Opens the `.partial` file an interrupted run of the same job left, if there is one.
    fn resume_partial(
        target: &Path,
        partial: &Path,
        changes: &ChangedList,
        journal: Option<&str>,
    ) -> Option<Self> {
        let fingerprint = journal?;
        if !partial.exists() {
            return None;
        }
        let connection = Connection::open(partial).ok()?;
        let job = |key: &str| -> Option<String> {
            connection
                .query_row(
                    "SELECT value FROM oar_tiles_job WHERE key = ?1",
                    [key],
                    |r| r.get(0),
                )
                .ok()
        };
        if job("fingerprint").as_deref() != Some(fingerprint) {
            tracing::info!("{} is from another job; starting over", partial.display());
            return None;
        }
        let fresh = job("fresh").as_deref() == Some("1");
        let setup = format!(
            "{SESSION}
             INSERT INTO seen SELECT zoom_level, tile_column, tile_row FROM oar_tiles_journal WHERE written = 1;"
        );
        connection.execute_batch(&setup).ok()?;
        let state = read_state(&connection);
        Some(Self {
            target: target.to_path_buf(),
            partial: partial.to_path_buf(),
            connection: Some(connection),
            fresh,
            changes: changes.clone(),
            report: SinkReport::default(),
            in_batch: 0,
            batch_started: Instant::now(),
            state,
            journaled: true,
            in_place: false,
        })
    }

    /// Commits what was written and closes the file, keeping it for the next run to resume.
    fn keep_for_resume(&mut self) {
        if self.commit_batch().is_err() {
            tracing::warn!(
                "could not save the last tiles of {}",
                self.partial.display()
            );
        }
        if let Some(connection) = self.connection.take() {
            let _ = connection.close();
        }
    }

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

    /// The existing file's zooms and bounds, so that a seed of part of the pyramid does not shrink them.
    fn widen(&self, metadata: &TilesetMetadata) -> TilesetMetadata {
        let mut widened = metadata.clone();
        if self.fresh {
            return widened;
        }
        let value = |name: &str| -> Option<String> {
            self.connection()
                .query_row("SELECT value FROM metadata WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .ok()
        };
        let zoom = |name: &str| value(name).and_then(|v| v.parse::<u8>().ok());
        if let (Some(min), Some(max)) = (zoom("minzoom"), zoom("maxzoom")) {
            if let Ok(old) = ZoomRange::new(min, max) {
                widened.zooms = ZoomRange::new(
                    old.min.min(metadata.zooms.min),
                    old.max.max(metadata.zooms.max),
                )
                .unwrap_or(metadata.zooms);
            }
        }
        if let Some(Ok(old)) = value("bounds").map(|b| b.parse::<BBox>()) {
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

    fn sweep(&mut self, metadata: &TilesetMetadata) -> Result<()> {
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
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })
                .map_err(|e| self.fail(e))?;
            for row in rows {
                let (z, x, tms) = row.map_err(|e| self.fail(e))?;
                if let Ok(tile) = TileCoord::from_tms(z, x, tms) {
                    if in_scope(tile, metadata.zooms, &metadata.bounds) {
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
        let metadata = &self.widen(metadata);
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

    fn state(&self) -> Option<String> {
        self.state.clone()
    }

    fn finish(
        mut self: Box<Self>,
        metadata: &TilesetMetadata,
        sweep: bool,
        state: Option<&str>,
    ) -> Result<SinkReport> {
        let result = (|| {
            // The sweep, the metadata and the state commit together with the last tiles.
            self.begin_batch()?;
            if sweep {
                self.sweep(metadata)?;
            }
            if self.journaled {
                self.connection()
                    .execute_batch("DROP TABLE IF EXISTS oar_tiles_journal; DROP TABLE IF EXISTS oar_tiles_job;")
                    .map_err(|e| self.fail(e))?;
            }
            self.write_metadata(metadata)?;
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
                // Fold the WAL back in so the output is one self-contained file.
                self.connection()
                    .execute_batch("PRAGMA journal_mode = DELETE; PRAGMA optimize;")
                    .map_err(|e| self.fail(e))?;
            }
            let connection = self.connection.take().expect("finish runs once");
            connection.close().map_err(|(_, e)| self.fail(e))?;
            if !self.in_place {
                std::fs::rename(&self.partial, &self.target).map_err(|e| {
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

const NOT_MBTILES: &str = "exists but is not an MBTiles file (no tiles and metadata tables)";

fn is_mbtiles(connection: &Connection) -> bool {
    connection
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('tiles', 'metadata')",
            [],
            |r| r.get::<_, i64>(0),
        )
        .is_ok_and(|n| n == 2)
}

/// The job state the file's metadata recorded when it was last finished.
fn read_state(connection: &Connection) -> Option<String> {
    connection
        .query_row(
            "SELECT value FROM metadata WHERE name = ?1",
            [STATE_KEY],
            |r| r.get(0),
        )
        .ok()
}

/// The name a file is built under before it is moved into place.
pub fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    target.with_file_name(name)
}

fn remove_sqlite_files(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tile::{BBox, ZoomRange};

    fn metadata() -> TilesetMetadata {
        TilesetMetadata {
            name: "t".into(),
            description: None,
            attribution: None,
            bounds: BBox::WORLD,
            zooms: ZoomRange::new(0, 3).unwrap(),
            vector_layers: vec![],
        }
    }


    #[test]
    fn a_finished_file_replaces_the_target_and_an_aborted_one_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.mbtiles");
        let mut sink = open(&target);
        sink.write_tile(TileCoord::new(1, 0, 0).unwrap(), b"abc")
            .unwrap();
        assert!(!target.exists());
        sink.finish(&metadata(), true, None).unwrap();
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
        sink.finish(&metadata(), true, Some("w1")).unwrap();
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
        let report = sink.finish(&metadata(), false, Some("w2")).unwrap();
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
        sink.finish(&metadata(), true, Some("w2")).unwrap();
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
}
