//! Which tiles to visit: a pyramid walk over a bbox that never enters a subtree without features.
//!
//! A child's buffered envelope lies inside its parent's (the buffer is a fixed share of a tile's width),
//! so when no source row touches a parent's buffered envelope, no descendant can hold a feature. The
//! walk therefore starts at the top and only descends below tiles that reported content; zooms above
//! the requested minimum are only probed, never rendered. The few tiles of the top zooms (at most
//! [`EAGER_TILES`]) are all queued at once instead of discovered level by level: they are the heaviest
//! tiles, and waiting for z0 before z1 can start would leave all but one connection idle. Work grows with the non-empty tiles, whatever the
//! bbox's area. One zoom level is visited at a time, lowest first, which also puts the most-viewed tiles
//! in the output first.

use std::collections::BTreeSet;

use crate::config::LayerConfig;
use crate::render::Mode;
use crate::tile::{
    lonlat_to_mercator, BBox, TileCoord, TileRange, ZoomRange, MAX_MERCATOR_LAT,
    MERCATOR_HALF_WORLD,
};

/// At most this many tiles, from zoom 0 down, are queued at the start of a walk.
pub const EAGER_TILES: u64 = 32;

/// The walk over one tileset's pyramid.
#[derive(Debug, Clone)]
pub struct PyramidWalk {
    zooms: ZoomRange,
    ranges: Vec<TileRange>,
    /// Zooms `0..=eager` are queued whole at the start.
    eager: u8,
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
            zooms,
            ranges,
            eager,
        }
    }

    /// The deepest zoom whose tiles are all queued at the start.
    pub fn eager_depth(&self) -> u8 {
        self.eager
    }

    /// Where every walk starts: every tile of the eager zooms within the bbox.
    pub fn roots(&self) -> Vec<TileCoord> {
        self.ranges[..=usize::from(self.eager)]
            .iter()
            .flat_map(|range| range.tiles())
            .collect()
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
        // The eager zooms' children are roots already.
        let deeper = tile.z() < self.zooms.max && tile.z() >= self.eager;
        tile.children()
            .zip(has_content)
            .filter(move |(child, content)| {
                deeper && *content && self.ranges[usize::from(child.z())].contains(*child)
            })
            .map(|(child, _)| child)
    }
}

/// The tiles a set of changes touches, per layer: at each zoom where the layer appears, every tile
/// whose buffered envelope covers a changed geometry's box (at clustered zooms, the box grown to whole
/// grid cells, since a change moves its cell's cluster). Lowest zoom first; de-duplicated before
/// anything is rendered. `None` when more than `limit` tiles are dirty: a full seed is then cheaper.
pub fn dirty_tiles(
    boxes: &[(&LayerConfig, &[[f64; 4]])],
    bbox: BBox,
    zooms: ZoomRange,
    extent: u32,
    buffer: u32,
    limit: usize,
) -> Option<Vec<TileCoord>> {
    let mut dirty: BTreeSet<(u8, u64, TileCoord)> = BTreeSet::new();
    for z in zooms.levels() {
        let range = bbox.tile_range(z);
        let n = 1u64 << z;
        let size = 2.0 * MERCATOR_HALF_WORLD / n as f64;
        // A hair of slack: a tile too many is re-rendered and found unchanged, one too few is wrong.
        let margin = (f64::from(buffer) / f64::from(extent) + 1e-6) * size;
        for (layer, layer_boxes) in boxes {
            if !layer.zooms.is_none_or(|r| r.contains(z)) {
                continue;
            }
            let cell = layer
                .cluster_at(z)
                .map(|c| size * f64::from(c.cell) / f64::from(extent));
            for [west, south, east, north] in layer_boxes.iter() {
                let (mut x0, mut y0) = mercator(*west, *south);
                let (mut x1, mut y1) = mercator(*east, *north);
                if let Some(cell) = cell {
                    x0 = ((x0 + MERCATOR_HALF_WORLD) / cell).floor() * cell - MERCATOR_HALF_WORLD;
                    x1 = (((x1 + MERCATOR_HALF_WORLD) / cell).floor() + 1.0) * cell
                        - MERCATOR_HALF_WORLD;
                    y1 = MERCATOR_HALF_WORLD - ((MERCATOR_HALF_WORLD - y1) / cell).floor() * cell;
                    y0 = MERCATOR_HALF_WORLD
                        - (((MERCATOR_HALF_WORLD - y0) / cell).floor() + 1.0) * cell;
                }
                let index = |v: f64| (v / size).floor().clamp(0.0, (n - 1) as f64) as u32;
                let (min_x, max_x) = (
                    index(x0 - margin + MERCATOR_HALF_WORLD),
                    index(x1 + margin + MERCATOR_HALF_WORLD),
                );
                let (min_y, max_y) = (
                    index(MERCATOR_HALF_WORLD - y1 - margin),
                    index(MERCATOR_HALF_WORLD - y0 + margin),
                );
                for x in min_x.max(range.min_x)..=max_x.min(range.max_x) {
                    for y in min_y.max(range.min_y)..=max_y.min(range.max_y) {
                        let tile =
                            TileCoord::new(z, x, y).expect("indices are clamped to the zoom");
                        dirty.insert((z, morton(x, y), tile));
                        if dirty.len() > limit {
                            return None;
                        }
                    }
                }
            }
        }
    }
    Some(dirty.into_iter().map(|(_, _, tile)| tile).collect())
}

