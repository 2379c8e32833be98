//! The pruned pyramid walk over a bbox, which never enters a subtree without features.
//!
//! A child's buffered envelope lies inside its parent's (the buffer is a fixed share of a tile's
//! width), so when no source row touches a parent's buffered envelope, no descendant can hold a
//! feature. The walk therefore starts at the top and only descends below tiles that reported content;
//! zooms above the requested minimum are only probed, never rendered. The few tiles of the top zooms
//! (at most [`EAGER_TILES`]) are all queued at once instead of discovered: they are the heaviest
//! tiles, and waiting for z0 before z1 can start would leave all but one connection idle. Below them a
//! tile's children are queued as soon as it is done (the scheduler takes the lowest zoom first), so
//! work grows with the non-empty tiles, whatever the bbox's area.
//!
//! A shard's walk ([`PyramidWalk::for_shard`]) enters only subtrees that hold some of the shard's
//! tiles and renders only those; the others it passes through are probed. Above the plan's split
//! zoom it only probes: a top tile it owns is rendered as a leaf once its probe found it
//! ([`PyramidWalk::renders_after_probe`], [`PyramidWalk::leaves`]), so no heavy top tile stands
//! between the walk and its subtrees.

use super::shard::{ShardPlan, ShardSpec};
use crate::error::{Error, Result};
use crate::tile::{BBox, Subtrees, TileCoord, TileRange, ZoomRange};

/// Whether a tile is rendered or only probed for content below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Produce the tile's bytes.
    Render,
    /// Only decide whether its children need visiting.
    Probe,
}

/// At most this many tiles, from zoom 0 down, are queued at the start of a walk.
pub const EAGER_TILES: u64 = 32;

/// The walk over one tileset's pyramid.
#[derive(Debug, Clone)]
pub struct PyramidWalk {
    bbox: BBox,
    zooms: ZoomRange,
    ranges: Vec<TileRange>,
    /// Zooms `0..=eager` are queued whole at the start.
    eager: u8,
    /// The plan and shard index when this walk is one shard of a sharded run.
    shard: Option<(ShardPlan, u32)>,
    /// The subtrees when this walk covers only them (a reseed past its limit of listed tiles).
    subtrees: Option<Subtrees>,
    /// Whether the walk only renders the tiles it is given, with no roots and no children.
    leaves: bool,
}

impl PyramidWalk {
    /// A walk over the tiles of `zooms` that touch `bbox`.
    pub fn new(bbox: BBox, zooms: ZoomRange) -> Self {
        let ranges: Vec<TileRange> = (0..=zooms.max).map(|z| bbox.tile_range(z)).collect();
        let mut eager = 0;
        let mut total = 0;
        for range in &ranges {
            total += range.count();
            if total > EAGER_TILES {
                break;
            }
            eager = range.z;
        }
        Self {
            bbox,
            zooms,
            ranges,
            eager,
            shard: None,
            subtrees: None,
            leaves: false,
        }
    }

    /// The walk of `subtrees`: from their roots down, pruned as a seed's walk, within `bbox` and
    /// `zooms` (roots above the minimum zoom are only probed).
    pub fn for_subtrees(bbox: BBox, zooms: ZoomRange, subtrees: Subtrees) -> Self {
        let mut walk = Self::new(bbox, zooms);
        // The roots are the walk's start; no zoom is queued whole.
        walk.eager = 0;
        walk.subtrees = Some(subtrees);
        walk
    }

    /// The walk of one shard of `plan`: the same pyramid, restricted to the shard's tiles.
    pub fn for_shard(
        bbox: BBox,
        zooms: ZoomRange,
        plan: ShardPlan,
        shard: ShardSpec,
    ) -> Result<Self> {
        if shard.count != plan.shards() {
            return Err(Error::Plan {
                location: "shard plan".into(),
                message: format!(
                    "shard {shard} does not belong to a plan of {} shards",
                    plan.shards()
                ),
            });
        }
        let mut walk = Self::new(bbox, zooms);
        walk.shard = Some((plan, shard.index));
        Ok(walk)
    }

