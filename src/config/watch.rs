//! The `[watch]` table: how `watch` paces its cycles, where it serves its endpoints, and what
//! they may hold.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration_key;
use super::EdgeCheckSettings;
use crate::error::{Error, Result};

/// How `watch` paces its cycles and where it serves its metrics (`[watch]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// How long after the first notification a cycle starts: changes notified within that window
    /// make one cycle.
    pub debounce: Duration,
    /// A change that waited longer than this for its cycle (cycles slower than the commits) is
    /// warned about.
    pub max_delay: Duration,
    /// A cycle runs at least this often, covering a notification that never arrived.
    pub poll_interval: Duration,
    /// Address of `/metrics` and `/health`.
    pub listen: std::net::SocketAddr,
    /// `/health` answers 503 once a change has waited this long in an outbox for a consumer (a
    /// CDN that keeps failing).
    pub max_outbox_age: Duration,
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
            max_delay: Duration::from_secs(10),
            poll_interval: Duration::from_secs(60),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9187)),
            max_outbox_age: Duration::from_secs(300),
            check_edge: EdgeCheckSettings {
                sample: 8,
                ..EdgeCheckSettings::default()
            },
            max_event_clients: 256,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatch {
    debounce: Option<Spanned<String>>,
    max_delay: Option<Spanned<String>>,
    poll_interval: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    max_outbox_age: Option<Spanned<String>>,
    check_edge: Option<usize>,
    check_edge_within: Option<Spanned<String>>,
    max_event_clients: Option<usize>,
}

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
