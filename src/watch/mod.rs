//! `oar-tiles watch`: keeps every output fresh within seconds of a commit.
//!
//! The change-capture triggers notify a channel once per statement that logged a change; the
//! watcher LISTENs on a session connection of its own and, once the commits pause (at most
//! `debounce` after the first notification: a burst makes one cycle, see [`debounce`]; a change
//! that waits longer than `max_delay` is warned about), runs a cycle that is exactly `seed --dirty` through the seed's own [`Session`], deepest zooms first.
//! Notifications only say *when* to look: the output's watermark says *what* to render, so the
//! watcher catches up from it on start and after every reconnection, and a poll every
//! `poll_interval` covers a notification that never came. While a CDN's purges wait for room or
//! its invalidations are in flight (CloudFront), the poll comes every [`EDGE_POLL`] at most and
//! runs a cycle even without changes, so waiting purges go out and completions are seen soon
//! after they happen, without any cycle waiting on the CDN.
//!
//! A partitioned tileset runs a cycle of its own ([`crate::seed::partitioned_cycle`]): it reads
//! the change log once for the values its changes touched and opens only those partitions; its
//! partitions are reported (metrics, cycle line) as the tileset, never by value.
//!
//! It holds every output's lock for as long as it runs, so a second watcher or a cron seed on the
//! same output refuses. A signal stops the current cycle as it stops a seed (the output keeps its
//! previous state) and ends the process with 130 or 143.

mod debounce;
mod feed;
mod http;
mod shared;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use backon::BackoffBuilder;

use crate::coordination::{lock, ChangedList};
use crate::db::Listener;
use crate::error::{Error, ExitCode, Result};
use crate::job::{SeedJob, TilesetJob, WatchJob};
use crate::render::source::quoted_table;
use crate::report::{ProgressKind, SummaryHeader, TilesetSummary};
use crate::schedule::Stop;
use crate::seed::{Locks, Session};
use crate::sink::{self, HashRefresh};
use crate::state::capture;
use shared::Shared;

/// The poll while the edge waits (see the module's comment).
const EDGE_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Edge checks running at once, each over one target's sample of one cycle.
const EDGE_CHECKS_IN_FLIGHT: usize = 4;

/// The watched job, split: plain tilesets run in one long-lived session, and each partitioned
/// tileset runs its own cycle, which expands only the values its changes touched.
struct Jobs {
    /// The plain tilesets; `None` when every tileset is partitioned.
    plain: Option<SeedJob>,
    /// One job per partitioned tileset.
    partitioned: Vec<SeedJob>,
}

impl Jobs {
    fn split(seed: &SeedJob) -> Jobs {
        let (partitioned, plain): (Vec<_>, Vec<_>) = seed
            .tilesets
            .iter()
            .cloned()
            .partition(|t| t.tileset.partition_by.is_some());
        let with = |tilesets: Vec<TilesetJob>| SeedJob {
            tilesets,
            ..seed.clone()
        };
        Jobs {
            plain: (!plain.is_empty()).then(|| with(plain)),
            partitioned: partitioned.into_iter().map(|t| with(vec![t])).collect(),
        }
    }
}

/// An output the watcher keeps fresh, and the tables its changes come from.
struct Watched {
    output: String,
    tables: Vec<String>,
}

