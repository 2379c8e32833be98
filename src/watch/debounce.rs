//! The window between a commit's notification and its cycle. A fixed window made every lone
//! commit wait the whole `debounce` (most of what an open map waited for a change); this one
//! closes once the commits pause, so a lone commit's cycle starts at once and a burst still
//! makes one cycle, and `debounce` only caps how long a stream of commits can hold a cycle back.

use std::time::{Duration, Instant};

use crate::db::Listener;
use crate::error::{DbError, Error, Result};
use crate::schedule::Stop;

/// How long the window first waits for another commit after the first notification: a lone
/// commit's cycle starts this soon.
const QUIET: Duration = Duration::from_millis(50);

/// The error of a LISTEN connection whose notifications stopped.
pub(super) fn lost() -> Error {
    Error::Database(DbError::Unexpected(
        "the LISTEN connection to PostgreSQL was lost".into(),
    ))
}

/// Waits, after the `first` notification, until the commits pause or `cap` (the `debounce`
/// setting) has passed since it, whichever comes first; returns how many were notified. A pause
/// is twice the longest gap between the window's notifications so far, and at least [`QUIET`]:
/// a lone commit's cycle starts within [`QUIET`], commits that come in quick succession go into
/// one cycle, and the slower they come the longer the window waits for the next, up to the cap.
pub(super) async fn gather_burst(
    listener: &mut Listener,
    first: Instant,
    cap: Duration,
    stop: &Stop,
) -> Result<usize> {
    let deadline = first + cap;
    let mut pause = QUIET.min(cap);
    let mut last = first;
    let mut notified = 1;
    loop {
        tokio::select! {
            arrived = listener.notifications.recv() => {
                let at = arrived.ok_or_else(lost)?;
                notified += 1;
                pause = pause.max(at.saturating_duration_since(last) * 2).min(cap);
                last = last.max(at);
            }
            () = tokio::time::sleep_until((last + pause).min(deadline).into()) => break,
            signal = stop.stopped() => return Err(Error::Stopped { signal }),
        }
    }
    tracing::debug!(
        "{notified} notification(s) in a window of {:.0} ms: the cycle starts",
        first.elapsed().as_secs_f64() * 1000.0
    );
    Ok(notified)
}
