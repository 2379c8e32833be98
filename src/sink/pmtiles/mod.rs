//! PMTiles v3 output: one clustered archive per tileset, for a CDN origin or a static host.
//!
//! An archive is written once, front to back, in tile-id (Hilbert) order, while a walk produces
//! tiles in another order and a reseed touches a few of them. So the tiles go into an MBTiles
//! *store* beside the archive (`NAME.pmtiles.store.mbtiles`), which is what the MBTiles output
//! already is: the journal an interrupted run resumes from, and the place a reseed updates in
//! place. When a run finishes, the archive is written again from the store in tile-id order (the
//! stored gzip bytes are copied as they are, never compressed twice), into `NAME.pmtiles.partial`,
//! and renamed into place. The store is the output's state: keep it beside the archive.
//!
//! An archive on S3 ([`s3`]) is the same thing on this machine, uploaded when it changed.

use std::path::{Path, PathBuf};

use pmtiles::{Compression, PmTilesWriter, TileType};
use rusqlite::{params, OpenFlags};

mod append;
pub mod check;
pub mod kind;
mod layout;
pub mod part;
pub mod read;
pub mod remote;
mod skeleton;
mod tile_store;
pub mod versions;

use super::agg_hash::{AGG_TILES_HASH_KEY, HASH_PENDING_KEY};
use super::mbtiles::{partial_path, stored_agg_hash, Import, MbtilesSink};
use super::{ChangedList, Finish, OutputSettings, Resume, Sink, SinkReport, TilesetMetadata};
use crate::error::{Error, Result};
use crate::tile::{Coverage, TileCoord};

/// Store metadata key naming the state the archive was last written at.
const EXPORTED_KEY: &str = "oar_tiles_pmtiles_exported";

/// Writes one PMTiles archive through its MBTiles store.
pub struct PmtilesSink {
    store: Box<MbtilesSink>,
    archive: PathBuf,
    changes: ChangedList,
    /// What the archive was last written from: the store's state then and the metadata, when
    /// that write completed and the archive is still there.
    written_from: Option<String>,
    /// Whether a rewritten archive is named in the changed list (not when it is a working copy
    /// that another sink uploads).
    announce: bool,
    /// Whether each archive written is also published as a version (`pmtiles_versions`), with a
    /// pointer to it.
    versions: Option<versions::Publication>,
    /// Whether a rewritten archive may keep its tile data and take the changed tiles before it
    /// (an archive in a store that rebuilds objects from their ranges).
    in_place: Option<append::InPlace>,
    /// Fills the store's placeholders from the archive's bytes (downloaded from the store that
    /// holds them) when the archive must be written whole; see `skeleton.rs`.
    fill: Option<Filler>,
}

pub use append::{Appended, InPlace};
use layout::{pmtiles_id, ARCHIVE_STATE_KEY};
use tile_store::open_store;
pub use tile_store::store_path;

/// Fills the placeholders of the store at the path given (`skeleton.rs`) from the archive's
/// bytes, wherever they are kept.
pub type Filler = Box<dyn FnOnce(&Path) -> Result<()> + Send>;

impl PmtilesSink {
    /// Opens (or starts) the archive's store; the archive itself is written when the run finishes.
    pub fn create(archive: &Path, changes: ChangedList, journal: Option<&str>) -> Result<Self> {
        let store_file = store_path(archive);
        let written_from = if archive.exists() && store_file.exists() {
            exported_state(&store_file)?
        } else {
            None
        };
        let store = MbtilesSink::create(&store_file, changes.clone(), journal)?;
        Ok(PmtilesSink {
            store: Box::new(store),
            archive: archive.to_path_buf(),
            changes,
            written_from,
            announce: true,
            versions: None,
            in_place: None,
            fill: None,
        })
    }

    /// Publishes each archive written as a version too, if the tileset asks for it.
    pub fn versioned(self, settings: &OutputSettings) -> Self {
        PmtilesSink {
            versions: versions::Publication::of(settings),
            ..self
        }
    }

