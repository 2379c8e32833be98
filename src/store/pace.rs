//! The pace of a store's writes: one limiter per bucket in the process, shared by every task
//! writing to it, so that a store which answers "slow down" (S3's `503 SlowDown`, GCS's `429`,
//! Azure's `503 ServerBusy`) is written at the rate it takes rather than failing the run.
//!
//! Until the store first refuses a write, writes go out as fast as the uploads' concurrency allows.
//! A refusal cuts the allowed rate to 90 % of what the store took over the last second (at most
//! once per round trip: refusals of writes sent before the cut do not cut again); every second
//! without one raises it by 3 % of the rate at the cut, and after 5 s without one by 20 % of
//! itself, so the writer finds a store's limit again and follows one that grows (GCS doubles a
//! bucket's every 20 minutes). The writes in flight are
//! bounded by the rate times the round trip, so the concurrency falls and rises with it. A refused
//! write is sent again, after the store's `Retry-After` when it gives one, for as long as
//! `[store] throttle_budget` from its first refusal; only then does it fail.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What cuts the allowed rate at a refusal.
const CUT: f64 = 0.9;
/// What each second without a refusal adds to the rate, as a share of the rate at the last cut.
const RAISE: f64 = 0.03;
/// Seconds without a refusal after which the rate grows by [`PROBE`] a second.
const PROBE_AFTER_SECS: u64 = 5;
/// What the rate is multiplied by each second after [`PROBE_AFTER_SECS`] without a refusal.
const PROBE: f64 = 1.2;
/// The slowest the pace goes, in writes a second: a store refusing everything is still asked.
const SLOWEST: f64 = 1.0;

/// What a store's refusals did to a run's writes, for the summary and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Throttled {
    /// Writes the store refused as too fast (each sent again later).
    pub refused_writes: u64,
    /// Writes the store took.
    pub stored_writes: u64,
    /// Writes a second the store took from its first refusal on.
    pub writes_per_second: u64,
    /// Milliseconds from the store's first refusal to the run's last write.
    pub throttled_ms: u64,
}

impl Throttled {
    /// The writes and refusals between `earlier` and `self`, both taken from one pace.
    pub fn since(&self, earlier: &Throttled) -> Throttled {
        Throttled {
            refused_writes: self.refused_writes - earlier.refused_writes,
            stored_writes: self.stored_writes - earlier.stored_writes,
            ..*self
        }
    }
}

/// The limiter of one bucket's writes.
pub struct Pace {
    /// The bucket, as messages name it.
    name: String,
    /// How long one write may keep being refused before it fails.
    budget: Duration,
    state: Mutex<State>,
    freed: Notify,
}

impl std::fmt::Debug for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pace({})", self.name)
    }
}

struct State {
    /// Writes a second allowed; infinite until the first refusal.
    rate: f64,
    /// The rate at the last cut, which the raises are a share of.
    rate_at_cut: f64,
    /// When the next write may start.
    next_start: Instant,
    in_flight: usize,
    most_in_flight: usize,
    /// When the rate was last cut or raised.
    last_cut: Option<Instant>,
    last_raise: Instant,
    /// When the writes of the last second were taken.
    recent: VecDeque<Instant>,
    /// A round trip, smoothed.
    round_trip: Duration,
    first_refusal: Option<Instant>,
    last_write: Option<Instant>,
    refused: u64,
    stored: u64,
    stored_before_refusal: u64,
}

/// A write's place among those in flight, given back when it is dropped.
pub struct Slot<'a> {
    pace: &'a Pace,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut state = self.pace.lock();
        state.in_flight -= 1;
        drop(state);
        self.pace.freed.notify_one();
    }
}

/// Every store's pace in this process, by bucket and store.
fn paces() -> &'static Mutex<HashMap<String, Arc<Pace>>> {
    static PACES: OnceLock<Mutex<HashMap<String, Arc<Pace>>>> = OnceLock::new();
    PACES.get_or_init(Default::default)
}

/// The writes a second this process's stores take while one refused a write in the last
/// [`PACING_NEWS_SECS`]: what a progress line says; `None` while none did.
pub fn pacing() -> Option<f64> {
    let paces = paces().lock().unwrap_or_else(|e| e.into_inner());
    let rates: Vec<f64> = paces
        .values()
        .filter_map(|pace| {
            let state = pace.lock();
            let refused_lately = state
                .last_cut
                .is_some_and(|cut| cut.elapsed() < Duration::from_secs(PACING_NEWS_SECS));
            refused_lately.then_some(state.rate)
        })
        .collect();
    (!rates.is_empty()).then(|| rates.iter().sum())
}

/// How long after a store's last refusal the progress line still says it throttles.
const PACING_NEWS_SECS: u64 = 30;

