//! Dirty tiles: the tiles a set of changed geometries touches, expanded over the zoom range and
//! de-duplicated before anything is rendered.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::LayerConfig;
use crate::tile::{mercator, morton, BBox, TileCoord, TileRange, ZoomRange, MERCATOR_HALF_WORLD};

mod shape;

pub use shape::Shape;

/// One changed geometry (an old or a new position of a row), as boxes `[west, south, east, north]`
/// in degrees.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedBox {
    /// The geometry's box.
    pub whole: [f64; 4],
    /// The box of its representative point, where clustered zooms place it (a point's own box).
    pub point: [f64; 4],
    /// A line's or a polygon's own shape: the zooms that draw it whole dirty only the tiles it
    /// touches, not every tile of its box.
    pub shape: Option<Arc<Shape>>,
}

impl ChangedBox {
    /// A changed point.
    #[cfg(test)]
    pub fn point(lon: f64, lat: f64) -> ChangedBox {
        let at = [lon, lat, lon, lat];
        ChangedBox {
            whole: at,
            point: at,
            shape: None,
        }
    }
}

/// How far, in tile sizes, a simplified line or polygon may lie from the geometry stored: the
/// layer's tolerance (`simplify` pixels, a pixel being 1/256 of the tile). A tile it reaches
/// only once simplified is drawn by a full seed, so it is dirty too. (A box needs no slack:
/// `ST_Simplify` keeps a subset of the vertices, so the simplified shape stays in the box.)
fn simplified_slack(layer: &LayerConfig) -> f64 {
    layer.generalisation.simplify / 256.0
}

