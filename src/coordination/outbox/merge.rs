//! Batches moved and merged: a partition's purges handed over to its tileset's outbox, waiting
//! batches merged into one, and the partial records (`ID.batch.done.CONSUMER`) that follow them.
//!
//! A line stands for the version of its tile or document a batch's run wrote; the same line in a
//! later batch is a later version. A consumer's partial record says it took the version of its
//! batch, which covers the earlier versions but never a later one: a merge keeps a line taken
//! only where its newest version was.

use std::collections::{BTreeMap, BTreeSet};

use md5::{Digest, Md5};

use super::{lines_bytes, Outbox, BATCH, DONE, EVERYTHING, TAKEN};
use crate::error::Result;
use crate::store::document::{DOCUMENT_CAP, LIST_CAP};

/// Every batch's name, oldest first; who took each, by batch name; every name in the outbox.
pub(super) type Takers = (Vec<String>, BTreeMap<String, BTreeSet<String>>, Vec<String>);

impl Outbox {
    /// Who took each batch, by batch name, and every batch's name, oldest first.
    pub(super) async fn takers(&self) -> Result<Takers> {
        let names = self.store.list().await?;
        let mut takers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for name in &names {
            if let Some((batch, who)) = name.split_once(TAKEN) {
                takers
                    .entry(batch.to_string())
                    .or_default()
                    .insert(who.to_string());
            }
        }
        let batches = names
            .iter()
            .filter(|n| n.ends_with(BATCH))
            .cloned()
            .collect();
        Ok((batches, takers, names))
    }

    /// The lines of the partial record `name` (`ID.batch.done.CONSUMER`), read within the cap on
    /// a note. One that cannot be read (not a regular file, past the cap, damaged) counts as
    /// empty, with a warning naming it: its lines are sent again rather than skipped.
    pub(super) async fn read_done(&self, name: &str) -> BTreeSet<String> {
        match self.store.read(name, DOCUMENT_CAP).await {
            // Only whole lines: the last one, cut short by a crash while it was appended, has
            // no newline and could name another tile.
            Ok(bytes) => bytes.map_or_else(BTreeSet::new, |bytes| {
                let text = String::from_utf8_lossy(&bytes);
                let mut lines: Vec<&str> = text.split('\n').collect();
                lines.pop();
                lines
                    .into_iter()
                    .map(|l| l.trim_end_matches('\r'))
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            }),
            Err(err) => {
                tracing::warn!(
                    "{err}; the record of what a consumer took of that batch is ignored, so its \
                     lines are sent again (remove that file to silence this)"
                );
                BTreeSet::new()
            }
        }
    }

