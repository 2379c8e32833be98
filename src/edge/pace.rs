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

/// What a purge has done so far: the paths (as sent: a folder as `FOLDER*`) whose requests the
/// target accepted, and when it last made progress. Shared with the code that started the purge,
/// which reads it even when the purge was dropped (a signal) or failed, and which may have it
/// journal each accepted request as it comes ([`Progress::journaled`]), so a kill loses none.
#[derive(Clone)]
pub struct Progress {
    state: Arc<Mutex<State>>,
    journal: Option<Journal>,
}

/// Where each accepted request's paths (as sent) are handed the moment the target accepts it.
pub type Journal = Arc<dyn Fn(&[String]) + Send + Sync>;

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
        Progress {
            state: Arc::new(Mutex::new(State {
                accepted: Vec::new(),
                last: Instant::now(),
            })),
            journal: None,
        }
    }

    /// As [`Progress::new`], handing each accepted request's paths to `journal` as well.
    pub fn journaled(journal: Journal) -> Progress {
        Progress {
            journal: Some(journal),
            ..Progress::new()
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The target accepted a request purging `paths`.
    pub(super) fn accepted(&self, paths: impl IntoIterator<Item = String>) {
        let paths: Vec<String> = paths.into_iter().collect();
        if let Some(journal) = &self.journal {
            journal(&paths);
        }
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
        .partition(|sent| super::fold::everything_under(sent).is_some());
    let paths: std::collections::HashSet<&str> = paths.into_iter().map(String::as_str).collect();
    move |path: &str| paths.contains(path) || folders.iter().any(|f| covers(f, path))
}

/// Whether a path as sent covers `path` (a line's purge path): the same path, or a folder
/// (`FOLDER*`, `*` for the root) it lies under.
pub fn covers(sent: &str, path: &str) -> bool {
    match super::fold::everything_under(sent) {
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
