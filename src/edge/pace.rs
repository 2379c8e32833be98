//! A purge in time: how fast each target may send, and what it has sent so far.
//!
//! A CDN that purges for free still has a rate (Cloudflare Free: 800 URLs a second; an HTTP cache
//! only as fast as its connections answer), so a plan is priced in time as well as money: where
//! the exact paths would not go out within the target's `purge_timeout` at its pace, the planner
//! buys coarser folders (`super::price::plan_until`). While a purge runs, each request the target
//! accepts is noted in its [`Progress`]: a purge stopped part way (its timeout, a signal, an
//! error) then leaves what was accepted out of the outbox, and `purge_timeout` bounds a purge
//! that makes no progress, not one going at the pace the CDN allows.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A token bucket's rate: `per_second` tokens refill it, up to `burst`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// A bucket's tokens at a time.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The process's purge buckets, per target and kind of call, shared by every run of a `watch`.
static BUCKETS: OnceLock<Mutex<HashMap<String, Bucket>>> = OnceLock::new();

fn with_bucket<T>(key: &str, rate: Rate, f: impl FnOnce(&mut Bucket) -> T) -> T {
    let now = Instant::now();
    let mut buckets = BUCKETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
        tokens: rate.burst,
        at: now,
    });
    let refilled = now.duration_since(bucket.at).as_secs_f64() * rate.per_second;
    bucket.tokens = (bucket.tokens + refilled).min(rate.burst);
    bucket.at = now;
    f(bucket)
}

impl Rate {
    /// Takes `tokens` from the bucket `key` (reserving them when it is short: the debt is paid by
    /// the refill) and returns how long to wait before sending.
    pub fn take(self, key: &str, tokens: f64) -> Duration {
        with_bucket(key, self, |bucket| {
            bucket.tokens -= tokens;
            if bucket.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-bucket.tokens / self.per_second)
            }
        })
    }

    /// How long sending `tokens` from the bucket `key` would take from now, as it stands.
    pub fn seconds(self, key: &str, tokens: f64) -> f64 {
        let available = with_bucket(key, self, |bucket| bucket.tokens);
        (tokens - available.max(0.0)).max(0.0) / self.per_second
    }
}

/// An API's window of calls: at most `calls` within any `per`, counted by the wall clock so that
/// the calls another process made (a cron run before this one, as its outbox note says) count too.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub calls: usize,
    pub per: Duration,
}

/// The calls of one API user a target keeps to: the user's key in the process's windows (not
/// its token: a digest of it, so that targets sharing a token share the window) and its share of
/// the API's limit.
#[derive(Debug, Clone)]
pub(super) struct ApiCalls {
    pub key: String,
    pub window: Window,
}

impl ApiCalls {
    /// The calls of the API user holding `token` (`kind` names the API), `window` being the
    /// share of its limit a target keeps to.
    pub fn of(kind: &str, token: &str, window: Window) -> ApiCalls {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        token.hash(&mut hasher);
        ApiCalls {
            key: format!("{kind} user {:016x}", hasher.finish()),
            window,
        }
    }

    /// Reserves one call and returns how long to wait before sending it, and the reservation,
    /// which [`ApiCalls::settle`] moves to when the call was answered.
    pub fn take(&self) -> (Duration, u64) {
        self.window.take(&self.key)
    }

    /// The call reserved as `reserved` was answered now: the API counted it when it arrived,
    /// at the latest now, so its window is counted from now, which no network delay can make
    /// early.
    pub fn settle(&self, reserved: u64) {
        // Rounded up: the API's clock saw the call before the answer came back, never after.
        let now = now_ms() + 1;
        with_calls(&self.key, |calls| {
            if let Some(i) = calls.sent.iter().position(|&at| at == reserved) {
                calls.sent.remove(i);
                let at = now.max(reserved);
                let place = calls.sent.partition_point(|&other| other <= at);
                calls.sent.insert(place, at);
            }
        });
    }

    /// How long `more` calls would take from now.
    pub fn seconds(&self, more: usize) -> f64 {
        self.window.seconds(&self.key, more)
    }

    /// The API refused the user's calls for `wait`.
    pub fn blocked(&self, wait: Duration) {
        blocked(&self.key, wait);
    }
}

/// Per API user: when its calls went (or will go, once their wait is over), in milliseconds since
/// the Unix epoch, oldest first, and until when the API refuses every call (a 429's `Retry-After`).
#[derive(Default)]
struct Calls {
    sent: std::collections::VecDeque<u64>,
    blocked_until: u64,
}

/// The process's windows of API calls, per user, shared by every run of a `watch`.
static CALLS: OnceLock<Mutex<HashMap<String, Calls>>> = OnceLock::new();

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn with_calls<T>(key: &str, f: impl FnOnce(&mut Calls) -> T) -> T {
    let mut all = CALLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(all.entry(key.to_string()).or_default())
}

impl Window {
    fn per_ms(self) -> u64 {
        self.per.as_millis() as u64
    }

