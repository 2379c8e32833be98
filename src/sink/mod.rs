//! Where tiles go. The render side hands finished (compressed) tiles to a [`Sink`] and never learns
//! which kind it feeds.
//!
//! Lifecycle: [`open`] a sink for a target, [`Sink::write_tile`] any number of times from one writer
//! thread, then either [`Sink::finish`] with the tileset's metadata, which makes the output visible, or
//! [`Sink::abort`], which leaves nothing half-written behind.

pub mod agg_hash;
pub mod check;
pub mod directory;
pub mod kind;
pub mod mbtiles;
pub mod objects;
pub mod pmtiles;
pub mod read;
pub mod tilejson;
pub mod writer;

pub use crate::config::Sharding;
pub use crate::config::{OutputSettings, OutputTarget};
pub use crate::state::journal::Resume;
pub use check::{check_container, Finding};
pub use kind::OutputKind;
pub use read::OutputReader;

use serde::Serialize;

use crate::config::StoreConfig;
use crate::coordination::lock::LockPlace;
use crate::coordination::outbox::Outbox;
use crate::coordination::{ChangedList, PartOf, TilesetMetadata};
use crate::error::Result;
use crate::tile::{Subtrees, TileCoord};

/// What a sink did, counted when it finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SinkReport {
    /// Tiles stored that were new or different.
    pub changed: u64,
    /// Tiles whose stored bytes already matched, so nothing was written.
    pub unchanged: u64,
    /// Tiles removed: emptied, or (after a full seed) no longer produced.
    pub deleted: u64,
    /// What the store's refusals of writes as too fast did, when it refused any during the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled: Option<crate::store::pace::Throttled>,
}

/// How a run ends its output.
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    /// What the output records about its tileset.
    pub metadata: &'a TilesetMetadata,
    /// Which tiles inside the metadata's zoom range and bounds that this run did not write are
    /// deleted: a full seed leaves exactly its own tiles there, a walk of subtrees in them.
    pub sweep: &'a Sweep,
    /// The job state (watermark) to record, last, once every tile is durable.
    pub state: Option<&'a str>,
    /// Leave the `agg_tiles_hash` of a run that changed tiles for [`OutputKind::refresh_agg_hash`]
    /// to compute after the purge: the output declares no hash meanwhile (a tree keeps its stale
    /// marker), never a wrong one. Outputs that rewrite every tile anyway (PMTiles) or keep the
    /// hash's inputs at hand (remote prefixes) compute it at once regardless.
    pub defer_hash: bool,
}

/// Where a finishing run deletes the stored tiles it did not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sweep {
    /// Nowhere: the run listed its tiles and deleted those that came out empty.
    Nothing,
    /// Anywhere in the metadata's zooms and bounds (a pyramid walk).
    Everything,
    /// In these subtrees, within the metadata's zooms and bounds (a walk of them).
    Within(Subtrees),
}

impl Sweep {
    /// Whether a stored tile the run did not write is deleted.
    pub fn takes(&self, tile: TileCoord, metadata: &TilesetMetadata) -> bool {
        let scoped = || crate::tile::in_scope(tile, metadata.zooms, &metadata.bounds);
        match self {
            Sweep::Nothing => false,
            Sweep::Everything => scoped(),
            Sweep::Within(subtrees) => scoped() && subtrees.contains(tile),
        }
    }

    /// Whether any tile of column `x` at zoom `z` may be deleted: a sweep need not read the
    /// others.
    pub fn meets_column(&self, z: u8, x: u32) -> bool {
        match self {
            Sweep::Nothing => false,
            Sweep::Everything => true,
            Sweep::Within(subtrees) => subtrees.meets_column(z, x),
        }
    }

    /// Whether the run deletes anything it did not write.
    pub fn is_nothing(&self) -> bool {
        *self == Sweep::Nothing
    }
}

/// What bringing an output's `agg_tiles_hash` up to date did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashRefresh {
    /// The output named its hash already (or holds nothing to hash): nothing was read.
    Current,
    /// The hash was computed from every tile and recorded.
    Computed(String),
    /// Given up when asked to, before anything was recorded: the hash is still pending.
    Cancelled,
}

/// A destination for tiles. Implementations are driven from one thread.
pub trait Sink: Send {
    /// Stores one tile's encoded bytes, replacing any tile already there.
    fn write_tile(&mut self, tile: TileCoord, data: &[u8]) -> Result<()>;

    /// Removes a tile that has become empty; a tile that is not there is fine.
    fn delete_tile(&mut self, tile: TileCoord) -> Result<()>;

    /// The job state (change watermark) the output recorded when it was last finished.
    fn state(&self) -> Option<String>;

    /// Starts (or, after an interruption, picks up) the journal of a pyramid walk: returns the tiles
    /// an interrupted run of the same job already finished and the watermark that run started from;
    /// otherwise records `watermark` and returns nothing done. Sinks without a journal return `None`.
    fn begin_journal(&mut self, _watermark: Option<&str>) -> Result<Option<Resume>> {
        Ok(None)
    }

    /// Learns, before the first tile and the journal, how many tiles the run may write at most
    /// (`None`: a walk of the whole pyramid), so a sink can choose how to stage them. It may block.
    fn prepare(&mut self, _planned: Option<usize>) -> Result<()> {
        Ok(())
    }

