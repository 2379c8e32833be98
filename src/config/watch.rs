//! The `[watch]` table: how `watch` paces its cycles, where it serves its endpoints, and what
//! they may hold.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::duration_key;
use super::EdgeCheckSettings;
use crate::error::{Error, Result};

/// How `watch` paces its cycles and where it serves its metrics (`[watch]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// The longest a cycle waits after the first notification: it starts once the commits pause
    /// (see `watch::debounce`), at most this long after the first.
    pub debounce: Duration,
    /// How long a change's tiles at slow low zooms may wait: the low lane renders them at most
    /// this often, for every change meanwhile, so no cycle waits for them. A change that waited
    /// longer than this for its cycle (cycles slower than the commits) is warned about.
    pub max_delay: Duration,
    /// A cycle runs at least this often, covering a notification that never arrived.
    pub poll_interval: Duration,
    /// Address of `/metrics` and `/health`.
    pub listen: std::net::SocketAddr,
    /// `/health` answers 503 once a change has waited this long in an outbox for a consumer (a
    /// CDN that keeps failing).
    pub max_outbox_age: Duration,
    /// `/health` answers 503 once a notified change has waited this long and no cycle has
    /// covered it (a cycle that hangs, or never starts).
    pub max_change_wait: Duration,
    /// After each cycle's purge, how many changed tiles are fetched through each CDN target's
    /// `public_url` (`check_edge`), and how long they may take to turn fresh (`check_edge_within`).
    pub check_edge: EdgeCheckSettings,
    /// Server-Sent Events streams of the changes feeds served at once; more are answered 503.
    pub max_event_clients: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            debounce: Duration::from_secs(1),
            max_delay: Duration::from_secs(2),
            poll_interval: Duration::from_secs(60),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9187)),
            max_outbox_age: Duration::from_secs(300),
            max_change_wait: Duration::from_secs(300),
            check_edge: EdgeCheckSettings {
                sample: 8,
                ..EdgeCheckSettings::default()
            },
            max_event_clients: 256,
        }
    }
}

/// `oar-tiles watch`: keeps every output fresh within seconds of a commit. Durations are written
/// like "1s", "10s", "5m".
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Watch")]
pub(super) struct RawWatch {
    /// The longest a cycle waits after the first notification. The cycle starts once the commits
    /// pause (50 ms after a lone commit, or twice the longest gap between the commits so far), so a
    /// burst, and what was notified while the previous cycle ran, makes one cycle; a steady
    /// stream of commits waits at most this long. At most `max_delay`.
    #[schemars(with = "Option<String>", extend("default" = "1s"))]
    debounce: Option<Spanned<String>>,
    /// How long a change's tiles at slow low zooms (a tile that took 250 ms or more, on an
    /// unclustered layer zooms 0-3 or so) may wait: cycles leave them to a low lane that renders
    /// them at most this often, together for every change meanwhile, on a connection of its own,
    /// so no commit waits for them. A change that waits longer than this for its cycle to start
    /// (cycles slower than the commits arrive) is logged as a warning.
    #[schemars(with = "Option<String>", extend("default" = "2s"))]
    max_delay: Option<Spanned<String>>,
    /// A cycle runs at least this often when changes are pending, covering a lost notification
    /// (at least "1s").
    #[schemars(with = "Option<String>", extend("default" = "60s"))]
    poll_interval: Option<Spanned<String>>,
    /// Address serving Prometheus metrics at `/metrics` and health at `/health` (`--listen`
    /// overrides it).
    #[schemars(with = "Option<String>", extend("default" = "127.0.0.1:9187"))]
    listen: Option<Spanned<String>>,
    /// `/health` answers 503 once a change has waited this long in an output's outbox for a CDN
    /// purge.
    #[schemars(with = "Option<String>", extend("default" = "5m"))]
    max_outbox_age: Option<Spanned<String>>,
    /// `/health` answers 503, saying so, once a notified change has waited this long and no
    /// cycle has finished since: a cycle hung on a silent database or store, or never started.
    /// Longer than the longest cycle you expect.
    #[schemars(with = "Option<String>", extend("default" = "5m"))]
    max_change_wait: Option<Spanned<String>>,
    /// After each cycle's purge, this many of the purged tiles are fetched through each CDN
    /// target's `public_url` and compared with the output's, for the change-to-edge latency and
    /// stale answers in `/metrics` (0: off).
    #[schemars(extend("default" = 8))]
    check_edge: Option<usize>,
    /// How long a checked tile may stay stale after the purge before it counts as unconfirmed.
    #[schemars(with = "Option<String>", extend("default" = "60s"))]
    check_edge_within: Option<Spanned<String>>,
    /// Server-Sent Events streams of the changes feeds open at once; more are answered 503 (the
    /// page then polls `head.json`). Lowered, with a warning, to what the open-file limit leaves.
    #[schemars(extend("default" = 256))]
    max_event_clients: Option<usize>,
}

/// The `[watch]` table checked; durations and the address name their key when they do not parse.
pub(super) fn resolve_watch(
    raw: RawWatch,
    at: &impl Fn(Option<std::ops::Range<usize>>, String) -> Error,
) -> Result<WatchConfig> {
    let default = WatchConfig::default();
    let listen = match raw.listen {
        None => default.listen,
        Some(spanned) => spanned.get_ref().parse().map_err(|_| {
            at(
                Some(spanned.span()),
                format!(
                    "watch.listen `{}` is not an address like \"127.0.0.1:9187\"",
                    spanned.get_ref()
                ),
            )
        })?,
    };
    let watch = WatchConfig {
        debounce: duration_key(raw.debounce, "watch.debounce", default.debounce, at)?,
        max_delay: duration_key(raw.max_delay, "watch.max_delay", default.max_delay, at)?,
        poll_interval: duration_key(
            raw.poll_interval,
            "watch.poll_interval",
            default.poll_interval,
            at,
        )?,
        listen,
        max_outbox_age: duration_key(
            raw.max_outbox_age,
            "watch.max_outbox_age",
            default.max_outbox_age,
            at,
        )?,
        max_change_wait: duration_key(
            raw.max_change_wait,
            "watch.max_change_wait",
            default.max_change_wait,
            at,
        )?,
        check_edge: EdgeCheckSettings {
            sample: raw.check_edge.unwrap_or(default.check_edge.sample),
            within: duration_key(
                raw.check_edge_within,
                "watch.check_edge_within",
                default.check_edge.within,
                at,
            )?,
        },
        max_event_clients: raw.max_event_clients.unwrap_or(default.max_event_clients),
    };
    if watch.debounce > watch.max_delay || watch.poll_interval < Duration::from_secs(1) {
        return Err(at(
            None,
            "watch.debounce must not exceed watch.max_delay, and watch.poll_interval must be at least 1s"
                .into(),
        ));
    }
    Ok(watch)
}
