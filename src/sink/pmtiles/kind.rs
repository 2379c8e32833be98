//! The capabilities of a PMTiles archive, local or one object of a remote store. Both are written whole from a
//! local MBTiles store, so their shards write MBTiles parts (`part.rs`), which `finalize` joins.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::read::PmtilesReader;
use crate::config::{Bucket, StoreConfig};
use crate::coordination::shards::ShardStore;
use crate::coordination::Home;
use crate::error::{Error, Result};
use crate::sink::check::Finding;
use crate::sink::kind::{OutputKind, WriterOptions};
use crate::sink::mbtiles::merge::MergeReport;
use crate::sink::mbtiles::remove_sqlite_files;
use crate::sink::read::{OutputReader, ReaderOptions};
use crate::sink::{OutputSettings, Sink};
use crate::store::local_file;

/// A PMTiles v3 archive on this machine, with its MBTiles store beside it.
pub struct PmtilesFile<'a>(pub &'a Path);

/// A PMTiles v3 archive as one object of a remote store, with its working copy and store on this
/// machine.
pub struct ObjectArchive<'a> {
    /// The store and its bucket or container.
    pub bucket: &'a Bucket,
    /// The archive's object key.
    pub key: &'a str,
}

/// `merge_parts` is for kinds whose shards write part files beside the output.
fn no_part_files(output: String) -> Error {
    Error::output(
        output,
        "shards of a PMTiles archive keep their parts in its shard folder; finalize joins them",
    )
}

/// A shard's part of the archive `output`, kept in `shards`.
fn part_sink(
    options: &WriterOptions<'_>,
    part: &crate::coordination::PartOf,
    shards: ShardStore,
    file: PathBuf,
) -> Result<Box<dyn Sink>> {
    let part_size = options.store_settings.part_size_mib * 1024 * 1024;
    let sink =
        super::part::PartSink::create(shards, file, part.clone(), options.journal, part_size)?;
    Ok(Box::new(sink))
}

impl OutputKind for PmtilesFile<'_> {
    fn home(&self) -> Home {
        Home::File(self.0.to_path_buf())
    }

    fn stores_gzip(&self, _settings: &OutputSettings) -> bool {
        true
    }

    fn shard_store<'a>(
        &'a self,
        _store_settings: &'a StoreConfig,
    ) -> BoxFuture<'a, Result<ShardStore>> {
        std::future::ready(Ok(ShardStore::beside_file(self.0))).boxed()
    }

    fn merge_parts(&self, _parts: &[PathBuf]) -> Result<MergeReport> {
        Err(no_part_files(format!("{} (PMTiles)", self.0.display())))
    }

    fn open_writer<'a>(
        &'a self,
        options: WriterOptions<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>>> {
        let sink = match &options.part {
            Some(part) => {
                let shards = ShardStore::beside_file(self.0);
                let file = super::part::part_place(self.0, part.spec);
                part_sink(&options, part, shards, file)
            }
            None => super::PmtilesSink::create(self.0, options.changes, options.journal)
                .map(|sink| Box::new(sink.versioned(options.settings)) as Box<dyn Sink>),
        };
        std::future::ready(sink).boxed()
    }

    fn open_reader<'a>(
        &'a self,
        _options: ReaderOptions<'a>,
    ) -> BoxFuture<'a, Result<OutputReader>> {
        async move { Ok(OutputReader::new(PmtilesReader::open(self.0).await?)) }.boxed()
    }

    fn check_container<'a>(
        &'a self,
        _options: ReaderOptions<'a>,
    ) -> BoxFuture<'a, Result<Vec<Finding>>> {
        super::check::check_local(self.0).boxed()
    }

    fn expected_writes(&self, tiles: Option<u64>) -> String {
        let store = tiles.map_or("every tile".to_string(), |n| format!("at most {n} tile(s)"));
        format!("{store} in the store, then the archive rewritten once if any changed")
    }

    /// A stopped run's writes never show: a file or object is replaced whole.
    fn remove_leftovers(&self, _stopped: &[crate::coordination::outbox::StoppedRun]) -> Result<()> {
        Ok(())
    }

    fn documents(&self) -> &'static [&'static str] {
        // A single file: its metadata travels inside it.
        &[]
    }

    fn prepare_partitions(&self) -> Result<()> {
        Ok(())
    }

    fn remove_emptied(&self) -> Result<()> {
        super::versions::remove_local(self.0)?;
        crate::store::durable::remove_if_there(self.0, std::fs::remove_file(self.0))?;
        remove_sqlite_files(&super::store_path(self.0));
        Home::File(self.0.to_path_buf()).remove_outbox()
    }

    fn refresh_agg_hash(
        &self,
        _settings: &OutputSettings,
        _cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<crate::sink::HashRefresh> {
        // Every run writes the archive from every stored tile, and its hash with it.
        Ok(crate::sink::HashRefresh::Current)
    }
}