    /// Finishes the store and, unless it is current, writes the archive again; says whether it did,
    /// and what of it is new when it was written in place.
    pub fn finish_archive(
        self,
        finish: Finish<'_>,
    ) -> Result<(SinkReport, bool, Option<Appended>)> {
        let PmtilesSink {
            store,
            archive,
            changes,
            written_from,
            announce,
            versions,
            in_place,
            fill,
        } = self;
        let before = store.state();
        // The archive is written from every stored tile anyway: its hash costs little more.
        let report = store.finish(Finish {
            defer_hash: false,
            ..finish
        })?;
        let store = store_path(&archive);
        let unchanged = report.changed == 0 && report.deleted == 0;
        // An archive written before archives carried the hash has another marker, so it is
        // written again, now with it.
        let (mut placeholders, mut hash) = hash_as_left(&store, unchanged)?;
        let pending = |placeholders: bool, hash: &Option<String>| placeholders && hash.is_none();
        let previous = export_marker(
            before.as_deref(),
            finish.metadata,
            hash.as_deref(),
            pending(placeholders, &hash),
        );
        // The archive is current when its last write saw the store as this run found it (a crash
        // between the store's commit and the archive's rename leaves another marker) and this run
        // changed no tile: then it is not written (nor, on a CDN, invalidated) again.
        let current = unchanged && written_from.as_deref() == Some(previous.as_str());
        if !current && placeholders {
            // The declared hash vouches only for the archive as it was (an interrupted run may
            // have changed tiles of the store since).
            hash = None;
        }
        let mut appended = None;
        if !current {
            if let Some(policy) = in_place {
                let json = metadata_json(
                    finish.metadata,
                    finish.state,
                    hash.as_deref(),
                    pending(placeholders, &hash),
                );
                appended =
                    append::write_in_place(&store, &archive, finish.metadata, &json, policy)?;
            }
            if appended.is_none() {
                if placeholders {
                    // Written whole, the archive needs every tile's bytes.
                    let fill = fill.ok_or_else(|| {
                        Error::output(
                            &archive,
                            "its tile store holds only the directories of an archive kept \
                             elsewhere, and it must be written whole: run `seed --force`",
                        )
                    })?;
                    fill(&store)?;
                    placeholders = false;
                    hash = stored_hash(&store)?;
                }
                export(
                    &store,
                    &archive,
                    finish.metadata,
                    finish.state,
                    hash.as_deref(),
                )?;
            } else if placeholders {
                skeleton::record_declared_hash(&store, None)?;
            }
            if announce {
                changes.record_object(&archive.display().to_string());
            }
        }
        // Before the marker: a crash in between makes the next run write the archive and
        // publish it again.
        if let Some(publication) = &versions {
            versions::publish_local(&archive, publication, finish.metadata, &changes, !current)?;
        }
        let marker = export_marker(
            finish.state,
            finish.metadata,
            hash.as_deref(),
            pending(placeholders, &hash),
        );
        record_export(&store, &marker)?;
        Ok((report, !current, appended))
    }
}

/// Writes `archive` whole from its store, first filling the store's placeholders with `fill`
/// (`skeleton.rs`), and records that it did: for an archive written in place that its store did
/// not take (`remote.rs`).
pub(super) fn write_whole(
    archive: &Path,
    metadata: &TilesetMetadata,
    state: Option<&str>,
    fill: Filler,
) -> Result<()> {
    let store = store_path(archive);
    if skeleton::holds_placeholders(&store)? {
        fill(&store)?;
    }
    let hash = stored_hash(&store)?;
    export(&store, archive, metadata, state, hash.as_deref())?;
    record_export(
        &store,
        &export_marker(state, metadata, hash.as_deref(), false),
    )
}

/// The marker of an archive written from the store at `state` with `metadata` and tiles hashing
/// to `hash` (or whose hash is `pending`).
fn export_marker(
    state: Option<&str>,
    metadata: &TilesetMetadata,
    hash: Option<&str>,
    pending: bool,
) -> String {
    format!(
        "{}\n{}",
        state.unwrap_or(""),
        metadata_json(metadata, None, hash, pending)
    )
}

/// Whether the store holds placeholders (`skeleton.rs`), and the hash of its tiles as a run that
/// changed tiles or not (`unchanged`) leaves them: the one the store recorded; for a store of
/// placeholders, which cannot hash its tiles, the archive's declared hash while nothing changes,
/// and none (pending) once something did.
fn hash_as_left(store: &Path, unchanged: bool) -> Result<(bool, Option<String>)> {
    let placeholders = skeleton::holds_placeholders(store)?;
    let hash = match (placeholders, unchanged) {
        (false, _) => stored_hash(store)?,
        (true, true) => skeleton::declared_hash(store)?,
        (true, false) => None,
    };
    Ok((placeholders, hash))
}

