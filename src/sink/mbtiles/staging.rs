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
    pub(super) fn start_partial(
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
