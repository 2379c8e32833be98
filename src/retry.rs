//! One retry policy for every remote call (PostgreSQL statements and connections, S3 requests):
//! bounded attempts with exponential backoff, a log line per retry naming what failed, and the
//! number of attempts in the final error. The backoff itself is `backon`'s.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

/// How often and how patiently a failing call is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; it doubles after each failure.
    pub first_delay: Duration,
    /// Longest wait between two attempts.
    pub max_delay: Duration,
}

impl Policy {
    /// Database statements and connections: 0.5 s doubling to 8 s, so a restarting server (which
    /// takes seconds) is waited for rather than failed.
    pub fn database(attempts: u32) -> Policy {
        Policy {
            attempts: attempts.max(1),
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }

    /// S3 requests: 0.25 s doubling to 10 s, as AWS advises for throttling (503 SlowDown).
    pub fn s3(attempts: u32) -> Policy {
        Policy {
            attempts: attempts.max(1),
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }

    /// Runs `call` until it succeeds, fails in a way `transient` calls final, or the attempts run
    /// out. Before each retry it logs `what`, the attempt and `describe` of the error.
    pub async fn run<T, E, Fut>(
        &self,
        what: impl Fn() -> String,
        mut call: impl FnMut() -> Fut,
        transient: impl Fn(&E) -> bool,
        describe: impl Fn(&E) -> String,
    ) -> Result<T, Failed<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        // Atomic rather than a Cell: the future may be sent to another thread (S3 uploads).
        let attempt = AtomicU32::new(0);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.first_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.attempts as usize - 1);
        let attempts = self.attempts;
        let result = (|| {
            attempt.fetch_add(1, Ordering::Relaxed);
            call()
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|err| transient(err))
        .notify(|err, delay| {
            tracing::warn!(
                "{}: attempt {} of {attempts} failed, retrying in {delay:?}: {}",
                what(),
                attempt.load(Ordering::Relaxed),
                describe(err)
            );
        })
        .await;
        result.map_err(|error| Failed {
            error,
            attempts: attempt.load(Ordering::Relaxed),
        })
    }
}

/// The error of the last attempt, and how many were made.
#[derive(Debug)]
pub struct Failed<E> {
    /// What the last attempt returned.
    pub error: E,
    /// Attempts made, the first included.
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn quick(attempts: u32) -> Policy {
        Policy {
            attempts,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_until_it_succeeds() {
        let calls = Cell::new(0);
        let result: Result<u32, Failed<&str>> = quick(5)
            .run(
                || "call".into(),
                || {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move {
                        if n < 3 {
                            Err("busy")
                        } else {
                            Ok(n)
                        }
                    }
                },
                |_| true,
                |e| e.to_string(),
            )
            .await;
        assert_eq!(result.unwrap(), 3);
    }

    /// How a call that always fails with `error` ends, when `transient` says whether to retry.
    async fn always_failing(error: &'static str, transient: bool) -> Failed<&'static str> {
        let result: Result<(), Failed<&str>> = quick(4)
            .run(
                || "call".into(),
                || async move { Err(error) },
                |_| transient,
                |e| e.to_string(),
            )
            .await;
        result.unwrap_err()
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_counted() {
        let failed = always_failing("down", true).await;
        assert_eq!((failed.error, failed.attempts), ("down", 4));
    }

    #[tokio::test]
    async fn a_final_error_is_not_retried() {
        assert_eq!(always_failing("refused", false).await.attempts, 1);
    }
}
