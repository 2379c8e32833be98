//! The integration tests' Cloudflare stand-in as a process of its own, for the benchmark
//! (`scripts/bench.sh --sections import`), which runs `seed` behind it: the same server
//! (`tests/common/recorder.rs`) enforcing the same Free plan limits (`tests/common/api_limits.rs`:
//! 1,200 calls per five minutes, 800 URLs a second, 5 other purges a minute), so the bench and the
//! tests measure against one stand-in.
//!
//! Prints its port on the first line of stdout. Each line read from stdin is answered with one
//! line of JSON, what it saw so far: `{"admitted": [EPOCH, ...], "refused": N, "urls": N}`
//! (every call its limits admitted, in seconds since the Unix epoch; calls answered 429; URLs
//! named by admitted and refused calls). It exits when stdin closes.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// Only the limited recorder is used here; the rest of the tests' helpers stay unused.
#[allow(dead_code)]
#[path = "../common/api_limits.rs"]
mod api_limits;
#[allow(dead_code)]
#[path = "../common/recorder.rs"]
mod recorder;

/// What Cloudflare answers a purge it takes.
const ANSWER: &str = r#"{"success": true, "errors": [], "result": {"id": "x"}}"#;

fn main() {
    let started = (Instant::now(), SystemTime::now());
    let api = recorder::Recorder::limited(
        ANSWER,
        api_limits::ApiLimits::cloudflare(1_200, Duration::from_secs(300)),
    );
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{}", api.port)
        .and_then(|()| out.flush())
        .is_err()
    {
        return;
    }
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
        let seen = seen(&api, started);
        if writeln!(out, "{seen}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
}

/// The calls admitted (as epoch seconds), refused, and the URLs named so far.
fn seen(api: &recorder::Recorder, (instant, wall): (Instant, SystemTime)) -> serde_json::Value {
    let epoch = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (admitted, refused) = match &api.limiter {
        Some(limiter) => {
            let limiter = limiter
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let admitted: Vec<f64> = limiter
                .admitted
                .iter()
                .map(|at| (epoch + at.saturating_duration_since(instant)).as_secs_f64())
                .collect();
            (admitted, limiter.refused)
        }
        None => (Vec::new(), 0),
    };
    let urls: usize = api
        .requests
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .map(|call| {
            serde_json::from_slice::<serde_json::Value>(&call.body)
                .ok()
                .and_then(|body| body["files"].as_array().map(Vec::len))
                .unwrap_or(0)
        })
        .sum();
    serde_json::json!({ "admitted": admitted, "refused": refused, "urls": urls })
}
