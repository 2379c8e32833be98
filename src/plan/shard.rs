//! Shard plans: one seed split into N shards balanced by data, not by area.
//!
//! A plan picks a split zoom and cuts that zoom's tiles, in Hilbert order, into N contiguous ranges
//! of near-equal weight; a tile at or below the split zoom belongs to the shard whose range holds its
//! ancestor at the split zoom. Hilbert order keeps each shard's tiles close together, so a shard's
//! rows stay in one part of the index. The Hilbert curve is hierarchical: a tile above the split zoom
//! covers one contiguous block of it, so such a tile is rendered once, by the shard whose range holds
//! the block's start (the z0 tile by shard 0), and its cost is weighed at that place in the cut.
//! Ranges cover the whole zoom, so a tile no weight was measured for still has exactly one owner.
//!
//! Weights are estimates the caller measures (row counts per split-zoom tile are a good proxy):
//! a row is drawn once per zoom, so a tile's subtree costs its rows times the zooms it spans.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::job::ShardSpec;
use crate::tile::{TileCoord, ZoomRange};

/// The version of the stored plan format; a plan of another version is refused, not guessed at.
pub const PLAN_VERSION: u32 = 1;

/// The heaviest shard may carry at most this multiple of the mean work (the tests hold plans to it).
/// A shard plan that cannot be used; `location` is its file or object.
fn plan_error(location: &str, message: impl std::fmt::Display) -> Error {
    Error::Plan {
        location: location.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
pub const BALANCE_LIMIT: f64 = 1.25;

/// What a plan aims for on its estimates: tighter than the 1.25 the tests allow, because the subtree
/// estimates spread rows evenly and real data is lumpier, so the rendered work strays from them.
pub const BALANCE_TARGET: f64 = 1.10;

/// A tile's place along the Hilbert curve of its zoom, the order PMTiles also uses within a zoom.
pub fn hilbert_index(tile: TileCoord) -> u64 {
    let side = 1u64 << tile.z();
    let (mut x, mut y) = (u64::from(tile.x()), u64::from(tile.y()));
    let mut index = 0u64;
    let mut s = side / 2;
    while s > 0 {
        let rx = u64::from(x & s > 0);
        let ry = u64::from(y & s > 0);
        index += s * s * ((3 * rx) ^ ry);
        // Rotate the quadrant so the curve inside it starts where the previous one ended.
        if ry == 0 {
            if rx == 1 {
                x = side - 1 - x;
                y = side - 1 - y;
            }
            std::mem::swap(&mut x, &mut y);
        }
        s /= 2;
    }
    index
}

/// How the planner estimates render work from row counts: a tile costs one unit (a query, a
/// write) plus the features it carries, which are its rows, or at most `cluster_cells` where grid
/// clustering merges them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostModel {
    /// The zooms the run renders.
    pub zooms: ZoomRange,
    /// `(cluster_maxzoom, features per tile at most)` when the tileset clusters its low zooms.
    pub cluster: Option<(u8, u64)>,
}

impl CostModel {
    /// The estimated cost of one tile of zoom `z` holding `rows` rows.
    pub fn tile(&self, z: u8, rows: u64) -> u64 {
        let features = match self.cluster {
            Some((maxzoom, cells)) if z <= maxzoom => rows.min(cells),
            _ => rows,
        };
        features.saturating_add(1)
    }

    /// The estimated cost of a split-zoom tile's subtree down to the deepest zoom: its rows spread
    /// over ever more tiles, each at most as many as the rows (empty tiles are never visited).
    pub fn subtree(&self, split: u8, rows: u64) -> u64 {
        let mut cost = 0u64;
        for z in split.max(self.zooms.min)..=self.zooms.max {
            let tiles = 1u64
                .checked_shl(2 * u32::from(z - split))
                .unwrap_or(u64::MAX)
                .min(rows.max(1));
            let per_tile = rows / tiles;
            cost = cost.saturating_add(tiles.saturating_mul(self.tile(z, per_tile)));
        }
        cost
    }

    /// The estimated cost of each tile above the split zoom: what its summed rows cost.
    pub fn above(&self, split: u8, rows: &[(TileCoord, u64)]) -> Vec<(TileCoord, u64)> {
        let mut costs = Vec::new();
        for z in self.zooms.min..split {
            let shift = split - z;
            let mut ancestors: std::collections::BTreeMap<(u32, u32), u64> = Default::default();
            for (tile, n) in rows {
                *ancestors
                    .entry((tile.x() >> shift, tile.y() >> shift))
                    .or_default() += n;
            }
            for ((x, y), n) in ancestors {
                let tile = TileCoord::new(z, x, y).expect("an ancestor of a valid tile is valid");
                costs.push((tile, self.tile(z, n)));
            }
        }
        costs
    }
}

/// Where a tile at or above the split zoom starts on the split zoom's Hilbert curve: its block of
/// descendants is `start..start + 4^(split - z)`, because the curve is hierarchical.
fn block_start(tile: TileCoord, split_zoom: u8) -> u64 {
    hilbert_index(tile) << (2 * u32::from(split_zoom - tile.z()))
}

/// The search for a split zoom, from the top down: the first cut within [`BALANCE_TARGET`] ends
/// it, else the most balanced cut seen wins. Shared by [`ShardPlan::choose`] and planners whose
/// row counts arrive one zoom at a time from the database.
#[derive(Debug, Default)]
pub struct SplitSearch {
    best: Option<ShardPlan>,
}

impl SplitSearch {
    /// Weighs the cut at one more zoom; returns it when it is balanced enough to stop searching.
    pub fn offer(&mut self, plan: ShardPlan) -> Option<ShardPlan> {
        if plan.imbalance() <= BALANCE_TARGET {
            return Some(plan);
        }
        if self
            .best
            .as_ref()
            .is_none_or(|best| plan.imbalance() < best.imbalance())
        {
            self.best = Some(plan);
        }
        None
    }

    /// The most balanced cut offered, if any.
    pub fn best(self) -> Option<ShardPlan> {
        self.best
    }
}

/// One shard's part of the split zoom: Hilbert indices `start..end` and their estimated work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRange {
    /// First Hilbert index at the split zoom.
    pub start: u64,
    /// One past the last Hilbert index.
    pub end: u64,
    /// Estimated render work of the tiles the shard owns.
    pub weight: u64,
}

