//! The changes feed as one more consumer of an output's outbox (`coordination::feed`): it takes a batch
//! only once every CDN of the tileset took it, and, where CloudFront is one, once no invalidation
//! is in flight, so an open map told "this tile changed" is served the new bytes by the edge.
//! After each publication the head is purged from the CDNs whose purges are free (a priced CDN
//! keeps the head for its short `max-age`, which costs nothing).

use std::collections::HashSet;

use crate::config::Feed;
use crate::coordination::feed::{FeedStore, Published, HEAD};
use crate::coordination::outbox::{Outbox, EVERYTHING};
use crate::edge::flight::Flights;
use crate::edge::PurgeTarget;
use crate::error::Result;
use crate::tile::TileCoord;

/// The name under which the changes feed takes batches from an outbox.
pub const FEED_CONSUMER: &str = "feed";

/// Tiles past which a segment asks maps to reload every tile instead of listing them: a full
/// seed's millions would make a segment of tens of megabytes that every open map downloads.
pub const MAX_LISTED_TILES: usize = 50_000;

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
    /// A partition's: its tileset's outbox, where purges its CDNs could not take wait, and the
    /// partition's path there.
    pub handover: Option<(&'a Outbox, &'a str)>,
    /// Where the output's paths go under the tileset's root (a partition's).
    pub prefix: Option<&'a str>,
}

impl RunFeed {
    /// Publishes every batch of `outbox` the edge already serves anew as one segment, marks
    /// them taken (with `consumers`, every consumer of the outbox) and purges the head from the
    /// free CDNs. `None` when nothing was ready.
    pub async fn deliver(
        &self,
        outbox: &Outbox,
        consumers: &[String],
        edge: Edge<'_>,
    ) -> Result<Option<Published>> {
        let pending = outbox.pending(FEED_CONSUMER).await?;
        if pending.is_empty() {
            return Ok(None);
        }
        for target in edge.targets.iter().filter(|t| t.tracks_invalidations()) {
            if Flights::open(target, outbox).await?.in_flight() > 0 {
                tracing::debug!(
                    "changes feed of {}: waits for CloudFront `{}`'s invalidations to complete",
                    self.store.describe(),
                    target.name()
                );
                return Ok(None);
            }
        }
        let mut waiting: HashSet<String> = HashSet::new();
        for target in edge.targets {
            waiting.extend(
                outbox
                    .pending(&target.consumer())
                    .await?
                    .into_iter()
                    .map(|(name, _)| name),
            );
        }
        let mut ready = Vec::new();
        for (name, lines) in pending {
            if waiting.contains(&name) {
                continue;
            }
            if let Some((tileset_outbox, label)) = edge.handover {
                if outbox.holds_handed(tileset_outbox, &name, label).await? {
                    continue;
                }
            }
            ready.push((name, lines));
        }
        if ready.is_empty() {
            return Ok(None);
        }
        let mut reload = self.reload;
        let mut tiles = Vec::new();
        for line in ready.iter().flat_map(|(_, lines)| lines) {
            if line == EVERYTHING {
                reload = true;
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
            let published = self
                .store
                .publish(
                    tiles,
                    reload,
                    self.settings.retention,
                    &self.settings.head_cache_control,
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
            Some(published)
        } else {
            None
        };
        let names: Vec<String> = ready.into_iter().map(|(name, _)| name).collect();
        outbox.taken(FEED_CONSUMER, &names, consumers).await?;
        if published.is_some() {
            let head = format!("{}/{HEAD}", crate::coordination::feed::FOLDER);
            let head = match edge.prefix {
                Some(prefix) => format!("{prefix}/{head}"),
                None => head,
            };
            for target in edge.targets.iter().filter(|t| !t.is_priced()) {
                let mut flights = Flights::open(target, outbox).await?;
                if let Err(err) = target
                    .purge(std::slice::from_ref(&head), None, None, &mut flights)
                    .await
                {
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
