//! The calls of an API user: Cloudflare takes 1,200 per five minutes from a user, all tools
//! together, and refuses every call of the user for five minutes past them; Fastly 1,000 an hour
//! of the calls it counts. Each target keeps to its share of that window (`api_share` of
//! `api_limit`), counted per user by the wall clock across a `watch`'s cycles, and from the note
//! a run leaves in the outbox, across the processes of cron runs.
//!
//! The share is a ceiling, not a promise: other tools on the same user may have left less. Each
//! answer's count of the calls left in the window and its reset (Cloudflare's `Ratelimit`,
//! Fastly's `Fastly-RateLimit-*`: [`super::reported`]) is honoured too: once the calls the API
//! says are left are spent, the next call waits for the reset it named.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::reported::Reported;
use crate::config::CdnConfig;

/// The calls of the user holding `token` on `kind`'s API, as `config`'s share of its limit;
/// `None` where the API counts no calls per user.
pub(super) fn of(config: &CdnConfig, kind: &str, token: &str) -> Option<ApiCalls> {
    config.api.map(|quota| {
        let window = Window {
            calls: quota.allowed(),
            per: quota.per,
        };
        ApiCalls::of(kind, token, window)
    })
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

    /// An answer said how many calls the user has left and when its window resets: no more
    /// than those go before the reset, whatever the share leaves.
    pub fn reported(&self, reported: Reported) {
        let now = now_ms();
        with_calls(&self.key, |calls| {
            calls.left = Some(Left {
                calls: reported.remaining,
                until: now + reported.reset.as_millis() as u64,
            });
        });
    }
}

/// Per API user: when its calls went (or will go, once their wait is over), in milliseconds since
/// the Unix epoch, oldest first, and until when the API refuses every call (a 429's `Retry-After`).
#[derive(Default)]
struct Calls {
    sent: std::collections::VecDeque<u64>,
    blocked_until: u64,
    /// What the API's last answer said is left of the user's window, counted down as calls are
    /// reserved.
    left: Option<Left>,
}

/// Calls the API said its user has left, every tool together, until its window resets then
/// (milliseconds since the Unix epoch).
#[derive(Debug, Clone, Copy)]
struct Left {
    calls: u64,
    until: u64,
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

    /// When each of `more` calls could go from `now`, after the calls `sent` (oldest first), a
    /// block until `blocked_until` and what the API said is `left`: the n-th call of a full
    /// window goes once the call `calls` before it is `per` old, and a call past those left
    /// waits for the API's reset.
    fn slots(
        self,
        sent: &[u64],
        blocked_until: u64,
        left: Option<Left>,
        now: u64,
        more: usize,
    ) -> Vec<u64> {
        let calls = self.calls.max(1);
        let mut all: Vec<u64> = sent.to_vec();
        let mut slots = Vec::with_capacity(more);
        let reset = left
            .filter(|left| left.until > now)
            .map_or(0, |left| left.until);
        let left = left
            .filter(|_| reset > 0)
            .map_or(u64::MAX, |left| left.calls);
        for n in 0..more {
            let mut earliest = now.max(blocked_until);
            if n as u64 >= left {
                earliest = earliest.max(reset);
            }
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
            let at = self.slots(&sent, calls.blocked_until, calls.left, now, 1)[0];
            calls.sent.push_back(at);
            // A call held for the reset is not one of those left before it.
            calls.left = calls.left.map(|left| Left {
                calls: left.calls.saturating_sub(u64::from(at < left.until)),
                ..left
            });
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
            let last = self.slots(&sent, calls.blocked_until, calls.left, now, more)[more - 1];
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

/// Adds the calls a note records for user `key` within the last `per`. The note may be this
/// process's own (a `watch`'s earlier cycle), so a time counts as many times as the more of the
/// two lists holds it: two calls in the same millisecond stay two, and a call is never counted
/// twice. A call may lie ahead, reserved behind a wait; a clock set back leaves some further
/// ahead still, which count as at most `per` from now.
pub(super) fn learn_calls(key: &str, per: Duration, noted: &[u64]) {
    let now = now_ms();
    let per = per.as_millis() as u64;
    let horizon = now.saturating_sub(per);
    let mut noted: Vec<u64> = noted
        .iter()
        .filter(|&&at| at > horizon)
        .map(|&at| at.min(now + per))
        .collect();
    noted.sort_unstable();
    with_calls(key, |calls| {
        let mut known: Vec<u64> = calls.sent.iter().copied().collect();
        known.sort_unstable();
        let mut merged = Vec::with_capacity(known.len().max(noted.len()));
        let (mut a, mut b) = (known.iter().peekable(), noted.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x == y => {
                    merged.push(x);
                    a.next();
                    b.next();
                }
                (Some(&&x), Some(&&y)) if x < y => merged.push(*a.next().unwrap_or(&x)),
                (Some(_), Some(&&y)) => merged.push(*b.next().unwrap_or(&y)),
                (Some(_), None) => merged.extend(a.by_ref()),
                (None, Some(_)) => merged.extend(b.by_ref()),
                (None, None) => break,
            }
        }
        calls.sent = merged.into();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Two calls in one millisecond stay two; a process's own note adds nothing.
        let same = "pace-test-same-ms";
        learn_calls(same, window.per, &[now - 5, now - 5]);
        learn_calls(same, window.per, &recent_calls(same, window.per));
        assert_eq!(recent_calls(same, window.per), vec![now - 5, now - 5]);
        // The oldest of them, 3 s old, leaves the window in 297 s.
        assert!((window.seconds(learned, 1) - 297.0).abs() < 1.0);
        // A block holds every call until it ends.
        let blocked_key = "pace-test-blocked";
        blocked(blocked_key, Duration::from_secs(60));
        assert!(window.take(blocked_key).0 > Duration::from_secs(59));
    }

    #[test]
    fn calls_the_api_says_are_left_go_at_once_and_the_next_waits_for_its_reset() {
        let window = Window {
            calls: 100,
            per: Duration::from_secs(300),
        };
        let user = ApiCalls::of("test", "calls-left", window);
        user.reported(Reported {
            remaining: 2,
            reset: Duration::from_secs(30),
        });
        assert!(user.take().0.is_zero());
        assert!(user.take().0.is_zero());
        // The share would allow 98 more; the API said two were left.
        let (wait, _) = user.take();
        assert!(wait > Duration::from_secs(29), "{wait:?}");
        assert!(user.seconds(1) > 29.0);
        // A later answer that says more are left again lets them go.
        user.reported(Reported {
            remaining: 10,
            reset: Duration::from_secs(30),
        });
        assert!(user.take().0.is_zero());
    }
}
