//! What the watcher's HTTP endpoints (`/metrics`, `/health`, the changes feeds) read while it
//! works, on the listener's own thread.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use super::EDGE_CHECKS_IN_FLIGHT;
use crate::config::OutputTarget;
use crate::job::WatchJob;
use crate::listen::Limits;
use crate::metrics::Metrics;

/// What the HTTP endpoints read while the watcher works.
pub(super) struct Shared {
    pub(super) metrics: Metrics,
    /// Whether the watcher's connections to PostgreSQL are up.
    pub(super) database_up: AtomicBool,
    /// Whether the last cycle succeeded.
    pub(super) cycle_ok: AtomicBool,
    /// When the oldest change that waits in an outbox for a consumer was made, per output.
    pub(super) outbox_oldest: std::sync::Mutex<std::collections::BTreeMap<String, SystemTime>>,
    /// How old that change may get before `/health` fails.
    pub(super) max_outbox_age: std::time::Duration,
    /// When the oldest notified change that no finished cycle has covered arrived.
    pub(super) change_waiting_since: std::sync::Mutex<Option<std::time::Instant>>,
    /// How long that change may wait before `/health` fails.
    pub(super) max_change_wait: std::time::Duration,
    /// Edge checks in flight: a cycle's check that finds none free is skipped, so checks of a CDN
    /// that stays stale cannot pile up.
    pub(super) edge_checks: Arc<tokio::sync::Semaphore>,
    /// Whether the last cycle left purges waiting for room among CloudFront's invalidations in
    /// flight, or invalidations in flight to follow.
    pub(super) edge_waiting: AtomicBool,
    /// The outputs whose changes feeds the listener answers for.
    pub(super) feeds: Vec<FeedOutput>,
    /// How to reach feeds on S3.
    pub(super) store_settings: crate::config::StoreConfig,
    /// Counts the cycles that ended, so the feed's event streams read its head again.
    pub(super) cycles: tokio::sync::watch::Sender<u64>,
    /// The changes feeds' event streams that may be open at once, and their seats.
    pub(super) max_event_clients: usize,
    pub(super) event_clients: Arc<tokio::sync::Semaphore>,
    /// What the listener serves at once.
    pub(super) listener: Limits,
    /// CDN targets held back after a failure, across cycles, reconnections and the partitioned
    /// tilesets' own cycles.
    pub(super) holds: Arc<crate::edge::Holds>,
}

impl Shared {
    /// The state of a watcher of `job` before its first cycle.
    pub(super) fn new(job: &WatchJob) -> Shared {
        let seed = &job.seed;
        let listener = Limits {
            spare_paths: &["/health", "/metrics"],
            ..Limits::below_open_file_limit(RESERVED_DESCRIPTORS, "watch")
        };
        let event_clients = event_client_cap(job.settings.max_event_clients, listener.connections);
        Shared {
            metrics: Metrics::default(),
            database_up: AtomicBool::default(),
            cycle_ok: AtomicBool::default(),
            outbox_oldest: std::sync::Mutex::default(),
            max_outbox_age: job.settings.max_outbox_age,
            change_waiting_since: std::sync::Mutex::default(),
            max_change_wait: job.settings.max_change_wait,
            edge_checks: Arc::new(tokio::sync::Semaphore::new(EDGE_CHECKS_IN_FLIGHT)),
            edge_waiting: AtomicBool::default(),
            holds: Arc::default(),
            feeds: seed
                .tilesets
                .iter()
                .filter(|t| t.tileset.feed.is_some())
                .filter_map(|t| {
                    Some(FeedOutput {
                        tileset: t.tileset.name.clone(),
                        target: t.output.clone()?,
                        partitioned: t.tileset.partition_by.is_some(),
                    })
                })
                .collect(),
            store_settings: seed.store_settings.clone(),
            cycles: tokio::sync::watch::Sender::new(0),
            max_event_clients: event_clients,
            event_clients: Arc::new(tokio::sync::Semaphore::new(event_clients)),
            listener,
        }
    }
}

impl Shared {
    /// Notes a change notified at `arrived`, unless an older one still waits.
    pub(super) fn change_arrived(&self, arrived: std::time::Instant) {
        let mut since = self
            .change_waiting_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        since.get_or_insert(arrived);
    }

    /// A cycle finished: it covered every change notified before it began.
    pub(super) fn cycle_finished(&self, began: std::time::Instant) {
        let mut since = self
            .change_waiting_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if since.is_some_and(|arrived| arrived <= began) {
            *since = None;
        }
    }

    /// How long the oldest uncovered change has waited, once past `max_change_wait`.
    pub(super) fn change_overdue(&self) -> Option<std::time::Duration> {
        let since = *self
            .change_waiting_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let waited = since?.elapsed();
        (waited > self.max_change_wait).then_some(waited)
    }
}

/// An output whose feed the listener answers for.
pub(super) struct FeedOutput {
    /// The tileset's name, in the URL.
    pub tileset: String,
    /// Its output; a partitioned tileset's partitions are inside it.
    pub target: OutputTarget,
    /// Whether the tileset is partitioned, so only its partitions have feeds.
    pub partitioned: bool,
}

/// File descriptors kept for everything but the listener's connections: the pool's and the LISTEN
/// connections, outputs' files, store and CDN requests.
const RESERVED_DESCRIPTORS: u64 = 256;

/// `configured` event streams, lowered (with a warning) to seven eighths of the listener's
/// `connections`, so streams leave room for the documents, `/metrics` and `/health`.
fn event_client_cap(configured: usize, connections: usize) -> usize {
    let room = connections - connections / 8;
    if configured > room {
        tracing::warn!(
            "watch.max_event_clients {configured} lowered to {room}: the listener serves at most \
             {connections} connections below the open-file limit (raise it with `ulimit -n` or \
             the service's LimitNOFILE)"
        );
    }
    configured.min(room)
}
