//! Building an MBTiles file from tiles kept elsewhere (a PMTiles archive downloaded from S3), so a
//! run on a machine without the archive's store can update it in place instead of rendering every
//! tile again.

use super::*;

/// A new MBTiles file being filled, under its `.partial` name until [`Import::finish`]; dropped
/// unfinished, it leaves nothing behind.
pub struct Import {
    target: PathBuf,
    partial: PathBuf,
    connection: Option<Connection>,
}

impl Import {
    /// Starts an empty file that will replace `target`.
    pub fn create(target: &Path) -> Result<Self> {
        let partial = partial_path(target);
        remove_sqlite_files(&partial);
        let fail = |err: rusqlite::Error| {
            remove_sqlite_files(&partial);
            Error::output(
                target,
                format!("cannot create {}: {err}", partial.display()),
            )
        };
        let connection = Connection::open(&partial).map_err(fail)?;
        connection
            .execute_batch(&format!(
                "PRAGMA application_id = {MBTILES_APPLICATION_ID}; PRAGMA journal_mode = OFF;
                 PRAGMA synchronous = OFF; {SCHEMA} BEGIN;"
            ))
            .map_err(fail)?;
        Ok(Import {
            target: target.to_path_buf(),
            partial,
            connection: Some(connection),
        })
    }

    /// Adds one tile's stored bytes.
    pub fn add(&mut self, tile: TileCoord, data: &[u8]) -> Result<()> {
        self.connection
            .as_ref()
            .expect("the connection lives until finish")
            .prepare_cached(
                "INSERT OR REPLACE INTO tiles (zoom_level, tile_column, tile_row, tile_data) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut insert| insert.execute(params![tile.z(), tile.x(), tile.tms_row(), data]))
            .map_err(|e| Error::output(&self.target, format!("importing tile {tile}: {e}")))?;
        Ok(())
    }

    /// Records the job state and any other metadata rows, makes the file durable and moves it into
    /// place.
    pub fn finish(mut self, state: Option<&str>, rows: &[(&str, &str)]) -> Result<()> {
        let connection = self.connection.take().expect("finish runs once");
        let (target, partial) = (&self.target, &self.partial);
        let fail = |e: &dyn std::fmt::Display| {
            remove_sqlite_files(partial);
            Error::output(target, format!("importing: {e}"))
        };
        let state_row = state.map(|state| (STATE_KEY, state));
        for (name, value) in rows.iter().copied().chain(state_row) {
            connection
                .execute(
                    "INSERT OR REPLACE INTO metadata (name, value) VALUES (?1, ?2)",
                    params![name, value],
                )
                .map_err(|e| fail(&e))?;
        }
        // Last, over the rows just added: a merge copies a part's metadata, which declares the
        // zooms and bounds of the part's tiles only, and its hash.
        record_coverage(&connection).map_err(|e| fail(&e))?;
        record_agg_hash(&connection).map_err(|e| fail(&e))?;
        connection
            .execute_batch("COMMIT; PRAGMA journal_mode = DELETE;")
            .map_err(|e| fail(&e))?;
        connection.close().map_err(|(_, e)| fail(&e))?;
        staging::move_into_place(partial, target).map_err(|e| fail(&e))
    }
}

impl Drop for Import {
    fn drop(&mut self) {
        if self.connection.take().is_some() {
            remove_sqlite_files(&self.partial);
        }
    }
}
