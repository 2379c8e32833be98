//! Targets that failed, held back for a while so a CDN that is down costs one run's retries per
//! hold instead of every `watch` cycle's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a target that failed is held back at first; each failure in a row doubles it.
const FIRST_HOLD: Duration = Duration::from_secs(10);
/// The longest a failing target is held back.
const MAX_HOLD: Duration = Duration::from_secs(300);

/// Targets that failed, held back from purging for a while (10 s doubling to 5 min), so a CDN that
/// is down costs one run's retries per hold instead of every `watch` cycle's; their changes wait
/// in the outbox meanwhile. Keyed by output and target.
#[derive(Default)]
pub struct Holds(std::sync::Mutex<HashMap<String, Hold>>);

struct Hold {
    until: Instant,
    next: Duration,
}

impl Holds {
    /// The key of CDN target `target` purging for `place` (an outbox, or an output): the
    /// partitions of a tileset and its own delivery share their tileset's outbox as the place,
    /// so one failure holds the target back for all of them.
    pub fn key(place: &str, target: &str) -> String {
        format!("{place}\n{target}")
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Hold>) -> T) -> T {
        let mut holds = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut holds)
    }

    /// How long `key` is still held back, if it is.
    pub fn held(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        self.with(|holds| {
            holds
                .get(key)
                .and_then(|hold| hold.until.checked_duration_since(now))
                .filter(|left| !left.is_zero())
        })
    }

    /// Holds `key` back after a failure: longer after each failure in a row.
    pub fn failed(&self, key: &str) {
        let now = Instant::now();
        self.with(|holds| {
            let wait = holds.get(key).map_or(FIRST_HOLD, |hold| hold.next);
            holds.insert(
                key.to_string(),
                Hold {
                    until: now + wait,
                    next: (wait * 2).min(MAX_HOLD),
                },
            );
        });
    }

    /// Lets `key` purge freely again.
    pub fn succeeded(&self, key: &str) {
        self.with(|holds| holds.remove(key));
    }
}
