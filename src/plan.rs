//! Which tiles to visit: a pyramid walk over a bbox that never enters a subtree without features.
//!
//! A child's buffered envelope lies inside its parent's (the buffer is a fixed share of a tile's width),
//! so when no source row touches a parent's buffered envelope, no descendant can hold a feature. The
//! walk therefore starts at zoom 0 and only descends below tiles that reported content; zooms above the
//! requested minimum are only probed, never rendered. Work grows with the non-empty tiles, whatever the
//! bbox's area. One zoom level is visited at a time, lowest first, which also puts the most-viewed tiles
//! in the output first.

use crate::render::Mode;
use crate::tile::{BBox, TileCoord, TileRange, ZoomRange};

/// The walk over one tileset's pyramid.
#[derive(Debug, Clone)]
pub struct PyramidWalk {
    zooms: ZoomRange,
    ranges: Vec<TileRange>,
}

impl PyramidWalk {
    /// A walk over the tiles of `zooms` that touch `bbox`.
    pub fn new(bbox: BBox, zooms: ZoomRange) -> Self {
        Self {
            zooms,
            ranges: (0..=zooms.max).map(|z| bbox.tile_range(z)).collect(),
        }
    }

    /// Where every walk starts: the root tile.
    pub fn roots(&self) -> Vec<TileCoord> {
        vec![TileCoord::new(0, 0, 0).expect("0/0/0 is a tile")]
    }

    /// Whether the tiles of zoom `z` are rendered or only probed on the way down.
    pub fn mode(&self, z: u8) -> Mode {
        if z < self.zooms.min {
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
        let deeper = tile.z() < self.zooms.max;
        tile.children()
            .zip(has_content)
            .filter(move |(child, content)| {
                deeper && *content && self.ranges[usize::from(child.z())].contains(*child)
            })
            .map(|(child, _)| child)
    }

    /// The deepest zoom of the walk.
    pub fn max_zoom(&self) -> u8 {
        self.zooms.max
    }
}

/// Orders a level's tiles along a Z-order curve, so that neighbours are rendered close in time and
/// the database finds their rows still in its cache.
pub fn sort_for_locality(tiles: &mut [TileCoord]) {
    tiles.sort_unstable_by_key(|t| morton(t.x(), t.y()));
}

fn morton(x: u32, y: u32) -> u64 {
    let spread = |v: u32| {
        let mut v = u64::from(v);
        v = (v | (v << 16)) & 0x0000_ffff_0000_ffff;
        v = (v | (v << 8)) & 0x00ff_00ff_00ff_00ff;
        v = (v | (v << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
        v = (v | (v << 2)) & 0x3333_3333_3333_3333;
        (v | (v << 1)) & 0x5555_5555_5555_5555
    };
    spread(x) | (spread(y) << 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zooms_below_the_minimum_are_only_probed() {
        let walk = PyramidWalk::new(BBox::WORLD, ZoomRange::new(5, 8).unwrap());
        assert_eq!(walk.mode(4), Mode::Probe);
        assert_eq!(walk.mode(5), Mode::Render);
    }

    #[test]
    fn children_stay_inside_the_bbox_and_the_zoom_range() {
        let bbox: BBox = "0.5,0.5,1,1".parse().unwrap();
        let walk = PyramidWalk::new(bbox, ZoomRange::new(0, 3).unwrap());
        let z1: Vec<_> = walk.children(walk.roots()[0], [true; 4]).collect();
        assert_eq!(z1, [TileCoord::new(1, 1, 0).unwrap()]);
        let z3 = TileCoord::new(3, 4, 3).unwrap();
        assert_eq!(walk.children(z3, [true; 4]).count(), 0);
        let root = walk.roots()[0];
        assert_eq!(
            walk.children(root, [true, false, true, true]).count(),
            0,
            "1/1/0 has nothing"
        );
    }

    #[test]
    fn locality_order_keeps_siblings_together() {
        let mut tiles: Vec<TileCoord> = [(2, 0), (0, 0), (1, 1), (3, 3), (0, 1), (1, 0)]
            .iter()
            .map(|(x, y)| TileCoord::new(2, *x, *y).unwrap())
            .collect();
        sort_for_locality(&mut tiles);
        let order: Vec<String> = tiles.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            order,
            ["2/0/0", "2/1/0", "2/0/1", "2/1/1", "2/2/0", "2/3/3"]
        );
    }
}
