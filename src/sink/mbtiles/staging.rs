//! Where an MBTiles run writes: in place in the existing file (one transaction, for small runs), or
//! into a `.partial` copy that replaces the file when finished, and picked up again after an
//! interruption of the same job.

use super::*;

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
                return Err(Error::missing_folder(target, dir));
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
    pub(super) fn open_in_place(
        target: &Path,
        partial: PathBuf,
        changes: ChangedList,
    ) -> Result<Self> {
        let fail = |err: rusqlite::Error| Error::output(target, format!("cannot open it: {err}"));
        let connection = Connection::open(target).map_err(fail)?;
        connection.execute_batch(IN_PLACE_SESSION).map_err(fail)?;
        if !is_mbtiles(&connection) {
            return Err(Error::output(target, NOT_MBTILES));
        }
        if !tiles_are_unique(&connection).map_err(|e| Error::output(target, e))? {
            // Repairing the index is a rewrite of the table: the copy does it, not the live file.
            drop(connection);
            return Self::start_partial(target, partial, changes, None);
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
            written: Coverage::default(),
        })
    }

    /// Starts a `.partial` file: a copy of the target, or a new file.
    pub(super) fn start_partial(
        target: &Path,
        partial: PathBuf,
        changes: ChangedList,
        journal: Option<&str>,
    ) -> Result<Self> {
        let fresh = !target.exists();
        if !fresh {
            copy_settled(target, &partial)?;
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
        // One transaction, so one commit (and its syncs) rather than one per statement: a
        // partitioned tileset starts a file per value, thousands of them.
        let setup = format!(
            "{SESSION}
             BEGIN;
             PRAGMA application_id = {MBTILES_APPLICATION_ID};
             {schema}
             COMMIT;"
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
        if !fresh {
            let repaired = tiles_are_unique(&connection)
                .and_then(|unique| {
                    if unique {
                        Ok(())
                    } else {
                        make_tiles_unique(&connection)
                    }
                })
                .map_err(|e| Error::output(target, e));
            if let Err(err) = repaired {
                drop(connection);
                remove_sqlite_files(&partial);
                return Err(err);
            }
        }
        if let Some(fingerprint) = journal {
            let created = connection
                .execute_batch(&format!("BEGIN; {JOURNAL_SCHEMA}"))
                .and_then(|()| {
                    connection.execute(
                        "INSERT INTO oar_tiles_job (key, value) VALUES ('fingerprint', ?1), ('fresh', ?2)",
                        params![fingerprint, if fresh { "1" } else { "0" }],
                    )
                })
                .and_then(|_| connection.execute_batch("COMMIT"));
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
            written: Coverage::default(),
        })
    }

    /// Opens the `.partial` file an interrupted run of the same job left, if there is one.
    pub(super) fn resume_partial(
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
            written: Coverage::default(),
        })
    }

    /// Commits what was written and closes the file, keeping it for the next run to resume.
    pub(super) fn keep_for_resume(&mut self) {
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
}

pub(super) const NOT_MBTILES: &str =
    "exists but is not an MBTiles file (no tiles and metadata tables)";

pub(super) fn is_mbtiles(connection: &Connection) -> bool {
    connection
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('tiles', 'metadata')",
            [],
            |r| r.get::<_, i64>(0),
        )
        .is_ok_and(|n| n == 2)
}

/// Whether `tiles` is a table with a unique index on a tile's coordinates, which every
/// `INSERT OR REPLACE` of a tile relies on: without it a reseed would add a second copy of each tile
/// it writes. An error says what `tiles` is when it cannot be written at all (a view over the
/// deduplicated layout some tools write).
pub(super) fn tiles_are_unique(connection: &Connection) -> std::result::Result<bool, Unfit> {
    let kind: String = connection
        .query_row(
            "SELECT type FROM sqlite_master WHERE name = 'tiles'",
            [],
            |r| r.get(0),
        )
        .map_err(Unfit::Schema)?;
    if kind != "table" {
        return Err(Unfit::NotATable(kind));
    }
    connection
        .query_row(
            "SELECT EXISTS (
                 SELECT 1 FROM pragma_index_list('tiles') AS l
                 WHERE l.\"unique\"
                   AND (SELECT count(*) FROM pragma_index_info(l.name)) = 3
                   AND (SELECT count(*) FROM pragma_index_info(l.name)
                        WHERE name IN ('zoom_level', 'tile_column', 'tile_row')) = 3)",
            [],
            |r| r.get(0),
        )
        .map_err(Unfit::Indexes)
}

