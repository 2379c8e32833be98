//! The changes feeds of the watched outputs on the watcher's listener: the same documents a tree
//! or prefix serves (`/changes/{tileset}/head.json`, `/changes/{tileset}/N.json`), which outputs
//! that are single files (MBTiles, PMTiles) have no other server for, and Server-Sent Events
//! (`/changes/{tileset}/events`) for a map that talks to the origin: one `segment` event per
//! segment, its `id` the sequence, so a reconnecting `EventSource` resumes after the last one it
//! saw (`Last-Event-ID`). A partition's feed is asked for with `?partition=VALUE`.
//!
//! Events follow the feed's head, read again after every cycle and every publication (a cycle
//! publishes the tiles its CDNs purged while it still renders): what an event lists was published
//! after the CDNs took it, as the static feed is.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};

use super::shared::Shared;
use crate::config::{partition_segment, StoreConfig};
use crate::coordination::feed::{self, FeedStore, Head};
use crate::listen::{self, problem};
use crate::sink::kind_of;

/// `?partition=VALUE`.
struct Which {
    partition: Option<String>,
}

impl Which {
    fn from_query(query: Option<&str>) -> Which {
        let partition = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(key, _)| key == "partition")
            .map(|(_, value)| value.into_owned());
        Which { partition }
    }
}

