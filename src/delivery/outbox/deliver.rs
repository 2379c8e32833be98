//! A run's end at its outbox: its entry ended, then every pending batch handed to the consumers
//! in order: the command's `--changed-list`, each CDN target, the changes feed, and, for a
//! partition, its tileset's outbox for what its CDNs did not take.

use std::collections::HashSet;
use std::time::Duration;

use crate::coordination::changed_list::CHANGED_LIST_CONSUMER;
use crate::coordination::feed::Published;
use crate::coordination::ChangedList;
use crate::edge::Budget;
use crate::edge::EdgeProbe;
use crate::edge::Flights;
use crate::edge::{Holds, PurgeReport, PurgeTarget};
use crate::error::Result;
use crate::report::PurgeSummary;
use crate::schedule::Stop;

use super::{reaches_the_edge, Delivered, RunOutbox};

/// Batches past which a run without `--changed-list` merges its outbox's waiting batches.
const COALESCE_ABOVE: usize = 16;

/// The batches waiting for one consumer: each batch's name and lines.
type Pending = Vec<(String, Vec<String>)>;

/// One CDN target's part of a run's delivery.
struct ToTarget<'a> {
    target: &'a PurgeTarget,
    consumer: String,
    /// The key its failures hold it back under.
    key: String,
    holds: &'a Holds,
    stop: Option<&'a Stop>,
    /// How long it is still held back after a failure.
    held: Option<Duration>,
    /// What it purged while the run wrote: the lines, and what that sent.
    early: Option<(HashSet<String>, PurgeReport)>,
    /// What it reports, filled in as its delivery goes.
    summary: PurgeSummary,
}

/// How one target's purge of its pending batches ended.
enum Purged {
    /// Its summary says all, its invalidations' record saved.
    Done,
    /// A signal stopped it: the run's other targets are not purged.
    Stopped(&'static str),
    /// Its invalidations' figures and record follow.
    Next,
}

impl RunOutbox {
    /// Ends the run's entry (its batch stored, its intent removed; after a failure, when the output
    /// kept nothing of the run, only its intent removed), then hands every pending batch to the consumers. The command's `--changed-list`
    /// marks what it took once the list is in place. A signal (`stop`) ends the purges at once,
    /// and one that came earlier skips them: a stopped run must not wait on a CDN. `committed`
    /// are the commit times of the changes the run applied, which a CloudFront target's
    /// [`Flights`] follows until their invalidations complete.
    pub async fn commit_and_deliver(
        &mut self,
        changed: &ChangedList,
        failed: bool,
        holds: &Holds,
        stop: Option<&Stop>,
        committed: &[f64],
    ) -> Result<Delivered> {
        self.end_entry(failed, changed.is_enabled()).await?;
        self.hand_to_changed_list(changed).await?;
        // A versioned feed lists what the origin holds now, ahead of the CDNs' purges.
        let listed_ahead = match &self.feed {
            Some(feed) if feed.settings.versioned => Some(self.deliver_feed(holds).await?),
            _ => None,
        };
        let mut purges = Vec::new();
        let mut probes = Vec::new();
        let mut stopped = None;
        for target in &self.targets {
            let consumer = target.consumer();
            let mut to = ToTarget {
                target,
                key: self.hold_key(target),
                held: None,
                holds,
                stop,
                early: self.early.remove(&consumer),
                summary: PurgeSummary {
                    target: target.name().to_string(),
                    ..PurgeSummary::default()
                },
                consumer,
            };
            let early_failed = self.early_failed.remove(&to.consumer);
            let signal = self
                .deliver_to(&mut to, early_failed, committed, &mut probes)
                .await?;
            purges.push(to.summary);
            if signal.is_some() {
                stopped = signal;
                break;
            }
        }
        // After the CDNs, and before a partition hands what they did not take over to its
        // tileset: the feed must still see those batches as waiting.
        let feed = match (listed_ahead, stopped) {
            (Some(listed), _) => listed,
            (None, None) => self.deliver_feed(holds).await?,
            (None, Some(_)) => self.early_feed.total(None),
        };
        for summary in &mut purges {
            let (requests, paths) = self.head_purges.take(&summary.target);
            summary.requests += requests;
            summary.paths += paths;
        }
        self.outbox.prune(&self.consumers).await?;
        self.note_api_calls().await?;
        self.hand_over().await?;
        Ok(Delivered {
            purges,
            probes,
            stopped,
            feed,
        })
    }

