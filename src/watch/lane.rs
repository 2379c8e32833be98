//! `watch`'s low lane: the noted low-zoom tiles of an output (see [`crate::seed::Live`]) rendered
//! into memory on a connection of its own while cycles go on storing the deep tiles of new
//! commits; the cycle after it ends stores them. One lane runs at a time, over one output.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::job::{SeedJob, WatchJob};
use crate::schedule::Stop;
use crate::seed::{AheadTiles, Live, Session};

/// A lane that failed waits this long before it renders its tiles again.
const AFTER_FAILURE: Duration = Duration::from_secs(5);

/// What a lane ended with.
pub(super) struct LaneDone {
    output: String,
    epoch: u64,
    started: Instant,
    tiles: usize,
    rendered: Result<AheadTiles>,
}

/// The lane, while it renders, and when it may start again.
#[derive(Default)]
pub(super) struct Lane<'s> {
    running: Option<Pin<Box<dyn Future<Output = LaneDone> + 's>>>,
    resting_until: Option<Instant>,
}

impl<'s> Lane<'s> {
    /// Whether the lane renders now.
    pub(super) fn running(&self) -> bool {
        self.running.is_some()
    }

    /// `due`, or the end of the lane's rest after a failure if later: a note the resting lane
    /// cannot take yet is not due, or `watch` would run empty cycles until the rest ends.
    pub(super) fn not_before(&self, due: SystemTime) -> SystemTime {
        let Some(rest) = self
            .resting_until
            .and_then(|until| until.checked_duration_since(Instant::now()))
        else {
            return due;
        };
        due.max(SystemTime::now() + rest)
    }

    /// Starts the lane over the first output whose note is due, unless it runs already, rests
    /// after a failure, or what it rendered last still waits for a cycle to store it.
    pub(super) async fn start(
        &mut self,
        job: &'s WatchJob,
        plain: Option<(&'s SeedJob, &'s Session<'s>)>,
        live: &'s Live,
        stop: &'s Stop,
    ) -> Result<()> {
        let Some((seed, session)) = plain else {
            return Ok(());
        };
        if self.running.is_some() || self.resting_until.is_some_and(|t| t > Instant::now()) {
            return Ok(());
        }
        let outputs = || seed.tilesets.iter().filter_map(|t| t.output.as_ref());
        if outputs().any(|o| live.waits_for_store(&o.describe())) {
            return Ok(());
        }
        for tileset in &seed.tilesets {
            let Some(target) = &tileset.output else {
                continue;
            };
            let tiles =
                crate::seed::begin_low_lane(tileset, &job.seed.store_settings, live.max_delay())
                    .await?;
            if tiles.is_empty() {
                continue;
            }
            let output = target.describe();
            let epoch = live.epoch(&output);
            tracing::debug!(
                "low lane: rendering {} noted tile(s) of {output}",
                tiles.len()
            );
            live.lane_started();
            self.running = Some(Box::pin(async move {
                let started = Instant::now();
                let rendered = session.render_ahead(&output, &tiles, stop).await;
                LaneDone {
                    output,
                    epoch,
                    started,
                    tiles: tiles.len(),
                    rendered,
                }
            }));
            return Ok(());
        }
        Ok(())
    }

    /// Waits for the lane to end (for ever when none runs) and keeps what it rendered for the
    /// next cycle to store.
    pub(super) async fn ended(&mut self, live: &Live) -> Result<()> {
        let Some(running) = &mut self.running else {
            return std::future::pending().await;
        };
        let done = running.await;
        self.running = None;
        live.lane_ended();
        match done.rendered {
            Ok(tiles) => {
                tracing::info!(
                    "low lane: {} low-zoom tile(s) of {} rendered in {:.2} s; the next cycle stores them",
                    done.tiles,
                    done.output,
                    done.started.elapsed().as_secs_f64()
                );
                live.rendered_ahead(&done.output, done.epoch, tiles);
                Ok(())
            }
            Err(err @ Error::Stopped { .. }) => Err(err),
            Err(err) => {
                tracing::warn!(
                    "low lane: {err}; its tiles stay noted and are rendered again in {} s",
                    AFTER_FAILURE.as_secs()
                );
                self.resting_until = Some(Instant::now() + AFTER_FAILURE);
                Ok(())
            }
        }
    }

    /// Runs `work` to its end while the lane goes on rendering beside it.
    pub(super) async fn alongside<T>(
        &mut self,
        work: impl Future<Output = Result<T>>,
        live: &Live,
    ) -> Result<T> {
        tokio::pin!(work);
        loop {
            if !self.running() {
                return work.await;
            }
            tokio::select! {
                outcome = &mut work => return outcome,
                ended = self.ended(live) => ended?,
            }
        }
    }
}
