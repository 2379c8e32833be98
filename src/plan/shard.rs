//! Shard plans: one seed split into N shards balanced by data, not by area.
//!
//! A plan picks a split zoom and cuts that zoom's tiles, in Hilbert order, into N contiguous ranges
//! of near-equal weight; a tile at or below the split zoom belongs to the shard whose range holds its
//! ancestor at the split zoom. Hilbert order keeps each shard's tiles close together, so a shard's
//! rows stay in one part of the index. Ranges cover the whole zoom, so a tile no weight was
//! measured for still has exactly one owner.
//!
//! The tiles above the split zoom are the plan's **top**, and no shard renders a parent→child
//! chain across the split (issue 65): a shard's walk only probes the top on its way to its
//! split-zoom roots (cheap statements that read no geometry), and renders a top tile it owns as a
//! leaf once the probe has found it, beside its subtrees, on its whole pool. Who owns the top is
//! the plan's choice, priced in the cut ([`cut::Cut`]): folded into one shard whose range is left
//! lighter by the top's weight (the top as a unit), or, where the top weighs more than a shard's
//! share (clustered low zooms each read every row), each top tile with the range that holds the
//! start of its block, its heaviest tiles dealt to shards by size first (a z0 tile that alone
//! outweighs a shard's share gets a shard to itself). Either way the batch engines run N tasks for
//! N shards: a unit of its own
//! (N + 1 tasks) would weigh what the top happens to weigh, not the mean, and a top rendered by
//! `finalize` would add its time after the slowest shard.
//!
//! Weights are estimated CPU times ([`cost`]): a split-zoom tile weighs what every tile of its
//! subtree costs, priced by a model fitted on measured render times and CPU from one census of
//! the rows.

use serde::{Deserialize, Serialize};

pub use self::cost::{CostModel, Pyramid, Weighed, PROBE_MICROS};
use self::cut::TopPlacement;
use crate::error::{Error, Result};
pub use crate::job::ShardSpec;
use crate::tile::TileCoord;

/// The version of the stored plan format; a plan of another version is refused, not guessed at.
/// Version 2 gave the plan its top: version 1 plans had shards render the tiles above the split
/// zoom at the start of their blocks, so the two cannot share a run. Version 3 deals the top's
/// heaviest tiles ([`ShardTop::dealt`]), which a version 2 reader would give to other shards.
pub const PLAN_VERSION: u32 = 3;

/// A shard plan that cannot be used; `location` is its file or object.
fn plan_error(location: &str, message: impl std::fmt::Display) -> Error {
    Error::Plan {
        location: location.to_string(),
        message: message.to_string(),
    }
}

/// The heaviest shard's work may be at most this multiple of the mean: the tests hold plans to it
/// on the model's own prices, and the benchmark real shards' wall times (issue 35).
#[cfg(test)]
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
    /// The tiles above the split zoom, and which shard renders them.
    pub top: ShardTop,
    /// The estimated work of the dearest single tile: no shard can take less time than it does.
    pub dearest: u64,
    /// One range per shard, in shard order, covering the split zoom's Hilbert curve; a range's
    /// weight includes the top's tiles its shard renders.
    pub ranges: Vec<ShardRange>,
}

/// The plan's top: every tile above the split zoom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTop {
    /// The shard that renders the whole top, or `None` where each top tile goes with the range
    /// that holds the start of its block.
    pub shard: Option<u32>,
    /// The estimated work of the top's tiles.
    pub weight: u64,
    /// The estimated work of the top's dearest tile.
    pub dearest: u64,
    /// The top's heaviest tiles, dealt to shards by size, sorted by tile; the others go with
    /// `shard`, or with the range holding the start of their block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dealt: Vec<DealtTile>,
}

/// A top tile the plan gave to a shard by its size rather than by where it lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DealtTile {
    /// The tile's zoom.
    pub z: u8,
    /// The tile's column.
    pub x: u32,
    /// The tile's row.
    pub y: u32,
    /// The shard that renders it.
    pub shard: u32,
}