/// Runs until a signal stops it (an `Error::Stopped`) or an error that retrying cannot mend.
pub async fn run(job: &WatchJob) -> Result<()> {
    let seed = &job.seed;
    // One watcher per output, for as long as it runs: taken before anything else is done.
    let mut _locks = Vec::new();
    let mut watched = Vec::new();
    for tileset in &seed.tilesets {
        if let Some(target) = &tileset.output {
            let place = sink::lock_place(target, &seed.s3);
            let lock = lock::acquire(&place, false, None, std::future::pending());
            _locks.push(lock.await?);
            let mut tables: Vec<String> = tileset.tileset.layers.iter().map(quoted_table).collect();
            tables.sort();
            tables.dedup();
            watched.push(Watched {
                output: target.describe(),
                tables,
            });
        }
    }
    // Every CDN target's secrets and credentials, before the first cycle renders anything.
    crate::seed::check_cdns(seed).await?;
    let jobs = Jobs::split(seed);
    let shared = Arc::new(Shared::new(job));
    let _server = http::serve(job.settings.listen, shared.clone()).await?;
    let stop = Stop::on_signals();
    let mut backoff = reconnect_backoff();
    loop {
        let mut connected_once = false;
        let Err(err) =
            watch_connected(job, &jobs, &watched, &shared, &stop, &mut connected_once).await;
        shared.database_up.store(false, Ordering::Relaxed);
        if matches!(err, Error::Stopped { .. }) {
            return Err(err);
        }
        // A failed cycle, a lost connection and a failed reconnection each count once.
        shared.metrics.failed(&err);
        if err.exit_code() != ExitCode::Failure {
            return Err(err);
        }
        if connected_once {
            backoff = reconnect_backoff();
        }
        let delay = backoff.next().unwrap_or(std::time::Duration::from_secs(30));
        tracing::warn!(
            "{err}; reconnecting in {:.1} s, then catching up from each output's watermark",
            delay.as_secs_f64()
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            signal = stop.stopped() => return Err(Error::Stopped { signal }),
        }
    }
}

/// 0.5 s doubling to 30 s, without end: a watcher outlives any outage.
fn reconnect_backoff() -> impl Iterator<Item = std::time::Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(500))
        .with_max_delay(std::time::Duration::from_secs(30))
        .without_max_times()
        .build()
}

/// Connects, catches up, then runs a cycle after each burst of notifications or poll; returns
/// only with the error that ended it.
async fn watch_connected(
    job: &WatchJob,
    jobs: &Jobs,
    watched: &[Watched],
    shared: &Arc<Shared>,
    stop: &Stop,
    connected_once: &mut bool,
) -> Result<Infallible> {
    let seed = &job.seed;
    let channel = capture::channel(&seed.change_schema);
    // Listening before the catch-up, so nothing committed during it goes unnoticed.
    let mut listener = Listener::connect(&seed.database, &channel).await?;
    let session = match &jobs.plain {
        Some(plain) => Some(Session::open_sharing(plain, shared.holds.clone()).await?),
        None => None,
    };
    let pool = match &session {
        Some(session) => session.pool().clone(),
        None => crate::db::connect(&seed.database, 2).await?,
    };
    shared.database_up.store(true, Ordering::Relaxed);
    *connected_once = true;
    tracing::info!(
        "watching {} output(s) on channel {channel}; catching up from their watermarks",
        watched.len()
    );
    loop {
        cycle(job, jobs, session.as_ref(), shared, stop).await?;
        // A cycle that changed tiles left their outputs' hashes pending.
        let mut hash_due = true;
        wait_for_changes(
            job,
            watched,
            (&mut listener, &mut hash_due),
            &pool,
            shared,
            stop,
        )
        .await?;
    }
}

/// How long the watcher waits without a notification before it reads every tile of the outputs
/// whose `agg_tiles_hash` cycles left pending: a burst's cycles go first, then the hash once.
const HASH_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Brings the pending `agg_tiles_hash` of every watched output up to date, one output after
/// another, until a notification arrives: then gives up at the next tile (the output keeps
/// declaring it pending) and returns the notification, so no cycle waits for the hash.
async fn refresh_hashes(
    job: &WatchJob,
    listener: &mut Listener,
    stop: &Stop,
) -> Result<Option<Instant>> {
    let cancel = Arc::new(AtomicBool::new(false));
    let all = async {
        for tileset in &job.seed.tilesets {
            // A partitioned tileset's partitions brought theirs up to date in their cycle.
            let Some(target) = tileset.output.as_ref() else {
                continue;
            };
            if tileset.tileset.partition_by.is_some() {
                continue;
            }
            let started = Instant::now();
            let settings = &tileset.tileset.output_settings;
            match crate::sink::refresh_agg_hash(target, settings, cancel.clone()).await {
                Ok(HashRefresh::Computed(hash)) => {
                    tracing::info!(
                        "{}: agg_tiles_hash {hash}, read from every tile while idle in {:.2} s",
                        target.describe(),
                        started.elapsed().as_secs_f64()
                    );
                    // The next cycle, which the outbox's batch wakes, delivers it.
                    if let Err(err) =
                        crate::delivery::record_new_hash(tileset, target, &job.seed.s3).await
                    {
                        tracing::warn!("{err}; the edge keeps the old agg_tiles_hash for now");
                    }
                }
                Ok(HashRefresh::Current | HashRefresh::Cancelled) => {}
                // The tiles are stored and purged; only the hash waits for the next idle spell.
                Err(err) => tracing::warn!("agg_tiles_hash left pending: {err}"),
            }
        }
    };
    tokio::pin!(all);
    tokio::select! {
        () = &mut all => Ok(None),
        arrived = listener.notifications.recv() => {
            cancel.store(true, Ordering::Relaxed);
            all.await;
            Ok(arrived)
        }
        signal = stop.stopped() => {
            cancel.store(true, Ordering::Relaxed);
            all.await;
            Err(Error::Stopped { signal })
        }
    }
}

