//! A `{z}/{x}/{y}.ext` tree, as a web server or CDN origin serves it, with `tiles.json` beside it.
//!
//! Each tile is written to a temporary file in its own directory and renamed into place, or, when
//! it replaces a tile, atomically exchanged with the old file, which a thread beside the writer
//! then removes (`reaper.rs`): a reader or a crash never sees half a tile, nor a missing one. The
//! tiles written since the last sync, then the directories their renames changed, are synced
//! together (every few thousand tiles, and before the journal or the state claims them), so
//! after a power loss the state never claims a tile the disk lacks; a tile renamed or exchanged
//! since the last sync may then be empty until the next run, which redoes it.
//! Syncing in batches rather than each tile before its rename costs a full seed of the 100k-row
//! sample (95k tiles) 1.4 times the wall time of no sync at all, against 2.0 times. A tile whose
//! bytes are already on disk is not rewritten, which keeps modification times (and CDN caches) of
//! unchanged tiles intact.
//!
//! Only the root may be a symbolic link (the operator's choice): a link where a zoom or column
//! directory goes is refused, naming it, so no tile is written or deleted outside the tree; a link
//! where a tile file goes is replaced (or, swept, removed) like any file, never followed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

mod agg;
mod entries;
pub mod kind;
mod leftovers;
pub mod read;
mod reaper;

pub(crate) use agg::refresh_agg_hash;
use entries::{
    found, holds, parse_name, read_dir_if_exists, remove_if_link, tree_dir, Found, LINK_REFUSED,
};
pub(crate) use leftovers::remove_temporaries_of;

use super::agg_hash::{TileDigest, AGG_TILES_HASH_KEY, TILE_DIGEST_KEY};
use super::tilejson::{
    changes_beyond_hash, says_the_same, tilejson, warn_relative_once, TILEJSON_NAME,
};
use super::{
    ChangedList, Finish, OutputSettings, Resume, Sink, SinkReport, Sweep, TilesetMetadata,
};
use crate::coordination::parts::{encode_tiles, PartOf, PartRecord, TREE_FOLDER};
use crate::error::{Error, Result};
use crate::state::journal::FileJournal;
use crate::store::document::{read_capped, DOCUMENT_CAP};
use crate::store::durable;
use crate::tile::{tile_key, Coverage, TileCoord};

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
    /// `(z, x)` of the column directories found to be the tree's own directories, not links.
    checked: HashSet<(u8, u32)>,
    /// Directories whose entries changed (tiles renamed in or removed, directories created) since
    /// they were last synced.
    unsynced: BTreeSet<PathBuf>,
    /// Tiles written since the last sync, whose bytes may not be on disk yet.
    unsynced_files: Vec<PathBuf>,
    /// Whether this run marked the tree's hash stale (it changed, or is changing, a tile).
    hash_marked: bool,
    /// The tree's [`TileDigest`] as this run's changes leave it, when known.
    digest: Option<TileDigest>,
    /// What the tiles this run stored with new bytes cover.
    written: Coverage,
    /// Removes the old files of replaced tiles beside the writer; drained before the sink ends.
    reaper: reaper::Reaper,
    /// Tiles replaced so far, which numbers their temporary files.
    swaps: u64,
    /// This writer's mark in the root, removed when the sink is dropped.
    _mark: leftovers::WriterMark,
}

/// Tiles written between two syncs at most, so the list of them stays small.
const SYNC_BATCH: usize = 4096;

/// The walk's journal, beside the tiles while a full seed runs.
pub const JOURNAL_NAME: &str = ".oar-tiles-journal.sqlite";

/// The marker saying tiles may have changed since `tiles.json` named their hash: a run that
/// changes a tile leaves it first, and only a finish or a refresh that wrote the hash removes it.
pub const STALE_NAME: &str = ".oar-tiles-hash-stale";

/// The job state (change watermark) beside the tiles.
pub const STATE_NAME: &str = ".oar-tiles-state.json";

