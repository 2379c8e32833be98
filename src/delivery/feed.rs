//! The changes feed as one more consumer of an output's outbox (`coordination::feed`): it takes a batch
//! only once every CDN of the tileset took it, and, where CloudFront is one, once no invalidation
//! is in flight, so an open map told "this tile changed" is served the new bytes by the edge.
//! After each publication the head is purged from the CDNs whose purges are free (a priced CDN
//! keeps the head for its short `max-age`, which costs nothing). A versioned feed
//! (`versioned = true`) waits for no CDN: its segments carry a version following maps ask the
//! listed tiles with, past every cache, while the purges serve every other visitor.

use std::collections::{BTreeSet, HashSet};
use std::ops::Bound;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Feed;
use crate::coordination::feed::{FeedStore, Published, HEAD};
use crate::coordination::outbox::{Outbox, EVERYTHING};
use crate::edge::Flights;
use crate::edge::{everything_under, Holds, PurgeTarget};
use crate::error::Result;
use crate::tile::TileCoord;

/// The name under which the changes feed takes batches from an outbox.
pub const FEED_CONSUMER: &str = "feed";

/// Tiles past which a segment asks maps to reload every tile instead of listing them: a full
/// seed's millions would make a segment of tens of megabytes that every open map downloads.
pub const MAX_LISTED_TILES: usize = 50_000;

/// Segments a run publishes at most while it still renders; the rest of its tiles go in the
/// segment its delivery publishes, so a cycle adds at most this many plus one.
const MAX_EARLY_SEGMENTS: usize = 3;

/// The least time between two of a run's segments published while it renders: an open map reads
/// the head about every second, so closer segments would only make it fetch more documents.
const EARLY_SPACING: Duration = Duration::from_millis(500);

/// How long a run gathers the tiles served anew before its first segment: a run that ends by
/// then lists all its tiles in one segment, and the chunks that follow the first within it (the
/// next zooms up, rendered in milliseconds) go with it.
const EARLY_GATHERING: Duration = Duration::from_millis(200);

/// The segments a run publishes while it renders, where every CDN purges its tiles as the sink
/// stores them (or there is no CDN): the tiles at a change, rendered first (deepest zoom
/// first), reach open maps before the heavy low zooms are done.
#[derive(Default)]
pub(super) struct EarlyFeed {
    /// Whether a chunk purged by every CDN is served anew everywhere, so it may be listed.
    pub enabled: bool,
    /// A versioned feed's: a chunk is listed as soon as it is stored, before its purges.
    pub ahead_of_purges: bool,
    /// Tiles served anew everywhere and not listed yet.
    fresh: Vec<String>,
    /// Tiles the run's segments listed, which its delivery leaves out.
    pub published: HashSet<String>,
    segments: usize,
    /// When the run's first tiles were served anew everywhere.
    first: Option<Instant>,
    last: Option<Instant>,
    /// What its segments published, together.
    total: Option<Published>,
}

impl EarlyFeed {
    /// Records the tiles of a chunk every CDN purged after its new bytes were served.
    pub fn served_anew(&mut self, lines: &[String]) {
        if !self.enabled {
            return;
        }
        self.fresh.extend(
            lines
                .iter()
                .filter(|l| l.parse::<TileCoord>().is_ok())
                .cloned(),
        );
        if self.fresh.len() + self.published.len() > MAX_LISTED_TILES {
            // A segment this large asks maps to reload everything: the delivery's one does.
            self.enabled = false;
            self.fresh.clear();
        }
    }

    /// When the fresh tiles may be published; `None` when there are none or the run's early
    /// segments are spent.
    pub fn due(&self) -> Option<Instant> {
        if !self.enabled || self.fresh.is_empty() || self.segments >= MAX_EARLY_SEGMENTS {
            return None;
        }
        match (self.last, self.first) {
            (Some(last), _) => Some(last + EARLY_SPACING),
            (None, first) => Some(first.unwrap_or_else(Instant::now) + EARLY_GATHERING),
        }
    }

    /// The fresh tiles, to publish.
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.fresh)
    }

    /// Records a published segment of `tiles`.
    pub fn published(&mut self, tiles: Vec<String>, published: Published) {
        self.segments += 1;
        self.last = Some(Instant::now());
        self.published.extend(tiles);
        self.total = Some(match self.total {
            Some(earlier) => earlier.then(published),
            None => published,
        });
    }

    /// What the run published in all, with its delivery's segment (`last`).
    pub fn total(&self, last: Option<Published>) -> Option<Published> {
        match (self.total, last) {
            (Some(early), Some(last)) => Some(early.then(last)),
            (early, last) => last.or(early),
        }
    }
}