    /// Whether the walk may enter a tile: always, unless it is a shard's walk and no tile of the
    /// shard lies in the tile's subtree.
    fn enters(&self, tile: TileCoord) -> bool {
        let Some((plan, index)) = &self.shard else {
            return true;
        };
        if tile.z() > plan.split_zoom {
            return plan.owner(tile) == *index;
        }
        if tile.z() < plan.split_zoom && plan.top.shard == Some(*index) {
            // The shard of the whole top probes all of it, to render what its probes find.
            return true;
        }
        let range = &plan.ranges[*index as usize];
        let (start, end) = plan.block(tile);
        // The block holds the shard's tiles when it overlaps the shard's range, or when the shard
        // was dealt a top tile in it.
        (start < range.end && range.start < end)
            || (tile.z() < plan.split_zoom && plan.dealt_below(tile, *index))
    }

    /// The deepest zoom whose tiles are all queued at the start.
    pub fn eager_depth(&self) -> u8 {
        self.eager
    }

    /// The walk of tiles rendered one by one, with no children: where a shard's walk puts the
    /// top tiles it owns once their probes found them.
    pub fn leaves(&self) -> PyramidWalk {
        let mut walk = Self::new(self.bbox, self.zooms);
        walk.leaves = true;
        walk
    }

    /// Whether a tile this walk probed is to be rendered, as a leaf ([`PyramidWalk::leaves`]): a
    /// top tile of the run's zooms that the walk's shard owns.
    pub fn renders_after_probe(&self, tile: TileCoord) -> bool {
        self.passes_through(tile)
            && tile.z() >= self.zooms.min
            && self
                .shard
                .as_ref()
                .is_some_and(|(plan, index)| plan.owner(tile) == *index)
    }

    /// Whether the walk only passes through a tile on its way to its own: a shard's tiles above
    /// the split zoom, which it probes (reading no geometry) and never renders.
    pub fn passes_through(&self, tile: TileCoord) -> bool {
        self.shard
            .as_ref()
            .is_some_and(|(plan, _)| tile.z() < plan.split_zoom)
    }

    /// Whether the walk notes a tile in the output's journal once visited: not the tiles it
    /// passes through, which the shard of the top may render (and journal as written) at the
    /// same time; a resumed shard probes them again.
    pub fn journals(&self, tile: TileCoord) -> bool {
        !self.passes_through(tile)
    }

    /// Where every walk starts: every tile of the eager zooms within the bbox.
    pub fn roots(&self) -> Vec<TileCoord> {
        if self.leaves {
            return Vec::new();
        }
        if let Some(subtrees) = &self.subtrees {
            return subtrees
                .roots()
                .filter(|root| {
                    root.z() <= self.zooms.max && self.ranges[usize::from(root.z())].contains(*root)
                })
                .collect();
        }
        self.ranges[..=usize::from(self.eager)]
            .iter()
            .flat_map(|range| range.tiles())
            .filter(|tile| self.enters(*tile))
            .collect()
    }

    /// Whether a tile is rendered, or only probed on the way down: tiles above the minimum zoom and,
    /// in a shard's walk, tiles above the split zoom and tiles of other shards.
    pub fn mode(&self, tile: TileCoord) -> Mode {
        let other_shard = self.passes_through(tile)
            || self
                .shard
                .as_ref()
                .is_some_and(|(plan, index)| plan.owner(tile) != *index);
        if tile.z() < self.zooms.min || other_shard {
            Mode::Probe
        } else {
            Mode::Render
        }
    }