/// Why an existing MBTiles file cannot be updated in place as it is.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unfit {
    /// Its schema cannot be read.
    #[error("cannot read its schema: {0}")]
    Schema(#[source] rusqlite::Error),
    /// `tiles` is a view (the deduplicated layout) or something else.
    #[error(
        "its `tiles` is a {0}, not a table; oar-tiles updates only MBTiles files with a `tiles` \
         table (seed into a new file instead)"
    )]
    NotATable(String),
    /// Its indexes cannot be read.
    #[error("cannot read the indexes of its `tiles` table: {0}")]
    Indexes(#[source] rusqlite::Error),
    /// The unique index it lacks cannot be added.
    #[error("cannot add a unique tile index: {0}")]
    Index(#[source] rusqlite::Error),
}

/// Gives a copy's `tiles` table the unique index it lacks, keeping the last stored copy of a tile
/// that is there more than once (the one a reader that takes the first row from the index sees).
fn make_tiles_unique(connection: &Connection) -> std::result::Result<(), Unfit> {
    tracing::warn!(
        "the tiles table has no unique index on (zoom_level, tile_column, tile_row); adding one \
         to the new file, keeping one copy of each tile"
    );
    connection
        .execute_batch(concat!(
            "BEGIN;
             DELETE FROM tiles WHERE rowid NOT IN
                 (SELECT max(rowid) FROM tiles GROUP BY zoom_level, tile_column, tile_row);
             DROP INDEX IF EXISTS tile_index;",
            super::tile_index!(),
            "COMMIT;"
        ))
        .map_err(Unfit::Index)
}

/// Brings `target` to what SQLite itself would read, by opening it as SQLite: a hot rollback
/// journal left by a writer that died is played back, and a WAL is checkpointed into the file. A
/// byte copy of the file alone would otherwise hold half a transaction, and a file renamed over
/// `target` would be paired with the journal, which SQLite would then play into it.
///
/// The returned connection holds a read transaction, so no writer commits while the file is
/// copied.
fn settle(target: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(target)?;
    connection.busy_timeout(Duration::from_secs(30))?;
    let mode: String = connection.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if mode.eq_ignore_ascii_case("wal") {
        connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    // The first read takes the shared lock, and taking it rolls a hot journal back.
    connection.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")?;
    Ok(connection)
}

/// Copies the database `target` holds (not merely its file) to `partial`.
fn copy_settled(target: &Path, partial: &Path) -> Result<()> {
    let reading = settle(target).map_err(|e| {
        Error::output(
            target,
            format!("cannot open it to copy it (is a hot journal beside it that it may not roll back?): {e}"),
        )
    })?;
    let copied = std::fs::copy(target, partial);
    drop(reading);
    copied.map_err(|e| {
        remove_sqlite_files(partial);
        Error::output(
            target,
            format!("cannot copy it to {}: {e}", partial.display()),
        )
    })?;
    Ok(())
}

/// Moves a finished `partial` file over `target`. Whatever journal, WAL or shared-memory file the
/// old `target` has beside it is settled first and then removed, since SQLite would take any of
/// them for the new file's.
pub(super) fn move_into_place(partial: &Path, target: &Path) -> std::io::Result<()> {
    if target.exists() {
        if let Err(err) = settle(target) {
            tracing::warn!(
                "{}: could not settle the file being replaced ({err}); removing its journal files",
                target.display()
            );
        }
        for suffix in ["-journal", "-wal", "-shm"] {
            let mut name = target.as_os_str().to_os_string();
            name.push(suffix);
            match std::fs::remove_file(PathBuf::from(name)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
    }
    // Synced, renamed, and the directory synced: after a power loss the name holds the new file.
    crate::store::durable::rename(partial, target)
}

/// The job state the file's metadata recorded when it was last finished.
pub(super) fn read_state(connection: &Connection) -> Option<String> {
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

/// Removes an SQLite file with its WAL, shared-memory and rollback journal files, if there are any.
pub fn remove_sqlite_files(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}