/// The pace of `bucket` (named with its store's identity) in this process, made with `most_in_flight`
/// and `budget` by its first user.
pub fn shared(key: &str, name: &str, most_in_flight: usize, budget: Duration) -> Arc<Pace> {
    let mut paces = paces().lock().unwrap_or_else(|e| e.into_inner());
    paces
        .entry(key.to_string())
        .or_insert_with(|| Arc::new(Pace::new(name, most_in_flight, budget)))
        .clone()
}

impl Pace {
    /// A pace for `name`'s writes, at most `most_in_flight` at once, a write refused for `budget`
    /// failing.
    pub fn new(name: &str, most_in_flight: usize, budget: Duration) -> Pace {
        let now = Instant::now();
        Pace {
            name: name.to_string(),
            budget,
            state: Mutex::new(State {
                rate: f64::INFINITY,
                rate_at_cut: f64::INFINITY,
                next_start: now,
                in_flight: 0,
                most_in_flight: most_in_flight.max(1),
                last_cut: None,
                last_raise: now,
                recent: VecDeque::new(),
                round_trip: Duration::from_millis(50),
                first_refusal: None,
                last_write: None,
                refused: 0,
                stored: 0,
                stored_before_refusal: 0,
            }),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays whole whatever a panicking holder did: each change is one assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a write may start: a place among those in flight, and its turn at the rate.
    pub async fn admit(&self) -> Slot<'_> {
        loop {
            let freed = self.freed.notified();
            let start = {
                let mut state = self.lock();
                if state.in_flight < state.limit() {
                    state.in_flight += 1;
                    let now = Instant::now();
                    let start = state.next_start.max(now);
                    if state.rate.is_finite() {
                        state.next_start = start + Duration::from_secs_f64(1.0 / state.rate);
                    }
                    Some(start)
                } else {
                    None
                }
            };
            match start {
                Some(start) => {
                    let slot = Slot { pace: self };
                    tokio::time::sleep_until(start).await;
                    return slot;
                }
                None => freed.await,
            }
        }
    }

    /// Notes a write sent at `sent` that the store took.
    pub fn stored(&self, sent: Instant) {
        let mut state = self.lock();
        let now = Instant::now();
        state.stored += 1;
        if state.first_refusal.is_none() {
            state.stored_before_refusal += 1;
        }
        state.last_write = Some(now);
        state.recent.push_back(now);
        while state
            .recent
            .front()
            .is_some_and(|at| now - *at > Duration::from_secs(1))
        {
            state.recent.pop_front();
        }
        let took = now - sent;
        state.round_trip = (state.round_trip * 7 + took) / 8;
        let calm = state
            .last_cut
            .is_none_or(|cut| now - cut >= Duration::from_secs(1));
        // A rate that already lets every upload be in flight at once paces nothing: raised
        // further through a long calm (a seed bound by rendering), it would grow without end.
        let pacing = state.rate * state.round_trip.as_secs_f64() < state.most_in_flight as f64;
        if state.rate.is_finite()
            && pacing
            && calm
            && now - state.last_raise >= Duration::from_secs(1)
        {
            // A few seconds without a refusal: the store has room (a limit that grew, or a cut
            // too deep), found faster by growing the rate by a share of itself.
            let long_calm = state
                .last_cut
                .is_none_or(|cut| now - cut >= Duration::from_secs(PROBE_AFTER_SECS));
            state.rate = if long_calm {
                state.rate * PROBE
            } else {
                state.rate + (state.rate_at_cut * RAISE).max(SLOWEST)
            };
            state.last_raise = now;
        }
    }

    /// Notes a write sent at `sent` that the store refused as too fast.
    pub fn refused(&self, sent: Instant) {
        let mut state = self.lock();
        let now = Instant::now();
        state.refused += 1;
        state.first_refusal.get_or_insert(now);
        state.last_write = Some(now);
        if state.last_cut.is_some_and(|cut| sent < cut) {
            return;
        }
        // What the store took over the last second; with too few writes to tell, what the writes
        // in flight could carry.
        let took = match state.recent.front() {
            Some(first) if state.recent.len() >= 10 => {
                state.recent.len() as f64 / (now - *first).as_secs_f64().clamp(0.05, 1.0)
            }
            _ => state.in_flight.max(1) as f64 / state.round_trip.as_secs_f64().max(0.001),
        };
        let rate = (state.rate.min(took) * CUT).max(SLOWEST);
        if state.rate.is_infinite() || rate < state.rate {
            tracing::info!(
                "{}: the store refuses writes as too fast; pacing them at {rate:.0} a second",
                self.name
            );
        }
        state.rate = rate;
        state.rate_at_cut = rate;
        state.last_cut = Some(now);
        state.last_raise = now;
        state.next_start = state.next_start.max(now) + Duration::from_secs_f64(1.0 / rate);
    }

    /// What the store's refusals did so far; `None` when it never refused a write.
    pub fn throttled(&self) -> Option<Throttled> {
        let state = self.lock();
        let first = state.first_refusal?;
        let until = state.last_write.unwrap_or(first);
        let seconds = (until - first).as_secs_f64();
        let taken = state.stored - state.stored_before_refusal;
        Some(Throttled {
            refused_writes: state.refused,
            stored_writes: state.stored,
            writes_per_second: if seconds > 0.0 {
                (taken as f64 / seconds).round() as u64
            } else {
                0
            },
            throttled_ms: u64::try_from((until - first).as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The writes a second allowed now, when the store has refused one.
    #[cfg(test)]
    pub fn rate(&self) -> Option<f64> {
        let state = self.lock();
        state.rate.is_finite().then_some(state.rate)
    }

    /// Runs a write (`attempt`, retried by the store's own policy for other failures) at this
    /// pace until the store takes it, fails it otherwise, or has refused it as too fast for the
    /// budget; `refusal` says whether an error is such a refusal, and the `Retry-After` it gave.
    pub async fn run<T, E, Fut>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> Fut,
        refusal: impl Fn(&E) -> Option<Option<Duration>>,
    ) -> Result<T, Refused<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut first_refused: Option<Instant> = None;
        loop {
            let slot = self.admit().await;
            let sent = Instant::now();
            let result = attempt().await;
            let error = match result {
                Ok(value) => {
                    self.stored(sent);
                    return Ok(value);
                }
                Err(error) => error,
            };
            let Some(retry_after) = refusal(&error) else {
                return Err(Refused {
                    error,
                    refused_for: None,
                });
            };
            self.refused(sent);
            drop(slot);
            let since = *first_refused.get_or_insert(sent);
            if since.elapsed() >= self.budget {
                return Err(Refused {
                    error,
                    refused_for: Some(since.elapsed()),
                });
            }
            if let Some(wait) = retry_after {
                tracing::debug!("{what}: refused as too fast, sent again in {wait:?}");
                tokio::time::sleep(wait.min(self.budget)).await;
            }
        }
    }
}

impl State {
    /// The writes allowed in flight: the rate times two round trips once the store has refused
    /// one, else all the uploads'.
    fn limit(&self) -> usize {
        if self.rate.is_infinite() {
            return self.most_in_flight;
        }
        // Clamped as a float: a cast of a rate too large for the bound would saturate and wrap.
        let needed = (self.rate * self.round_trip.as_secs_f64() * 2.0).ceil() + 1.0;
        needed.clamp(1.0, self.most_in_flight as f64) as usize
    }
}

/// A write that failed: its error, and how long the store had refused it as too fast when that
/// is why (the throttle budget ran out).
#[derive(Debug)]
pub struct Refused<E> {
    /// The last attempt's error.
    pub error: E,
    /// How long the store refused the write, when it failed for that.
    pub refused_for: Option<Duration>,
}

impl<E> Refused<E> {
    /// The note a message ends with when the budget ran out.
    pub fn note(&self) -> String {
        match self.refused_for {
            Some(refused) => format!(
                "; refused as too fast for {} (raise [store] throttle_budget to wait longer)",
                humantime::format_duration(Duration::from_secs(refused.as_secs()))
            ),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refusal_cuts_the_rate_and_a_write_refused_past_the_budget_fails_saying_so() {
        let pace = Pace::new("b", 4, Duration::from_millis(50));
        assert_eq!(pace.rate(), None);
        let result: Result<(), Refused<&str>> = pace
            .run(
                "w",
                || async { Err("slow down") },
                |_| Some(Some(Duration::from_millis(10))),
            )
            .await;
        let failed = result.unwrap_err();
        assert!(failed.refused_for.unwrap() >= Duration::from_millis(50));
        assert!(failed.note().contains("throttle_budget"));
        assert!(pace.rate().is_some_and(|rate| rate >= SLOWEST));
        assert!(pace.throttled().unwrap().refused_writes > 0);
    }

    #[tokio::test]
    async fn minutes_without_a_refusal_leave_every_upload_free_to_run_at_once() {
        let most_in_flight = 64;
        let round_trip = Duration::from_millis(50);
        let pace = Pace::new("b", most_in_flight, Duration::from_secs(60));
        pace.refused(Instant::now());
        // A seed bound by rendering after one early refusal: ten minutes of writes, each a second
        // after the last raise, long after the cut (the clock is set back rather than waited on).
        for _ in 0..600 {
            {
                let mut state = pace.lock();
                let now = Instant::now();
                state.last_cut = Some(now - Duration::from_secs(60));
                state.last_raise = now - Duration::from_secs(1);
            }
            let slot = pace.admit().await;
            pace.stored(Instant::now() - round_trip);
            drop(slot);
        }
        assert_eq!(pace.lock().limit(), most_in_flight);
        let rate = pace.rate().unwrap();
        assert!(
            rate <= 2.0 * most_in_flight as f64 / round_trip.as_secs_f64(),
            "the rate stops growing once it paces nothing: {rate}"
        );
    }
}
