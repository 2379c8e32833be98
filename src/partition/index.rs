//! A partitioned tileset's index written once its partitions ran: vanished partitions removed,
//! each value's tiles counted, the tileset's watermark advanced when every partition is complete.

use std::collections::BTreeMap;

use deadpool_postgres::Pool;

use super::job::partition_name;
use super::{count_tiles, Plan};
use crate::config::{partition_segment, IndexLocation, OutputTarget};
use crate::coordination::partitions::{write_index, PartitionEntry, PartitionIndex};
use crate::delivery;
use crate::error::{Error, Result};
use crate::job::SeedJob;
use crate::report::TilesetSummary;
use crate::sink;
use crate::state::capture;

/// A partition whose complete run left no tile: its value, its output, and a layer with the rows
/// of it that hold the value.
type Emptied = (String, String, (String, i64));

impl Plan {
    /// Removes vanished partitions and writes the index, once their runs are complete.
    pub(super) async fn finish(
        &self,
        pool: &Pool,
        job: &SeedJob,
        summaries: &[TilesetSummary],
    ) -> Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        if self.jobs.is_empty() && self.changes_read == Some(0) {
            // Nothing changed since the index's watermark: it stays as it is.
            return Ok(());
        }
        let previous: BTreeMap<&str, &PartitionEntry> = self
            .previous
            .iter()
            .flat_map(|index| index.partitions.iter().map(|p| (p.value.as_str(), p)))
            .collect();
        let mut entries: BTreeMap<String, PartitionEntry> = previous
            .iter()
            .map(|(value, entry)| (value.to_string(), (*entry).clone()))
            .collect();
        let removed = self
            .remove_vanished(pool, job, target, summaries, &mut entries)
            .await?;
        if !self.cdn.is_empty() && self.feed {
            delivery::purge_vanished_feeds(target, &removed, job).await?;
        }
        let emptied = self
            .count_current(pool, job, target, (summaries, &previous), &mut entries)
            .await?;
        // The tileset's watermark moves only when every partition the run planned is complete.
        let complete = self.jobs.iter().all(|j| {
            summaries
                .iter()
                .any(|s| s.header.tileset == j.tileset.name && s.header.complete)
        });
        let previous_watermark = self.previous.as_ref().and_then(|i| i.watermark.clone());
        let advanced = self.next_watermark.as_ref().filter(|_| complete);
        let index = PartitionIndex {
            tileset: self.name.clone(),
            partition_by: self.column.clone(),
            partitions: entries.into_values().collect(),
            watermark: advanced
                .map(|w| w.snapshot.clone())
                .or(previous_watermark.clone()),
        };
        let location = target.partition_index();
        write_index(&location, &job.store_settings, &self.cache_control, &index).await?;
        if !self.cdn.is_empty() && self.previous.as_ref() != Some(&index) {
            // Caches must not keep listing removed values, their counts and their bounds.
            delivery::purge_index(target, &location, job).await?;
        }
        if let Some(watermark) = advanced {
            let schema = &job.change_schema;
            let pruned = capture::advance_and_prune(pool, schema, target, watermark).await?;
            if pruned > 0 {
                tracing::info!("pruned {pruned} applied change(s) from the change log");
            }
            if previous_watermark.is_none() {
                // Partitions of earlier versions consumed the log each: the tileset does now.
                let outputs: Vec<String> = index
                    .partitions
                    .iter()
                    .map(|p| target.for_partition(&p.path))
                    .flat_map(|output| [output.describe(), output.consumer_name()])
                    .collect();
                capture::forget_consumers(pool, schema, &outputs).await?;
            }
        }
        tracing::info!(
            "tileset `{}`: index of {} partition(s) written to {}",
            self.name,
            index.partitions.len(),
            match &location {
                IndexLocation::File(path) => path.display().to_string(),
                IndexLocation::Object { bucket, key } => format!("{bucket}/{key}"),
            }
        );
        self.refuse_emptied(&emptied)
    }

    /// Removes the vanished partitions whose run completed (emptied) from the output and from
    /// `entries`, and forgets them as consumers of the change log; returns their path segments.
    async fn remove_vanished(
        &self,
        pool: &Pool,
        job: &SeedJob,
        target: &OutputTarget,
        summaries: &[TilesetSummary],
        entries: &mut BTreeMap<String, PartitionEntry>,
    ) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for value in &self.vanished {
            if !self
                .summary_of(summaries, value)
                .is_some_and(|s| s.header.complete)
            {
                continue;
            }
            let segment = partition_segment(value)?;
            let output = target.for_partition(&segment);
            sink::remove_emptied(&output)?;
            removed.push(segment);
            // By its name, or by the one an earlier version gave it.
            let names = [output.consumer_name(), output.describe()];
            capture::forget_consumers(pool, &job.change_schema, &names).await?;
            entries.remove(value);
            tracing::info!(
                "tileset `{}`: partition {value:?} holds no rows any more; removed {}",
                self.name,
                output.describe()
            );
        }
        Ok(removed)
    }

    /// Puts each current value's entry in `entries`, its tiles counted unless its partition's run
    /// changed none; returns the values whose complete run left no tile although rows hold them
    /// inside the bbox, with the layer and rows found.
    async fn count_current(
        &self,
        pool: &Pool,
        job: &SeedJob,
        target: &OutputTarget,
        (summaries, previous): (&[TilesetSummary], &BTreeMap<&str, &PartitionEntry>),
        entries: &mut BTreeMap<String, PartitionEntry>,
    ) -> Result<Vec<Emptied>> {
        let mut emptied = Vec::new();
        for (value, holding) in &self.current {
            let path = partition_segment(value)?;
            let output = target.for_partition(&path);
            let summary = self.summary_of(summaries, value);
            let untouched = summary.is_some_and(|s| s.stored.changed == 0 && s.stored.deleted == 0);
            let tiles = match previous.get(value.as_str()) {
                Some(entry) if untouched => entry.tiles,
                _ => count_tiles(&output, job, &self.extension).await?,
            };
            if tiles == 0 && summary.is_some_and(|s| s.header.complete) {
                if let Some(found) = self.drawable_rows(pool, value).await? {
                    emptied.push((value.clone(), output.describe(), found));
                }
            }
            entries.insert(
                value.clone(),
                PartitionEntry {
                    value: value.clone(),
                    path,
                    features: holding.features,
                    bounds: holding.bounds,
                    tiles,
                },
            );
        }
        Ok(emptied)
    }

    /// The summary of the run of `value`'s partition, if it ran.
    fn summary_of<'s>(
        &self,
        summaries: &'s [TilesetSummary],
        value: &str,
    ) -> Option<&'s TilesetSummary> {
        let name = partition_name(&self.name, value);
        summaries.iter().find(|s| s.header.tileset == name)
    }

    /// Fails for the first partition left empty while rows hold its value.
    fn refuse_emptied(&self, emptied: &[Emptied]) -> Result<()> {
        match emptied.first() {
            None => Ok(()),
            Some((value, output, (layer, rows))) => Err(Error::output(
                output,
                format!(
                    "partition {:?} of tileset `{}` holds no tile, yet {rows} row(s) of layer `{layer}` \
                     hold {} = {value:?} inside its bbox{}: its tile statements matched none of \
                     them (report this with the column's type)",
                    value,
                    self.name,
                    self.column,
                    match emptied.len() {
                        1 => String::new(),
                        n => format!(" ({} other partition(s) alike)", n - 1),
                    }
                ),
            )),
        }
    }
}