/// The `agg_tiles_hash` the store recorded when it finished.
fn stored_hash(store: &Path) -> Result<Option<String>> {
    let connection = open_store(store, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(stored_agg_hash(&connection))
}

impl Sink for PmtilesSink {
    fn write_tile(&mut self, tile: TileCoord, data: &[u8]) -> Result<()> {
        self.store.write_tile(tile, data)
    }

    fn delete_tile(&mut self, tile: TileCoord) -> Result<()> {
        self.store.delete_tile(tile)
    }

    fn state(&self) -> Option<String> {
        // Without its archive, a store would let a reseed skip tiles that exist nowhere else.
        self.archive.exists().then(|| self.store.state()).flatten()
    }

    fn begin_journal(&mut self, watermark: Option<&str>) -> Result<Option<Resume>> {
        self.store.begin_journal(watermark)
    }

    fn prepare(&mut self, planned: Option<usize>) -> Result<()> {
        self.store.prepare(planned)
    }

    fn journal(&mut self, tile: TileCoord, children: [bool; 4], written: bool) -> Result<()> {
        self.store.journal(tile, children, written)
    }

    fn finish(self: Box<Self>, finish: Finish<'_>) -> Result<SinkReport> {
        self.finish_archive(finish).map(|(report, _, _)| report)
    }

    fn adopt_parts(
        self: Box<Self>,
        parts: &crate::coordination::shards::ShardStore,
        specs: &[crate::job::ShardSpec],
    ) -> Result<(Box<dyn Sink>, u64)> {
        let (sink, tiles) = PmtilesSink::adopt_parts(*self, parts, specs)?;
        Ok((Box::new(sink), tiles))
    }

    fn abort(self: Box<Self>) {
        let PmtilesSink { store, .. } = *self;
        store.abort();
    }
}

fn exported_state(store: &Path) -> Result<Option<String>> {
    let connection = open_store(store, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let value = connection
        .query_row(
            "SELECT value FROM metadata WHERE name = ?1",
            params![EXPORTED_KEY],
            |row| row.get(0),
        )
        .ok();
    Ok(value)
}

fn record_export(store: &Path, state: &str) -> Result<()> {
    open_store(store, OpenFlags::SQLITE_OPEN_READ_WRITE)?
        .execute(
            "INSERT OR REPLACE INTO metadata (name, value) VALUES (?1, ?2)",
            params![EXPORTED_KEY, state],
        )
        .map_err(|e| Error::output(store, e))?;
    Ok(())
}

/// Builds the store of `archive` from the archive itself (downloaded from a bucket onto a machine
/// that has no store), so that a reseed renders only what changed; from a skeleton
/// (`skeleton.rs`, `placeholders`), each tile is a placeholder. The store records `state` (the
/// archive's own when `None`) and that the archive is current. Returns the state recorded.
pub async fn rebuild_store(
    archive: &Path,
    state: Option<String>,
    placeholders: bool,
) -> Result<Option<String>> {
    // The reader inflates directories and metadata under its cap: an archive downloaded from a
    // bucket is as untrusted as one `inspect` is given.
    let reader = read::PmtilesReader::open(archive).await?;
    let mut metadata = reader.archive_metadata()?;
    let own_state = metadata
        .as_object_mut()
        .and_then(|object| object.remove(ARCHIVE_STATE_KEY))
        .and_then(|value| value.as_str().map(str::to_string));
    let state = state.or(own_state);
    let store = store_path(archive);
    let mut import = Import::create(&store)?;
    if placeholders {
        reader.each_tile_id(|tile| import.add(tile, &[]))?;
    } else {
        reader.each_tile(|tile, data| import.add(tile, &data))?;
    }
    // The marker `export_marker` would give for this archive's metadata, so that a run that
    // changes nothing leaves the archive (and its upload) alone.
    let marker = format!("{}\n{metadata}", state.as_deref().unwrap_or(""));
    import.finish(state.as_deref(), &[(EXPORTED_KEY, marker.as_str())])?;
    if placeholders {
        let declared = metadata[AGG_TILES_HASH_KEY].as_str();
        skeleton::record_declared_hash(&store, declared)?;
    }
    Ok(state)
}

/// The archive's JSON metadata: what TileJSON and MBTiles record, plus the job state and the
/// tiles' `agg_tiles_hash` (the archive's tiles are the store's, byte for byte), or that it is
/// `pending` (an archive updated from a skeleton, `skeleton.rs`).
fn metadata_json(
    metadata: &TilesetMetadata,
    state: Option<&str>,
    hash: Option<&str>,
    pending: bool,
) -> String {
    let mut json = serde_json::json!({
        "name": metadata.name,
        "format": "pbf",
        "type": "overlay",
        "vector_layers": metadata.vector_layers,
        "generator": format!("oar-tiles {}", env!("CARGO_PKG_VERSION")),
    });
    for (key, value) in [
        ("description", &metadata.description),
        ("attribution", &metadata.attribution),
    ] {
        if let Some(value) = value {
            json[key] = value.clone().into();
        }
    }
    if let Some(state) = state {
        json[ARCHIVE_STATE_KEY] = state.into();
    }
    if let Some(hash) = hash {
        json[AGG_TILES_HASH_KEY] = hash.into();
    }
    if pending {
        json[HASH_PENDING_KEY] = skeleton::PENDING_REASON.into();
    }
    json.to_string()
}

/// Writes the archive from the store: tiles in tile-id order, identical tiles stored once.
fn export(
    store: &Path,
    archive: &Path,
    metadata: &TilesetMetadata,
    state: Option<&str>,
    hash: Option<&str>,
) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| Error::output(archive, e.to_string());
    let connection = open_store(store, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // One entry per tile (id and row), never the tiles themselves: memory stays flat.
    let mut order: Vec<(u64, i64)> = Vec::new();
    // The header's zooms and bounds are what the store holds, which a run over fewer zooms or a
    // smaller area than an earlier one does not shrink.
    let mut coverage = Coverage::default();
    {
        let mut statement = connection
            .prepare("SELECT rowid, zoom_level, tile_column, tile_row FROM tiles")
            .map_err(|e| fail(&e))?;
        let mut rows = statement.query([]).map_err(|e| fail(&e))?;
        while let Some(row) = rows.next().map_err(|e| fail(&e))? {
            let (rowid, z, x, tms): (i64, i64, i64, i64) = (
                row.get(0).map_err(|e| fail(&e))?,
                row.get(1).map_err(|e| fail(&e))?,
                row.get(2).map_err(|e| fail(&e))?,
                row.get(3).map_err(|e| fail(&e))?,
            );
            let tile = TileCoord::from_tms(z, x, tms).map_err(|e| fail(&e))?;
            coverage.add(tile);
            order.push((pmtiles_id(tile)?, rowid));
        }
    }
    order.sort_unstable();
    let mut metadata = metadata.clone();
    metadata.cover(&coverage);
    let metadata = &metadata;

    let partial = partial_path(archive);
    let file = std::fs::File::create(&partial)
        .map_err(|e| Error::output(&partial, format!("cannot create it: {e}")))?;
    let (lon, lat, zoom) = metadata.center();
    let (bounds, zooms) = (metadata.shown_bounds(), metadata.shown_zooms());
    let written = (|| -> Result<()> {
        let mut writer = PmTilesWriter::new(TileType::Mvt)
            .precompressed(Compression::Gzip)
            .min_zoom(zooms.min)
            .max_zoom(zooms.max)
            .bounds(bounds.west, bounds.south, bounds.east, bounds.north)
            .center(lon, lat)
            .center_zoom(zoom)
            .metadata(metadata_json(metadata, state, hash, false))
            .create(std::io::BufWriter::new(file))
            .map_err(|e| fail(&e))?;
        let mut read = connection
            .prepare(
                "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles WHERE rowid = ?1",
            )
            .map_err(|e| fail(&e))?;
        for (_, rowid) in &order {
            let (tile, data) = read
                .query_row(params![rowid], |row| {
                    Ok((
                        (
                            row.get::<_, i64>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, i64>(2)?,
                        ),
                        row.get::<_, Vec<u8>>(3)?,
                    ))
                })
                .map_err(|e| fail(&e))?;
            let tile = TileCoord::from_tms(tile.0, tile.1, tile.2).map_err(|e| fail(&e))?;
            if data.is_empty() {
                // A placeholder (`skeleton.rs`): its bytes are only in the archive it stands for.
                return Err(fail(&format!(
                    "tile {tile} of the tile store has no bytes here: run `seed --force`"
                )));
            }
            let coord =
                pmtiles::TileCoord::new(tile.z(), tile.x(), tile.y()).map_err(|e| fail(&e))?;
            writer.add_tile(coord, &data).map_err(|e| fail(&e))?;
        }
        writer.finalize().map_err(|e| fail(&e))?;
        crate::store::durable::rename(&partial, archive).map_err(|e| {
            fail(&format!(
                "cannot move {} into place: {e}",
                partial.display()
            ))
        })?;
        // Every byte of the archive is here now (listed holes left by a crash just before this
        // only cost a read).
        skeleton::forget_holes(archive);
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}
