//! One cycle of `oar-tiles watch`: exactly `seed --dirty` over every output, its sample verified,
//! its edge checks started, and what it did recorded in the metrics and one log line.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::shared::Shared;
use super::{Jobs, EDGE_CHECKS_IN_FLIGHT};
use crate::coordination::ChangedList;
use crate::error::Result;
use crate::job::WatchJob;
use crate::report::{ProgressKind, SummaryHeader, TilesetSummary};
use crate::schedule::Stop;
use crate::seed::{Locks, Session};

/// One `seed --dirty` over every output, recorded in the metrics and one log line; its edge checks
/// go on in the background. A partitioned tileset's partitions are reported as the tileset.
pub(super) async fn cycle(
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
        let store_settings = job.seed.store_settings.clone();
        let within = job.settings.check_edge.within;
        let output = summary.header.output.clone();
        let committed = summary.header.committed.clone();
        tokio::spawn(async move {
            let check = crate::edge::check_edge(&probe, &store_settings, within).await;
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
