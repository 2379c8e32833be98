//! An MBTiles file's capabilities.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::read::MbtilesReader;
use crate::config::StoreConfig;
use crate::coordination::shards::ShardStore;
use crate::coordination::Home;
use crate::coordination::PartOf;
use crate::error::{Error, Result};
use crate::sink::check::Finding;
use crate::sink::kind::{OutputKind, WriterOptions};
use crate::sink::mbtiles::merge::{merge_mbtiles, MergeReport};
use crate::sink::read::{OutputReader, ReaderOptions};
use crate::sink::{OutputSettings, Sink};

/// A single MBTiles 1.3 file.
pub struct MbtilesFile<'a>(pub &'a Path);

impl OutputKind for MbtilesFile<'_> {
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
        let mut plan = self.0.as_os_str().to_os_string();
        plan.push(".shard-plan.json");
        let folder = self.0.parent().map(Path::to_path_buf).unwrap_or_default();
        std::future::ready(Ok(ShardStore::Files {
            plan: PathBuf::from(plan),
            folder,
        }))
        .boxed()
    }

    fn merge_parts(&self, parts: &[PathBuf]) -> Result<MergeReport> {
        merge_mbtiles(self.0, parts)
    }

    fn open_writer<'a>(
        &'a self,
        options: WriterOptions<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>>> {
        let sink = match options.part {
            Some(part) => Err(refuse_part(
                &format!("{} (MBTiles)", self.0.display()),
                &part,
            )),
            None => super::MbtilesSink::create(self.0, options.changes, options.journal)
                .map(|sink| Box::new(sink) as Box<dyn Sink>),
        };
        std::future::ready(sink).boxed()
    }

    fn open_reader<'a>(
        &'a self,
        _options: ReaderOptions<'a>,
    ) -> BoxFuture<'a, Result<OutputReader>> {
        let reader = if self.0.is_file() {
            Ok(OutputReader::new(MbtilesReader(self.0.to_path_buf())))
        } else {
            Err(Error::output(self.0, "no such MBTiles file"))
        };
        std::future::ready(reader).boxed()
    }

    fn check_container<'a>(
        &'a self,
        _options: ReaderOptions<'a>,
    ) -> BoxFuture<'a, Result<Vec<Finding>>> {
        async move {
            let path = self.0.to_path_buf();
            // SQLite blocks, and an integrity check reads the whole file.
            tokio::task::spawn_blocking(move || super::check::check_mbtiles(&path))
                .await
                .map_err(|e| Error::output(self.0, format!("checking it: {e}")))?
        }
        .boxed()
    }

    fn expected_writes(&self, tiles: Option<u64>) -> String {
        match tiles {
            Some(n) => format!("at most {n} tile row(s) replaced or deleted in one transaction"),
            None => "a new file built beside it and renamed into place".into(),
        }
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
        super::remove_sqlite_files(self.0);
        Home::File(self.0.to_path_buf()).remove_outbox()
    }

    fn refresh_agg_hash(
        &self,
        _settings: &OutputSettings,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<crate::sink::HashRefresh> {
        super::refresh_agg_hash(self.0, cancel)
    }
}

/// Single-file outputs are never written by shards directly: each shard gets a part file.
pub(crate) fn refuse_part(output: &str, part: &PartOf) -> Error {
    Error::Usage(format!(
        "shard {} cannot write a part into {output}: single-file outputs get part files of their own",
        part.spec
    ))
}
