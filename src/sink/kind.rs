//! What differs between kinds of output, one implementation per kind.
//!
//! `config::OutputTarget` is an output's *address* as the operator wrote it (parsing, naming,
//! where its partitions, partition index and shard parts go, and so whether it can be sharded). Everything an output kind *does* is an
//! [`OutputKind`] method, implemented in the kind's own folder (`mbtiles/kind.rs`,
//! `pmtiles/kind.rs`, `directory/kind.rs`, `objects/kind.rs`) beside its writer and reader. No method
//! has a default, so a kind that forgets a capability does not compile, and `sink::kind_of` is
//! the one place that maps an address to its kind.

use std::path::PathBuf;

use futures::future::BoxFuture;

use super::check::Finding;
use super::mbtiles::merge::MergeReport;
use super::read::{OutputReader, ReaderOptions};
use super::{OutputSettings, Sink};
use crate::config::StoreConfig;
use crate::coordination::outbox::StoppedRun;
use crate::coordination::shards::ShardStore;
use crate::coordination::{ChangedList, Home, PartOf};
use crate::error::Result;

/// What a writer needs besides the output's address.
pub struct WriterOptions<'a> {
    /// How tiles are stored.
    pub settings: &'a OutputSettings,
    /// The remote stores' settings (the `[store]` table), for outputs in one.
    pub store_settings: &'a StoreConfig,
    /// Where changed tiles are listed.
    pub changes: ChangedList,
    /// The journal of a full seed's pyramid walk, keyed by the job's settings digest.
    pub journal: Option<&'a str>,
    /// The shard part this writer writes, for outputs shards write into.
    pub part: Option<PartOf>,
}

/// One kind of output's capabilities.
pub trait OutputKind: Send + Sync {
    /// Where the output lives, so where run coordination keeps its lock, outbox and changes feed.
    fn home(&self) -> Home;

    /// Whether stored tiles are gzip-compressed under these settings.
    fn stores_gzip(&self, settings: &OutputSettings) -> bool;

    /// Where a sharded run keeps its plan and the shards' records.
    fn shard_store<'a>(
        &'a self,
        store_settings: &'a StoreConfig,
    ) -> BoxFuture<'a, Result<ShardStore>>;

    /// Merges finished shard part files into the output (`finalize` of kinds whose
    /// `OutputTarget::sharding` is `PartFiles`); returns the tiles merged and the parts' common
    /// snapshot.
    fn merge_parts(&self, parts: &[PathBuf]) -> Result<MergeReport>;

    /// Opens a writer; fails early when the output cannot be written.
    fn open_writer<'a>(
        &'a self,
        options: WriterOptions<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>>>;

    /// Opens the output for reading; fails when it is not there or is not of its kind.
    fn open_reader<'a>(&'a self, options: ReaderOptions<'a>)
        -> BoxFuture<'a, Result<OutputReader>>;

    /// Checks the output's container against its format's rules; each finding names what is at
    /// fault. Fails only when the output cannot be read at all.
    fn check_container<'a>(
        &'a self,
        options: ReaderOptions<'a>,
    ) -> BoxFuture<'a, Result<Vec<Finding>>>;

    /// Removes, under the output's lock, what `stopped` runs (killed ones) left half written:
    /// a tree's temporary files of the tiles they were placing. Kinds whose files or objects are
    /// replaced whole at once have nothing to remove.
    fn remove_leftovers(&self, stopped: &[StoppedRun]) -> Result<()>;

    /// The documents beside the tiles that a run rewrites when what its tiles cover changes (the
    /// zooms and bounds they declare), which a reseed's dry run plans to purge with the tiles.
    fn documents(&self) -> &'static [&'static str];

    /// The writes a run that stores `tiles` tiles makes (`None`: every tile of a full seed), as
    /// `seed --dirty --dry-run` prints them: requests where the output is remote.
    fn expected_writes(&self, tiles: Option<u64>) -> String;

    /// Makes the place partitions of this output go into, where they need one (a tree's
    /// partitions are trees inside it).
    fn prepare_partitions(&self) -> Result<()>;

    /// Removes a partition's output that a full seed emptied; a remote output keeps its
    /// documents, which describe an empty tileset.
    fn remove_emptied(&self) -> Result<()>;

    /// Brings the `agg_tiles_hash` a deferred finish left pending up to date, reading every tile
    /// on a consistent view, with the output's lock held; gives up, leaving it pending, once
    /// `cancel` is set. Kinds that never defer it have nothing to do. It blocks.
    fn refresh_agg_hash(
        &self,
        settings: &OutputSettings,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<super::HashRefresh>;
}
