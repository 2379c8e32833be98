//! What an API's answer says is left of its user's calls: Cloudflare's `Ratelimit` header (the
//! IETF draft's RateLimit fields: `"default";r=50;t=30`, calls remaining and seconds until the
//! window resets, beside `Ratelimit-Policy`'s quota and window) and Fastly's
//! `Fastly-RateLimit-Remaining` and `Fastly-RateLimit-Reset` (calls remaining, and the reset as
//! Unix seconds). These count every tool on the account, which the tool's own count cannot see.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Calls the API says its user has left, and how long until its window gives more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    /// Calls left in the window, every tool of the user together.
    pub remaining: u64,
    /// How long until the window resets.
    pub reset: Duration,
}

/// What `headers` (name, value) report; `None` when they report nothing that can be read.
pub fn reported<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> Option<Reported> {
    let (mut fastly_remaining, mut fastly_reset, mut draft) = (None, None, None);
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("ratelimit") {
            draft = tightest(draft, draft_items(value));
        } else if name.eq_ignore_ascii_case("fastly-ratelimit-remaining") {
            fastly_remaining = value.trim().parse::<u64>().ok();
        } else if name.eq_ignore_ascii_case("fastly-ratelimit-reset") {
            fastly_reset = value.trim().parse::<u64>().ok();
        }
    }
    let fastly = fastly_remaining.zip(fastly_reset).map(|(remaining, at)| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Reported {
            remaining,
            reset: Duration::from_secs(at.saturating_sub(now)),
        }
    });
    tightest(draft, fastly)
}

/// The tighter of two reports: the fewer calls left.
fn tightest(a: Option<Reported>, b: Option<Reported>) -> Option<Reported> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.remaining < a.remaining { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The tightest item of a `Ratelimit` field: a list of `"name";r=N;t=S`, one a limit.
fn draft_items(value: &str) -> Option<Reported> {
    value.split(',').fold(None, |found, item| {
        let (mut remaining, mut reset) = (None, None);
        for parameter in item.split(';').skip(1) {
            match parameter.trim().split_once('=') {
                Some(("r", n)) => remaining = n.trim().parse::<u64>().ok(),
                Some(("t", s)) => reset = s.trim().parse::<u64>().ok(),
                _ => {}
            }
        }
        let item = remaining.zip(reset).map(|(remaining, reset)| Reported {
            remaining,
            reset: Duration::from_secs(reset),
        });
        tightest(found, item)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudflares_and_fastlys_headers_read_as_calls_left_and_a_reset() {
        let cloudflare = [
            ("Ratelimit", r#""default";r=50;t=30"#),
            ("Ratelimit-Policy", r#""default";q=1200;w=300"#),
        ];
        assert_eq!(
            reported(cloudflare.into_iter()),
            Some(Reported {
                remaining: 50,
                reset: Duration::from_secs(30)
            })
        );
        let two = [("ratelimit", r#""default";r=50;t=30, "burst";r=3;t=2"#)];
        assert_eq!(reported(two.into_iter()).unwrap().remaining, 3);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let reset = (now + 600).to_string();
        let fastly = [
            ("Fastly-RateLimit-Remaining", "999"),
            ("Fastly-RateLimit-Reset", reset.as_str()),
        ];
        let read = reported(fastly.into_iter()).unwrap();
        assert_eq!(read.remaining, 999);
        assert!(read.reset > Duration::from_secs(590), "{read:?}");
        assert_eq!(reported([("ratelimit", "garbage")].into_iter()), None);
        assert_eq!(reported([("Retry-After", "5")].into_iter()), None);
    }
}