    /// When each of `more` calls could go from `now`, after the calls `sent` (oldest first) and
    /// a block until `blocked_until`: the n-th call of a full window goes once the call `calls`
    /// before it is `per` old.
    fn slots(self, sent: &[u64], blocked_until: u64, now: u64, more: usize) -> Vec<u64> {
        let calls = self.calls.max(1);
        let mut all: Vec<u64> = sent.to_vec();
        let mut slots = Vec::with_capacity(more);
        for _ in 0..more {
            let earliest = now.max(blocked_until);
            let at = match all.len().checked_sub(calls) {
                Some(i) => earliest.max(all[i] + self.per_ms()),
                None => earliest,
            };
            all.push(at);
            slots.push(at);
        }
        slots
    }

    /// Reserves one call of user `key` and returns how long to wait before sending it, and when
    /// it was reserved to go.
    pub fn take(self, key: &str) -> (Duration, u64) {
        let now = now_ms();
        with_calls(key, |calls| {
            let horizon = now.saturating_sub(self.per_ms());
            while calls.sent.front().is_some_and(|&at| at <= horizon) {
                calls.sent.pop_front();
            }
            let sent: Vec<u64> = calls.sent.iter().copied().collect();
            let at = self.slots(&sent, calls.blocked_until, now, 1)[0];
            calls.sent.push_back(at);
            (Duration::from_millis(at - now), at)
        })
    }

    /// How long `more` calls of user `key` would take from now, as its window stands.
    pub fn seconds(self, key: &str, more: usize) -> f64 {
        if more == 0 {
            return 0.0;
        }
        let now = now_ms();
        with_calls(key, |calls| {
            let sent: Vec<u64> = calls.sent.iter().copied().collect();
            let last = self.slots(&sent, calls.blocked_until, now, more)[more - 1];
            (last - now) as f64 / 1_000.0
        })
    }
}

/// The API refused user `key`'s calls for `wait` (429 with `Retry-After`): none is sent before
/// it is over.
pub(super) fn blocked(key: &str, wait: Duration) {
    let until = now_ms() + wait.as_millis() as u64;
    with_calls(key, |calls| {
        calls.blocked_until = calls.blocked_until.max(until)
    });
}

/// The calls user `key` made within the last `per` (milliseconds since the Unix epoch), for the
/// outbox note the next process learns them from.
pub(super) fn recent_calls(key: &str, per: Duration) -> Vec<u64> {
    let horizon = now_ms().saturating_sub(per.as_millis() as u64);
    with_calls(key, |calls| {
        calls
            .sent
            .iter()
            .copied()
            .filter(|&at| at > horizon)
            .collect()
    })
}

/// Adds the calls another process noted for user `key` within the last `per`, each once. A call
/// may lie ahead, reserved behind a wait; a clock set back leaves some further ahead still, which
/// count as at most `per` from now.
pub(super) fn learn_calls(key: &str, per: Duration, noted: &[u64]) {
    let now = now_ms();
    let per = per.as_millis() as u64;
    let horizon = now.saturating_sub(per);
    with_calls(key, |calls| {
        let mut all: Vec<u64> = calls.sent.iter().copied().collect();
        all.extend(
            noted
                .iter()
                .filter(|&&at| at > horizon)
                .map(|&at| at.min(now + per)),
        );
        all.sort_unstable();
        all.dedup();
        calls.sent = all.into();
    });
}

/// What a purge has done so far: the paths (as sent: a folder as `FOLDER*`) whose requests the
/// target accepted, and when it last made progress. Shared with the code that started the purge,
/// which reads it even when the purge was dropped (a signal) or failed.
#[derive(Clone)]
pub struct Progress(Arc<Mutex<State>>);