/// Longitude/latitude in degrees to Web-Mercator metres, latitude clamped to the Mercator square.
pub fn mercator(lon: f64, lat: f64) -> (f64, f64) {
    lonlat_to_mercator(lon.clamp(-180.0, 180.0), lat, MAX_MERCATOR_LAT)
}

/// A tile's place along a Z-order curve within its zoom: rendering in this order keeps neighbours
/// close in time, so the database finds their rows still in its cache.
pub fn locality_key(tile: TileCoord) -> u64 {
    morton(tile.x(), tile.y())
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

    fn layer(cluster: Option<crate::config::ClusterConfig>) -> LayerConfig {
        LayerConfig {
            name: "l".into(),
            schema: None,
            table: "t".into(),
            geometry_column: "g".into(),
            srid: None,
            id_column: "id".into(),
            attributes: vec![],
            filter: None,
            zooms: None,
            cluster,
        }
    }

    #[test]
    fn a_change_dirties_the_tiles_whose_buffer_covers_it_at_every_zoom() {
        let layer = layer(None);
        let boxes = [[90.4, 23.8, 90.4, 23.8]];
        let zooms = ZoomRange::new(0, 14).unwrap();
        let dirty =
            dirty_tiles(&[(&layer, &boxes[..])], BBox::WORLD, zooms, 4096, 64, 1000).unwrap();
        for z in 0..=14 {
            assert!(dirty.iter().filter(|t| t.z() == z).count() >= 1, "zoom {z}");
        }
        assert!(dirty.contains(&TileCoord::new(10, 769, 442).unwrap()));
        assert!(
            dirty.windows(2).all(|w| w[0].z() <= w[1].z()),
            "lowest zoom first"
        );
        // Exactly on a tile corner at zoom 1, a point lies in the buffer of all four tiles.
        let corner = [[0.0, 0.0, 0.0, 0.0]];
        let dirty = dirty_tiles(
            &[(&layer, &corner[..])],
            BBox::WORLD,
            ZoomRange::new(1, 1).unwrap(),
            4096,
            64,
            10,
        )
        .unwrap();
        assert_eq!(dirty.len(), 4);
        assert!(
            dirty_tiles(&[(&layer, &boxes[..])], BBox::WORLD, zooms, 4096, 64, 5).is_none(),
            "over the limit"
        );
    }

    #[test]
    fn clustered_zooms_dirty_every_tile_that_can_show_the_cell() {
        let cluster = crate::config::ClusterConfig {
            maxzoom: 5,
            cell: 2048,
            position: crate::config::ClusterPosition::Centroid,
        };
        let layer = layer(Some(cluster));
        // In the north-western cell of tile 1/1/0, whose west edge is 1/0/0's east edge.
        let boxes = [[0.5, 70.0, 0.5, 70.0]];
        let dirty = dirty_tiles(
            &[(&layer, &boxes[..])],
            BBox::WORLD,
            ZoomRange::new(1, 1).unwrap(),
            4096,
            64,
            10,
        )
        .unwrap();
        let names: Vec<String> = dirty.iter().map(|t| t.to_string()).collect();
        assert_eq!(names, ["1/0/0", "1/1/0"], "the cell touches 1/0/0's buffer");
    }

    #[test]
    fn locality_order_keeps_siblings_together() {
        let mut tiles: Vec<TileCoord> = [(2, 0), (0, 0), (1, 1), (3, 3), (0, 1), (1, 0)]
            .iter()
            .map(|(x, y)| TileCoord::new(2, *x, *y).unwrap())
            .collect();
        tiles.sort_unstable_by_key(|t| locality_key(*t));
        let order: Vec<String> = tiles.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            order,
            ["2/0/0", "2/1/0", "2/0/1", "2/1/1", "2/2/0", "2/3/3"]
        );
    }
}