/// Waits for a notification (then for the burst to end, at most `max_delay`) or the poll, until
/// some output has changes to apply.
async fn wait_for_changes(
    job: &WatchJob,
    watched: &[Watched],
    (listener, hash_due): (&mut Listener, &mut bool),
    pool: &deadpool_postgres::Pool,
    shared: &Shared,
    stop: &Stop,
) -> Result<()> {
    let settings = &job.settings;
    loop {
        let edge_waiting = shared.edge_waiting.load(Ordering::Relaxed);
        // Tiles a `[tileset.freshness]` deferral holds back get their cycle when due, though no
        // change comes.
        let deferral = crate::seed::next_deferral(&job.seed).await?;
        let until_due = deferral.map(|due| {
            due.duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        });
        let mut interval = if edge_waiting {
            settings.poll_interval.min(EDGE_POLL)
        } else {
            settings.poll_interval
        };
        if let Some(due) = until_due {
            interval = interval.min(due);
        }
        let poll = tokio::time::sleep(interval);
        tokio::pin!(poll);
        let first = tokio::select! {
            arrived = listener.notifications.recv() => Some(arrived.ok_or_else(debounce::lost)?),
            () = &mut poll => None,
            () = tokio::time::sleep(HASH_IDLE), if *hash_due => {
                *hash_due = false;
                match refresh_hashes(job, listener, stop).await? {
                    Some(arrived) => {
                        // Cut short: the hash is still due once this change's cycle is done.
                        *hash_due = true;
                        Some(arrived)
                    }
                    None => continue,
                }
            }
            signal = stop.stopped() => return Err(Error::Stopped { signal }),
        };
        if let Some(first) = first {
            debounce::gather_burst(listener, first, settings.debounce, stop).await?;
            // What is queued now arrived before the cycle reads the log, which covers it: left in
            // the queue, it would open the next window at once and count as waiting since then.
            while listener.notifications.try_recv().is_ok() {}
            let waited = first.elapsed();
            if waited > settings.max_delay {
                tracing::warn!(
                    "a change waited {:.1} s for its cycle, over max_delay ({:.1} s): cycles take \
                     longer than changes arrive (more --concurrency, or fewer zooms, would help)",
                    waited.as_secs_f64(),
                    settings.max_delay.as_secs_f64()
                );
            }
        }
        if count_pending(job, watched, pool, shared).await? > 0 || edge_waiting {
            return Ok(());
        }
        // Purges an earlier cycle could not deliver (a CDN down, a budget's pace, CloudFront's
        // quota in flight) wait in an outbox; without a new change nothing else would wake a
        // cycle to deliver them.
        if first.is_none() && has_backlog(shared) {
            tracing::debug!("no new changes; a cycle delivers what waits in the outboxes");
            return Ok(());
        }
        if deferral.is_some_and(|due| due <= std::time::SystemTime::now()) {
            return Ok(());
        }
    }
}

/// Whether some output's outbox holds changes a consumer has not taken.
fn has_backlog(shared: &Shared) -> bool {
    !shared
        .outbox_oldest
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .is_empty()
}