/// The feed of `tileset` (or of its partition), or the answer that there is none.
async fn store(
    shared: &Shared,
    store_settings: &StoreConfig,
    tileset: &str,
    which: &Which,
) -> Result<FeedStore, Response> {
    let Some(output) = shared.feeds.iter().find(|f| f.tileset == tileset) else {
        return Err(problem(
            StatusCode::NOT_FOUND,
            format!("no watched tileset `{tileset}` has a changes feed ([tileset.feed])"),
        ));
    };
    let target = match (&which.partition, output.partitioned) {
        (Some(value), true) => match partition_segment(value) {
            Ok(segment) => output.target.for_partition(&segment),
            Err(e) => return Err(problem(StatusCode::BAD_REQUEST, e.to_string())),
        },
        (None, false) => output.target.clone(),
        (None, true) => {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                format!(
                    "tileset `{tileset}` is partitioned: name a partition with ?partition=VALUE"
                ),
            ))
        }
        (Some(_), false) => {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                format!("tileset `{tileset}` is not partitioned"),
            ))
        }
    };
    let found = kind_of(&target).home().feed(store_settings).await;
    found.map_err(|e| problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A document of a feed, as `serve` answers it.
pub(super) async fn document(
    State(shared): State<Arc<Shared>>,
    Path((tileset, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let which = Which::from_query(query.as_deref());
    let cache_control = match feed::document_named(&file) {
        Some(feed::Document::Head) => "no-cache",
        Some(feed::Document::Segment) => feed::SEGMENT_CACHE_CONTROL,
        None => return problem(StatusCode::NOT_FOUND, format!("no feed document `{file}`")),
    };
    let store = match store(&shared, &shared.store_settings, &tileset, &which).await {
        Ok(store) => store,
        Err(response) => return response,
    };
    let missing = format!("the changes feed of `{tileset}` has no `{file}` yet");
    listen::feed_document(store.read(&file).await, cache_control, missing)
}

/// The feed as Server-Sent Events: `head` once (where the feed stands), then a `segment` per
/// segment published; `reload` when the client's `Last-Event-ID` is older than the feed keeps.
/// At most `watch.max_event_clients` streams at once: beyond, 503, so clients cannot take the
/// watcher's file descriptors (and with them its database connection).
pub(super) async fn events(
    State(shared): State<Arc<Shared>>,
    Path(tileset): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Ok(seat) = shared.event_clients.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::RETRY_AFTER, "10"),
            ],
            format!(
                "this watcher already streams to {} clients (watch.max_event_clients); poll \
                 /changes/{tileset}/head.json or try again later\n",
                shared.max_event_clients
            ),
        )
            .into_response();
    };
    let which = Which::from_query(query.as_deref());
    let store = match store(&shared, &shared.store_settings, &tileset, &which).await {
        Ok(store) => store,
        Err(response) => return response,
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let cycles = shared.cycles.subscribe();
    Sse::new(follow(store, resume, cycles, seat))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Where a client's stream stands.
struct Following {
    store: FeedStore,
    /// The last sequence sent; `None` until the head was first read.
    sent: Option<u64>,
    /// The head a catch-up runs to, while segments up to it remain to be sent.
    catching_up: Option<Head>,
    cycles: tokio::sync::watch::Receiver<u64>,
    /// Every publication of this process, which may come before its cycle ends.
    publications: tokio::sync::watch::Receiver<u64>,
    /// Whether to wait for a cycle or a publication before reading the head again.
    wait: bool,
    /// The client's place among `watch.max_event_clients`, given back when the stream ends.
    _seat: tokio::sync::OwnedSemaphorePermit,
}

/// The events of one client. Each step reads at most one segment from the store, so a client
/// catching up over every retained segment holds one in memory at a time, not all of them.
fn follow(
    store: FeedStore,
    resume: Option<u64>,
    cycles: tokio::sync::watch::Receiver<u64>,
    seat: tokio::sync::OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let start = Following {
        store,
        sent: resume,
        catching_up: None,
        cycles,
        publications: feed::publications(),
        wait: false,
        _seat: seat,
    };
    stream::unfold(start, |mut state| async move {
        if let Some(head) = state.catching_up.take() {
            return Some((next_segment(&mut state, head).await, state));
        }
        if state.wait {
            let woken = tokio::select! {
                woken = state.cycles.changed() => woken,
                woken = state.publications.changed() => woken,
            };
            if woken.is_err() {
                return None;
            }
        }
        state.wait = true;
        let head = match state.store.head().await {
            Ok(head) => head,
            Err(e) => {
                tracing::warn!("changes feed events: {e}");
                return Some((None, state));
            }
        };
        let Some(head) = head else {
            state.sent.get_or_insert(0);
            return Some((None, state));
        };
        let event = match state.sent {
            // A new client: where the feed stands; what it loads from now on is at least that new.
            None => {
                state.sent = Some(head.sequence);
                Some(head_event("head", &head))
            }
            Some(sent) if head.sequence <= sent => None,
            Some(sent) if sent + 1 < head.oldest => {
                state.sent = Some(head.sequence);
                Some(head_event("reload", &head))
            }
            Some(_) => return Some((next_segment(&mut state, head).await, state)),
        };
        Some((event, state))
    })
    .filter_map(|event| async move { event.map(Ok) })
}

/// The event naming the whole `head` (`head` for a new client, `reload` for one that missed
/// segments the feed no longer keeps).
fn head_event(name: &'static str, head: &Head) -> Event {
    Event::default()
        .event(name)
        .id(head.sequence.to_string())
        .data(serde_json::to_string(head).unwrap_or_default())
}

/// The segment after the last one `state` sent, on the way to `head`; the rest of the way is
/// left in `state.catching_up`.
async fn next_segment(state: &mut Following, head: Head) -> Option<Event> {
    let sequence = state.sent.map_or(1, |sent| sent + 1);
    match state.store.read(&feed::segment_name(sequence)).await {
        Ok(Some(bytes)) => {
            state.sent = Some(sequence);
            let event = Event::default()
                .event("segment")
                .id(sequence.to_string())
                .data(String::from_utf8_lossy(&bytes));
            if sequence < head.sequence {
                state.catching_up = Some(head);
            }
            Some(event)
        }
        // Removed meanwhile (retention): the client cannot know what it missed.
        _ => {
            state.sent = Some(head.sequence);
            Some(head_event("reload", &head))
        }
    }
}