impl ObjectArchive<'_> {
    fn describe(&self) -> String {
        format!("{}/{} (PMTiles)", self.bucket, self.key)
    }
}

impl OutputKind for ObjectArchive<'_> {
    fn home(&self) -> Home {
        Home::Object {
            bucket: self.bucket.clone(),
            key: self.key.to_string(),
        }
    }

    fn stores_gzip(&self, _settings: &OutputSettings) -> bool {
        true
    }

    fn shard_store<'a>(
        &'a self,
        store_settings: &'a StoreConfig,
    ) -> BoxFuture<'a, Result<ShardStore>> {
        ShardStore::beside_object(store_settings, self.bucket, self.key).boxed()
    }

    fn merge_parts(&self, _parts: &[PathBuf]) -> Result<MergeReport> {
        Err(no_part_files(self.describe()))
    }

    fn open_writer<'a>(
        &'a self,
        options: WriterOptions<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>>> {
        async move {
            if let Some(part) = &options.part {
                let shards =
                    ShardStore::beside_object(options.store_settings, self.bucket, self.key)
                        .await?;
                let working_copy = local_file(
                    self.bucket,
                    options.store_settings,
                    self.key,
                    "pmtiles",
                    "pmtiles",
                );
                let file = super::part::part_place(&working_copy, part.spec);
                return part_sink(&options, part, shards, file);
            }
            let sink = super::remote::RemotePmtilesSink::create(
                self.bucket,
                self.key,
                options.store_settings,
                options.settings,
                options.changes,
                options.journal,
            )
            .await?;
            Ok(Box::new(sink) as Box<dyn Sink>)
        }
        .boxed()
    }

    fn open_reader<'a>(
        &'a self,
        options: ReaderOptions<'a>,
    ) -> BoxFuture<'a, Result<OutputReader>> {
        async move {
            let reader = PmtilesReader::download(
                options.output,
                self.bucket,
                self.key,
                options.store_settings,
            )
            .await?;
            Ok(OutputReader::new(reader))
        }
        .boxed()
    }

    fn check_container<'a>(
        &'a self,
        options: ReaderOptions<'a>,
    ) -> BoxFuture<'a, Result<Vec<Finding>>> {
        super::check::check_on_s3(
            options.output,
            self.bucket,
            self.key,
            options.store_settings,
        )
        .boxed()
    }

    fn expected_writes(&self, tiles: Option<u64>) -> String {
        let store = tiles.map_or("every tile".to_string(), |n| format!("at most {n} tile(s)"));
        format!(
            "{store} in the working copy's store, then one upload of the archive (in parts above store.part_size_mib) if any changed, and its state object"
        )
    }

    /// A stopped run's writes never show: a file or object is replaced whole.
    fn remove_leftovers(&self, _stopped: &[crate::coordination::outbox::StoppedRun]) -> Result<()> {
        Ok(())
    }

    fn documents(&self) -> &'static [&'static str] {
        // A single file: its metadata travels inside it.
        &[]
    }

    fn prepare_partitions(&self) -> Result<()> {
        Ok(())
    }

    fn remove_emptied(&self) -> Result<()> {
        Ok(())
    }

    fn refresh_agg_hash(
        &self,
        _settings: &OutputSettings,
        _cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<crate::sink::HashRefresh> {
        // Every run writes the archive from every stored tile, and its hash with it.
        Ok(crate::sink::HashRefresh::Current)
    }
}
