//! A walk journal in a small SQLite file of its own, for outputs that cannot hold one inside
//! themselves (a directory tree). Each finished tile is recorded after its bytes are stored, in batched
//! transactions, so the journal never claims a tile the output does not have.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use crate::error::{Error, Result};
use crate::tile::{tile_key, TileCoord};

/// What an interrupted walk left for the next run of the same job.
#[derive(Debug, Default)]
pub struct Resume {
    /// Finished tiles (by [`tile_key`]) and which of their children hold rows.
    pub done: HashMap<u64, [bool; 4]>,
    /// The watermark the interrupted run started from.
    pub watermark: Option<String>,
}

/// A tile's children flags as journals store them: bit `i` for child `i` in
/// [`TileCoord::children`] order.
pub fn children_mask(children: [bool; 4]) -> u8 {
    children
        .iter()
        .enumerate()
        .map(|(bit, has)| u8::from(*has) << bit)
        .sum()
}

/// The children flags a [`children_mask`] packs.
pub fn children_from_mask(mask: u8) -> [bool; 4] {
    [0, 1, 2, 3].map(|bit| mask & (1 << bit) != 0)
}

const BATCH: usize = 2_000;
const BATCH_AGE: Duration = Duration::from_secs(2);

/// An open journal.
pub struct FileJournal {
    path: PathBuf,
    connection: Connection,
    in_batch: usize,
    batch_started: Instant,
}

impl FileJournal {
    /// Opens the journal of the job `fingerprint`; one left by another job is replaced.
    pub fn open(path: &Path, fingerprint: &str) -> Result<FileJournal> {
        let fail =
            |e: rusqlite::Error| Error::output(path, format!("cannot open the journal: {e}"));
        if path.exists() {
            let same_job = Connection::open(path)
                .and_then(|c| {
                    c.query_row("SELECT value FROM job WHERE key = 'fingerprint'", [], |r| {
                        r.get::<_, String>(0)
                    })
                })
                .is_ok_and(|stored| stored == fingerprint);
            if !same_job {
                let _ = std::fs::remove_file(path);
            }
        }
        let connection = Connection::open(path).map_err(fail)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS job (key TEXT PRIMARY KEY, value TEXT);
                 CREATE TABLE IF NOT EXISTS done (z INTEGER, x INTEGER, y INTEGER, children INTEGER NOT NULL,
                                                  written INTEGER NOT NULL, PRIMARY KEY (z, x, y)) WITHOUT ROWID;",
            )
            .map_err(fail)?;
        connection
            .execute(
                "INSERT OR IGNORE INTO job (key, value) VALUES ('fingerprint', ?1)",
                [fingerprint],
            )
            .map_err(fail)?;
        Ok(FileJournal {
            path: path.to_path_buf(),
            connection,
            in_batch: 0,
            batch_started: Instant::now(),
        })
    }

    fn fail(&self, err: rusqlite::Error) -> Error {
        Error::output(&self.path, format!("journal: {err}"))
    }

    /// What an interrupted run left, and the tiles it wrote; records `watermark` on a fresh start.
    pub fn begin(&mut self, watermark: Option<&str>) -> Result<(Resume, Vec<TileCoord>)> {
        let stored: Option<String> = self
            .connection
            .query_row("SELECT value FROM job WHERE key = 'watermark'", [], |r| {
                r.get(0)
            })
            .ok();
        if let (None, Some(watermark)) = (&stored, watermark) {
            self.connection
                .execute(
                    "INSERT INTO job (key, value) VALUES ('watermark', ?1)",
                    [watermark],
                )
                .map_err(|e| self.fail(e))?;
        }
        let mut done = HashMap::new();
        let mut written = Vec::new();
        let mut select = self
            .connection
            .prepare("SELECT z, x, y, children, written FROM done")
            .map_err(|e| self.fail(e))?;
        let rows = select
            .query_map([], |r| {
                Ok((
                    r.get::<_, u8>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, u8>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })
            .map_err(|e| self.fail(e))?;
        for row in rows {
            let (z, x, y, mask, was_written) = row.map_err(|e| self.fail(e))?;
            if let Ok(tile) = TileCoord::new(z, x, y) {
                done.insert(tile_key(tile), children_from_mask(mask));
                if was_written {
                    written.push(tile);
                }
            }
        }
        drop(select);
        let resume = Resume {
            done,
            watermark: stored.or(watermark.map(str::to_string)),
        };
        Ok((resume, written))
    }

    /// Records a finished tile; call only once its bytes are stored.
    pub fn record(&mut self, tile: TileCoord, children: [bool; 4], written: bool) -> Result<()> {
        // Decided before the insert, so it is exactly what `commit_due` told the caller.
        let due = self.commit_due();
        if self.in_batch == 0 {
            self.connection
                .execute_batch("BEGIN")
                .map_err(|e| self.fail(e))?;
            self.batch_started = Instant::now();
        }
        let mask = children_mask(children);
        self.connection
            .prepare_cached("INSERT OR REPLACE INTO done (z, x, y, children, written) VALUES (?1, ?2, ?3, ?4, ?5)")
            .and_then(|mut insert| insert.execute(params![tile.z(), tile.x(), tile.y(), mask, written]))
            .map_err(|e| self.fail(e))?;
        self.in_batch += 1;
        if due {
            self.commit()?;
        }
        Ok(())
    }

    /// Whether the next [`FileJournal::record`] commits its batch: a caller whose tiles are not yet
    /// on disk syncs them first, since a resumed run skips every tile a commit holds.
    pub fn commit_due(&self) -> bool {
        self.in_batch + 1 >= BATCH
            || (self.in_batch > 0 && self.batch_started.elapsed() >= BATCH_AGE)
    }

    /// Makes every record so far durable.
    pub fn commit(&mut self) -> Result<()> {
        if self.in_batch > 0 {
            self.connection
                .execute_batch("COMMIT")
                .map_err(|e| self.fail(e))?;
            self.in_batch = 0;
        }
        Ok(())
    }

    /// The job is done: the journal goes.
    pub fn remove(self) {
        let path = self.path.clone();
        drop(self.connection);
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(name));
        }
    }
}
