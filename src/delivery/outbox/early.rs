//! Purges before the run's delivery ends them: a reseed's tiles purged as the sink stores them,
//! and what a target accepted of a purge that stopped part way, kept out of the next run's.

use std::collections::{HashMap, HashSet};

use crate::coordination::changed_list::RecordedLines;
use crate::edge::accepted_cover;
use crate::edge::Flights;
use crate::edge::{Holds, Progress, PurgeReport, PurgeTarget};
use crate::error::Result;
use crate::schedule::Stop;
use crate::tile::TileCoord;
use tokio::time::Instant;

use super::journal::accepted_lines;
use super::RunOutbox;

/// What the purges as stored do next.
enum Step {
    /// Purge a chunk the sink stored.
    Chunk(Vec<String>),
    /// Publish what every CDN serves anew.
    Publish,
    /// The run stored its last tile, or was stopped.
    End,
}

/// What the purges as stored keep from one chunk to the next.
#[derive(Default)]
struct Between {
    /// Targets that failed or ran over their budget: the run's delivery takes them on.
    given_up: HashSet<String>,
    /// Per target that gathers chunks into full calls, the lines not sent yet: what is left
    /// when the run ends goes with its delivery, in one call with the rest.
    gathered: HashMap<String, Vec<String>>,
}

impl RunOutbox {
    /// Whether this run purges its `tiles` as the sink stores them: the output serves a tile as
    /// soon as its writer records it (a tree, an S3 prefix), and some target's purges cost
    /// nothing per path and its exact paths go out in time at its pace. A target that charges
    /// per path (CloudFront), or that would coarsen so many paths into folders, waits for the
    /// run's end, where its purge is one plan instead of one per chunk. When every target
    /// purges as stored (or there is none), the changes feed lists the chunks as they are
    /// served anew everywhere ([`EarlyFeed`]); a versioned feed lists them as they are stored.
    pub fn purges_as_stored(&mut self, tiles: &[TileCoord]) -> bool {
        let paths: Vec<String> = tiles
            .iter()
            .map(|tile| self.purge_path(&tile.to_string()))
            .collect();
        self.early_targets = self
            .targets
            .iter()
            .filter(|t| !t.is_priced() && !t.tracks_invalidations() && t.sends_in_time(&paths))
            .map(PurgeTarget::consumer)
            .collect();
        let versioned = self.feed.as_ref().is_some_and(|f| f.settings.versioned);
        self.early_feed.enabled = self.records_when_visible
            && self.feed.is_some()
            && (versioned
                || self
                    .targets
                    .iter()
                    .all(|t| self.early_targets.contains(&t.consumer())));
        self.early_feed.ahead_of_purges = versioned;
        self.records_when_visible && (!self.early_targets.is_empty() || self.early_feed.enabled)
    }

    /// Whether this run, which may store any tile (a full seed, a walk of subtrees), purges its
    /// tiles as the sink stores them: the output serves each as soon as it is stored, and some
    /// target sends exact paths whatever it purges, for free (a cache that takes only `PURGE`),
    /// so at the run's end it would send the same paths, one by one, after everything else. A
    /// target that can purge folders waits for the run's end, where it buys folders instead. The
    /// changes feed lists such a run's tiles when it ends. (A target whose plans do not use the
    /// census of stored tiles is one that neither charges per path nor has folders.)
    pub fn purges_whole_as_stored(&mut self) -> bool {
        self.early_targets = self
            .targets
            .iter()
            .filter(|t| !t.tracks_invalidations() && !t.uses_census())
            .map(PurgeTarget::consumer)
            .collect();
        self.early_feed.enabled = false;
        self.records_when_visible && !self.early_targets.is_empty()
    }

    /// Purges, on every target whose purges cost nothing per path, the tiles `recorded` hands on
    /// as the sink stores them, chunk by chunk, until it ends or `stop` is requested; a target
    /// whose every API call counts against its user's limit (Cloudflare) gathers the chunks into
    /// full calls, so a small reseed's tiles go in one call with its delivery. Nothing is
    /// marked taken here: the outbox's intent and batch still name every tile, so a run killed
    /// now delivers them all again, and [`RunOutbox::commit_and_deliver`] only leaves out of its
    /// purge what was purged here after its new bytes were served. A target held back is left to
    /// the run's delivery; one that fails is held back and reported failed by it, without a
    /// second wait on the same CDN, its changes left in the outbox.
    pub async fn purge_as_stored(&mut self, recorded: &RecordedLines, holds: &Holds, stop: &Stop) {
        let mut between = Between::default();
        loop {
            let lines = match self.next_step(recorded, stop).await {
                Step::End => break,
                Step::Publish => {
                    self.publish_early(holds).await;
                    continue;
                }
                Step::Chunk(lines) => lines,
            };
            if self.early_feed.ahead_of_purges {
                // Stored, so the origin serves it: a versioned feed lists it before any purge.
                self.early_feed.served_anew(&lines);
            }
            match self.purge_chunk(&lines, &mut between, holds, stop).await {
                None => break,
                Some(true) if !self.early_feed.ahead_of_purges => {
                    self.early_feed.served_anew(&lines);
                }
                Some(_) => {}
            }
        }
        let overflowed = recorded.overflowed();
        if overflowed > 0 {
            tracing::info!(
                "{overflowed} tile(s) stored while the purges fell behind are purged when the run ends"
            );
        }
    }

