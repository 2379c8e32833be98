//! The capabilities of a prefix of tile objects in a remote store (S3, Azure Blob Storage).

use std::path::PathBuf;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::read::ObjectReader;
use crate::config::{Bucket, StoreConfig};
use crate::coordination::shards::ShardStore;
use crate::coordination::Home;
use crate::error::{Error, Result};
use crate::sink::check::Finding;
use crate::sink::kind::{OutputKind, WriterOptions};
use crate::sink::mbtiles::merge::MergeReport;
use crate::sink::read::{OutputReader, ReaderOptions};
use crate::sink::{OutputSettings, Sink};

/// `{prefix}/{z}/{x}/{y}.ext` objects in a bucket or container of a remote store.
pub struct ObjectPrefix<'a> {
    /// The store and its bucket or container.
    pub bucket: &'a Bucket,
    /// Key prefix without leading or trailing slash; may be empty.
    pub prefix: &'a str,
}

impl OutputKind for ObjectPrefix<'_> {
    fn home(&self) -> Home {
        Home::Prefix {
            bucket: self.bucket.clone(),
            prefix: self.prefix.to_string(),
        }
    }

    fn stores_gzip(&self, settings: &OutputSettings) -> bool {
        settings.compress
    }

    fn shard_store<'a>(
        &'a self,
        store_settings: &'a StoreConfig,
    ) -> BoxFuture<'a, Result<ShardStore>> {
        async move { ShardStore::on_store(store_settings, self.bucket, self.prefix).await }.boxed()
    }

    fn merge_parts(&self, _parts: &[PathBuf]) -> Result<MergeReport> {
        Err(Error::output(
            format!("{}/{}", self.bucket, self.prefix),
            "shards write into a prefix of a store directly; there are no part files to merge",
        ))
    }

    fn open_writer<'a>(
        &'a self,
        options: WriterOptions<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>>> {
        async move {
            let sink = super::ObjectSink::create(
                self.bucket,
                self.prefix,
                options.store_settings,
                options.settings,
                options.changes,
                options.journal,
                options.part,
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
            let store = crate::store::open(self.bucket, options.store_settings)
                .await
                .map_err(|e| Error::output_caused(options.output, e))?;
            Ok(OutputReader::new(ObjectReader {
                output: options.output.to_string(),
                store,
                prefix: self.prefix.to_string(),
                extension: options.extension.to_string(),
            }))
        }
        .boxed()
    }

    /// The TileJSON beside the tiles. No tiles.json beside tiles is a finding; nothing at all
    /// under the prefix (which is also what some S3-compatible stores answer for a bucket that
    /// is not there) or an unreachable bucket is an error, as a missing tree is.
    fn check_container<'a>(
        &'a self,
        options: ReaderOptions<'a>,
    ) -> BoxFuture<'a, Result<Vec<Finding>>> {
        async move {
            let fail = |e| Error::output_caused(options.output, e);
            let store = crate::store::open(self.bucket, options.store_settings)
                .await
                .map_err(fail)?;
            let key = super::object_key(self.prefix, crate::sink::tilejson::TILEJSON_NAME);
            let document = store
                .get(&key, crate::store::document::DOCUMENT_CAP)
                .await
                .map_err(fail)?;
            if document.is_none() {
                let folder = super::object_key(self.prefix, "");
                if !store.holds_any(&folder).await.map_err(fail)? {
                    return Err(Error::output(
                        options.output,
                        format!("there is no object under {}/{folder}", self.bucket),
                    ));
                }
            }
            Ok(crate::sink::tilejson::check_tilejson(document.as_deref()))
        }
        .boxed()
    }

    fn expected_writes(&self, tiles: Option<u64>) -> String {
        match tiles {
            Some(n) => format!("at most {n} PUT or DELETE request(s) (only tiles whose bytes change are sent), then tiles.json, metadata.json and the state"),
            None => "a PUT per tile whose bytes change, a DELETE per tile no longer there, then tiles.json, metadata.json and the state".into(),
        }
    }

    /// A stopped run's writes never show: a file or object is replaced whole.
    fn remove_leftovers(&self, _stopped: &[crate::coordination::outbox::StoppedRun]) -> Result<()> {
        Ok(())
    }

    fn documents(&self) -> &'static [&'static str] {
        &[super::super::tilejson::TILEJSON_NAME]
    }

    fn prepare_partitions(&self) -> Result<()> {
        Ok(())
    }

    /// The prefix keeps its metadata objects, which describe an empty tileset.
    fn remove_emptied(&self) -> Result<()> {
        Ok(())
    }

    fn refresh_agg_hash(
        &self,
        _settings: &OutputSettings,
        _cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<crate::sink::HashRefresh> {
        // The tile cache beside the journals makes the hash cheap at finish: never deferred.
        Ok(crate::sink::HashRefresh::Current)
    }
}