struct State {
    accepted: Vec<String>,
    /// The last accepted request, or the end of the rate limit's wait the purge is in.
    last: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Progress {
    /// Nothing done yet; the purge's time without progress counts from now.
    pub fn new() -> Progress {
        Progress(Arc::new(Mutex::new(State {
            accepted: Vec::new(),
            last: Instant::now(),
        })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The target accepted a request purging `paths`.
    pub(super) fn accepted(&self, paths: impl IntoIterator<Item = String>) {
        self.with(|state| {
            state.accepted.extend(paths);
            state.last = Instant::now();
        });
    }

    /// The purge waits `wait` for the target's rate limit: waiting at the pace the CDN allows is
    /// not a stall.
    pub(super) fn paced(&self, wait: Duration) {
        self.with(|state| state.last = state.last.max(Instant::now() + wait));
    }

    /// How long since the last progress.
    fn idle(&self) -> Duration {
        self.with(|state| Instant::now().saturating_duration_since(state.last))
    }

    /// How many paths were accepted so far.
    pub(super) fn accepted_count(&self) -> usize {
        self.with(|state| state.accepted.len())
    }

    /// The paths accepted so far, as sent, taken out of it.
    pub fn take(&self) -> Vec<String> {
        self.with(|state| std::mem::take(&mut state.accepted))
    }
}

/// Runs `sent` until it ends, or fails it with `stalled()` once `progress` saw no accepted
/// request (and no rate-limit wait) for `limit`.
pub(super) async fn until_stalled<T, E>(
    sent: impl Future<Output = Result<T, E>>,
    progress: &Progress,
    limit: Duration,
    stalled: impl FnOnce() -> E,
) -> Result<T, E> {
    tokio::pin!(sent);
    loop {
        let left = limit.saturating_sub(progress.idle());
        if left.is_zero() {
            return Err(stalled());
        }
        tokio::select! {
            biased;
            done = &mut sent => return done,
            () = tokio::time::sleep(left) => {}
        }
    }
}

/// What the paths a target accepted (as sent) cover: a test of a line's purge path, in time
/// linear in what was accepted to build and in the folders among it to ask.
pub fn accepted_cover(accepted: &[String]) -> impl Fn(&str) -> bool + '_ {
    let (folders, paths): (Vec<&String>, Vec<&String>) = accepted
        .iter()
        .partition(|sent| super::everything_under(sent).is_some());
    let paths: std::collections::HashSet<&str> = paths.into_iter().map(String::as_str).collect();
    move |path: &str| paths.contains(path) || folders.iter().any(|f| covers(f, path))
}

/// Whether a path as sent covers `path` (a line's purge path): the same path, or a folder
/// (`FOLDER*`, `*` for the root) it lies under.
pub fn covers(sent: &str, path: &str) -> bool {
    match super::everything_under(sent) {
        Some(folder) => path.starts_with(folder),
        None => sent == path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_purge_fails_only_after_a_whole_limit_without_progress() {
        let ms = Duration::from_millis;
        let progress = Progress::new();
        let limit = ms(600);
        // Progress every 40 ms for 800 ms: longer than the limit, never that long without.
        let steady = {
            let progress = progress.clone();
            async move {
                for i in 0..20 {
                    tokio::time::sleep(ms(40)).await;
                    progress.accepted([format!("{i}")]);
                }
                Ok::<_, &str>(())
            }
        };
        assert_eq!(
            until_stalled(steady, &progress, limit, || "stalled").await,
            Ok(())
        );
        assert_eq!(progress.take().len(), 20);
        // A rate-limit wait longer than the limit is not a stall; silence after it is.
        let progress = Progress::new();
        let paced = {
            let progress = progress.clone();
            async move {
                progress.paced(ms(900));
                tokio::time::sleep(ms(900)).await;
                progress.accepted(["a".to_string()]);
                std::future::pending::<()>().await;
                Ok::<_, &str>(())
            }
        };
        assert_eq!(
            until_stalled(paced, &progress, limit, || "stalled").await,
            Err("stalled")
        );
        assert_eq!(progress.take(), vec!["a".to_string()]);
    }

    #[test]
    fn a_folder_covers_the_paths_under_it_and_a_path_only_itself() {
        assert!(covers("*", "3/4/2.pbf"));
        assert!(covers("*", "CN/*"));
        assert!(covers("3/*", "3/4/2.pbf"));
        assert!(!covers("3/*", "13/4/2.pbf"));
        assert!(covers("CN/*", "CN/*"));
        assert!(covers("3/4/2.pbf", "3/4/2.pbf"));
        assert!(!covers("3/4/2.pbf", "3/4/2.pbf.gz"));
        let accepted = vec!["3/*".to_string(), "tiles.json".to_string()];
        let covered = accepted_cover(&accepted);
        assert!(covered("3/1/1.pbf") && covered("tiles.json") && !covered("4/1/1.pbf"));
    }

    #[test]
    fn a_full_window_of_calls_waits_for_its_oldest_call_to_age_and_learns_other_processes_calls() {
        let window = Window {
            calls: 3,
            per: Duration::from_secs(300),
        };
        let key = "pace-test-window";
        for _ in 0..3 {
            assert!(window.take(key).0.is_zero());
        }
        // The fourth waits the whole window for the first.
        let (wait, _) = window.take(key);
        assert!(wait > Duration::from_secs(299), "{wait:?}");
        assert!(window.seconds(key, 3) > 599.0);
        // Another process's calls, noted, fill a fresh window.
        let learned = "pace-test-learned";
        let now = now_ms();
        learn_calls(
            learned,
            window.per,
            &[now - 1_000, now - 400_000, now - 2_000, now - 3_000],
        );
        assert_eq!(recent_calls(learned, window.per).len(), 3);
        // The oldest of them, 3 s old, leaves the window in 297 s.
        assert!((window.seconds(learned, 1) - 297.0).abs() < 1.0);
        // A block holds every call until it ends.
        let blocked_key = "pace-test-blocked";
        blocked(blocked_key, Duration::from_secs(60));
        assert!(window.take(blocked_key).0 > Duration::from_secs(59));
    }

    #[test]
    fn the_time_a_bucket_needs_counts_what_it_holds_now() {
        let rate = Rate {
            per_second: 100.0,
            burst: 50.0,
        };
        let key = "pace-test";
        assert!((rate.seconds(key, 40.0) - 0.0).abs() < 1e-9);
        assert!((rate.seconds(key, 250.0) - 2.0).abs() < 0.05);
        assert!(rate.take(key, 50.0).is_zero());
        assert!(rate.seconds(key, 100.0) > 0.9);
    }
}