    /// Moves what some of `consumers` have not taken into `to`, its lines turned into the paths
    /// `to` holds by `path_of`, and marks it taken here by them (then prunes here with
    /// `all_consumers`). A partition hands its CDN purges to its tileset's outbox this way, so
    /// they outlive the partition. `label` (the partition's path) keeps the batches of two
    /// partitions apart; the same batch handed over twice (a crash in between) is one batch.
    /// Returns how many batches it handed over.
    pub async fn hand_over(
        &self,
        to: &Outbox,
        consumers: &[String],
        all_consumers: &[String],
        label: &str,
        path_of: impl Fn(&str) -> String,
    ) -> Result<u64> {
        let (batches, takers, _) = self.takers().await?;
        let mut handed = 0;
        for batch in batches {
            let took = takers.get(&batch).cloned().unwrap_or_default();
            let missing: Vec<&String> = consumers.iter().filter(|c| !took.contains(*c)).collect();
            if missing.is_empty() {
                continue;
            }
            let Some(bytes) = self.store.read(&batch, LIST_CAP).await? else {
                continue;
            };
            let mut paths: Vec<String> = String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.is_empty())
                .map(&path_of)
                .collect();
            paths.sort();
            paths.dedup();
            let name = handed_name(&batch, label);
            // Markers first: a batch seen without them is only purged once more.
            for consumer in consumers.iter().filter(|c| took.contains(*c)) {
                to.store
                    .write(&format!("{name}{TAKEN}{consumer}"), b"")
                    .await?;
            }
            to.store
                .write(&name, lines_bytes(&paths).as_slice())
                .await?;
            for consumer in missing {
                self.store
                    .write(&format!("{batch}{TAKEN}{consumer}"), b"")
                    .await?;
            }
            handed += 1;
        }
        if handed > 0 {
            self.prune(all_consumers).await?;
        }
        Ok(handed)
    }

    /// Merges the batches waiting for the same consumers into one (their lines once each, under
    /// the oldest one's name, so its age stays), when more than `threshold` wait: while a CDN is
    /// down the outbox then holds about one batch per set of consumers, of at most every path
    /// the output has, instead of one per run. A consumer's partial records merge by version (see
    /// the module): a line counts as taken only where its newest batch had it taken. Only for an
    /// outbox no other process or pending acknowledgement is marking (no `--changed-list` in the
    /// run). Returns the batches merged away.
    pub async fn coalesce(&self, threshold: usize) -> Result<usize> {
        let (batches, takers, names) = self.takers().await?;
        if batches.len() <= threshold {
            return Ok(0);
        }
        let mut groups: BTreeMap<BTreeSet<String>, Vec<String>> = BTreeMap::new();
        for batch in batches {
            let took = takers.get(&batch).cloned().unwrap_or_default();
            groups.entry(took).or_default().push(batch);
        }
        let mut merged_away = 0;
        for (took, group) in groups.into_iter().filter(|(_, g)| g.len() > 1) {
            // Each line's newest batch, by its place in the group (oldest first).
            let mut newest: BTreeMap<String, usize> = BTreeMap::new();
            for (index, batch) in group.iter().enumerate() {
                if let Some(bytes) = self.store.read(batch, LIST_CAP).await? {
                    for line in String::from_utf8_lossy(&bytes).lines() {
                        if !line.is_empty() {
                            newest.insert(line.to_string(), index);
                        }
                    }
                }
            }
            let done = self.merged_done(&names, &group, &newest).await;
            let lines: Vec<String> = if newest.contains_key(EVERYTHING) {
                vec![EVERYTHING.to_string()]
            } else {
                newest.into_keys().collect()
            };
            // The oldest batch's records, then its lines: each is right for the batch as it was
            // and as it becomes, so a crash anywhere only delivers some lines twice. The others
            // go last.
            let (oldest, rest) = group.split_first().expect("groups of two or more");
            for (consumer, taken) in done {
                let name = format!("{oldest}{DONE}{consumer}");
                match taken {
                    Some(taken) => self.store.write(&name, &lines_bytes(&taken)).await?,
                    None => self.store.remove(&name).await?,
                }
            }
            self.store.write(oldest, &lines_bytes(&lines)).await?;
            for batch in rest {
                self.store.remove(batch).await?;
                self.remove_companions(&names, batch, took.iter().cloned())
                    .await?;
                merged_away += 1;
            }
        }
        Ok(merged_away)
    }

    /// Per consumer with a partial record in `group`, the lines of the merged batch it took: those
    /// whose newest batch (`newest`) it took them in; `None` when none. `*`, which stands for every
    /// line, counts as taken only when every line's newest version was taken.
    async fn merged_done(
        &self,
        names: &[String],
        group: &[String],
        newest: &BTreeMap<String, usize>,
    ) -> BTreeMap<String, Option<Vec<String>>> {
        let mut done: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (index, batch) in group.iter().enumerate() {
            let prefix = format!("{batch}{DONE}");
            for name in names.iter().filter(|n| n.starts_with(&prefix)) {
                let consumer = name[prefix.len()..].to_string();
                let taken = done.entry(consumer).or_default();
                for line in self.read_done(name).await {
                    if newest.get(&line) == Some(&index) {
                        taken.insert(line);
                    }
                }
            }
        }
        done.into_iter()
            .map(|(consumer, mut taken)| {
                if newest.contains_key(EVERYTHING) {
                    let all = newest.keys().all(|line| taken.contains(line));
                    taken.retain(|_| all);
                    taken.retain(|line| line == EVERYTHING);
                }
                let taken = (!taken.is_empty()).then(|| taken.into_iter().collect());
                (consumer, taken)
            })
            .collect()
    }
}

/// The name of `batch`'s copy handed over under `label` (a partition's path): the same batch
/// handed over twice is one batch, and two partitions' batches stay apart.
fn handed_name(batch: &str, label: &str) -> String {
    let label: String = Md5::digest(label.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}-{label}{BATCH}", batch.trim_end_matches(BATCH))
}
