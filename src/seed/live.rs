//! What `watch` shares with its cycles' runs so that a commit never waits for low zooms. A cycle
//! renders every zoom of its changes, and on an unclustered layer the low zooms hold most of the
//! table: rendered in the cycle, they held back every commit that came meanwhile. So each output's
//! cycles learn which zooms are slow (a tile that took [`SLOW_TILE`] or more), and from then on
//! note those zooms' dirty tiles in the outbox (as `[tileset.freshness]` does by hand) instead of
//! rendering them; every run records what it found slow beside its change-log consumer, so a new
//! watcher's first cycle starts from it instead of rendering the low zooms among its commits while
//! it learns. The low lane (`watch`) renders the noted tiles on a connection of its own,
//! at most once per `max_delay`, while cycles go on storing the deep tiles of new commits; the
//! next cycle stores what the lane rendered ahead, and only then lets go of its note.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Freshness;
use crate::tile::TileCoord;

/// A tile that took this long to render makes its zoom, and every zoom above it, low: rendered by
/// the low lane rather than in the cycles. The deep tiles of a change take a few milliseconds.
pub const SLOW_TILE: Duration = Duration::from_millis(250);

/// Low tiles rendered ahead of the cycle that stores them; `None` for a tile that came out empty.
pub type AheadTiles = Vec<(TileCoord, Option<Vec<u8>>)>;

/// The low lanes of a watcher's plain outputs, keyed by the output's description.
#[derive(Debug)]
pub struct Live {
    max_delay: Duration,
    outputs: Mutex<HashMap<String, Lane>>,
    /// The low lane's renders started so far, and whether one runs now: a cycle that overlapped
    /// one shared the cores with the lane's heaviest tiles, so its own tiles' times hold the
    /// lane's share (counted at face value, they raised the low zooms to the deepest but one on a
    /// busy machine, and the lane then held every commit's z10 tile).
    lane_turns: AtomicU64,
    lane_busy: AtomicBool,
}

/// The lane's state when a cycle began ([`Live::quiet_mark`]).
#[derive(Debug, Clone, Copy)]
pub struct QuietMark(Option<u64>);

/// One output's lane.
#[derive(Debug, Default)]
struct Lane {
    /// Zooms below this are low; 0 while no slow tile was seen.
    below: u8,
    /// What the lane rendered, waiting for a cycle to store it.
    ahead: Option<Arc<AheadTiles>>,
    /// Bumped by a run that renders the whole output or subtrees of it: a lane's tiles rendered
    /// before are older than what that run stores, and are dropped.
    epoch: u64,
    /// Whether the output's recorded slow zooms were read ([`Live::first_sight`]).
    recalled: bool,
}

/// The zoom below which a run's tiles render slowly: one above the deepest zoom of a tile that
/// took `threshold` or more ([`SLOW_TILE`] in a cycle), and never the run's `deepest`, which holds
/// a change's own tile.
pub fn slow_below(
    slowest: impl Iterator<Item = (Duration, TileCoord)>,
    deepest: u8,
    threshold: Duration,
) -> Option<u8> {
    let slow = slowest
        .filter(|(took, _)| *took >= threshold)
        .map(|(_, tile)| tile.z())
        .max()?;
    Some((slow + 1).min(deepest))
}