    /// Records that a walked tile is finished and which of its children hold rows; durable together
    /// with the tile it wrote, if any.
    fn journal(&mut self, _tile: TileCoord, _children: [bool; 4], _written: bool) -> Result<()> {
        Ok(())
    }

    /// Writes the metadata and makes the output complete, as [`Finish`] says.
    fn finish(self: Box<Self>, finish: Finish<'_>) -> Result<SinkReport>;

    /// Takes the tiles that the shards of a sharded run wrote as this run's own (`finalize`), so
    /// the sweep keeps exactly them and the output's tile hashes list them. Only outputs that
    /// shards write into directly (trees, remote prefixes) can.
    fn adopt(&mut self, _tiles: &std::collections::HashMap<u64, [u8; 16]>) -> Result<()> {
        Err(crate::error::Error::output(
            "(an MBTiles or PMTiles output)",
            "only directory and S3 outputs are finalized from shard parts",
        ))
    }

    /// Takes the part files that the shards of a sharded run kept in `parts` as the output's tiles,
    /// in place of any it held (`finalize` of outputs written whole: PMTiles); returns the sink to
    /// finish, which then writes the output from them, and how many tiles the parts held.
    fn adopt_parts(
        self: Box<Self>,
        _parts: &crate::coordination::shards::ShardStore,
        _specs: &[crate::job::ShardSpec],
    ) -> Result<(Box<dyn Sink>, u64)> {
        Err(crate::error::Error::output(
            "(an MBTiles, directory or S3 output)",
            "only PMTiles outputs are finalized from shards' part files",
        ))
    }

    /// Gives up: removes whatever this sink created and leaves any earlier output untouched, or at
    /// least readable with every tile it held before or was given since.
    fn abort(self: Box<Self>);
}

/// The kind of an output: the one place that names every kind. Adding a kind is a variant of
/// [`OutputTarget`] (its address), a folder here implementing [`OutputKind`], and a line below.
pub fn kind_of(target: &OutputTarget) -> Box<dyn OutputKind + '_> {
    match target {
        OutputTarget::Mbtiles(path) => Box::new(mbtiles::kind::MbtilesFile(path)),
        OutputTarget::Pmtiles(path) => Box::new(pmtiles::kind::PmtilesFile(path)),
        OutputTarget::Directory(root) => Box::new(directory::kind::Tree(root)),
        OutputTarget::Objects { bucket, prefix } => {
            Box::new(objects::kind::ObjectPrefix { bucket, prefix })
        }
        OutputTarget::ObjectPmtiles { bucket, key } => {
            Box::new(pmtiles::kind::ObjectArchive { bucket, key })
        }
    }
}

/// Where an output's lock lives (by [`OutputKind::home`]), for
/// [`crate::coordination::lock::acquire`].
pub fn lock_place(target: &OutputTarget, store_settings: &StoreConfig) -> LockPlace {
    LockPlace::of(&kind_of(target).home(), target.describe(), store_settings)
}

/// Where partition `segment`'s lock lives (output `partition` of the tileset at `tileset`):
/// outside what the tileset serves ([`LockPlace::of_partition`]).
pub fn partition_lock_place(
    partition: &OutputTarget,
    tileset: &OutputTarget,
    segment: &str,
    store_settings: &StoreConfig,
) -> LockPlace {
    LockPlace::of_partition(
        &kind_of(tileset).home(),
        segment,
        lock_place(partition, store_settings),
    )
}

/// Removes the files a local partition output left once a full seed emptied it: the MBTiles or
/// PMTiles file (and its store), or the subdirectory. A remote prefix keeps its metadata objects,
/// which describe an empty tileset.
pub fn remove_emptied(target: &OutputTarget) -> Result<()> {
    kind_of(target).remove_emptied()
}

/// Brings an output's pending `agg_tiles_hash` up to date ([`OutputKind::refresh_agg_hash`]) off
/// the async threads; setting `cancel` makes it give up at the next tile.
pub async fn refresh_agg_hash(
    target: &OutputTarget,
    settings: &OutputSettings,
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<HashRefresh> {
    let (owned, settings) = (target.clone(), settings.clone());
    tokio::task::spawn_blocking(move || kind_of(&owned).refresh_agg_hash(&settings, &cancel))
        .await
        .map_err(|e| {
            crate::error::Error::output(
                target.describe(),
                format!("computing agg_tiles_hash failed: {e}"),
            )
        })?
}

/// Opens a sink for a target; fails early when the target cannot be written. With `part`, a
/// directory or prefix sink writes one shard's part: its own journal, and a part record instead of
/// the whole output's documents on finish.
pub async fn open(
    target: &OutputTarget,
    settings: &OutputSettings,
    store_settings: &StoreConfig,
    changes: ChangedList,
    journal: Option<&str>,
    part: Option<PartOf>,
) -> Result<Box<dyn Sink>> {
    kind_of(target)
        .open_writer(kind::WriterOptions {
            settings,
            store_settings,
            changes,
            journal,
            part,
        })
        .await
}

/// The outbox of `target` (not a shard part's), in the output's home.
pub async fn outbox_of(target: &OutputTarget, store_settings: &StoreConfig) -> Result<Outbox> {
    Ok(Outbox::new(
        kind_of(target).home().outbox(store_settings).await?,
        None,
    ))
}
