//! Reading an MBTiles file: opened read-only for each read, so a reseed's rename is seen at once.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use rusqlite::OptionalExtension;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::sink::read::ReadTiles;
use crate::tile::TileCoord;

/// An MBTiles file opened for reading.
pub struct MbtilesReader(pub PathBuf);

impl ReadTiles for MbtilesReader {
    fn metadata(&self) -> BoxFuture<'_, Result<Value>> {
        std::future::ready(metadata(&self.0)).boxed()
    }

    fn tile_sizes(&self) -> BoxFuture<'_, Result<Vec<(TileCoord, u64)>>> {
        async move {
            let owned = self.0.clone();
            // A scan of every row blocks; `serve` keeps answering tiles meanwhile.
            tokio::task::spawn_blocking(move || sizes(&owned))
                .await
                .map_err(|e| Error::output(&self.0, format!("listing the tiles stopped: {e}")))?
        }
        .boxed()
    }

    fn tile(&self, tile: TileCoord) -> BoxFuture<'_, Result<Option<Vec<u8>>>> {
        async move {
            let owned = self.0.clone();
            // SQLite blocks; a server keeps answering other requests meanwhile.
            tokio::task::spawn_blocking(move || read_tile(&owned, tile))
                .await
                .map_err(|e| Error::output(&self.0, format!("reading {tile}: {e}")))?
        }
        .boxed()
    }

    fn state(&self) -> BoxFuture<'_, Result<Option<String>>> {
        let state = metadata(&self.0).map(|m| m[super::STATE_KEY].as_str().map(str::to_string));
        std::future::ready(state).boxed()
    }

    /// One connection and one prepared statement for all of them, on a blocking thread that
    /// stays a few tiles ahead of the reader.
    fn read_many(
        &self,
        tiles: Vec<TileCoord>,
    ) -> BoxStream<'_, Result<(TileCoord, Option<Vec<u8>>)>> {
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let path = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let read = || -> Result<()> {
                let connection = connection(&path)?;
                let mut statement = connection.prepare(TILE_QUERY).map_err(read_error(&path))?;
                for tile in tiles {
                    let bytes = statement
                        .query_row((tile.z(), tile.x(), tile.tms_row()), |row| {
                            row.get::<_, Vec<u8>>(0)
                        })
                        .optional()
                        .map_err(read_error(&path))?;
                    if sender.blocking_send(Ok((tile, bytes))).is_err() {
                        // The reader stopped listening.
                        return Ok(());
                    }
                }
                Ok(())
            };
            if let Err(e) = read() {
                let _ = sender.blocking_send(Err(e));
            }
        });
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|next| (next, receiver))
        })
        .boxed()
    }
}

const TILE_QUERY: &str =
    "SELECT tile_data FROM tiles WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3";

fn connection(path: &Path) -> Result<rusqlite::Connection> {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(read_error(path))
}

fn read_error(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| {
        match hot_journal(path, &e) {
        Some(journal) => Error::output(
            path,
            format!(
                "an interrupted write's rollback journal lies beside it ({}): a writer was killed \
                 (or is still running) in the middle of a transaction, and the file holds its \
                 half-done pages until the journal is rolled back, which a read-only reader \
                 cannot do. Run the seed again (under the output's lock it rolls the journal back \
                 first), or, when no writer runs, open the file writable once (`sqlite3 FILE \
                 'PRAGMA quick_check'`) to roll it back; never delete the journal, which leaves the \
                 half-done write in the file",
                journal.display()
            ),
        ),
        None => Error::output(path, format!("cannot read it as MBTiles: {e}")),
    }
    }
}

/// The hot rollback journal beside `path` when `e` is SQLite refusing a read-only read because
/// of it ("attempt to write a readonly database": it would have to roll the journal back).
fn hot_journal(path: &Path, e: &rusqlite::Error) -> Option<PathBuf> {
    if e.sqlite_error_code() != Some(rusqlite::ErrorCode::ReadOnly) {
        return None;
    }
    let mut journal = path.as_os_str().to_os_string();
    journal.push("-journal");
    let journal = PathBuf::from(journal);
    std::fs::metadata(&journal)
        .is_ok_and(|m| m.is_file() && m.len() > 0)
        .then_some(journal)
}

fn metadata(path: &Path) -> Result<Value> {
    let fail = read_error(path);
    let connection = connection(path)?;
    let mut metadata = serde_json::Map::new();
    let mut statement = connection
        .prepare("SELECT name, value FROM metadata")
        .map_err(&fail)?;
    let rows = statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
        })
        .map_err(&fail)?;
    for row in rows {
        let (name, value) = row.map_err(&fail)?;
        let value = value.unwrap_or_default();
        let parsed = if name == "json" {
            serde_json::from_str(&value).unwrap_or(Value::String(value))
        } else {
            Value::String(value)
        };
        metadata.insert(name, parsed);
    }
    Ok(Value::Object(metadata))
}

fn sizes(path: &Path) -> Result<Vec<(TileCoord, u64)>> {
    let fail = read_error(path);
    let connection = connection(path)?;
    let mut statement = connection
        .prepare("SELECT zoom_level, tile_column, tile_row, length(tile_data) FROM tiles")
        .map_err(&fail)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, u64>(3)?,
            ))
        })
        .map_err(&fail)?;
    let mut sizes = Vec::new();
    for row in rows {
        let (z, x, tms_row, bytes) = row.map_err(&fail)?;
        let tile = TileCoord::from_tms(z, x, tms_row).map_err(|e| Error::output_caused(path, e))?;
        sizes.push((tile, bytes));
    }
    Ok(sizes)
}

fn read_tile(path: &Path, tile: TileCoord) -> Result<Option<Vec<u8>>> {
    let connection = connection(path)?;
    connection
        .query_row(TILE_QUERY, (tile.z(), tile.x(), tile.tms_row()), |row| {
            row.get::<_, Vec<u8>>(0)
        })
        .optional()
        .map_err(read_error(path))
}
