//! The account limits a stand-in of Cloudflare's or Fastly's API enforces, as the vendors
//! document them: a user's calls within a window (Cloudflare: 1,200 per five minutes, every call;
//! Fastly: 1,000 an hour, `purge_all` only), past which every call is refused for a while
//! (Cloudflare: five minutes) with 429 and `Retry-After`; and Cloudflare's per-plan purge buckets
//! (Free: 800 URLs a second; 5 other purges a minute, 25 at once). The window and the block may be
//! scaled down so a test runs quickly; the logic is the same. Every answer says what is left of
//! the window, as the vendors' headers do (Cloudflare: `Ratelimit: "default";r=N;t=S` and
//! `Ratelimit-Policy: "default";q=Q;w=W`; Fastly: `Fastly-RateLimit-Remaining` and
//! `Fastly-RateLimit-Reset`), and calls another tool makes on the same user can be added
//! ([`Limiter::taken_by_others`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What a stand-in enforces.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Calls a user may make within `per`.
    pub calls: usize,
    /// The window.
    pub per: Duration,
    /// How long every call is refused once a call passed the limit.
    pub block: Duration,
    /// Fastly: only `purge_all` counts; Cloudflare: every call, and its Free plan's buckets.
    pub fastly: bool,
}

impl ApiLimits {
    /// Cloudflare's (Free plan) with the window and block scaled to `per`: `calls` per `per`,
    /// every call refused for `per` once passed.
    pub fn cloudflare(calls: usize, per: Duration) -> ApiLimits {
        ApiLimits {
            calls,
            per,
            block: per,
            fastly: false,
        }
    }
}

/// A token bucket as Cloudflare's purge limits are documented.
struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_second: f64, burst: f64) -> Bucket {
        Bucket {
            per_second,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Takes `tokens`, or says how long until they are there.
    fn take(&mut self, tokens: f64) -> Result<(), Duration> {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= tokens {
            self.tokens -= tokens;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (tokens - self.tokens) / self.per_second,
            ))
        }
    }
}

/// The state of one stand-in's limits, and what it saw.
pub struct Limiter {
    limits: ApiLimits,
    counted: VecDeque<Instant>,
    blocked_until: Option<Instant>,
    urls: Bucket,
    others: Bucket,
    /// Calls answered 429.
    pub refused: usize,
    /// When each call the limit counts was admitted.
    pub admitted: Vec<Instant>,
}

impl Limiter {
    /// Limits as `limits` says, nothing counted yet.
    pub fn new(limits: ApiLimits) -> Limiter {
        Limiter {
            limits,
            counted: VecDeque::new(),
            blocked_until: None,
            urls: Bucket::new(800.0, 800.0),
            others: Bucket::new(5.0 / 60.0, 25.0),
            refused: 0,
            admitted: Vec::new(),
        }
    }

    /// Whether a call to `target` with `body` is taken; `Err` with the seconds its `Retry-After`
    /// says when it is refused.
    pub fn admit(&mut self, target: &str, body: &[u8]) -> Result<(), u64> {
        let refused = self.check(target, body);
        if refused.is_err() {
            self.refused += 1;
        }
        refused
    }

    fn check(&mut self, target: &str, body: &[u8]) -> Result<(), u64> {
        let now = Instant::now();
        let seconds = |wait: Duration| wait.as_secs_f64().ceil().max(1.0) as u64;
        if let Some(until) = self.blocked_until.filter(|until| *until > now) {
            return Err(seconds(until - now));
        }
        let counts = !self.limits.fastly || target.ends_with("/purge_all");
        if counts {
            while self
                .counted
                .front()
                .is_some_and(|at| now.duration_since(*at) >= self.limits.per)
            {
                self.counted.pop_front();
            }
            if self.counted.len() >= self.limits.calls {
                self.blocked_until = Some(now + self.limits.block);
                return Err(seconds(self.limits.block));
            }
        }
        if !self.limits.fastly {
            let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let taken = match json["files"].as_array() {
                Some(files) => self.urls.take(files.len() as f64),
                None => self.others.take(1.0),
            };
            taken.map_err(seconds)?;
        }
        if counts {
            self.counted.push_back(now);
            self.admitted.push(now);
        }
        Ok(())
    }

    /// Another tool on the same user made `calls` calls just now: they count against the window
    /// as the target's do.
    pub fn taken_by_others(&mut self, calls: usize) {
        let now = Instant::now();
        self.counted.extend(std::iter::repeat_n(now, calls));
    }

    /// The headers an answer carries about the window now: what is left, and when it resets
    /// (once its oldest counted call is `per` old).
    pub fn headers(&mut self) -> Vec<(&'static str, String)> {
        let now = Instant::now();
        let per = self.limits.per;
        self.counted.retain(|at| now.duration_since(*at) < per);
        let remaining = self.limits.calls.saturating_sub(self.counted.len());
        let reset = self.counted.front().map_or(per, |oldest| {
            per.saturating_sub(now.duration_since(*oldest))
        });
        let reset = reset.as_secs_f64().ceil() as u64;
        if self.limits.fastly {
            let epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            vec![
                ("fastly-ratelimit-remaining", remaining.to_string()),
                ("fastly-ratelimit-reset", (epoch + reset).to_string()),
            ]
        } else {
            vec![
                ("ratelimit", format!("\"default\";r={remaining};t={reset}")),
                (
                    "ratelimit-policy",
                    format!("\"default\";q={};w={}", self.limits.calls, per.as_secs()),
                ),
            ]
        }
    }

    /// The most calls admitted within any window of `per`.
    pub fn most_within(&self, per: Duration) -> usize {
        let at = &self.admitted;
        (0..at.len())
            .map(|i| {
                at[i..]
                    .iter()
                    .take_while(|t| t.duration_since(at[i]) < per)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}