    /// Ends the run's entry in the outbox; without a `--changed-list` to take them, merges the
    /// waiting batches, so a CDN that is down does not grow the outbox by a batch per run.
    async fn end_entry(&mut self, failed: bool, listed: bool) -> Result<()> {
        match self.run.take() {
            Some(run) if failed && !self.keeps_stopped_tiles => self.outbox.discard(run).await?,
            Some(run) => self.outbox.commit(run).await?,
            None => {}
        }
        if !listed {
            let merged = self.outbox.coalesce(COALESCE_ABOVE).await?;
            if merged > 0 {
                tracing::info!(
                    "{}: merged {merged} waiting batch(es) of the outbox",
                    self.outbox.describe()
                );
            }
        }
        Ok(())
    }

    /// Hands the batches waiting for the command's `--changed-list` to it, which marks them taken
    /// once the list is in place; a batch it took earlier in the run is not handed twice.
    async fn hand_to_changed_list(&mut self, changed: &ChangedList) -> Result<()> {
        if !changed.is_enabled() {
            return Ok(());
        }
        let mut pending = self.outbox.pending(CHANGED_LIST_CONSUMER).await?;
        pending.retain(|(name, _)| self.listed.insert(name.clone()));
        if pending.is_empty() {
            return Ok(());
        }
        let (names, lines): (Vec<String>, Vec<Vec<String>>) = pending.into_iter().unzip();
        let outbox = self.outbox.clone();
        let consumers = self.consumers.clone();
        let target = self.target.clone();
        changed.take_lines(
            lines
                .into_iter()
                .flatten()
                .filter(move |line| reaches_the_edge(&target, line)),
            Box::new(move || {
                Box::pin(async move {
                    outbox
                        .taken(CHANGED_LIST_CONSUMER, &names, &consumers)
                        .await
                })
            }),
        );
        Ok(())
    }

    /// Delivers the batches waiting for `to`'s target; returns the signal that stopped it.
    async fn deliver_to(
        &self,
        to: &mut ToTarget<'_>,
        early_failed: Option<String>,
        committed: &[f64],
        probes: &mut Vec<EdgeProbe>,
    ) -> Result<Option<&'static str>> {
        let pending = self.outbox.pending(&to.consumer).await?;
        if let Some((_, sent)) = &to.early {
            to.summary.requests += sent.requests;
            to.summary.paths += sent.paths;
        }
        if let (false, Some(failed)) = (pending.is_empty(), early_failed) {
            // The purge while the run wrote failed: no second wait on the same CDN.
            to.summary.failed = Some(failed);
            return Ok(None);
        }
        let mut flights = Flights::open(to.target, &self.outbox).await?;
        if pending.is_empty() {
            flights.nothing_waits();
        } else {
            flights.waiting(committed);
        }
        to.held = to.holds.held(&to.key);
        if to.held.is_none() && (!pending.is_empty() || flights.in_flight() > 0) {
            if let Err(err) = to.target.survey(&mut flights).await {
                to.holds.failed(&to.key);
                tracing::warn!("{err}; the changes stay in the outbox for the next run");
                to.summary.failed = Some(err.to_string());
                flights.save().await?;
                return Ok(None);
            }
        }
        if pending.is_empty() {
            // Every line was purged while the run wrote, its acceptance journaled as it came.
            let purged = to.early.iter().flat_map(|(purged, _)| purged);
            probes.extend(self.probe(to.target, purged));
        } else {
            match self
                .purge_pending(to, pending, &mut flights, probes)
                .await?
            {
                Purged::Done => return Ok(None),
                Purged::Stopped(signal) => return Ok(Some(signal)),
                Purged::Next => {}
            }
        }
        if to.target.tracks_invalidations() {
            to.summary.in_flight = Some(flights.in_flight());
            to.summary.completed = flights.completed();
            to.summary.completed_seconds = flights.completed_seconds().to_vec();
        }
        flights.save().await?;
        Ok(None)
    }