    /// The children of a tile that have content (`has_content` in [`TileCoord::children`] order),
    /// limited to the bbox; none below the deepest zoom.
    pub fn children(
        &self,
        tile: TileCoord,
        has_content: [bool; 4],
    ) -> impl Iterator<Item = TileCoord> + '_ {
        // The eager zooms' children are roots already (a subtrees' walk has no eager zoom).
        let deeper = !self.leaves
            && tile.z() < self.zooms.max
            && (tile.z() >= self.eager || self.subtrees.is_some());
        tile.children()
            .zip(has_content)
            .filter(move |(child, content)| {
                deeper
                    && *content
                    && self.ranges[usize::from(child.z())].contains(*child)
                    && self.enters(*child)
            })
            .map(|(child, _)| child)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn a_shard_probes_the_top_and_renders_its_own_top_tiles_as_leaves() {
        use crate::plan::shard::{DealtTile, ShardTop};
        let weights: Vec<(TileCoord, u64)> = (0..4u32)
            .flat_map(|x| (0..4u32).map(move |y| (TileCoord::new(2, x, y).unwrap(), 10)))
            .chain([(TileCoord::new(0, 0, 0).unwrap(), 30)])
            .collect();
        let mut plan = ShardPlan::cut(2, &weights, 2, "d").unwrap();
        let zooms = ZoomRange::new(0, 4).unwrap();
        let z0 = TileCoord::new(0, 0, 0).unwrap();
        let z1 = TileCoord::new(1, 1, 1).unwrap();
        // The top whole on shard 1, spread, and spread with z0 and z1 dealt to the shard that
        // holds neither block start.
        let dealt = |z, x, y, shard| DealtTile { z, x, y, shard };
        let variants = [
            (Some(1), vec![]),
            (None, vec![]),
            (None, vec![dealt(0, 0, 0, 1), dealt(1, 1, 1, 0)]),
        ];
        for (top, dealt) in variants {
            plan.top = ShardTop {
                shard: top,
                dealt: dealt.clone(),
                ..plan.top.clone()
            };
            let owners: Vec<u32> = (0..2)
                .filter(|index| {
                    let spec = ShardSpec::new(*index, 2).unwrap();
                    let walk =
                        PyramidWalk::for_shard(BBox::WORLD, zooms, plan.clone(), spec).unwrap();
                    assert_eq!(walk.mode(z0), Mode::Probe, "a shard's walk probes the top");
                    assert!(!walk.journals(z1));
                    assert_eq!(walk.leaves().mode(z1), Mode::Render);
                    assert_eq!(walk.leaves().children(z1, [true; 4]).count(), 0);
                    assert!(walk.leaves().roots().is_empty());
                    walk.renders_after_probe(z1)
                })
                .collect();
            assert_eq!(owners, vec![plan.owner(z1)], "one shard renders {z1}");
            if let Some(shard) = top {
                assert_eq!(plan.owner(z0), shard);
                assert_eq!(plan.owner(z1), shard);
            }
            for d in &dealt {
                assert_eq!(plan.owner(d.tile().unwrap()), d.shard);
            }
        }
    }

    #[test]
    fn zooms_below_the_minimum_are_only_probed() {
        let walk = PyramidWalk::new(BBox::WORLD, ZoomRange::new(5, 8).unwrap());
        assert_eq!(walk.mode(TileCoord::new(4, 0, 0).unwrap()), Mode::Probe);
        assert_eq!(walk.mode(TileCoord::new(5, 0, 0).unwrap()), Mode::Render);
    }

    #[test]
    fn the_top_zooms_are_queued_whole_and_the_rest_discovered() {
        let walk = PyramidWalk::new(BBox::WORLD, ZoomRange::new(0, 4).unwrap());
        assert_eq!(
            walk.eager_depth(),
            2,
            "1 + 4 + 16 tiles fit, 64 more do not"
        );
        assert_eq!(walk.roots().len(), 21);
        let z1 = TileCoord::new(1, 0, 0).unwrap();
        assert_eq!(walk.children(z1, [true; 4]).count(), 0, "already queued");
        let z2 = TileCoord::new(2, 1, 1).unwrap();
        assert_eq!(walk.children(z2, [true; 4]).count(), 4);
        let z4 = TileCoord::new(4, 4, 3).unwrap();
        assert_eq!(walk.children(z4, [true; 4]).count(), 0, "the deepest zoom");
    }

    #[test]
    fn children_stay_inside_the_bbox_and_the_zoom_range() {
        let bbox: BBox = "0.5,0.5,1,1".parse().unwrap();
        let walk = PyramidWalk::new(bbox, ZoomRange::new(0, 14).unwrap());
        let depth = walk.eager_depth();
        assert!(depth > 3 && depth < 14, "{depth}");
        let edge: Vec<TileCoord> = walk
            .roots()
            .into_iter()
            .filter(|t| t.z() == depth)
            .collect();
        let children: BTreeSet<TileCoord> = edge
            .iter()
            .flat_map(|t| walk.children(*t, [true; 4]))
            .collect();
        let next = bbox.tile_range(depth + 1);
        assert!(children.iter().all(|c| next.contains(*c)));
        assert_eq!(
            children.len() as u64,
            next.count(),
            "exactly the bbox's tiles"
        );
        assert!(edge
            .iter()
            .all(|t| walk.children(*t, [false; 4]).count() == 0));
        let deepest = TileCoord::new(14, 8214, 8146).unwrap();
        assert_eq!(walk.children(deepest, [true; 4]).count(), 0);
    }
}