impl DirectorySink {
    /// Opens (creating if needed) the tree's root and checks that it can be written.
    ///
    /// With `journal` (a fingerprint of the job), finished tiles are journaled beside the tree so an
    /// interrupted full seed can be picked up. With `part`, the sink writes that shard's part: it
    /// journals apart from the other shards and finishes with a part record.
    ///
    /// The caller holds the output's lock (with `part`, that part's): the open removes what writers
    /// that are gone left half written, and marks the tree as this writer's until the sink is
    /// dropped (`leftovers.rs`).
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
                return Err(Error::missing_folder(root, parent));
            }
        }
        std::fs::create_dir_all(root)
            .map_err(|e| Error::output(root, format!("cannot create it: {e}")))?;
        let probe = root.join(format!(".oar-tiles-write-test.{}", std::process::id()));
        durable::create_new(&probe)
            .map_err(|e| Error::output(root, format!("cannot write into it: {e}")))?;
        let _ = std::fs::remove_file(&probe);
        // The caller holds the output's lock (a shard only its part's).
        let mark = leftovers::clear_gone_writers(root, part.is_none())?;
        if settings.tiles_url.is_none() && part.is_none() {
            // A folder does not know the address it will be served from, and a relative tile URL
            // only works for a map page in that very folder.
            let document = root.join(TILEJSON_NAME).display().to_string();
            warn_relative_once(&document, || {
                format!(
                    "{document} names relative tile URLs: a map elsewhere (MapLibre GL JS) finds \
                     no tiles through it; set tiles_url = \"https://HOST/PATH/{{z}}/{{x}}/{{y}}.{}\" \
                     in the tileset to where this folder is served",
                    settings.tile_extension
                )
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
            settings: settings.clone(),
            changes,
            seen: HashSet::new(),
            report: SinkReport::default(),
            state: read_capped(&root.join(STATE_NAME), DOCUMENT_CAP)
                .ok()
                .flatten()
                .and_then(|bytes| String::from_utf8(bytes).ok()),
            journal: journal
                .map(|fingerprint| {
                    let name = match &part {
                        Some(part) => format!(".oar-tiles-journal.{}", part.name("sqlite")),
                        None => JOURNAL_NAME.to_string(),
                    };
                    let path = root.join(name);
                    // SQLite would write through links at the journal's names.
                    for suffix in ["", "-wal", "-shm"] {
                        let mut name = path.as_os_str().to_os_string();
                        name.push(suffix);
                        remove_if_link(Path::new(&name))?;
                    }
                    FileJournal::open(&path, fingerprint)
                })
                .transpose()?,
            part,
            checked: HashSet::new(),
            unsynced: BTreeSet::new(),
            unsynced_files: Vec::new(),
            hash_marked: false,
            digest: agg::trusted_digest(root),
            written: Coverage::default(),
            reaper: reaper::Reaper::default(),
            swaps: 0,
            _mark: mark,
        })
    }

    /// The directory of `tile`'s column, checked to be the tree's own (no link on the way below
    /// the root); created when `create`, else `None` when it does not exist.
    fn column_dir(&mut self, tile: TileCoord, create: bool) -> Result<Option<PathBuf>> {
        let zoom = self.root.join(tile.z().to_string());
        let column = zoom.join(tile.x().to_string());
        if self.checked.contains(&(tile.z(), tile.x())) {
            return Ok(Some(column));
        }
        for (dir, parent) in [(&zoom, &self.root), (&column, &zoom)] {
            match tree_dir(dir, create)? {
                None => return Ok(None),
                // A new directory is durable once its parent is synced.
                Some(true) => {
                    self.unsynced.insert(parent.clone());
                }
                Some(false) => {}
            }
        }
        self.checked.insert((tile.z(), tile.x()));
        Ok(Some(column))
    }

    /// Syncs every directory whose entries changed, so the tiles written (and removed) so far
    /// stay so after a power loss; due before anything claims them.
    fn sync_directories(&mut self) -> Result<()> {
        if self.unsynced_files.is_empty() && self.unsynced.is_empty() {
            return Ok(());
        }
        // One call for the whole batch. A sync of each tile and directory made a full seed of the
        // sample take 1.4-2 times as long as none; with syncfs a z0-12 seed (49,039 tiles, the
        // old tree removed first) took 30.0 s against 30.8 s without any sync (one farm-bench pair).
        if durable::sync_filesystem(&self.root).is_ok() {
            self.unsynced_files.clear();
            self.unsynced.clear();
            return Ok(());
        }
        for file in std::mem::take(&mut self.unsynced_files) {
            durable::sync_file(&file)
                .map_err(|e| Error::output(&file, format!("cannot sync it to disk: {e}")))?;
        }
        for dir in std::mem::take(&mut self.unsynced) {
            durable::sync_dir(&dir)
                .map_err(|e| Error::output(&dir, format!("cannot sync it to disk: {e}")))?;
        }
        Ok(())
    }

    /// Ends a shard's part: its tile list, then (which marks the part finished) its record.
    fn finish_part(&mut self, part: &PartOf, end: &Finish<'_>) -> Result<()> {
        let Some(state) = end.state else {
            // An incomplete shard leaves no record, so `finalize` waits for its retry.
            return Ok(());
        };
        self.sync_directories()?;
        let folder = self.root.join(TREE_FOLDER);
        if tree_dir(&folder, true)? == Some(true) {
            durable::sync_dir(&self.root)
                .map_err(|e| Error::output(&self.root, format!("cannot sync it to disk: {e}")))?;
        }
        // A tree keeps no hashes of its tiles: the list needs only which tiles the part holds.
        let tiles: HashMap<u64, [u8; 16]> = self.seen.iter().map(|key| (*key, [0; 16])).collect();
        let record = PartRecord::new(part, state, end.metadata, tiles.len() as u64);
        for (name, bytes) in [
            (part.name("tiles"), encode_tiles(&tiles)),
            (part.name("json"), record.to_json()),
        ] {
            let path = folder.join(name);
            durable::replace(&path, &bytes)
                .map_err(|e| Error::output(&path, format!("cannot write it: {e}")))?;
        }
        Ok(())
    }

    fn tile_name(&self, tile: TileCoord) -> String {
        format!("{}.{}", tile.y(), self.settings.tile_extension)
    }

    /// Deletes tiles in the finished job's scope that this run did not produce.
    fn sweep(&mut self, metadata: &TilesetMetadata, scope: &Sweep) -> Result<()> {
        let suffix = format!(".{}", self.settings.tile_extension);
        for z in metadata.zooms.levels() {
            let zoom_dir = self.root.join(z.to_string());
            if tree_dir(&zoom_dir, false)?.is_none() {
                continue;
            }
            for x_entry in read_dir_if_exists(&zoom_dir)? {
                let Some(x) = parse_name::<u32>(&x_entry.file_name(), "") else {
                    continue;
                };
                if !scope.meets_column(z, x) {
                    continue;
                }
                if x_entry.file_type().is_ok_and(|t| t.is_symlink()) {
                    return Err(Error::output(x_entry.path(), LINK_REFUSED));
                }
                for y_entry in read_dir_if_exists(&x_entry.path())? {
                    if durable::is_leftover_temporary(&y_entry.file_name()) {
                        // A writer killed mid-tile left it (no other writer works in the sweep's
                        // scope); the tile itself is whole or absent.
                        let path = y_entry.path();
                        std::fs::remove_file(&path)
                            .map_err(|e| Error::output(&path, format!("cannot remove it: {e}")))?;
                        self.unsynced.insert(x_entry.path());
                        continue;
                    }
                    let Some(y) = parse_name::<u32>(&y_entry.file_name(), &suffix) else {
                        continue;
                    };
                    let Ok(tile) = TileCoord::new(z, x, y) else {
                        continue;
                    };
                    if scope.takes(tile, metadata) && !self.seen.contains(&tile_key(tile)) {
                        self.delete_tile(tile)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Sink for DirectorySink {
    fn state(&self) -> Option<String> {
        self.state.clone()
    }

    fn write_tile(&mut self, tile: TileCoord, data: &[u8]) -> Result<()> {
        self.seen.insert(tile_key(tile));
        let column = self
            .column_dir(tile, true)?
            .expect("a column directory is created when missing");
        let path = column.join(self.tile_name(tile));
        let found = found(&path, data, self.digest.is_some());
        if found == Found::Same {
            self.report.unchanged += 1;
            return Ok(());
        }
        self.mark_hash_stale()?;
        self.digest_replace(tile, &found, data);
        let failed =
            |e: std::io::Error| Error::output(&path, format!("cannot write tile {tile}: {e}"));
        if matches!(found, Found::OtherFile(_)) {
            self.swaps += 1;
            if let durable::Swapped::Old(old) =
                durable::swap_unsynced(&path, data, self.swaps).map_err(failed)?
            {
                self.reaper.remove(old);
            }
        } else {
            // The rename replaces a link at the tile's name, never writing through it.
            durable::place_unsynced(&path, data).map_err(failed)?;
        }
        self.unsynced.insert(column);
        self.unsynced_files.push(path);
        if self.unsynced_files.len() >= SYNC_BATCH {
            self.sync_directories()?;
        }
        self.report.changed += 1;
        self.written.add(tile);
        self.changes.record(tile);
        Ok(())
    }

    fn delete_tile(&mut self, tile: TileCoord) -> Result<()> {
        let Some(column) = self.column_dir(tile, false)? else {
            return Ok(());
        };
        let path = column.join(self.tile_name(tile));
        if std::fs::symlink_metadata(&path).is_ok() {
            self.mark_hash_stale()?;
            self.digest_delete(tile, &path);
        }
        // Removes a link at the tile's name itself, not its target.
        match std::fs::remove_file(&path) {
            Ok(()) => {
                self.unsynced.insert(column);
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
        if self.journal.as_ref().is_some_and(FileJournal::commit_due) {
            // A resumed run skips what the journal holds: those tiles must be on disk first.
            self.sync_directories()?;
        }
        match self.journal.as_mut() {
            Some(journal) => journal.record(tile, children, written),
            None => Ok(()),
        }
    }

    fn finish(mut self: Box<Self>, end: Finish<'_>) -> Result<SinkReport> {
        // No temporary holding a replaced tile outlives the run, nor goes unsynced.
        self.reaper.drain();
        if let Some(part) = self.part.clone() {
            self.finish_part(&part, &end)?;
            if let Some(journal) = self.journal.take() {
                journal.remove();
            }
            return Ok(self.report);
        }
        let (metadata, sweep, state) = (end.metadata, end.sweep, end.state);
        if !sweep.is_nothing() {
            self.sweep(metadata, sweep)?;
        }
        // The state claims every tile: they, and the changed-tile list naming them, go to disk first.
        self.sync_directories()?;
        self.changes.sync()?;
        let mut metadata = metadata.clone();
        let named = self.finish_hashes(&mut metadata, end.defer_hash)?;
        let metadata = &metadata;
        let mut document = tilejson(metadata, &self.settings, None);
        if let Some(hash) = named.hash {
            document[AGG_TILES_HASH_KEY] = hash.into();
        }
        if let Some(digest) = named.digest {
            document[TILE_DIGEST_KEY] = digest.to_hex().into();
        }
        let previous = read_capped(&self.root.join(TILEJSON_NAME), DOCUMENT_CAP)
            .ok()
            .flatten();
        let tilejson = serde_json::to_vec_pretty(&document).expect("JSON serializes");
        // A hash left pending is news once `refresh_agg_hash` names it, which records it then.
        let tilejson_changed = match named.pending {
            true => changes_beyond_hash(previous.as_deref(), &document),
            false => !says_the_same(previous.as_deref(), &document, false),
        };
        // A run that changes nothing leaves the document as it is, bytes and all.
        let tilejson_kept = says_the_same(previous.as_deref(), &document, false);
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
            // A document a CDN serves goes to the outbox when its bytes change, as tiles do.
            let changed = match name {
                STATE_NAME => false,
                TILEJSON_NAME => tilejson_changed,
                _ => !holds(&path, &document),
            };
            if changed {
                self.changes.record_object(name);
            }
            if name == TILEJSON_NAME && tilejson_kept {
                continue;
            }
            durable::place(&path, &document)
                .map_err(|e| Error::output(&path, format!("cannot write it: {e}")))?;
        }
        durable::sync_dir(&self.root)
            .map_err(|e| Error::output(&self.root, format!("cannot sync it to disk: {e}")))?;
        if !named.pending {
            self.clear_hash_stale()?;
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
        self.reaper.drain();
        // Every tile already written is complete and correct; the tree stays readable as it is, and
        // the journal keeps what the next run of the same job can skip, once it is on disk.
        if self.sync_directories().is_ok() {
            if let Some(journal) = self.journal.as_mut() {
                let _ = journal.commit();
            }
        }
    }
}

#[cfg(test)]
mod tests;
