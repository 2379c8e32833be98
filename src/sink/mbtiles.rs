//! MBTiles 1.3 output: one SQLite file, tiles in TMS row order, gzip-compressed PBF.
//!
//! The file is built under a `.partial` name beside the target and renamed into place by
//! [`Sink::finish`], so a reader never sees half a tileset and a failed job leaves the previous file as
//! it was. Inserts are batched into transactions so the single writer keeps up with the renderers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use super::{Sink, TilesetMetadata};
use crate::error::{Error, Result};
use crate::tile::TileCoord;

/// MBTiles 1.3 says `application_id` is 0x4d504258 ("MPBX").
const MBTILES_APPLICATION_ID: i32 = 0x4d50_4258;
const BATCH_TILES: usize = 2_000;
const BATCH_AGE: Duration = Duration::from_secs(2);

const SCHEMA: &str = "
    CREATE TABLE metadata (name TEXT NOT NULL, value TEXT);
    CREATE UNIQUE INDEX name ON metadata (name);
    CREATE TABLE tiles (zoom_level INTEGER NOT NULL, tile_column INTEGER NOT NULL,
                        tile_row INTEGER NOT NULL, tile_data BLOB NOT NULL);
    CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);
";

/// MBTiles counts rows from the south (TMS); everything else in oar-tiles counts from the north.
pub fn tms_row(tile: TileCoord) -> u32 {
    (1u32 << tile.z()) - 1 - tile.y()
}

/// A sink writing one MBTiles file.
pub struct MbtilesSink {
    target: PathBuf,
    partial: PathBuf,
    connection: Option<Connection>,
    in_batch: usize,
    batch_started: Instant,
}

impl MbtilesSink {
    /// Starts a new MBTiles file for `target`; the target itself is only replaced on finish.
    pub fn create(target: &Path) -> Result<Self> {
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
        remove_sqlite_files(&partial);
        let fail = |err: rusqlite::Error| {
            Error::output(
                target,
                format!("cannot create {}: {err}", partial.display()),
            )
        };
        let connection = Connection::open(&partial).map_err(fail)?;
        let setup = format!(
            "PRAGMA application_id = {MBTILES_APPLICATION_ID};
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA page_size = 4096;
             {SCHEMA}"
        );
        if let Err(err) = connection.execute_batch(&setup) {
            drop(connection);
            remove_sqlite_files(&partial);
            return Err(fail(err));
        }
        Ok(Self {
            target: target.to_path_buf(),
            partial,
            connection: Some(connection),
            in_batch: 0,
            batch_started: Instant::now(),
        })
    }

    fn connection(&self) -> &Connection {
        self.connection
            .as_ref()
            .expect("the connection lives until finish or abort")
    }

    fn fail(&self, err: impl std::fmt::Display) -> Error {
        Error::output(&self.target, err)
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

    fn write_metadata(&self, metadata: &TilesetMetadata) -> Result<()> {
        let bounds = metadata.bounds;
        let (lon, lat, zoom) = metadata.center();
        let json = serde_json::json!({ "vector_layers": metadata.vector_layers });
        let mut rows: Vec<(&str, String)> = vec![
            ("name", metadata.name.clone()),
            ("format", "pbf".into()),
            ("type", "overlay".into()),
            ("version", "1".into()),
            (
                "bounds",
                format!(
                    "{},{},{},{}",
                    bounds.west, bounds.south, bounds.east, bounds.north
                ),
            ),
            ("center", format!("{lon},{lat},{zoom}")),
            ("minzoom", metadata.zooms.min.to_string()),
            ("maxzoom", metadata.zooms.max.to_string()),
            ("json", json.to_string()),
            (
                "generator",
                format!("oar-tiles {}", env!("CARGO_PKG_VERSION")),
            ),
        ];
        if let Some(description) = &metadata.description {
            rows.push(("description", description.clone()));
        }
        if let Some(attribution) = &metadata.attribution {
            rows.push(("attribution", attribution.clone()));
        }
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
        if self.in_batch == 0 {
            self.connection()
                .execute_batch("BEGIN")
                .map_err(|e| self.fail(e))?;
            self.batch_started = Instant::now();
        }
        self.connection()
            .prepare_cached(
                "INSERT OR REPLACE INTO tiles (zoom_level, tile_column, tile_row, tile_data) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut insert| insert.execute(params![tile.z(), tile.x(), tms_row(tile), data]))
            .map_err(|e| self.fail(format!("writing tile {tile}: {e}")))?;
        self.in_batch += 1;
        if self.in_batch >= BATCH_TILES || self.batch_started.elapsed() >= BATCH_AGE {
            self.commit_batch()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, metadata: &TilesetMetadata) -> Result<()> {
        let result = (|| {
            self.commit_batch()?;
            self.write_metadata(metadata)?;
            // Fold the WAL back in so the output is one self-contained file.
            self.connection()
                .execute_batch("PRAGMA journal_mode = DELETE; PRAGMA optimize;")
                .map_err(|e| self.fail(e))?;
            let connection = self.connection.take().expect("finish runs once");
            connection.close().map_err(|(_, e)| self.fail(e))?;
            std::fs::rename(&self.partial, &self.target).map_err(|e| {
                self.fail(format!(
                    "cannot move {} into place: {e}",
                    self.partial.display()
                ))
            })
        })();
        if result.is_err() {
            self.connection = None;
            remove_sqlite_files(&self.partial);
        }
        result
    }

    fn abort(mut self: Box<Self>) {
        self.connection = None;
        remove_sqlite_files(&self.partial);
    }
}

impl Drop for MbtilesSink {
    fn drop(&mut self) {
        // Neither finished nor aborted (a panic, an early return): leave nothing half-written.
        if self.connection.take().is_some() {
            remove_sqlite_files(&self.partial);
        }
    }
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
    fn the_tms_row_flip_counts_from_the_south() {
        assert_eq!(tms_row(TileCoord::new(0, 0, 0).unwrap()), 0);
        assert_eq!(tms_row(TileCoord::new(3, 1, 0).unwrap()), 7);
        assert_eq!(tms_row(TileCoord::new(3, 1, 6).unwrap()), 1);
    }

    #[test]
    fn a_finished_file_replaces_the_target_and_an_aborted_one_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.mbtiles");
        let mut sink = Box::new(MbtilesSink::create(&target).unwrap());
        sink.write_tile(TileCoord::new(1, 0, 0).unwrap(), b"abc")
            .unwrap();
        assert!(!target.exists());
        sink.finish(&metadata()).unwrap();
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

        let mut sink = Box::new(MbtilesSink::create(&target).unwrap());
        sink.write_tile(TileCoord::new(0, 0, 0).unwrap(), b"x")
            .unwrap();
        sink.abort();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.mbtiles")]);
    }

    #[test]
    fn a_missing_directory_is_reported_before_anything_is_written() {
        let err = MbtilesSink::create(Path::new("/nonexistent-dir/x.mbtiles"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