/// Counts each output's unapplied changes into the metrics; returns their sum.
async fn count_pending(
    job: &WatchJob,
    watched: &[Watched],
    pool: &deadpool_postgres::Pool,
    shared: &Shared,
) -> Result<i64> {
    let mut total = 0;
    for output in watched {
        let schema = &job.seed.change_schema;
        let count = capture::pending(pool, schema, &output.output, &output.tables).await?;
        shared.metrics.set_pending(&output.output, count);
        total += count;
    }
    Ok(total)
}

/// One `seed --dirty` over every output, recorded in the metrics and one log line; its edge checks
/// go on in the background. A partitioned tileset's partitions are reported as the tileset.
async fn cycle(
    job: &WatchJob,
    jobs: &Jobs,
    session: Option<&Session<'_>>,
    shared: &Arc<Shared>,
    stop: &Stop,
) -> Result<()> {
    let started = Instant::now();
    let outcome = run_cycle(jobs, session, shared, stop).await;
    let mut summaries = match outcome {
        Ok(summaries) => summaries,
        Err(err) => {
            shared.cycle_ok.store(false, Ordering::Relaxed);
            return Err(err);
        }
    };
    let verify = job.seed.run.verify_sample;
    if verify > 0 {
        // Only outputs the cycle changed: an idle output was checked after its last change.
        let changed: Vec<String> = summaries
            .iter()
            .filter(|s| s.stored.changed + s.stored.deleted > 0)
            .map(|s| s.header.output.clone())
            .collect();
        let mut seed = job.seed.clone();
        seed.tilesets.retain(|t| {
            t.output
                .as_ref()
                .is_some_and(|o| changed.contains(&o.describe()))
        });
        if !seed.tilesets.is_empty() {
            if let Err(e) = crate::validate::verify_sample(&seed, verify, &mut summaries).await {
                tracing::warn!("--verify-sample could not run: {e}");
            }
        }
    }
    let now = SystemTime::now();
    let edge_waiting = summaries
        .iter()
        .flat_map(|s| &s.purges)
        .any(|purge| purge.no_room || purge.in_flight.is_some_and(|in_flight| in_flight > 0));
    shared.edge_waiting.store(edge_waiting, Ordering::Relaxed);
    for summary in &mut summaries {
        check_edge(job, shared, summary);
        shared.metrics.record(summary, now);
        let mut oldest = shared
            .outbox_oldest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match summary.outbox.oldest_seconds {
            Some(age) => {
                let made = now - std::time::Duration::from_secs_f64(age.max(0.0));
                oldest.insert(summary.header.output.clone(), made);
            }
            None => {
                oldest.remove(&summary.header.output);
            }
        }
        drop(oldest);
        // A complete cycle applied everything it read; what came since is counted at the next wake.
        shared.metrics.set_pending(&summary.header.output, 0);
    }
    shared.metrics.succeeded(now);
    shared.cycle_ok.store(true, Ordering::Relaxed);
    shared.cycles.send_modify(|cycles| *cycles += 1);
    tracing::info!("{}", cycle_line(&summaries, started.elapsed(), now));
    Ok(())
}

/// Runs the plain tilesets in the session, then each partitioned tileset's cycle.
async fn run_cycle(
    jobs: &Jobs,
    session: Option<&Session<'_>>,
    shared: &Shared,
    stop: &Stop,
) -> Result<Vec<TilesetSummary>> {
    let mut summaries = match session {
        Some(session) => {
            session
                .seed(
                    ProgressKind::Quiet,
                    stop,
                    ChangedList::disabled(),
                    Locks::Held,
                )
                .await?
        }
        None => Vec::new(),
    };
    for job in &jobs.partitioned {
        let started = Instant::now();
        let (parts, scopes) = crate::seed::partitioned_cycle(job, stop, &shared.holds).await?;
        let (Some(tileset), Some(scope)) = (job.tilesets.first(), scopes.into_iter().next()) else {
            continue;
        };
        let Some(output) = &tileset.output else {
            continue;
        };
        let output = output.describe();
        shared
            .metrics
            .record_partitions(&output, scope.rendered, scope.total);
        tracing::info!(
            partitions_rendered = scope.rendered,
            partitions_total = scope.total,
            "tileset `{}`: {} of {} partition(s) rendered",
            scope.tileset,
            scope.rendered,
            scope.total
        );
        let complete = parts.iter().all(|p| p.header.complete);
        let header = SummaryHeader {
            tileset: scope.tileset,
            output,
            zooms: tileset.zooms.to_string(),
            dry_run: false,
            complete,
            changes_read: scope.changes_read,
            committed: if complete {
                scope.committed
            } else {
                Vec::new()
            },
            settings: None,
            ways: Vec::new(),
        };
        summaries.push(TilesetSummary::merged(header, parts, started.elapsed()));
    }
    Ok(summaries)
}