/// The tiles a set of changes touches, per layer: at each zoom where the layer appears, every tile
/// whose buffered envelope covers a changed geometry's box, or for a line or polygon drawn whole at
/// that zoom, the geometry itself; at clustered zooms, its representative point's box grown to
/// whole grid cells, since a change moves only the clusters of the cells its points lie in. Lowest
/// zoom first; de-duplicated before anything is rendered. `None` when more than `limit` tiles are
/// dirty: a full seed is then cheaper.
pub fn dirty_tiles(
    boxes: &[(&LayerConfig, &[ChangedBox])],
    bbox: BBox,
    zooms: ZoomRange,
    extent: u32,
    buffer: u32,
    limit: usize,
) -> Option<Vec<TileCoord>> {
    let mut dirty: BTreeSet<(u8, u64, TileCoord)> = BTreeSet::new();
    // A hair of slack: a tile too many is re-rendered and found unchanged, one too few is wrong.
    let margin_of_size = f64::from(buffer) / f64::from(extent) + 1e-6;
    let ranges: Vec<TileRange> = (0..=zooms.max).map(|z| bbox.tile_range(z)).collect();
    for (layer, layer_boxes) in boxes {
        let margin_of_size = margin_of_size + simplified_slack(layer);
        let whole_at = |z: u8| {
            zooms.contains(z)
                && layer.zooms.is_none_or(|r| r.contains(z))
                && layer.cluster_at(z).is_none()
        };
        for shape in layer_boxes.iter().filter_map(|b| b.shape.as_deref()) {
            let mut add = |tile: TileCoord| {
                dirty.insert((tile.z(), morton(tile.x(), tile.y()), tile));
                dirty.len() <= limit
            };
            if !shape.tiles(zooms.max, margin_of_size, &ranges, &whole_at, &mut add) {
                return None;
            }
        }
    }
    for z in zooms.levels() {
        let range = bbox.tile_range(z);
        let n = 1u64 << z;
        let size = 2.0 * MERCATOR_HALF_WORLD / n as f64;
        let margin = margin_of_size * size;
        for (layer, layer_boxes) in boxes {
            if !layer.zooms.is_none_or(|r| r.contains(z)) {
                continue;
            }
            let cell = layer
                .cluster_at(z)
                .map(|c| size * f64::from(c.cell) / f64::from(extent));
            for changed in layer_boxes.iter() {
                let [west, south, east, north] = match (cell, &changed.shape) {
                    (Some(_), _) => &changed.point,
                    // Its own tiles are in already.
                    (None, Some(_)) => continue,
                    (None, None) => &changed.whole,
                };
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

#[cfg(test)]
mod tests {
    use super::*;

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
            cluster_breakdown: None,
            partition: None,
            generalisation: crate::config::Generalisation::DEFAULT,
        }
    }

    /// The zoom-1 tiles one changed box dirties.
    fn at_zoom_1(layer: &LayerConfig, changed: ChangedBox) -> Vec<TileCoord> {
        let zoom = ZoomRange::new(1, 1).unwrap();
        dirty_tiles(&[(layer, &[changed][..])], BBox::WORLD, zoom, 4096, 64, 10).unwrap()
    }

    #[test]
    fn a_change_dirties_the_tiles_whose_buffer_covers_it_at_every_zoom() {
        let layer = layer(None);
        let boxes = [ChangedBox::point(90.4, 23.8)];
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
        assert_eq!(at_zoom_1(&layer, ChangedBox::point(0.0, 0.0)).len(), 4);
        assert!(
            dirty_tiles(&[(&layer, &boxes[..])], BBox::WORLD, zooms, 4096, 64, 5).is_none(),
            "over the limit"
        );
    }

    /// A line a tenth of a pixel east of tile 2/1/1's buffered envelope: once simplified with a
    /// quarter-pixel tolerance it may reach into the tile, which a full seed then draws.
    #[test]
    fn a_simplified_shape_dirties_the_tiles_within_its_tolerance() {
        let tile_size = MERCATOR_HALF_WORLD / 2.0;
        let x = (64.0 / 4096.0 + 0.1 / 256.0) * tile_size;
        let lon = (x / crate::tile::EARTH_RADIUS).to_degrees();
        let mut wkb = vec![1u8];
        wkb.extend(2u32.to_le_bytes());
        wkb.extend(2u32.to_le_bytes());
        for v in [lon, 10.0, lon, 20.0] {
            wkb.extend(f64::to_le_bytes(v));
        }
        let line = ChangedBox {
            whole: [lon, 10.0, lon, 20.0],
            point: [lon, 15.0, lon, 15.0],
            shape: Some(Arc::new(Shape::from_wkb(&wkb).unwrap())),
        };
        let zoom = ZoomRange::new(2, 2).unwrap();
        let west_of_it = TileCoord::new(2, 1, 1).unwrap();
        for (simplify, dirty) in [(0.25, true), (0.0, false)] {
            let mut layer = layer(None);
            layer.generalisation.simplify = simplify;
            let tiles = dirty_tiles(
                &[(&layer, &[line.clone()][..])],
                BBox::WORLD,
                zoom,
                4096,
                64,
                100,
            )
            .unwrap();
            assert_eq!(
                tiles.contains(&west_of_it),
                dirty,
                "simplify {simplify}: {tiles:?}"
            );
            // Its box, without the shape, stays east of the tile: the simplified shape never
            // leaves it.
            let boxed = ChangedBox {
                shape: None,
                ..line.clone()
            };
            let tiles =
                dirty_tiles(&[(&layer, &[boxed][..])], BBox::WORLD, zoom, 4096, 64, 100).unwrap();
            assert!(
                !tiles.contains(&west_of_it),
                "simplify {simplify}: {tiles:?}"
            );
        }
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
        let dirty = at_zoom_1(&layer, ChangedBox::point(0.5, 70.0));
        let names: Vec<String> = dirty.iter().map(|t| t.to_string()).collect();
        assert_eq!(names, ["1/0/0", "1/1/0"], "the cell touches 1/0/0's buffer");
    }

    #[test]
    fn a_wide_geometry_dirties_clustered_zooms_only_where_its_point_is() {
        let cluster = crate::config::ClusterConfig {
            maxzoom: 3,
            cell: 512,
            position: crate::config::ClusterPosition::Centroid,
        };
        let layer = layer(Some(cluster));
        let line = ChangedBox {
            whole: [-179.0, -80.0, 179.0, 80.0],
            point: [-179.0, -80.0, -179.0, -80.0],
            shape: None,
        };
        let zooms = ZoomRange::new(3, 4).unwrap();
        let dirty =
            dirty_tiles(&[(&layer, &[line][..])], BBox::WORLD, zooms, 4096, 64, 1000).unwrap();
        let at = |z: u8| dirty.iter().filter(|t| t.z() == z).count();
        // The point's cell and the buffer of the tile beside it, not the 8 × 7 tiles of the box.
        assert_eq!(at(3), 2, "clustered at zoom 3");
        assert_eq!(at(4), 16 * 14, "drawn whole at zoom 4");
    }
}