impl Live {
    /// Lanes whose low tiles wait at most `max_delay` for their render.
    pub fn new(max_delay: Duration) -> Live {
        Live {
            max_delay,
            outputs: Mutex::default(),
            lane_turns: AtomicU64::new(0),
            lane_busy: AtomicBool::new(false),
        }
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lane>> {
        self.outputs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The low lane starts rendering.
    pub fn lane_started(&self) {
        self.lane_turns.fetch_add(1, Ordering::SeqCst);
        self.lane_busy.store(true, Ordering::SeqCst);
    }

    /// The low lane's render ended.
    pub fn lane_ended(&self) {
        self.lane_busy.store(false, Ordering::SeqCst);
    }

    /// Where the lane stands as a cycle begins, for [`Live::learn`].
    pub(super) fn quiet_mark(&self) -> QuietMark {
        let busy = self.lane_busy.load(Ordering::SeqCst);
        QuietMark((!busy).then(|| self.lane_turns.load(Ordering::SeqCst)))
    }

    /// Learns from a cycle's slowest tiles which zooms of `output` are low (see [`slow_below`]),
    /// never fewer than before. A cycle during which the lane rendered (since `mark`) shared the
    /// cores with it: its tiles count as slow only past twice [`SLOW_TILE`].
    pub(super) fn learn(
        &self,
        output: &str,
        slowest: impl Iterator<Item = (Duration, TileCoord)>,
        deepest: u8,
        mark: QuietMark,
    ) {
        let quiet = mark.0.is_some_and(|turns| {
            !self.lane_busy.load(Ordering::SeqCst)
                && self.lane_turns.load(Ordering::SeqCst) == turns
        });
        let threshold = if quiet { SLOW_TILE } else { SLOW_TILE * 2 };
        if let Some(below) = slow_below(slowest, deepest, threshold) {
            self.raise(output, below, "a tile took");
        }
    }

    /// Whether `output` is new to this watcher: true once, so its first cycle reads what earlier
    /// runs recorded about its slow zooms ([`Live::recall`]) for the cycles after it.
    pub(super) fn first_sight(&self, output: &str) -> bool {
        let mut lanes = self.lanes();
        let lane = lanes.entry(output.to_string()).or_default();
        !std::mem::replace(&mut lane.recalled, true)
    }

    /// Takes what earlier runs recorded: zooms below `below` of `output` render slowly. Without
    /// it the first cycle would render them among its commits, and every commit that came
    /// meanwhile would wait for them.
    pub(super) fn recall(&self, output: &str, below: u8) {
        self.raise(output, below, "earlier runs recorded a tile that took");
    }

    fn raise(&self, output: &str, below: u8, why: &str) -> bool {
        let mut lanes = self.lanes();
        let lane = lanes.entry(output.to_string()).or_default();
        if below <= lane.below {
            return false;
        }
        tracing::info!(
            "{output}: zooms below {below} render slowly ({why} {} ms or more); their changes \
             are rendered together at most every {:.1} s (watch.max_delay), so no commit waits \
             for them",
            SLOW_TILE.as_millis(),
            self.max_delay.as_secs_f64()
        );
        lane.below = below;
        true
    }

    /// The deferral the output's cycles apply when its config sets none.
    pub(super) fn freshness(&self, output: &str) -> Option<Freshness> {
        let below = self.lanes().get(output).map_or(0, |lane| lane.below);
        (below > 0).then_some(Freshness {
            defer_below_zoom: below,
            defer: self.max_delay,
        })
    }

    /// How long a noted low tile may wait for its render.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The output's epoch, taken when its lane starts rendering.
    pub fn epoch(&self, output: &str) -> u64 {
        self.lanes().get(output).map_or(0, |lane| lane.epoch)
    }

    /// A run renders the whole output, or subtrees of it, fresher than anything the lane has.
    pub(super) fn invalidate(&self, output: &str) {
        let mut lanes = self.lanes();
        let lane = lanes.entry(output.to_string()).or_default();
        lane.epoch += 1;
        lane.ahead = None;
    }

    /// Keeps what the lane rendered since `epoch` for the next cycle to store; dropped if a run
    /// made it stale meanwhile (whose complete end also removed the note it came from).
    pub fn rendered_ahead(&self, output: &str, epoch: u64, tiles: AheadTiles) {
        let mut lanes = self.lanes();
        let lane = lanes.entry(output.to_string()).or_default();
        if lane.epoch == epoch {
            lane.ahead = Some(Arc::new(tiles));
        }
    }

    /// What the lane rendered ahead for `output`, until a complete cycle stored it.
    pub(super) fn ahead(&self, output: &str) -> Option<Arc<AheadTiles>> {
        self.lanes().get(output).and_then(|lane| lane.ahead.clone())
    }

    /// Whether the lane's tiles of `output` wait for a cycle to store them.
    pub fn waits_for_store(&self, output: &str) -> bool {
        self.ahead(output).is_some()
    }

    /// A complete cycle stored `tiles`, what the lane rendered ahead.
    pub(super) fn stored(&self, output: &str, tiles: &Arc<AheadTiles>) {
        let mut lanes = self.lanes();
        if let Some(lane) = lanes.get_mut(output) {
            if lane.ahead.as_ref().is_some_and(|a| Arc::ptr_eq(a, tiles)) {
                lane.ahead = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_zooms_are_learned_below_the_deepest_and_never_forgotten() {
        let live = Live::new(Duration::from_secs(2));
        let tile = |z: u8| TileCoord::new(z, 0, 0).expect("a tile");
        let fast = Duration::from_millis(5);
        let learn = |slowest: &[(Duration, TileCoord)]| {
            live.learn("out", slowest.iter().copied(), 14, live.quiet_mark());
        };
        learn(&[(fast, tile(0))]);
        assert_eq!(live.freshness("out"), None);
        learn(&[(SLOW_TILE, tile(3)), (fast, tile(9))]);
        assert_eq!(live.freshness("out").map(|f| f.defer_below_zoom), Some(4));
        learn(&[(SLOW_TILE, tile(1))]);
        assert_eq!(live.freshness("out").map(|f| f.defer_below_zoom), Some(4));
        learn(&[(SLOW_TILE, tile(14))]);
        assert_eq!(live.freshness("out").map(|f| f.defer_below_zoom), Some(14));
    }

    #[test]
    fn a_cycle_that_overlapped_a_lane_render_counts_only_twice_as_slow_tiles() {
        let live = Live::new(Duration::from_secs(2));
        let tile = |z: u8| TileCoord::new(z, 0, 0).expect("a tile");
        let slow = [(SLOW_TILE, tile(12))];
        // The lane rendered while the cycle ran, or was rendering when it began.
        let mark = live.quiet_mark();
        live.lane_started();
        live.lane_ended();
        live.learn("out", slow.iter().copied(), 14, mark);
        live.lane_started();
        let mark = live.quiet_mark();
        live.lane_ended();
        live.learn("out", slow.iter().copied(), 14, mark);
        assert_eq!(live.freshness("out"), None);
        // Twice as slow beside the lane, or as slow in a quiet cycle, counts.
        let mark = live.quiet_mark();
        live.lane_started();
        live.learn("out", [(SLOW_TILE * 2, tile(5))].into_iter(), 14, mark);
        live.lane_ended();
        assert_eq!(live.freshness("out").map(|f| f.defer_below_zoom), Some(6));
        live.learn("out", slow.iter().copied(), 14, live.quiet_mark());
        assert_eq!(live.freshness("out").map(|f| f.defer_below_zoom), Some(13));
    }

    #[test]
    fn tiles_rendered_before_a_whole_run_are_dropped() {
        let live = Live::new(Duration::from_secs(2));
        let epoch = live.epoch("out");
        live.invalidate("out");
        live.rendered_ahead("out", epoch, Vec::new());
        assert!(!live.waits_for_store("out"));
        live.rendered_ahead("out", live.epoch("out"), Vec::new());
        assert!(live.waits_for_store("out"));
    }
}