    /// Purges the paths of `pending` that the run's purges while it wrote did not cover, unless
    /// the target is held back.
    async fn purge_pending(
        &self,
        to: &mut ToTarget<'_>,
        pending: Pending,
        flights: &mut Flights<'_>,
        probes: &mut Vec<EdgeProbe>,
    ) -> Result<Purged> {
        let paths = self.paths_left(&pending, to.early.as_ref());
        if paths.is_empty() {
            self.all_purged_early(to, pending, flights, probes).await?;
            return Ok(Purged::Done);
        }
        if let Some(left) = to.held {
            tracing::info!(
                "cdn `{}` failed recently: its {} change(s) wait in the outbox; next attempt in {:.0} s",
                to.target.name(),
                paths.len(),
                left.as_secs_f64()
            );
            to.summary.deferred = true;
            flights.save().await?;
            return Ok(Purged::Done);
        }
        let ledger_outbox = self.handover.as_ref().map_or(&*self.outbox, |(o, _)| o);
        let mut budget = Budget::open(to.target, ledger_outbox).await?;
        let allowance = budget.allowance();
        // What it accepts reaches the outbox as it is accepted: a kill resends only what was in
        // flight.
        let journal = self.journal(&to.consumer, &pending);
        let progress = journal.progress();
        let purge = journal.follow(to.target.purge_tracked(
            &paths,
            self.stored.as_ref(),
            allowance,
            flights,
            &progress,
        ));
        let purged = match to.stop {
            Some(stop) => tokio::select! {
                biased;
                signal = stop.stopped() => Err(signal),
                purged = purge => Ok(purged),
            },
            None => Ok(purge.await),
        };
        let report = match purged {
            Err(signal) => {
                self.keep_progress(to.target, &pending, &progress).await?;
                tracing::warn!(
                    "cdn `{}`: {signal} received: not purged; its {} change(s) not yet accepted stay in the outbox for the next run",
                    to.target.name(),
                    paths.len()
                );
                to.summary.failed = Some(format!("stopped by {signal} before its purge ended"));
                flights.save().await?;
                return Ok(Purged::Stopped(signal));
            }
            Ok(Err(err)) => {
                to.holds.failed(&to.key);
                self.keep_progress(to.target, &pending, &progress).await?;
                tracing::warn!("{err}; the changes stay in the outbox for the next run");
                to.summary.failed = Some(err.to_string());
                None
            }
            Ok(Ok(report)) => Some(report),
        };
        let taken = match report {
            Some(report) => {
                let sent = (report, paths.len(), allowance);
                self.settle(to, pending, sent, &mut budget, probes).await?
            }
            None => false,
        };
        if !taken && self.handover.is_some() {
            // A partition's paths go to its tileset's outbox, where this record does not follow
            // them.
            flights.nothing_waits();
        }
        Ok(Purged::Next)
    }

