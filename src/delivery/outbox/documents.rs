//! What a run delivered, and documents it rewrote after its delivery: a refreshed
//! `agg_tiles_hash` in `tiles.json` is news to the edge, recorded in the outbox like any change.

use crate::config::{OutputTarget, StoreConfig};
use crate::coordination::feed::Published;
use crate::coordination::outbox::Outbox;
use crate::edge::EdgeProbe;
use crate::error::Result;
use crate::job::TilesetJob;
use crate::report::PurgeSummary;
use crate::sink;

use super::RunOutbox;

/// What the consumers took after a run.
pub struct Delivered {
    /// Each CDN target's purge.
    pub purges: Vec<PurgeSummary>,
    /// What the edge check fetches, per target that purged and has a public URL.
    pub probes: Vec<EdgeProbe>,
    /// The signal that stopped the purges: the targets not done keep their changes in the outbox.
    pub stopped: Option<&'static str>,
    /// What the changes feed published, while the run rendered and after its purges.
    pub feed: Option<Published>,
}

impl Delivered {
    /// This delivery and a `later` one of the same run, together: each target's purges summed.
    pub fn absorb(&mut self, later: Delivered) {
        for purge in later.purges {
            match self.purges.iter_mut().find(|p| p.target == purge.target) {
                Some(earlier) => {
                    earlier.requests += purge.requests;
                    earlier.paths += purge.paths;
                    earlier.price_usd = match (earlier.price_usd, purge.price_usd) {
                        (Some(a), Some(b)) => Some(a + b),
                        (a, b) => a.or(b),
                    };
                    earlier.evicted += purge.evicted;
                    earlier.failed = earlier.failed.take().or(purge.failed);
                    earlier.deferred |= purge.deferred;
                    earlier.over_budget |= purge.over_budget;
                    earlier.no_room |= purge.no_room;
                    earlier.in_flight = purge.in_flight.or(earlier.in_flight);
                    earlier.completed += purge.completed;
                    earlier.completed_seconds.extend(purge.completed_seconds);
                    earlier.budget = purge.budget.or(earlier.budget.take());
                }
                None => self.purges.push(purge),
            }
        }
        self.probes.extend(later.probes);
        self.stopped = self.stopped.or(later.stopped);
        self.feed = match (self.feed, later.feed) {
            (Some(earlier), Some(later)) => Some(earlier.then(later)),
            (earlier, later) => earlier.or(later),
        };
    }
}

impl RunOutbox {
    /// Records that the run rewrote the documents `names` after its delivery (a refreshed
    /// `agg_tiles_hash` in `tiles.json`), for the consumers to take as changed; an output without
    /// consumers keeps nothing.
    pub async fn record_documents(&self, names: &[&str]) -> Result<()> {
        if self.consumers.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        self.outbox.add_batch(&lines).await
    }
}

/// Records in the outbox of `tileset`'s output `target` that its `tiles.json` names a new
/// `agg_tiles_hash` (`watch` refreshes it while idle), for its CDNs and changes feed to take as
/// changed; an output without them keeps nothing. The next cycle, woken by the batch, delivers it.
pub async fn record_new_hash(
    tileset: &TilesetJob,
    target: &OutputTarget,
    store_settings: &StoreConfig,
) -> Result<()> {
    let tilejson = sink::tilejson::TILEJSON_NAME;
    let kind = sink::kind_of(target);
    let consumed = !tileset.tileset.cdn.is_empty() || tileset.tileset.feed.is_some();
    if !consumed || !kind.documents().contains(&tilejson) {
        return Ok(());
    }
    let outbox = Outbox::new(kind.home().outbox(store_settings).await?, None);
    outbox.add_batch(&[tilejson.to_string()]).await
}
