//! What a killed run of a partitioned tileset left, found by every later run whichever values its
//! changes touch. Each run records in the tileset's outbox the partitions it is about to run
//! (`coordination::outbox`'s partition records) and removes the record once they all returned; a
//! record found at the start of a run is a stopped run's. Its partitions whose outboxes still
//! hold an intent or a batch are run again, so their own outboxes recover what the killed run
//! wrote (`delivery/outbox.rs`) and hand it to the CDNs and the feed.

use std::collections::BTreeSet;

use crate::config::{partition_segment, OutputTarget};
use crate::coordination::outbox::Outbox;
use crate::coordination::partitions::PartitionIndex;
use crate::error::Result;
use crate::job::SeedJob;
use crate::sink;

/// The partitions stopped runs left unfinished, and this run's own record.
pub(super) struct RunRecord {
    outbox: Outbox,
    /// The stopped runs' records this run takes over.
    stopped: Vec<String>,
    /// Values whose partitions a stopped run left unfinished.
    pub unfinished: BTreeSet<String>,
    /// This run's record, once written.
    own: Option<String>,
    /// Unfinished values this run does not run (`--partition`): its record keeps them.
    carried: Vec<String>,
}

impl RunRecord {
    /// Reads the records stopped runs of the tileset at `target` left, and which of the
    /// partitions they name still hold something unfinished.
    pub(super) async fn find(
        target: &OutputTarget,
        job: &SeedJob,
        previous: &Option<PartitionIndex>,
    ) -> Result<RunRecord> {
        let outbox = sink::outbox_of(target, &job.store_settings).await?;
        let records = outbox.partition_records().await?;
        let mut named = BTreeSet::new();
        for record in &records {
            match &record.values {
                Some(values) => named.extend(values.iter().cloned()),
                None => named.extend(
                    previous
                        .iter()
                        .flat_map(|index| index.partitions.iter().map(|p| p.value.clone())),
                ),
            }
        }
        let mut unfinished = BTreeSet::new();
        for value in named {
            let output = target.for_partition(&partition_segment(&value)?);
            let partition = Outbox::new(
                sink::kind_of(&output)
                    .home()
                    .outbox(&job.store_settings)
                    .await?,
                None,
            );
            if partition.holds_unfinished().await? {
                unfinished.insert(value);
            }
        }
        if !records.is_empty() {
            tracing::warn!(
                "{}: a stopped run of this partitioned tileset left {} partition(s) unfinished; \
                 this run finishes them",
                outbox.describe(),
                unfinished.len()
            );
        }
        Ok(RunRecord {
            outbox,
            stopped: records.into_iter().map(|r| r.name).collect(),
            unfinished,
            own: None,
            carried: Vec::new(),
        })
    }

    /// Records `values`, the partitions this run is about to run, with the unfinished ones it
    /// does not run, then drops the stopped runs' records this one now stands for.
    pub(super) async fn write(&mut self, values: &BTreeSet<&String>) -> Result<()> {
        // A run that runs no partition writes none: an idle `watch` cycle costs no request.
        self.carried = self
            .unfinished
            .iter()
            .filter(|v| !values.contains(v))
            .cloned()
            .collect();
        let mut all: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        all.extend(self.carried.iter().cloned());
        if !all.is_empty() {
            self.own = Some(self.outbox.record_partitions(&all).await?);
        }
        for name in std::mem::take(&mut self.stopped) {
            self.outbox.remove_partition_record(&name).await?;
        }
        Ok(())
    }

    /// Once every partition of the run returned: the record goes, or keeps only the unfinished
    /// values the run did not run.
    pub(super) async fn close(&self) -> Result<()> {
        let Some(own) = &self.own else {
            return Ok(());
        };
        if self.carried.is_empty() {
            self.outbox.remove_partition_record(own).await
        } else {
            self.outbox
                .rewrite_partition_record(own, &self.carried)
                .await
        }
    }
}
