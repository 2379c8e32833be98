//! A `{z}/{x}/{y}.ext` tree, as a web server or CDN origin serves it, with `tiles.json` beside it.
//!
//! Each tile is written to a temporary file in its own directory and renamed over the old one, so a
//! reader or a crash never sees half a tile. A tile whose bytes are already on disk is not rewritten,
//! which keeps modification times (and CDN caches) of unchanged tiles intact.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::shards::{encode_tiles, PartOf, PartRecord, TREE_FOLDER};
use super::tilejson::{tilejson, TILEJSON_NAME};
use super::{ChangedList, Finish, OutputSettings, Resume, Sink, SinkReport, TilesetMetadata};
use crate::error::{Error, Result};
use crate::state::journal::FileJournal;
use crate::tile::{in_scope, tile_key, TileCoord};

/// Name of tippecanoe's metadata document, which GDAL's MVT driver reads.
pub const TIPPECANOE_METADATA_NAME: &str = "metadata.json";

/// A sink writing a directory tree.
pub struct DirectorySink {
    root: PathBuf,
    settings: OutputSettings,
    changes: ChangedList,
    seen: HashSet<u64>,
    report: SinkReport,
    state: Option<String>,
    journal: Option<FileJournal>,
    /// Set when the sink writes one shard's part of the tree.
    part: Option<PartOf>,
}

/// The walk's journal, beside the tiles while a full seed runs.
pub const JOURNAL_NAME: &str = ".oar-tiles-journal.sqlite";

/// The job state (change watermark) beside the tiles.
pub const STATE_NAME: &str = ".oar-tiles-state.json";