impl DealtTile {
    /// The tile, or `None` when the stored coordinates are not one.
    pub fn tile(&self) -> Option<TileCoord> {
        TileCoord::new(self.z, self.x, self.y).ok()
    }
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
        let weighed: Vec<Weighed> = weights
            .iter()
            .map(|(tile, weight)| Weighed {
                tile: *tile,
                weight: *weight,
                dearest: 0,
            })
            .collect();
        Self::cut_weighed(split_zoom, &weighed, 1, shards, settings_digest)
    }

    /// [`ShardPlan::cut`] for shards that render on `connections` connections each: a shard's
    /// load is its summed weight, or `connections` times its dearest single tile if that is more,
    /// since one tile renders on one connection while the others run out of work. Split-zoom
    /// tiles are cut into ranges; the tiles above the split zoom make the top, which goes whole
    /// with the range the cut leaves room for, or spread with the ranges holding their blocks,
    /// whichever balances better ([`cut::Cut`]).
    pub fn cut_weighed(
        split_zoom: u8,
        weights: &[Weighed],
        connections: u32,
        shards: u32,
        settings_digest: &str,
    ) -> Result<ShardPlan> {
        if shards == 0 {
            return Err(Error::Usage(
                "the number of shards must be at least 1".into(),
            ));
        }
        if let Some(w) = weights.iter().find(|w| w.tile.z() > split_zoom) {
            return Err(plan_error(
                "shard plan",
                format!(
                    "shard plan: tile {} lies below the split zoom {split_zoom}",
                    w.tile
                ),
            ));
        }
        // The top as one unit, spread over the ranges, or its heaviest tiles dealt by size: the
        // lightest heaviest shard wins (top tiles priced at a margin). Dealt wins a tie: where
        // the dearest tile sets the heaviest load whatever the placement (unclustered z0 at 16
        // shards), only dealing keeps the other heavy top tiles off that shard and off one
        // another's, at their margin (spread, of 16 unclustered shards of 1M rows the one holding
        // three heavy z1-z7 tiles took 11.8% of the time against 6.4% planned).
        let cut = [
            TopPlacement::Dealt,
            TopPlacement::Unit,
            TopPlacement::Spread,
        ]
        .into_iter()
        .map(|placement| cut::Cut::new(split_zoom, weights, connections, shards, placement))
        .reduce(|best, next| {
            if next.priced < best.priced {
                next
            } else {
                best
            }
        })
        .expect("three placements");
        let side_tiles = 1u64 << (2 * u32::from(split_zoom));
        let ends = cut.starts.iter().skip(1).copied().chain([side_tiles]);
        let ranges = cut
            .starts
            .iter()
            .zip(ends)
            .zip(&cut.loads)
            .map(|((start, end), weight)| ShardRange {
                start: *start,
                end,
                weight: *weight,
            })
            .collect();
        Ok(ShardPlan {
            version: PLAN_VERSION,
            settings_digest: settings_digest.to_string(),
            split_zoom,
            top: ShardTop {
                shard: cut.top_shard,
                weight: cut.top_weight,
                dearest: cut.top_dearest,
                dealt: {
                    let mut dealt: Vec<DealtTile> = cut
                        .dealt
                        .iter()
                        .map(|(tile, shard)| DealtTile {
                            z: tile.z(),
                            x: tile.x(),
                            y: tile.y(),
                            shard: *shard,
                        })
                        .collect();
                    dealt.sort();
                    dealt
                },
            },
            dearest: cut.dearest,
            ranges,
        })
    }

    /// Picks the split zoom and cuts it: `count(z)` gives the rows per non-empty tile of zoom `z`,
    /// asked once, at the model's census zoom; the cut at each zoom from the top of the model's
    /// zooms down to `deepest` is weighed and the most balanced wins.
    pub fn choose(
        model: &CostModel,
        deepest: u8,
        shards: u32,
        settings_digest: &str,
        mut count: impl FnMut(u8) -> Result<Vec<(TileCoord, u64)>>,
    ) -> Result<ShardPlan> {
        let rows = count(model.census_zoom())?;
        let pyramid = Pyramid::from_census(*model, &crate::tile::BBox::WORLD, &rows);
        let zooms = model.zooms;
        Self::most_balanced(
            &pyramid,
            zooms.min..=deepest.clamp(zooms.min, zooms.max),
            1,
            shards,
            settings_digest,
        )
    }

    /// The most balanced of the cuts at the `splits` zooms, on the pyramid's estimates, for
    /// shards of `connections` connections each ([`ShardPlan::cut_weighed`]): the one whose
    /// heaviest shard, with its share of the probes above the split ([`PROBE_MICROS`]), weighs
    /// least; the shallower of equal ones. Every zoom is weighed, not only down to the first cut
    /// within [`BALANCE_TARGET`]: the cuts cost no query, and the real work strays from the
    /// estimate, so the margin a finer cut leaves is worth having where its probes cost less.
    pub fn most_balanced(
        pyramid: &Pyramid,
        splits: std::ops::RangeInclusive<u8>,
        connections: u32,
        shards: u32,
        settings_digest: &str,
    ) -> Result<ShardPlan> {
        let mut best: Option<(f64, ShardPlan)> = None;
        for split in splits {
            let plan = Self::cut_weighed(
                split,
                &pyramid.weights(split),
                connections,
                shards,
                settings_digest,
            )?;
            let probes = PROBE_MICROS * pyramid.probes_above(split) as f64 / f64::from(shards);
            let priced = plan.heaviest() as f64 + probes;
            if best.as_ref().is_none_or(|(least, _)| priced < *least) {
                best = Some((priced, plan));
            }
        }
        best.map(|(_, plan)| plan)
            .ok_or_else(|| plan_error("shard plan", "shard plan: no zoom to split at"))
    }

    /// The number of shards.
    pub fn shards(&self) -> u32 {
        self.ranges.len() as u32
    }

    /// The heaviest shard's estimated work.
    pub fn heaviest(&self) -> u64 {
        self.ranges.iter().map(|r| r.weight).max().unwrap_or(0)
    }

    /// The heaviest shard's estimated work over the mean (1.0 is perfect; 0 work counts as 1.0).
    pub fn imbalance(&self) -> f64 {
        let total: u64 = self.ranges.iter().map(|r| r.weight).sum();
        if total == 0 {
            return 1.0;
        }
        self.heaviest() as f64 * self.ranges.len() as f64 / total as f64
    }

    /// The shard that renders a tile: the one whose range holds the tile's ancestor at the split
    /// zoom, or, above the split zoom, the shard it was dealt to, the top's shard (or, with the
    /// top spread, the one whose range holds the start of the tile's block).
    pub fn owner(&self, tile: TileCoord) -> u32 {
        if tile.z() < self.split_zoom {
            if let Some(dealt) = self.dealt_to(tile) {
                return dealt;
            }
            if let Some(shard) = self.top.shard {
                return shard;
            }
        }
        let index = if tile.z() <= self.split_zoom {
            cut::block_start(tile, self.split_zoom)
        } else {
            let shift = tile.z() - self.split_zoom;
            let ancestor = TileCoord::new(self.split_zoom, tile.x() >> shift, tile.y() >> shift)
                .expect("an ancestor of a valid tile is valid");
            hilbert_index(ancestor)
        };
        let position = self.ranges.partition_point(|range| range.end <= index);
        position.min(self.ranges.len().saturating_sub(1)) as u32
    }

    /// The shard a top tile was dealt to, if it was.
    fn dealt_to(&self, tile: TileCoord) -> Option<u32> {
        let key = (tile.z(), tile.x(), tile.y());
        self.top
            .dealt
            .binary_search_by(|d| (d.z, d.x, d.y).cmp(&key))
            .ok()
            .map(|i| self.top.dealt[i].shard)
    }

    /// Whether `shard` was dealt a tile in `tile`'s subtree (the tile itself included): its walk
    /// must pass through `tile` to find it.
    pub fn dealt_below(&self, tile: TileCoord, shard: u32) -> bool {
        self.top.dealt.iter().any(|d| {
            d.shard == shard
                && d.z >= tile.z()
                && d.x >> (d.z - tile.z()) == tile.x()
                && d.y >> (d.z - tile.z()) == tile.y()
        })
    }

    /// The Hilbert indices of the split zoom a tile at or above it covers, `start..end`.
    pub fn block(&self, tile: TileCoord) -> (u64, u64) {
        let depth = 2 * u32::from(self.split_zoom.saturating_sub(tile.z()));
        let start = cut::block_start(tile, self.split_zoom.max(tile.z()));
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
        let mut plan: ShardPlan = serde_json::from_str(text)
            .map_err(|e| plan_error(source, format!("{source}: not a shard plan: {e}")))?;
        if let Some(d) = plan
            .top
            .dealt
            .iter()
            .find(|d| d.shard >= plan.shards() || d.z >= plan.split_zoom || d.tile().is_none())
        {
            return Err(plan_error(
                source,
                format!(
                    "{source}: the shard plan deals tile {}/{}/{} to shard {}, which is not a top \
                     tile of a shard of the plan",
                    d.z, d.x, d.y, d.shard
                ),
            ));
        }
        plan.top.dealt.sort();
        let contiguous = plan.ranges.windows(2).all(|w| w[0].end == w[1].start);
        let side_tiles = 1u64 << (2 * u32::from(plan.split_zoom.min(30)));
        let covers = plan.ranges.first().is_some_and(|r| r.start == 0)
            && plan.ranges.last().is_some_and(|r| r.end == side_tiles);
        let top_known = plan.top.shard.is_none_or(|shard| shard < plan.shards());
        if !contiguous || !covers || !top_known || plan.ranges.iter().any(|r| r.start > r.end) {
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

mod cost;
mod cut;
#[cfg(test)]
mod tests;