/// One output's feed, as a run delivers to it.
pub(super) struct RunFeed {
    pub store: FeedStore,
    pub settings: Feed,
    /// Every batch means "reload everything" (a sharded run's finalize, whose parts' tiles the
    /// feed never saw).
    pub reload: bool,
}

/// What the feed waits on before it may take a batch.
pub(super) struct Edge<'a> {
    /// The tileset's CDNs.
    pub targets: &'a [PurgeTarget],
    /// A partition's: its tileset's outbox, where purges its CDNs could not take wait.
    pub handover: Option<&'a Outbox>,
    /// Where the output's paths go under the tileset's root (a partition's).
    pub prefix: Option<&'a str>,
    /// The path a line of the outbox purges, as the handed-over purges name it.
    pub path_of: &'a (dyn Fn(&str) -> String + Sync),
    /// Targets held back after a failure, which the head's purge leaves alone too.
    pub holds: &'a Holds,
    /// The key each target is held back under.
    pub hold_key: &'a (dyn Fn(&PurgeTarget) -> String + Sync),
    /// What the head's purges sent, per target, for the run's purge counts.
    pub head_purges: &'a HeadPurges,
}

/// Requests and paths the feed's head purges sent per target (by name) since the run's last
/// summary: they count with the target's other purges.
#[derive(Default)]
pub struct HeadPurges(std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>);

impl HeadPurges {
    fn add(&self, target: &str, report: &crate::edge::PurgeReport) {
        let mut sent = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = sent.entry(target.to_string()).or_default();
        entry.0 += report.requests;
        entry.1 += report.paths;
    }

    /// The requests and paths sent to `target` since the last call, which it forgets.
    pub fn take(&self, target: &str) -> (u64, u64) {
        let mut sent = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sent.remove(target).unwrap_or_default()
    }
}

impl RunFeed {
    /// Publishes every batch of `outbox` the edge already serves anew as one segment, marks
    /// them taken (with `consumers`, every consumer of the outbox) and purges the head from the
    /// free CDNs. The tiles in `published_early` were listed by this run's segments while it
    /// rendered ([`EarlyFeed`]) and are left out. `None` when nothing was ready.
    pub async fn deliver(
        &self,
        outbox: &Outbox,
        consumers: &[String],
        edge: Edge<'_>,
        published_early: &HashSet<String>,
    ) -> Result<Option<Published>> {
        let pending = outbox.pending(FEED_CONSUMER).await?;
        if pending.is_empty() {
            return Ok(None);
        }
        let ready = if self.settings.versioned {
            // The origin holds every batch's new bytes, which following maps ask for by version:
            // no CDN's purge is waited for.
            pending
        } else {
            self.served_anew(pending, outbox, &edge).await?
        };
        if ready.is_empty() {
            return Ok(None);
        }
        let mut reload = self.reload;
        let mut tiles = Vec::new();
        for line in ready.iter().flat_map(|(_, lines)| lines) {
            if line == EVERYTHING {
                reload = true;
            } else if published_early.contains(line) {
                // Listed by a segment of this run's once its new bytes were purged.
            } else if let Ok(tile) = line.parse::<TileCoord>() {
                tiles.push(tile.to_string());
            }
            // Other lines are documents or archives rewritten around the tiles listed.
        }
        tiles.sort_unstable();
        tiles.dedup();
        if tiles.len() > MAX_LISTED_TILES {
            reload = true;
        }
        let published = if reload || !tiles.is_empty() {
            Some(self.publish(tiles, reload, outbox, &edge).await?)
        } else {
            None
        };
        let names: Vec<String> = ready.into_iter().map(|(name, _)| name).collect();
        outbox.taken(FEED_CONSUMER, &names, consumers).await?;
        Ok(published)
    }

    /// The batches of `pending` every CDN of `edge` serves anew: none while a CloudFront
    /// invalidation is in flight; otherwise those no CDN still has to purge.
    async fn served_anew(
        &self,
        pending: Vec<(String, Vec<String>)>,
        outbox: &Outbox,
        edge: &Edge<'_>,
    ) -> Result<Vec<(String, Vec<String>)>> {
        for target in edge.targets.iter().filter(|t| t.tracks_invalidations()) {
            if Flights::open(target, outbox).await?.in_flight() > 0 {
                tracing::debug!(
                    "changes feed of {}: waits for CloudFront `{}`'s invalidations to complete",
                    self.store.describe(),
                    target.name()
                );
                return Ok(Vec::new());
            }
        }
        // A batch waits while a CDN has not taken it, and while a later version of one of its
        // lines waits for a CDN here, or in the tileset's outbox where a partition handed its
        // purges over: per path, not per batch, as the tileset's outbox merges what partitions
        // handed over, so a batch's own name says nothing of whether its purges went out.
        let mut waiting: HashSet<String> = HashSet::new();
        let mut waiting_paths = BTreeSet::new();
        for target in edge.targets {
            for (name, lines) in outbox.pending(&target.consumer()).await? {
                waiting.insert(name);
                waiting_paths.extend(lines.iter().map(|line| (edge.path_of)(line)));
            }
        }
        if let Some(tileset_outbox) = edge.handover {
            let consumers: Vec<String> = edge.targets.iter().map(PurgeTarget::consumer).collect();
            waiting_paths.extend(tileset_outbox.waiting_lines(&consumers).await?);
        }
        let waiting_paths = WaitingPaths::new(waiting_paths);
        let mut ready = Vec::new();
        for (name, lines) in pending {
            if waiting.contains(&name)
                || lines
                    .iter()
                    .any(|line| waiting_paths.meets(&(edge.path_of)(line)))
            {
                continue;
            }
            ready.push((name, lines));
        }
        Ok(ready)
    }

