//! A tree's capabilities.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::read::TreeReader;
use crate::config::StoreConfig;
use crate::coordination::shards::ShardStore;
use crate::coordination::Home;
use crate::error::{Error, Result};
use crate::sink::check::Finding;
use crate::sink::kind::{OutputKind, WriterOptions};
use crate::sink::mbtiles::merge::MergeReport;
use crate::sink::read::{OutputReader, ReaderOptions};
use crate::sink::{OutputSettings, Sink};
use crate::store::document::{read_capped, DOCUMENT_CAP};

/// A `{z}/{x}/{y}.ext` tree under a directory.
pub struct Tree<'a>(pub &'a Path);

impl OutputKind for Tree<'_> {
    fn home(&self) -> Home {
        Home::Tree(self.0.to_path_buf())
    }

    fn stores_gzip(&self, settings: &OutputSettings) -> bool {
        settings.compress
    }

    fn shard_store<'a>(
        &'a self,
        _store_settings: &'a StoreConfig,
    ) -> BoxFuture<'a, Result<ShardStore>> {
        std::future::ready(Ok(ShardStore::in_tree(self.0))).boxed()
    }

    fn merge_parts(&self, _parts: &[PathBuf]) -> Result<MergeReport> {
        Err(Error::output(
            self.0,
            "shards write into a tree directly; there are no part files to merge",
        ))
    }

    fn open_writer<'a>(
        &'a self,
        options: WriterOptions<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>>> {
        let sink = super::DirectorySink::create(
            self.0,
            options.settings,
            options.changes,
            options.journal,
            options.part,
        )
        .map(|sink| Box::new(sink) as Box<dyn Sink>);
        std::future::ready(sink).boxed()
    }

    fn open_reader<'a>(
        &'a self,
        options: ReaderOptions<'a>,
    ) -> BoxFuture<'a, Result<OutputReader>> {
        let reader = if self.0.is_dir() {
            Ok(OutputReader::new(TreeReader {
                root: self.0.to_path_buf(),
                extension: options.extension.to_string(),
            }))
        } else {
            Err(Error::output(self.0, "no such directory"))
        };
        std::future::ready(reader).boxed()
    }

    /// The TileJSON beside the tiles; no tiles.json is a finding, no tree an error.
    fn check_container<'a>(
        &'a self,
        _options: ReaderOptions<'a>,
    ) -> BoxFuture<'a, Result<Vec<Finding>>> {
        let checked = if self.0.is_dir() {
            let path = self.0.join(crate::sink::tilejson::TILEJSON_NAME);
            read_capped(&path, DOCUMENT_CAP)
                .map(|bytes| crate::sink::tilejson::check_tilejson(bytes.as_deref()))
        } else {
            Err(Error::output(self.0, "no such directory"))
        };
        std::future::ready(checked).boxed()
    }

    fn expected_writes(&self, tiles: Option<u64>) -> String {
        match tiles {
            Some(n) => format!("at most {n} tile file(s) replaced or removed, then tiles.json and metadata.json when they change"),
            None => "every tile file, then tiles.json and metadata.json".into(),
        }
    }

    fn remove_leftovers(&self, stopped: &[crate::coordination::outbox::StoppedRun]) -> Result<()> {
        for run in stopped {
            if let Some(pid) = run.pid {
                super::remove_temporaries_of(self.0, pid, run.planned.as_deref())?;
            }
        }
        Ok(())
    }

    fn documents(&self) -> &'static [&'static str] {
        &[
            super::super::tilejson::TILEJSON_NAME,
            super::TIPPECANOE_METADATA_NAME,
        ]
    }

    /// Partitions are trees inside this one; its parent must exist, as for any tree. A bare
    /// relative name's parent is the empty path, which is the working directory.
    fn prepare_partitions(&self) -> Result<()> {
        let root = self.0;
        let parent = root.parent().map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        });
        if !root.exists() && parent.is_some_and(Path::is_dir) {
            std::fs::create_dir(root)
                .map_err(|e| Error::output(root, format!("cannot create it: {e}")))?;
        }
        Ok(())
    }

    fn remove_emptied(&self) -> Result<()> {
        crate::store::durable::remove_if_there(self.0, std::fs::remove_dir_all(self.0))
    }

    fn refresh_agg_hash(
        &self,
        settings: &OutputSettings,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<crate::sink::HashRefresh> {
        super::refresh_agg_hash(self.0, &settings.tile_extension, cancel)
    }
}