impl DirectorySink {
    /// Opens (creating if needed) the tree's root and checks that it can be written.
    ///
    /// With `journal` (a fingerprint of the job), finished tiles are journaled beside the tree so an
    /// interrupted full seed can be picked up. With `part`, the sink writes that shard's part: it
    /// journals apart from the other shards and finishes with a part record.
    pub fn create(
        root: &Path,
        settings: &OutputSettings,
        changes: ChangedList,
        journal: Option<&str>,
        part: Option<PartOf>,
    ) -> Result<Self> {
        if root.exists() && !root.is_dir() {
            return Err(Error::output(root, "exists and is not a directory"));
        }
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                return Err(Error::output(
                    root,
                    format!("directory {} does not exist", parent.display()),
                ));
            }
        }
        std::fs::create_dir_all(root)
            .map_err(|e| Error::output(root, format!("cannot create it: {e}")))?;
        let probe = root.join(format!(".oar-tiles-write-test.{}", std::process::id()));
        std::fs::write(&probe, b"")
            .map_err(|e| Error::output(root, format!("cannot write into it: {e}")))?;
        let _ = std::fs::remove_file(&probe);
        if settings.tiles_url.is_none() && part.is_none() {
            // A folder does not know the address it will be served from, and a relative tile URL
            // only works for a map page in that very folder.
            tracing::warn!(
                "{} names relative tile URLs: a map elsewhere (MapLibre GL JS) finds no tiles \
                 through it; set tiles_url = \"https://HOST/PATH/{{z}}/{{x}}/{{y}}.{}\" in the \
                 tileset to where this folder is served",
                root.join(TILEJSON_NAME).display(),
                settings.tile_extension
            );
        }
        Ok(Self {
            root: root.to_path_buf(),
            settings: settings.clone(),
            changes,
            seen: HashSet::new(),
            report: SinkReport::default(),
            state: std::fs::read_to_string(root.join(STATE_NAME)).ok(),
            journal: journal
                .map(|fingerprint| {
                    let name = match &part {
                        Some(part) => format!(".oar-tiles-journal.{}", part.name("sqlite")),
                        None => JOURNAL_NAME.to_string(),
                    };
                    FileJournal::open(&root.join(name), fingerprint)
                })
                .transpose()?,
            part,
        })
    }

    /// Ends a shard's part: its tile list, then (which marks the part finished) its record.
    fn finish_part(&self, part: &PartOf, end: &Finish<'_>) -> Result<()> {
        let Some(state) = end.state else {
            // An incomplete shard leaves no record, so `finalize` waits for its retry.
            return Ok(());
        };
        let folder = self.root.join(TREE_FOLDER);
        std::fs::create_dir_all(&folder)
            .map_err(|e| Error::output(&folder, format!("cannot create it: {e}")))?;
        // A tree keeps no hashes of its tiles: the list needs only which tiles the part holds.
        let tiles: HashMap<u64, [u8; 16]> = self.seen.iter().map(|key| (*key, [0; 16])).collect();
        let record = PartRecord::new(part, state, end.metadata, tiles.len() as u64);
        for (name, bytes) in [
            (part.name("tiles"), encode_tiles(&tiles)),
            (part.name("json"), record.to_json()),
        ] {
            let path = folder.join(name);
            write_atomically(&path, &bytes)
                .map_err(|e| Error::output(&path, format!("cannot write it: {e}")))?;
        }
        Ok(())
    }

    fn tile_path(&self, tile: TileCoord) -> PathBuf {
        self.root
            .join(tile.z().to_string())
            .join(tile.x().to_string())
            .join(format!("{}.{}", tile.y(), self.settings.tile_extension))
    }

    /// Deletes tiles in the finished job's scope that this run did not produce.
    fn sweep(&mut self, metadata: &TilesetMetadata) -> Result<()> {
        let suffix = format!(".{}", self.settings.tile_extension);
        for z in metadata.zooms.levels() {
            let zoom_dir = self.root.join(z.to_string());
            for x_entry in read_dir_if_exists(&zoom_dir)? {
                let Some(x) = parse_name::<u32>(&x_entry.file_name(), "") else {
                    continue;
                };
                for y_entry in read_dir_if_exists(&x_entry.path())? {
                    let Some(y) = parse_name::<u32>(&y_entry.file_name(), &suffix) else {
                        continue;
                    };
                    let Ok(tile) = TileCoord::new(z, x, y) else {
                        continue;
                    };
                    if in_scope(tile, metadata.zooms, &metadata.bounds)
                        && !self.seen.contains(&tile_key(tile))
                    {
                        self.delete_tile(tile)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn read_dir_if_exists(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::output(dir, format!("cannot list it: {e}"))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(Error::output(dir, format!("cannot list it: {err}"))),
    }
}

fn parse_name<T: std::str::FromStr>(name: &std::ffi::OsStr, suffix: &str) -> Option<T> {
    name.to_str()?.strip_suffix(suffix)?.parse().ok()
}

/// Writes `data` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("tile paths have a parent");
    let name = path
        .file_name()
        .expect("tile paths have a file name")
        .to_string_lossy();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(data)?;
        file.flush()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

impl Sink for DirectorySink {
    fn state(&self) -> Option<String> {
        self.state.clone()
    }

    fn write_tile(&mut self, tile: TileCoord, data: &[u8]) -> Result<()> {
        self.seen.insert(tile_key(tile));
        let path = self.tile_path(tile);
        if std::fs::read(&path).is_ok_and(|existing| existing == data) {
            self.report.unchanged += 1;
            return Ok(());
        }
        let fail =
            |e: std::io::Error| Error::output(&path, format!("cannot write tile {tile}: {e}"));
        std::fs::create_dir_all(path.parent().expect("tile paths have a parent")).map_err(fail)?;
        write_atomically(&path, data).map_err(fail)?;
        self.report.changed += 1;
        self.changes.record(tile);
        Ok(())
    }

    fn delete_tile(&mut self, tile: TileCoord) -> Result<()> {
        let path = self.tile_path(tile);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                self.report.deleted += 1;
                self.changes.record(tile);
                Ok(())
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(Error::output(
                &path,
                format!("cannot delete tile {tile}: {err}"),
            )),
        }
    }

    fn begin_journal(&mut self, watermark: Option<&str>) -> Result<Option<Resume>> {
        let Some(journal) = self.journal.as_mut() else {
            return Ok(None);
        };
        let (resume, written) = journal.begin(watermark)?;
        self.seen.extend(written.into_iter().map(tile_key));
        Ok(Some(resume))
    }

    fn journal(&mut self, tile: TileCoord, children: [bool; 4], written: bool) -> Result<()> {
        match self.journal.as_mut() {
            Some(journal) => journal.record(tile, children, written),
            None => Ok(()),
        }
    }

    fn finish(mut self: Box<Self>, end: Finish<'_>) -> Result<SinkReport> {
        if let Some(part) = self.part.clone() {
            self.finish_part(&part, &end)?;
            if let Some(journal) = self.journal.take() {
                journal.remove();
            }
            return Ok(self.report);
        }
        let (metadata, sweep, state) = (end.metadata, end.sweep, end.state);
        if sweep {
            self.sweep(metadata)?;
        }
        let tilejson = serde_json::to_vec_pretty(&tilejson(metadata, &self.settings, None))
            .expect("JSON serializes");
        // tippecanoe's metadata.json beside it lets GDAL and tippecanoe's tools read the tree too.
        let rows: serde_json::Map<String, serde_json::Value> = metadata
            .mbtiles_rows()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.into()))
            .collect();
        let legacy = serde_json::to_vec_pretty(&rows).expect("JSON serializes");
        let mut documents = vec![
            (TILEJSON_NAME, tilejson),
            (TIPPECANOE_METADATA_NAME, legacy),
        ];
        if let Some(state) = state {
            documents.push((STATE_NAME, state.as_bytes().to_vec()));
        }
        for (name, document) in documents {
            let path = self.root.join(name);
            write_atomically(&path, &document)
                .map_err(|e| Error::output(&path, format!("cannot write it: {e}")))?;
        }
        if let Some(journal) = self.journal.take() {
            journal.remove();
        }
        Ok(self.report)
    }

    fn adopt(&mut self, tiles: &HashMap<u64, [u8; 16]>) -> Result<()> {
        self.seen.extend(tiles.keys());
        Ok(())
    }

    fn abort(mut self: Box<Self>) {
        // Every tile already written is complete and correct; the tree stays readable as it is, and
        // the journal keeps what the next run of the same job can skip.
        if let Some(journal) = self.journal.as_mut() {
            let _ = journal.commit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tile::{BBox, ZoomRange};

    fn metadata(zooms: ZoomRange) -> TilesetMetadata {
        TilesetMetadata {
            name: "t".into(),
            description: None,
            attribution: None,
            bounds: BBox::WORLD,
            zooms,
            vector_layers: vec![],
        }
    }

    #[test]
    fn tiles_land_in_an_xyz_tree_and_unchanged_ones_are_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tiles");
        let list = dir.path().join("changed.txt");
        let tile = TileCoord::new(3, 5, 2).unwrap();
        let mut sink = Box::new(
            DirectorySink::create(
                &root,
                &OutputSettings::default(),
                ChangedList::create(&list).unwrap(),
                None,
                None,
            )
            .unwrap(),
        );
        sink.write_tile(tile, b"abc").unwrap();
        sink.write_tile(tile, b"abc").unwrap();
        let report = sink
            .finish(Finish {
                metadata: &metadata(ZoomRange::new(0, 3).unwrap()),
                sweep: true,
                state: None,
            })
            .unwrap();
        assert_eq!(std::fs::read(root.join("3/5/2.pbf")).unwrap(), b"abc");
        assert_eq!((report.changed, report.unchanged), (1, 1));
        assert!(root.join("tiles.json").exists());
    }

    #[test]
    fn a_full_seed_sweeps_tiles_it_no_longer_produces_within_its_zooms() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tiles");
        let changes = ChangedList::create(&dir.path().join("changed.txt")).unwrap();
        let settings = OutputSettings::default();
        let mut first = Box::new(
            DirectorySink::create(&root, &settings, ChangedList::disabled(), None, None).unwrap(),
        );
        for (z, x, y) in [(1, 0, 0), (1, 1, 1), (2, 3, 3)] {
            first
                .write_tile(TileCoord::new(z, x, y).unwrap(), b"x")
                .unwrap();
        }
        first
            .finish(Finish {
                metadata: &metadata(ZoomRange::new(0, 2).unwrap()),
                sweep: true,
                state: None,
            })
            .unwrap();
        let mut second =
            Box::new(DirectorySink::create(&root, &settings, changes.clone(), None, None).unwrap());
        second
            .write_tile(TileCoord::new(1, 0, 0).unwrap(), b"x")
            .unwrap();
        let report = second
            .finish(Finish {
                metadata: &metadata(ZoomRange::new(1, 1).unwrap()),
                sweep: true,
                state: None,
            })
            .unwrap();
        changes.close().unwrap();
        assert_eq!(
            report,
            SinkReport {
                changed: 0,
                unchanged: 1,
                deleted: 1
            }
        );
        assert!(!root.join("1/1/1.pbf").exists());
        assert!(
            root.join("2/3/3.pbf").exists(),
            "zoom 2 was outside the second run"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("changed.txt")).unwrap(),
            "1/1/1\n"
        );
    }
}