    /// What the purges as stored do next: purge the chunk the sink stored, publish the feed's
    /// segment when it is due, or end with the run or a signal.
    async fn next_step(&self, recorded: &RecordedLines, stop: &Stop) -> Step {
        let due = self.early_feed.due();
        tokio::select! {
            biased;
            _ = stop.stopped() => Step::End,
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                Step::Publish
            }
            next = recorded.next() => next.map_or(Step::End, Step::Chunk),
        }
    }

    /// Purges the chunk `lines` on every target that purges as stored and is not held back or
    /// given up; returns whether every CDN purged it after its new bytes were served (so the
    /// feed may list it), `None` when `stop` ended the purges.
    async fn purge_chunk(
        &mut self,
        lines: &[String],
        between: &mut Between,
        holds: &Holds,
        stop: &Stop,
    ) -> Option<bool> {
        // Listed by the feed only once every CDN purged it after its new bytes were served.
        let mut served_anew = self.early_feed.enabled;
        for target in &self.targets {
            let consumer = target.consumer();
            let key = self.hold_key(target);
            if !self.early_targets.contains(&consumer)
                || between.given_up.contains(&consumer)
                || holds.held(&key).is_some()
            {
                served_anew = false;
                continue;
            }
            let Some(sending) = gather(target, &mut between.gathered, lines) else {
                served_anew = false;
                continue;
            };
            let (purged, progress) = tokio::select! {
                biased;
                _ = stop.stopped() => return None,
                sent = self.send_early(target, &consumer, &sending) => sent,
            };
            match purged {
                Ok(report) if !report.over_budget => {
                    let (purged, sent) = self.early.entry(consumer).or_default();
                    purged.extend(sending.iter().cloned());
                    sent.requests += report.requests;
                    sent.paths += report.paths;
                }
                Ok(_) => {
                    served_anew = false;
                    between.given_up.insert(consumer);
                }
                Err(err) => {
                    served_anew = false;
                    holds.failed(&key);
                    tracing::warn!("{err}; the changes stay in the outbox for the next run");
                    // What it accepted before it failed was purged after it was served.
                    let accepted = progress.take();
                    let covered = accepted_cover(&accepted);
                    let took: Vec<String> = sending
                        .iter()
                        .filter(|line| covered(&self.purge_path(line)))
                        .cloned()
                        .collect();
                    let (purged, _) = self.early.entry(consumer.clone()).or_default();
                    purged.extend(took);
                    self.early_failed.insert(consumer.clone(), err.to_string());
                    between.given_up.insert(consumer);
                }
            }
        }
        Some(served_anew)
    }

    /// Purges the lines `sending` on `target`, for its `consumer`; returns how it went and what
    /// it accepted.
    async fn send_early(
        &self,
        target: &PurgeTarget,
        consumer: &str,
        sending: &[String],
    ) -> (Result<PurgeReport>, Progress) {
        let mut paths: Vec<String> = sending.iter().map(|l| self.purge_path(l)).collect();
        paths.sort();
        paths.dedup();
        let mut untracked = Flights::untracked();
        // Recorded against the run's batch as accepted: a run stopped or killed now leaves them
        // out of what its recovered batch sends again.
        let journal = self.run.as_ref().map(|run| {
            let pending = [(run.batch(), sending.to_vec())];
            self.journal(consumer, &pending)
        });
        let progress = journal
            .as_ref()
            .map_or_else(Progress::new, |j| j.progress());
        let purge = target.purge_tracked(
            &paths,
            self.stored.as_ref(),
            None,
            &mut untracked,
            &progress,
        );
        let purged = match &journal {
            Some(journal) => journal.follow(purge).await,
            None => purge.await,
        };
        (purged, progress)
    }

    /// Publishes the tiles every CDN serves anew as a segment of the changes feed, while the run
    /// still renders. A failure leaves them to the run's delivery, which lists them then.
    async fn publish_early(&mut self, holds: &Holds) {
        let tiles = self.early_feed.take();
        let Some(feed) = &self.feed else { return };
        let path_of = |line: &str| self.purge_path(line);
        let hold_key = |target: &PurgeTarget| self.hold_key(target);
        let edge = self.feed_edge(holds, &path_of, &hold_key);
        match feed
            .publish(tiles.clone(), false, &self.outbox, &edge)
            .await
        {
            Ok(published) => self.early_feed.published(tiles, published),
            Err(err) => {
                tracing::warn!("{err}; the run's tiles are listed by the feed when it ends");
                self.early_feed.enabled = false;
            }
        }
    }

    /// Records in the outbox the lines of `pending` that what `target` accepted before its purge
    /// stopped covers, so the next run sends only the others.
    pub(super) async fn keep_progress(
        &self,
        target: &PurgeTarget,
        pending: &[(String, Vec<String>)],
        progress: &Progress,
    ) -> Result<()> {
        let accepted = progress.take();
        if accepted.is_empty() {
            return Ok(());
        }
        let took = accepted_lines(pending, &accepted, |line| self.purge_path(line));
        let count: usize = took.iter().map(|(_, lines)| lines.len()).sum();
        tracing::info!(
            "cdn `{}`: {count} change(s) purged before it stopped leave the outbox",
            target.name()
        );
        self.outbox.took_lines(&target.consumer(), &took).await
    }
}

/// The lines of a chunk `target` purges now: all of them, or, where its calls are what is scarce
/// ([`PurgeTarget::gathers`]), those gathered so far once they fill a call; `None` while they do
/// not.
fn gather(
    target: &PurgeTarget,
    gathered: &mut HashMap<String, Vec<String>>,
    lines: &[String],
) -> Option<Vec<String>> {
    let Some(per_call) = target.gathers() else {
        return Some(lines.to_vec());
    };
    let waiting = gathered.entry(target.consumer()).or_default();
    waiting.extend(lines.iter().cloned());
    let full = waiting.len() / per_call.max(1) * per_call.max(1);
    (full > 0).then(|| waiting.drain(..full).collect())
}