/// A partition of one tileset's pyramid into shards, stored in the output's state so every shard,
/// started at any time, uses the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    /// [`PLAN_VERSION`] when written.
    pub version: u32,
    /// The settings digest of the tileset the plan was made for; a shard of other settings refuses.
    pub settings_digest: String,
    /// The zoom whose Hilbert curve is cut.
    pub split_zoom: u8,
    /// One range per shard, in shard order, covering the split zoom's Hilbert curve.
    pub ranges: Vec<ShardRange>,
}

impl ShardPlan {
    /// Cuts weighed tiles (of the split zoom or above it) into `shards` contiguous ranges of the
    /// split zoom's Hilbert curve, minimising the heaviest shard.
    pub fn cut(
        split_zoom: u8,
        weights: &[(TileCoord, u64)],
        shards: u32,
        settings_digest: &str,
    ) -> Result<ShardPlan> {
        if shards == 0 {
            return Err(Error::Usage(
                "the number of shards must be at least 1".into(),
            ));
        }
        if let Some((tile, _)) = weights.iter().find(|(t, _)| t.z() > split_zoom) {
            return Err(plan_error(
                "shard plan",
                format!("shard plan: tile {tile} lies below the split zoom {split_zoom}"),
            ));
        }
        let mut sorted: Vec<(u64, u64)> = weights
            .iter()
            .map(|(tile, weight)| (block_start(*tile, split_zoom), *weight))
            .collect();
        sorted.sort_unstable();
        sorted.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same {
                kept.1 = kept.1.saturating_add(next.1);
            }
            same
        });
        let total: u64 = sorted
            .iter()
            .fold(0, |sum, (_, weight)| sum.saturating_add(*weight));
        let heaviest = sorted.iter().map(|(_, w)| *w).max().unwrap_or(0);
        // The smallest capacity a greedy left-to-right packing fits into `shards` ranges is the
        // best contiguous cut's heaviest shard; it lies between the heaviest tile and the total.
        let (mut low, mut high) = (heaviest, total.max(heaviest));
        while low < high {
            let mid = low + (high - low) / 2;
            if Self::groups(&sorted, mid) <= shards as usize {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        let mut starts = vec![0u64];
        let mut loads = vec![0u64];
        for (index, weight) in &sorted {
            let started = loads.len();
            let load = loads.last_mut().expect("one load per started shard");
            if *load > 0 && load.saturating_add(*weight) > low && started < shards as usize {
                starts.push(*index);
                loads.push(*weight);
            } else {
                *load = load.saturating_add(*weight);
            }
        }
        let side_tiles = 1u64 << (2 * u32::from(split_zoom));
        // Shards the data leaves nothing for still get a range (an empty one at the end), so every
        // index of the job has a defined, if idle, part.
        while starts.len() < shards as usize {
            starts.push(side_tiles);
            loads.push(0);
        }
        let ranges = (0..starts.len())
            .map(|i| ShardRange {
                start: starts[i],
                end: starts.get(i + 1).copied().unwrap_or(side_tiles),
                weight: loads[i],
            })
            .collect();
        Ok(ShardPlan {
            version: PLAN_VERSION,
            settings_digest: settings_digest.to_string(),
            split_zoom,
            ranges,
        })
    }

    fn groups(sorted: &[(u64, u64)], capacity: u64) -> usize {
        let mut groups = 1;
        let mut load = 0u64;
        for (_, weight) in sorted {
            if load > 0 && load.saturating_add(*weight) > capacity {
                groups += 1;
                load = *weight;
            } else {
                load = load.saturating_add(*weight);
            }
        }
        groups
    }

    /// Picks the split zoom and cuts it: for each candidate zoom from the top of the model's zooms
    /// down to `deepest`, `count(z)` gives the rows per non-empty tile of zoom `z`; the first zoom
    /// whose heaviest shard is within [`BALANCE_TARGET`] of the mean wins, else the most balanced.
    pub fn choose(
        model: &CostModel,
        deepest: u8,
        shards: u32,
        settings_digest: &str,
        mut count: impl FnMut(u8) -> Result<Vec<(TileCoord, u64)>>,
    ) -> Result<ShardPlan> {
        let zooms = model.zooms;
        let deepest = deepest.clamp(zooms.min, zooms.max);
        let mut search = SplitSearch::default();
        for split in zooms.min..=deepest {
            let plan = Self::at_split(model, split, &count(split)?, shards, settings_digest)?;
            if let Some(balanced) = search.offer(plan) {
                return Ok(balanced);
            }
        }
        search
            .best()
            .ok_or_else(|| plan_error("shard plan", "shard plan: no zoom to split at"))
    }

    /// The cut at one split zoom, from the rows per non-empty tile of that zoom.
    pub fn at_split(
        model: &CostModel,
        split: u8,
        rows: &[(TileCoord, u64)],
        shards: u32,
        settings_digest: &str,
    ) -> Result<ShardPlan> {
        let mut weights: Vec<(TileCoord, u64)> = rows
            .iter()
            .map(|(tile, n)| (*tile, model.subtree(split, *n)))
            .collect();
        weights.extend(model.above(split, rows));
        Self::cut(split, &weights, shards, settings_digest)
    }

    /// The number of shards.
    pub fn shards(&self) -> u32 {
        self.ranges.len() as u32
    }

    /// The heaviest shard's estimated work over the mean (1.0 is perfect; 0 work counts as 1.0).
    pub fn imbalance(&self) -> f64 {
        let total: u64 = self.ranges.iter().map(|r| r.weight).sum();
        let heaviest = self.ranges.iter().map(|r| r.weight).max().unwrap_or(0);
        if total == 0 {
            return 1.0;
        }
        heaviest as f64 * self.ranges.len() as f64 / total as f64
    }

    /// The shard that renders a tile: the one whose range holds the tile's ancestor at the split
    /// zoom, or, above the split zoom, the start of the tile's block.
    pub fn owner(&self, tile: TileCoord) -> u32 {
        let index = if tile.z() <= self.split_zoom {
            block_start(tile, self.split_zoom)
        } else {
            let shift = tile.z() - self.split_zoom;
            let ancestor = TileCoord::new(self.split_zoom, tile.x() >> shift, tile.y() >> shift)
                .expect("an ancestor of a valid tile is valid");
            hilbert_index(ancestor)
        };
        let position = self.ranges.partition_point(|range| range.end <= index);
        position.min(self.ranges.len().saturating_sub(1)) as u32
    }

    /// The Hilbert indices of the split zoom a tile at or above it covers, `start..end`.
    pub fn block(&self, tile: TileCoord) -> (u64, u64) {
        let depth = 2 * u32::from(self.split_zoom.saturating_sub(tile.z()));
        let start = block_start(tile, self.split_zoom.max(tile.z()));
        (start, start + (1u64 << depth))
    }

    /// Whether a shard may run into an output planned with this plan: same number of shards, same
    /// settings digest, a known plan version.
    pub fn check(&self, shard: ShardSpec, settings_digest: &str) -> Result<()> {
        if self.version != PLAN_VERSION {
            return Err(plan_error("the output's shard plan", format!(
                "the shard plan has format version {}, this oar-tiles reads version {PLAN_VERSION}; \
                 make a new plan with `oar-tiles shard-plan`",
                self.version
            )));
        }
        if shard.count != self.shards() {
            return Err(plan_error(
                "the output's shard plan",
                format!(
                    "shard {shard} does not belong to the output's plan of {} shards",
                    self.shards()
                ),
            ));
        }
        if self.settings_digest != settings_digest {
            return Err(plan_error(
                "the output's shard plan",
                format!(
                "shard {shard} has settings digest {settings_digest}, the output's shard plan was \
                 made for {}; make a new plan or run the shard with the plan's settings",
                self.settings_digest
            ),
            ));
        }
        Ok(())
    }

    /// The plan as stored: pretty JSON, so an operator can read the cut.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plans serialize") + "\n"
    }

    /// Reads a stored plan; `source` names the file or object in the error.
    pub fn from_json(text: &str, source: &str) -> Result<ShardPlan> {
        let plan: ShardPlan = serde_json::from_str(text)
            .map_err(|e| plan_error(source, format!("{source}: not a shard plan: {e}")))?;
        let contiguous = plan.ranges.windows(2).all(|w| w[0].end == w[1].start);
        let side_tiles = 1u64 << (2 * u32::from(plan.split_zoom.min(30)));
        let covers = plan.ranges.first().is_some_and(|r| r.start == 0)
            && plan.ranges.last().is_some_and(|r| r.end == side_tiles);
        if !contiguous || !covers || plan.ranges.iter().any(|r| r.start > r.end) {
            return Err(plan_error(
                source,
                format!(
                    "{source}: the shard plan's ranges do not cover zoom {} once",
                    plan.split_zoom
                ),
            ));
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests;
