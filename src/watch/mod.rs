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

mod cycle;
mod debounce;
mod feed;
mod http;
mod lane;
mod shared;
mod wait;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use backon::BackoffBuilder;

use crate::coordination::lock;
use crate::db::Listener;
use crate::error::{Error, ExitCode, Result};
use crate::job::{SeedJob, TilesetJob, WatchJob};
use crate::render::source::quoted_table;
use crate::schedule::Stop;
use crate::seed::Session;
use crate::sink;
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
    /// The output, described.
    output: String,
    /// Its name in the change log's consumers.
    consumer: String,
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
            let place = sink::lock_place(target, &seed.store_settings);
            let lock = lock::acquire(&place, false, None, std::future::pending());
            _locks.push(lock.await?);
            let mut tables: Vec<String> = tileset.tileset.layers.iter().map(quoted_table).collect();
            tables.sort();
            tables.dedup();
            watched.push(Watched {
                output: target.describe(),
                consumer: target.consumer_name(),
                tables,
            });
        }
    }
    let jobs = Jobs::split(seed);
    // Every CDN target's secrets and credentials, before the first cycle renders anything.
    crate::seed::check_cdns(seed).await?;
    let shared = Arc::new(Shared::new(job));
    // What cycles learned of slow zooms outlives a reconnection.
    let live = Arc::new(crate::seed::Live::new(job.settings.max_delay));
    let _server = http::serve(job.settings.listen, shared.clone()).await?;
    let stop = Stop::on_signals();
    let mut backoff = reconnect_backoff();
    loop {
        let mut connected_once = false;
        let Err(err) = watch_connected(
            job,
            (&jobs, &live),
            &watched,
            &shared,
            &stop,
            &mut connected_once,
        )
        .await;
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
    (jobs, live): (&Jobs, &Arc<crate::seed::Live>),
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
        Some(plain) => Some(
            Session::open_sharing(plain, shared.holds.clone())
                .await?
                .with_live(live.clone()),
        ),
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
    let plain = jobs.plain.as_ref().zip(session.as_ref());
    let mut lane = lane::Lane::default();
    loop {
        let began = std::time::Instant::now();
        let cycle = cycle::cycle(job, jobs, session.as_ref(), shared, stop);
        lane.alongside(cycle, live).await?;
        shared.cycle_finished(began);
        lane.start(job, plain, live, stop).await?;
        // A cycle that changed tiles left their outputs' hashes pending.
        let mut hash_due = true;
        wait::wait_for_changes(
            job,
            watched,
            (&mut listener, &mut hash_due),
            (&pool, &mut lane, live),
            shared,
            stop,
        )
        .await?;
    }
}
