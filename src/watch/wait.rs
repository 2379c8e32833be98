//! Between two cycles of `oar-tiles watch`: waiting for a notification, the burst it opens or the
//! poll, until some output has changes to apply; the pending hashes brought up to date while idle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::lane::Lane;
use super::shared::Shared;
use super::{debounce, Watched, EDGE_POLL};
use crate::db::Listener;
use crate::error::{Error, Result};
use crate::job::WatchJob;
use crate::schedule::Stop;
use crate::seed::Live;
use crate::sink::HashRefresh;
use crate::state::capture;

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
                        crate::delivery::record_new_hash(tileset, target, &job.seed.store_settings)
                            .await
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
pub(super) async fn wait_for_changes(
    job: &WatchJob,
    watched: &[Watched],
    (listener, hash_due): (&mut Listener, &mut bool),
    (pool, lane, live): (&deadpool_postgres::Pool, &mut Lane<'_>, &Live),
    shared: &Shared,
    stop: &Stop,
) -> Result<()> {
    let settings = &job.settings;
    loop {
        // What the low lane rendered goes into the output with the next cycle, at once.
        if live_waits(job, live) {
            return Ok(());
        }
        let edge_waiting = shared.edge_waiting.load(Ordering::Relaxed);
        // Low tiles the cycles noted get the low lane when due, though no change comes; while
        // the lane renders, its own note is not due again, nor while it rests after a failure.
        let deferral = if lane.running() {
            None
        } else {
            let due = crate::seed::next_deferral(&job.seed, live.max_delay()).await?;
            due.map(|due| lane.not_before(due))
        };
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
            ended = lane.ended(live), if lane.running() => {
                ended?;
                continue;
            }
            signal = stop.stopped() => return Err(Error::Stopped { signal }),
        };
        if let Some(first) = first {
            shared.change_arrived(first);
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

/// Whether the low lane rendered tiles that wait for a cycle to store them.
fn live_waits(job: &WatchJob, live: &Live) -> bool {
    job.seed
        .tilesets
        .iter()
        .filter_map(|t| t.output.as_ref())
        .any(|o| live.waits_for_store(&o.describe()))
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
        let count = capture::pending(pool, schema, &output.consumer, &output.tables).await?;
        shared.metrics.set_pending(&output.output, count);
        total += count;
    }
    Ok(total)
}