/// Starts the edge checks of a cycle's purges, which record into the metrics when they end.
fn check_edge(job: &WatchJob, shared: &Arc<Shared>, summary: &mut TilesetSummary) {
    for probe in std::mem::take(&mut summary.edge_probes) {
        let Ok(permit) = shared.edge_checks.clone().try_acquire_owned() else {
            tracing::warn!(
                "edge check of `{}` skipped: {EDGE_CHECKS_IN_FLIGHT} earlier checks are still waiting for their tiles to turn fresh",
                probe.target
            );
            continue;
        };
        let shared = shared.clone();
        let s3 = job.seed.s3.clone();
        let within = job.settings.check_edge.within;
        let output = summary.header.output.clone();
        let committed = summary.header.committed.clone();
        tokio::spawn(async move {
            let check = crate::edge::check_edge(&probe, &s3, within).await;
            shared.metrics.record_edge(&output, &check, &committed);
            match check.fresh_at {
                Some(fresh) => {
                    let fresh = fresh
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    let latencies: Vec<f64> =
                        committed.iter().map(|c| (fresh - c).max(0.0)).collect();
                    // Every latency, for benchmarks that need exact percentiles over many cycles.
                    tracing::debug!(
                        target_name = check.target.as_str(),
                        edge_latencies = ?latencies,
                        "change-to-edge latencies of a cycle's purge at `{}`",
                        check.target
                    );
                }
                None => tracing::warn!(
                    "edge check: {} of {} tile(s) sampled from a cycle still differ at `{}` after {:.0} s ({} stale answer(s))",
                    check.unconfirmed,
                    check.sampled,
                    check.target,
                    within.as_secs_f64(),
                    check.stale_answers
                ),
            }
            drop(permit);
        });
    }
}

/// `cycle: 12 changes, 40 tiles rendered (31 written, 2 deleted) in 0.41 s; latency p50 1.2 s, max 1.9 s`.
fn cycle_line(summaries: &[TilesetSummary], took: std::time::Duration, now: SystemTime) -> String {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut latencies: Vec<f64> = summaries
        .iter()
        .flat_map(|s| &s.header.committed)
        .map(|committed| (now - committed).max(0.0))
        .collect();
    latencies.sort_by(f64::total_cmp);
    // Every latency, for benchmarks that need exact percentiles over many cycles.
    tracing::debug!(latencies = ?latencies, "change-to-tile latencies of the cycle");
    let mut completed: Vec<f64> = summaries
        .iter()
        .flat_map(|s| &s.purges)
        .flat_map(|purge| &purge.completed_seconds)
        .copied()
        .collect();
    if !completed.is_empty() {
        completed.sort_by(f64::total_cmp);
        tracing::debug!(
            purge_completed = ?completed,
            "commit-to-invalidation-completed of the changes whose invalidations completed"
        );
    }
    let rendered: u64 = summaries.iter().map(|s| s.tiles_queried).sum();
    let written: u64 = summaries.iter().map(|s| s.stored.changed).sum();
    let deleted: u64 = summaries.iter().map(|s| s.stored.deleted).sum();
    let mut line = format!(
        "cycle: {} change(s), {rendered} tile(s) rendered ({written} stored, {deleted} deleted) in {:.2} s",
        latencies.len(),
        took.as_secs_f64()
    );
    if let (Some(median), Some(max)) = (latencies.get(latencies.len() / 2), latencies.last()) {
        line.push_str(&format!(
            "; change-to-tile latency p50 {median:.2} s, max {max:.2} s"
        ));
    }
    line
}
