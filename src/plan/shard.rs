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

/// The heaviest shard may carry at most this multiple of the mean work.
pub const BALANCE_LIMIT: f64 = 1.25;

/// What a plan aims for on its estimates: tighter than [`BALANCE_LIMIT`], because the subtree
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
            return Err(Error::Usage(format!(
                "shard plan: tile {tile} lies below the split zoom {split_zoom}"
            )));
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
            .ok_or_else(|| Error::Usage("shard plan: no zoom to split at".into()))
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
            return Err(Error::Usage(format!(
                "the shard plan has format version {}, this oar-tiles reads version {PLAN_VERSION}; \
                 make a new plan with `oar-tiles shard-plan`",
                self.version
            )));
        }
        if shard.count != self.shards() {
            return Err(Error::Usage(format!(
                "shard {shard} does not belong to the output's plan of {} shards",
                self.shards()
            )));
        }
        if self.settings_digest != settings_digest {
            return Err(Error::Usage(format!(
                "shard {shard} has settings digest {settings_digest}, the output's shard plan was \
                 made for {}; make a new plan or run the shard with the plan's settings",
                self.settings_digest
            )));
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
            .map_err(|e| Error::Usage(format!("{source}: not a shard plan: {e}")))?;
        let contiguous = plan.ranges.windows(2).all(|w| w[0].end == w[1].start);
        let side_tiles = 1u64 << (2 * u32::from(plan.split_zoom.min(30)));
        let covers = plan.ranges.first().is_some_and(|r| r.start == 0)
            && plan.ranges.last().is_some_and(|r| r.end == side_tiles);
        if !contiguous || !covers || plan.ranges.iter().any(|r| r.start > r.end) {
            return Err(Error::Usage(format!(
                "{source}: the shard plan's ranges do not cover zoom {} once",
                plan.split_zoom
            )));
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    fn tile(z: u8, x: u32, y: u32) -> TileCoord {
        TileCoord::new(z, x, y).unwrap()
    }

    /// Row counts per tile of zoom `z` for a set of points in tile coordinates of zoom 16.
    fn counts(points: &[(u32, u32)], z: u8) -> Vec<(TileCoord, u64)> {
        let mut counts: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        for (x, y) in points {
            *counts.entry((x >> (16 - z), y >> (16 - z))).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|((x, y), n)| (tile(z, x, y), n))
            .collect()
    }

    /// A deterministic pseudo-random sequence, so the data sets need no extra crate.
    fn lcg(seed: &mut u64) -> u32 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (*seed >> 33) as u32
    }

    /// Most points in three small dense regions, the rest spread thin: the shape of facility data.
    fn skewed(points: usize) -> Vec<(u32, u32)> {
        let mut seed = 7;
        let centres = [(20_000u32, 24_000u32), (34_000, 22_000), (51_000, 40_000)];
        (0..points)
            .map(|i| {
                if i % 10 < 9 {
                    let (cx, cy) = centres[i % 3];
                    (cx + lcg(&mut seed) % 400, cy + lcg(&mut seed) % 300)
                } else {
                    (lcg(&mut seed) % 65_536, lcg(&mut seed) % 65_536)
                }
            })
            .collect()
    }

    fn uniform(points: usize) -> Vec<(u32, u32)> {
        let mut seed = 11;
        (0..points)
            .map(|_| (lcg(&mut seed) % 65_536, lcg(&mut seed) % 65_536))
            .collect()
    }

    #[test]
    fn the_hilbert_index_visits_every_tile_once_through_neighbours() {
        for z in 0..=5u8 {
            let side = 1u32 << z;
            let mut by_index = HashMap::new();
            for x in 0..side {
                for y in 0..side {
                    assert!(by_index
                        .insert(hilbert_index(tile(z, x, y)), (x, y))
                        .is_none());
                }
            }
            for index in 1..u64::from(side * side) {
                let (ax, ay) = by_index[&(index - 1)];
                let (bx, by) = by_index[&index];
                assert_eq!(ax.abs_diff(bx) + ay.abs_diff(by), 1, "z{z} step {index}");
            }
        }
    }

    #[test]
    fn shard_specs_come_from_the_flag_or_the_batch_engines_environment() {
        let none = |_: &str| None;
        assert_eq!(ShardSpec::resolve(None, None, none).unwrap(), None);
        let flag: ShardSpec = "2/4".parse().unwrap();
        assert_eq!(
            ShardSpec::resolve(Some(flag), None, none).unwrap(),
            Some(flag)
        );
        assert!(ShardSpec::resolve(Some(flag), Some(3), none).is_err());
        let k8s = |name: &str| (name == "JOB_COMPLETION_INDEX").then(|| "3".to_string());
        assert_eq!(
            ShardSpec::resolve(None, Some(4), k8s).unwrap(),
            Some(ShardSpec::new(3, 4).unwrap())
        );
        let err = ShardSpec::resolve(None, None, k8s).unwrap_err().to_string();
        assert!(err.contains("OAR_TILES_SHARDS"), "{err}");
        let batch = |name: &str| match name {
            "AWS_BATCH_JOB_ARRAY_INDEX" => Some("1".to_string()),
            "AWS_BATCH_JOB_ARRAY_SIZE" => Some("2".to_string()),
            _ => None,
        };
        assert_eq!(
            ShardSpec::resolve(None, None, batch).unwrap(),
            Some(ShardSpec::new(1, 2).unwrap())
        );
        let bad = |name: &str| (name == "JOB_COMPLETION_INDEX").then(|| "x".to_string());
        assert!(ShardSpec::resolve(None, Some(2), bad).is_err());
        for text in ["4/4", "1", "a/2", "0/0"] {
            assert!(text.parse::<ShardSpec>().is_err(), "{text}");
        }
    }

    fn check_partition(plan: &ShardPlan, zooms: ZoomRange) {
        // Every tile of the split zoom and below has exactly one owner, and descendants follow
        // their ancestor.
        let split = plan.split_zoom;
        let side = 1u32 << split;
        for x in (0..side).step_by((side as usize / 16).max(1)) {
            for y in 0..side {
                let owner = plan.owner(tile(split, x, y));
                assert!(owner < plan.shards());
                if split < zooms.max {
                    for child in tile(split, x, y).children() {
                        assert_eq!(plan.owner(child), owner);
                    }
                }
            }
        }
    }

    /// Each shard's work as the model prices every tile the run really renders, measured from the
    /// points at every zoom rather than from the plan's own estimate.
    fn rendered_work(
        plan: &ShardPlan,
        model: &CostModel,
        per_zoom: &[Vec<(TileCoord, u64)>],
    ) -> Vec<u64> {
        let mut work = vec![0u64; plan.shards() as usize];
        for tiles in per_zoom {
            for (tile, rows) in tiles {
                work[plan.owner(*tile) as usize] += model.tile(tile.z(), *rows);
            }
        }
        work
    }

    #[test]
    fn skewed_and_uniform_data_are_cut_within_the_balance_limit() {
        let zooms = ZoomRange::new(0, 14).unwrap();
        // Clustered up to z11 with 8 × 8 cells per tile, as the sample config does.
        let model = CostModel {
            zooms,
            cluster: Some((11, 64)),
        };
        for (name, points) in [("skewed", skewed(200_000)), ("uniform", uniform(200_000))] {
            let per_zoom: Vec<Vec<(TileCoord, u64)>> =
                zooms.levels().map(|z| counts(&points, z)).collect();
            for shards in [1u32, 3, 4, 16, 64] {
                let plan = ShardPlan::choose(&model, 12, shards, "d", |z| {
                    Ok(per_zoom[usize::from(z)].clone())
                })
                .unwrap();
                assert_eq!(plan.shards(), shards);
                let work = rendered_work(&plan, &model, &per_zoom);
                let mean = work.iter().sum::<u64>() as f64 / f64::from(shards);
                let heaviest = *work.iter().max().unwrap() as f64;
                assert!(
                    heaviest <= BALANCE_LIMIT * mean,
                    "{name}, {shards} shards: heaviest {:.3} × mean at split zoom {} \
                     (the plan estimated {:.3})",
                    heaviest / mean,
                    plan.split_zoom,
                    plan.imbalance()
                );
                check_partition(&plan, zooms);
            }
        }
    }

    #[test]
    fn equal_areas_would_not_balance_skewed_data() {
        // The reason for weighing: the same data cut into equal Hilbert spans is far off balance.
        let points = skewed(200_000);
        let split = 6;
        let rows = counts(&points, split);
        let spans = 16u64;
        let side_tiles = 1u64 << (2 * split);
        let mut loads = vec![0u64; spans as usize];
        for (t, n) in &rows {
            loads[(hilbert_index(*t) * spans / side_tiles) as usize] += n;
        }
        let mean = loads.iter().sum::<u64>() as f64 / spans as f64;
        let heaviest = *loads.iter().max().unwrap() as f64;
        assert!(heaviest > 2.0 * mean, "{loads:?}");
    }

    #[test]
    fn the_cut_is_contiguous_and_covers_the_zoom() {
        let rows = counts(&uniform(5_000), 4);
        let plan = ShardPlan::cut(4, &rows, 5, "d").unwrap();
        assert_eq!(plan.ranges.first().unwrap().start, 0);
        assert_eq!(plan.ranges.last().unwrap().end, 256);
        assert!(plan.ranges.windows(2).all(|w| w[0].end == w[1].start));
        let total: u64 = rows.iter().map(|(_, n)| n).sum();
        assert_eq!(plan.ranges.iter().map(|r| r.weight).sum::<u64>(), total);
        // More shards than weighed tiles: the surplus shards get empty ranges, not an error.
        let few = [(tile(3, 1, 1), 5), (tile(3, 6, 6), 5)];
        let plan = ShardPlan::cut(3, &few, 4, "d").unwrap();
        assert_eq!(plan.shards(), 4);
        assert_eq!(plan.ranges[3].weight, 0);
        assert!(ShardPlan::cut(3, &[(tile(4, 0, 0), 1)], 2, "d").is_err());
    }

    #[test]
    fn a_tile_above_the_split_zoom_goes_with_the_start_of_its_block() {
        for z in 1..=6u8 {
            let side = 1u32 << z;
            for x in 0..side {
                for y in 0..side {
                    let child = tile(z, x, y);
                    let parent = child.parent().unwrap();
                    assert_eq!(hilbert_index(child) >> 2, hilbert_index(parent), "{child}");
                }
            }
        }
        let rows: Vec<(TileCoord, u64)> = (0..16u32).map(|x| (tile(4, x, 0), 10)).collect();
        let mut weights = rows.clone();
        weights.push((tile(0, 0, 0), 40));
        let plan = ShardPlan::cut(4, &weights, 4, "d").unwrap();
        assert_eq!(plan.owner(tile(0, 0, 0)), 0);
        let total: u64 = plan.ranges.iter().map(|r| r.weight).sum();
        assert_eq!(total, 200);
        // Every z1 tile renders on the shard that holds the first of its descendants.
        for t in tile(0, 0, 0).children() {
            let first = (0..4u32)
                .flat_map(|x| (0..4u32).map(move |y| tile(2, x, y)))
                .filter(|d| d.parent().unwrap() == t)
                .min_by_key(|d| hilbert_index(*d))
                .unwrap();
            assert_eq!(plan.owner(t), plan.owner(first));
        }
    }

    #[test]
    fn a_stored_plan_refuses_shards_of_other_plans_and_settings() {
        let plan = ShardPlan::cut(2, &[(tile(2, 0, 0), 3), (tile(2, 3, 3), 3)], 2, "abc").unwrap();
        let read = ShardPlan::from_json(&plan.to_json(), "plan.json").unwrap();
        assert_eq!(read, plan);
        assert!(read.check(ShardSpec::new(1, 2).unwrap(), "abc").is_ok());
        let err = read
            .check(ShardSpec::new(1, 3).unwrap(), "abc")
            .unwrap_err()
            .to_string();
        assert!(err.contains("plan of 2 shards"), "{err}");
        let err = read
            .check(ShardSpec::new(1, 2).unwrap(), "other")
            .unwrap_err()
            .to_string();
        assert!(err.contains("settings digest"), "{err}");
        let mut gap = plan.clone();
        gap.ranges[1].start += 1;
        let err = ShardPlan::from_json(&gap.to_json(), "plan.json")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("plan.json:"), "{err}");
        assert!(ShardPlan::from_json("{}", "plan.json").is_err());
    }
}
