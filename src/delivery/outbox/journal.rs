//! What a purge accepted, recorded in the outbox as the target accepts it. A purge that only
//! recorded its progress when it stopped lost all of it to `kill -9` (or to a SIGTERM during a
//! purge as stored, which nothing recorded), so the next run sent every path again: 94,611 of
//! them for a full seed behind a cache that takes one path a request. Now each accepted request's
//! lines go to the consumer's partial record of their batch (`ID.batch.done.CONSUMER`) at once
//! in a local outbox, and every [`REMOTE_EVERY`] in a remote one, so the next run resends only
//! what was in flight (and, remotely, what the last second accepted).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::coordination::outbox::Outbox;
use crate::edge::Progress;
use crate::edge::{accepted_cover, covers};

use super::RunOutbox;

/// How often a remote outbox's partial records take what was accepted since: each write
/// rewrites a record whole, so one per accepted request would cost more than the purge.
const REMOTE_EVERY: Duration = Duration::from_secs(1);

/// One target's purge of some batches' lines, and what it accepted not yet recorded.
pub(super) struct PurgeJournal {
    outbox: Arc<Outbox>,
    consumer: String,
    batches: Vec<String>,
    /// Per purge path, the lines (batch index, line) it purges.
    lines_of: HashMap<String, Vec<(usize, String)>>,
    /// Accepted lines a remote outbox has not recorded yet.
    unwritten: Mutex<Vec<(usize, String)>>,
    /// Whether recording failed once (warned about once; the lines are then sent again).
    failed: AtomicBool,
}

/// The lines of each batch of `pending` that the paths a target `accepted` (as sent) cover, where
/// `path_of` gives a line's purge path: what a purge that stopped took before it stopped, for the
/// outbox to record so that the next run sends only the others.
pub(in crate::delivery) fn accepted_lines<'a, P: AsRef<str>>(
    pending: &'a [(String, Vec<String>)],
    accepted: &[String],
    path_of: impl Fn(&'a str) -> P,
) -> Vec<(String, Vec<String>)> {
    let covered = accepted_cover(accepted);
    pending
        .iter()
        .map(|(batch, lines)| {
            let took = lines.iter().filter(|line| covered(path_of(line).as_ref()));
            (batch.clone(), took.cloned().collect())
        })
        .collect()
}

impl RunOutbox {
    /// A journal of `consumer`'s purge of `pending` (batches and their lines).
    pub(super) fn journal(
        &self,
        consumer: &str,
        pending: &[(String, Vec<String>)],
    ) -> Arc<PurgeJournal> {
        let mut lines_of: HashMap<String, Vec<(usize, String)>> = HashMap::new();
        for (index, (_, lines)) in pending.iter().enumerate() {
            for line in lines {
                lines_of
                    .entry(self.purge_path(line))
                    .or_default()
                    .push((index, line.clone()));
            }
        }
        Arc::new(PurgeJournal {
            outbox: self.outbox.clone(),
            consumer: consumer.to_string(),
            batches: pending.iter().map(|(batch, _)| batch.clone()).collect(),
            lines_of,
            unwritten: Mutex::new(Vec::new()),
            failed: AtomicBool::new(false),
        })
    }
}

impl PurgeJournal {
    /// The progress a purge notes its accepted requests in, which hands them to this journal.
    pub(super) fn progress(self: &Arc<Self>) -> Progress {
        let journal = self.clone();
        Progress::journaled(Arc::new(move |paths: &[String]| journal.accepted(paths)))
    }

    /// Runs `purge`, recording what it accepted every [`REMOTE_EVERY`] in a remote outbox (a
    /// local one records each request as it is accepted).
    pub(super) async fn follow<T>(&self, purge: impl Future<Output = T>) -> T {
        if self.outbox.is_local() {
            return purge.await;
        }
        tokio::pin!(purge);
        loop {
            tokio::select! {
                biased;
                done = &mut purge => return done,
                () = tokio::time::sleep(REMOTE_EVERY) => self.flush().await,
            }
        }
    }

    /// The lines the paths of one accepted request purge.
    fn accepted(&self, paths: &[String]) {
        let mut took = Vec::new();
        for path in paths {
            match self.lines_of.get(path) {
                Some(lines) => took.extend(lines.iter().cloned()),
                // A folder (`3/*`) covers every path under it.
                None => {
                    for (purged, lines) in &self.lines_of {
                        if covers(path, purged) {
                            took.extend(lines.iter().cloned());
                        }
                    }
                }
            }
        }
        if took.is_empty() {
            return;
        }
        if !self.outbox.is_local() {
            self.unwritten
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend(took);
            return;
        }
        for (batch, lines) in self.by_batch(took) {
            if let Err(err) = self.outbox.append_done(&self.consumer, &batch, &lines) {
                self.warn(&err);
            }
        }
    }

    /// Records in the remote outbox what was accepted since the last time.
    async fn flush(&self) {
        let took = std::mem::take(
            &mut *self
                .unwritten
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if took.is_empty() {
            return;
        }
        let by_batch = self.by_batch(took);
        if let Err(err) = self.outbox.took_lines(&self.consumer, &by_batch).await {
            self.warn(&err);
        }
    }

    fn by_batch(&self, took: Vec<(usize, String)>) -> Vec<(String, Vec<String>)> {
        let mut grouped: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (index, line) in took {
            grouped.entry(index).or_default().push(line);
        }
        grouped
            .into_iter()
            .map(|(index, lines)| (self.batches[index].clone(), lines))
            .collect()
    }

    fn warn(&self, err: &crate::error::Error) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "cdn consumer `{}`: {err}; what it accepted is recorded when its purge stops, \
                 and a kill before then sends it again",
                self.consumer
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line is taken where what was accepted covers its purge path, by the same path or by a
    /// folder over it; each batch keeps its own lines, and a batch none of whose lines were
    /// accepted takes none.
    #[test]
    fn the_lines_taken_are_those_whose_purge_paths_were_accepted_or_lie_under_an_accepted_folder() {
        let lines = |list: &[&str]| list.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        let pending = vec![
            ("b1".to_string(), lines(&["3/1/1", "4/0/0", "2/0/0"])),
            ("b2".to_string(), lines(&["3/2/2", "5/9/9"])),
            ("b3".to_string(), lines(&["6/1/1"])),
        ];
        let accepted = lines(&["3/*", "2/0/0.pbf"]);
        let took = accepted_lines(&pending, &accepted, |line| format!("{line}.pbf"));
        assert_eq!(
            took,
            vec![
                ("b1".to_string(), lines(&["3/1/1", "2/0/0"])),
                ("b2".to_string(), lines(&["3/2/2"])),
                ("b3".to_string(), Vec::new()),
            ]
        );
    }
}
