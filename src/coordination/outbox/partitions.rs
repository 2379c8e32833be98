//! A partitioned tileset's runs, recorded in the tileset's own outbox. A run writes, before any of
//! its partitions starts, the values it is about to run (`ID.partitions`), and removes the record
//! once every one of them returned. Partitions record their own intents in their own outboxes,
//! which only a run of that partition reads: a record a later run finds is a killed run's, and
//! names the partitions whose intents nobody else would ever look for.

use super::{Outbox, BATCH, INTENT};
use crate::error::Result;
use crate::store::document::LIST_CAP;

const RECORD: &str = ".partitions";

/// A record of the partitions a run was about to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecord {
    /// Its name in the outbox.
    pub name: String,
    /// The values it names; `None` when the record cannot be read (then every value counts).
    pub values: Option<Vec<String>>,
}

impl Outbox {
    /// Records, durably and before any of them runs, the partitions a run is about to run;
    /// returns the record's name.
    pub async fn record_partitions(&self, values: &[String]) -> Result<String> {
        let run = self.start()?;
        run.recorder.discard_recording();
        let name = format!("{}{RECORD}", run.id);
        self.rewrite_partition_record(&name, values).await?;
        Ok(name)
    }

    /// Replaces the values of the record `name`, durably.
    pub async fn rewrite_partition_record(&self, name: &str, values: &[String]) -> Result<()> {
        let body = serde_json::to_vec(values).unwrap_or_else(|_| b"[]".to_vec());
        self.store.write(name, &body).await
    }

    /// Every record of partitioned runs the outbox holds, oldest first.
    pub async fn partition_records(&self) -> Result<Vec<PartitionRecord>> {
        let mut records = Vec::new();
        for name in self.store.list().await? {
            if !name.ends_with(RECORD) {
                continue;
            }
            // One that cannot be read (not JSON, not a regular file, too large) stands for
            // every value: checking them all costs a listing each, missing one loses purges.
            let values = match self.store.read(&name, LIST_CAP).await {
                Ok(Some(bytes)) => serde_json::from_slice::<Vec<String>>(&bytes).ok(),
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!("{err}");
                    None
                }
            };
            if values.is_none() {
                tracing::warn!(
                    "{}: the record {name} of a stopped run cannot be read: every partition is \
                     checked for what it left",
                    self.describe()
                );
            }
            records.push(PartitionRecord { name, values });
        }
        Ok(records)
    }

    /// Removes the record `name`; one that is not there is fine.
    pub async fn remove_partition_record(&self, name: &str) -> Result<()> {
        self.store.remove(name).await
    }

    /// Whether a run left anything here that a later run of this output must finish: an intent
    /// (a killed run's) or a batch some consumer has not taken.
    pub async fn holds_unfinished(&self) -> Result<bool> {
        Ok(self
            .store
            .list()
            .await?
            .iter()
            .any(|name| name.ends_with(INTENT) || name.ends_with(BATCH)))
    }

    /// Records of partitioned runs, counted as waiting batches by [`Outbox::backlog`] until a
    /// later run finishes what they name.
    pub(super) fn is_partition_record(name: &str) -> bool {
        name.ends_with(RECORD)
    }
}