    /// The purge paths of `pending`'s lines, sorted and unique, but for those `early` purged:
    /// lines purged while the run wrote were purged after their newest bytes were served, which
    /// covers every batch naming them.
    fn paths_left(
        &self,
        pending: &Pending,
        early: Option<&(HashSet<String>, PurgeReport)>,
    ) -> Vec<String> {
        let purged_early = |line: &String| early.is_some_and(|(p, _)| p.contains(line));
        let mut paths: Vec<String> = pending
            .iter()
            .flat_map(|(_, lines)| lines.iter())
            .filter(|line| !purged_early(line) && reaches_the_edge(&self.target, line))
            .map(|line| self.purge_path(line))
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// Marks `pending` taken by `to`'s target, whose every line it purged while the run wrote.
    async fn all_purged_early(
        &self,
        to: &mut ToTarget<'_>,
        pending: Pending,
        flights: &mut Flights<'_>,
        probes: &mut Vec<EdgeProbe>,
    ) -> Result<()> {
        to.holds.succeeded(&to.key);
        probes.extend(self.probe_purged(to, &pending));
        let names: Vec<String> = pending.into_iter().map(|(n, _)| n).collect();
        self.outbox
            .taken(&to.consumer, &names, &self.consumers)
            .await?;
        flights.nothing_waits();
        flights.save().await
    }

    /// The edge check's probe of what `to`'s target purged for `pending`: its tiles, or where
    /// it holds none (the tiles went while the run wrote, and only documents such as
    /// `tiles.json` waited for the end) those purged while the run wrote.
    fn probe_purged(&self, to: &ToTarget<'_>, pending: &Pending) -> Option<EdgeProbe> {
        let purged = to.early.iter().flat_map(|(purged, _)| purged);
        let pending_lines = pending.iter().flat_map(|(_, l)| l);
        self.probe(to.target, pending_lines)
            .or_else(|| self.probe(to.target, purged))
    }

    /// Records what a purge that ran to its end did: `sent` is its report, the number of paths
    /// it had and the budget's allowance it had. Returns whether the target took `pending`.
    async fn settle(
        &self,
        to: &mut ToTarget<'_>,
        pending: Pending,
        sent: (PurgeReport, usize, Option<f64>),
        budget: &mut Budget<'_>,
        probes: &mut Vec<EdgeProbe>,
    ) -> Result<bool> {
        let (report, paths, allowance) = sent;
        if report.over_budget {
            tracing::info!(
                "cdn `{}`: the budget allows ${:.4} now, less than the coarsest purge of its {} change(s): they wait in the outbox",
                to.target.name(),
                allowance.unwrap_or_default(),
                paths
            );
            to.summary.over_budget = true;
            to.summary.budget = budget.state();
            return Ok(false);
        }
        to.holds.succeeded(&to.key);
        if report.no_room {
            tracing::info!(
                "cdn `{}`: the invalidations in flight leave no room for its {} change(s): they wait in the outbox for a later run",
                to.target.name(),
                paths
            );
            to.summary.no_room = true;
            to.summary.budget = budget.state();
            return Ok(false);
        }
        budget.spent(report.price_usd.unwrap_or_default()).await?;
        to.summary.budget = budget.state();
        to.summary.evicted = report.evicted;
        probes.extend(self.probe_purged(to, &pending));
        to.summary.requests += report.requests;
        to.summary.paths += report.paths;
        to.summary.price_usd = report.price_usd;
        let names: Vec<String> = pending.into_iter().map(|(n, _)| n).collect();
        self.outbox
            .taken(&to.consumer, &names, &self.consumers)
            .await?;
        Ok(true)
    }

    /// Publishes what the changes feed may list now, after the CDNs; with what the run's
    /// segments published while it rendered, what the feed published in all.
    async fn deliver_feed(&self, holds: &Holds) -> Result<Option<Published>> {
        let Some(feed) = &self.feed else {
            return Ok(self.early_feed.total(None));
        };
        let path_of = |line: &str| self.purge_path(line);
        let hold_key = |target: &PurgeTarget| self.hold_key(target);
        let edge = self.feed_edge(holds, &path_of, &hold_key);
        let early = &self.early_feed.published;
        let last = feed.deliver(&self.outbox, &self.consumers, edge, early);
        Ok(self.early_feed.total(last.await?))
    }

    /// A partition's: hands what its CDNs did not take over to its tileset's outbox, where every
    /// run of the tileset purges it.
    async fn hand_over(&self) -> Result<()> {
        let Some((tileset_outbox, path)) = &self.handover else {
            return Ok(());
        };
        let cdns: Vec<String> = self.targets.iter().map(PurgeTarget::consumer).collect();
        let handed = self
            .outbox
            .hand_over(tileset_outbox, &cdns, &self.consumers, path, |line| {
                self.purge_path(line)
            })
            .await?;
        if handed > 0 {
            tracing::info!(
                "{handed} batch(es) of purges wait in {} for the tileset's next run",
                tileset_outbox.describe()
            );
        }
        Ok(())
    }
}