    /// Publishes a segment listing `tiles` (or asking maps to reload every tile) and purges the
    /// head from the CDNs whose purges are free.
    pub async fn publish(
        &self,
        tiles: Vec<String>,
        reload: bool,
        outbox: &Outbox,
        edge: &Edge<'_>,
    ) -> Result<Published> {
        let published = self
            .store
            .publish(
                tiles,
                reload,
                self.settings.retention,
                &self.settings.head_cache_control,
                self.settings.versioned,
            )
            .await?;
        tracing::info!(
            "changes feed of {}: segment {} lists {} tile(s){}",
            self.store.describe(),
            published.sequence,
            published.tiles,
            if reload {
                " and asks maps to reload every tile"
            } else {
                ""
            }
        );
        let head = format!("{}/{HEAD}", crate::coordination::feed::FOLDER);
        let head = match edge.prefix {
            Some(prefix) => format!("{prefix}/{head}"),
            None => head,
        };
        for target in edge.targets.iter().filter(|t| !t.is_priced()) {
            let key = (edge.hold_key)(target);
            if edge.holds.held(&key).is_some() {
                tracing::info!(
                    "cdn `{}` failed recently: the changes feed's head is not purged; maps \
                     see the new segment once its max-age passes",
                    target.name()
                );
                continue;
            }
            let mut flights = Flights::open(target, outbox).await?;
            match target
                .purge(std::slice::from_ref(&head), None, None, &mut flights)
                .await
            {
                Ok(report) => edge.head_purges.add(target.name(), &report),
                Err(err) => {
                    edge.holds.failed(&key);
                    tracing::warn!(
                        "cdn `{}`: the changes feed's head was not purged ({err}); maps see the \
                     new segment once its max-age passes",
                        target.name()
                    );
                }
            }
        }
        Ok(published)
    }
}

/// Purge paths that wait for some CDN: a path whose own purge, or a folder's above it, has not
/// gone out yet.
struct WaitingPaths {
    paths: BTreeSet<String>,
    /// The folders of the waiting wildcards (`FOLDER/*`; `""` for `*`).
    folders: Vec<String>,
}

impl WaitingPaths {
    fn new(lines: BTreeSet<String>) -> WaitingPaths {
        let folders = lines
            .iter()
            .filter_map(|line| everything_under(line).map(str::to_string))
            .collect();
        WaitingPaths {
            paths: lines,
            folders,
        }
    }

    /// Whether `path` (a path or a wildcard) names anything that waits: the path itself, a
    /// waiting folder above it or, for a wildcard, a waiting path below its folder.
    fn meets(&self, path: &str) -> bool {
        if self.paths.contains(path) || self.folders.iter().any(|f| path.starts_with(f.as_str())) {
            return true;
        }
        match everything_under(path) {
            Some(folder) => self
                .paths
                .range::<str, _>((Bound::Included(folder), Bound::Unbounded))
                .next()
                .is_some_and(|next| next.starts_with(folder)),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WaitingPaths;

    #[test]
    fn a_path_waits_when_it_or_a_folder_above_or_below_waits() {
        let waiting = WaitingPaths::new(
            ["US/3/4/2.pbf", "CN/*", "partitions.json"]
                .map(String::from)
                .into(),
        );
        assert!(waiting.meets("US/3/4/2.pbf"));
        assert!(!waiting.meets("US/3/4/3.pbf"));
        assert!(waiting.meets("CN/0/0/0.pbf"), "under a waiting folder");
        assert!(waiting.meets("US/*"), "a wildcard over a waiting path");
        assert!(!waiting.meets("DE/*"));
        assert!(!waiting.meets("USA/0/0/0.pbf"));
        let everything = WaitingPaths::new(["*".to_string()].into());
        assert!(everything.meets("DE/1/1/1.pbf"));
    }
}
