//! Dirty tiles: the tiles a set of changed geometries touches, expanded over the zoom range and
//! de-duplicated before anything is rendered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::Work;
use crate::config::LayerConfig;
use crate::tile::{morton, BBox, Subtrees, TileCoord, TileRange, ZoomRange, MERCATOR_HALF_WORLD};

mod shape;

use shape::Descent;
pub use shape::Shape;

/// Everywhere: the box of a geometry PostGIS could not project, which any tile may draw.
const ANYWHERE: [f64; 4] = [
    f64::NEG_INFINITY,
    f64::NEG_INFINITY,
    f64::INFINITY,
    f64::INFINITY,
];

/// One changed geometry (an old or a new position of a row), as boxes `[west, south, east, north]`
/// in Web-Mercator metres, as PostGIS projected it for the tiles (`ST_Transform` wraps longitudes
/// past ±180° and stretches latitudes past the Mercator square; a box is the projected geometry's,
/// not the projected box).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedBox {
    /// The geometry's box.
    pub whole: [f64; 4],
    /// The box of its representative point, where clustered zooms place it (a point's own box).
    pub point: [f64; 4],
    /// A line's or a polygon's own shape: the zooms that draw it whole dirty only the tiles it
    /// touches, not every tile of its box.
    pub shape: Option<Arc<Shape>>,
    /// The geometry's box in its own SRID, where the renderer's source-SRID prefilter can be
    /// reckoned here: a tile whose fetch envelope misses it never fetches the row, so never draws
    /// it, however far PROJ carried the projected shape.
    pub source: Option<SourceBox>,
    /// One side of a geometry-only edit (a line or polygon whose other columns stayed), with
    /// where what it draws changed at the zooms PostGIS compared the two sides.
    pub moved: Option<Moved>,
}

/// How a geometry-only edit changed what one zoom draws, where PostGIS compared its two shapes
/// as that zoom draws them.
#[derive(Debug, Clone, PartialEq)]
pub enum DrawnChange {
    /// Both shapes draw the same: no tile of the zoom changes.
    Nothing,
    /// They draw differently only here (in Web-Mercator metres): a tile whose clip box misses
    /// it clips the same geometry either way.
    Within(Arc<Shape>),
}

/// One side of a geometry-only edit. At a zoom `zooms` holds, the edit dirties the tiles of its
/// [`DrawnChange`] (reported once, by the `lead` side); at the others, each side its own shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    /// The zooms compared and what changed at each.
    pub zooms: Arc<BTreeMap<u8, DrawnChange>>,
    /// Whether this side reports the changed tiles; its source box then covers both sides'.
    pub lead: bool,
}

/// A geometry's box `[west, south, east, north]` in the SRID it is stored in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceBox {
    /// The SRID.
    pub srid: i32,
    /// The box.
    pub bounds: [f64; 4],
}

impl SourceBox {
    /// The box, when the renderer's prefilter in that SRID can be reckoned without PostGIS:
    /// degrees (EPSG:4326) and Web-Mercator metres (EPSG:3857). Other SRIDs test a projected
    /// envelope, which only PostGIS can reproduce, so they are not filtered.
    pub fn new(srid: i32, bounds: [f64; 4]) -> Option<SourceBox> {
        (matches!(srid, 4326 | 3857) && bounds.iter().all(|v| !v.is_nan()))
            .then_some(SourceBox { srid, bounds })
    }

    /// Whether the renderer may fetch the row for `tile`, whose rows it fetches `margin` tile
    /// widths around it: the row's box meets the tile's fetch envelope in the row's SRID, as
    /// `geom && envelope` tests it, with slack for the single-precision boxes `&&` compares.
    fn fetched_at(&self, tile: TileCoord, margin: f64) -> bool {
        // As the renderer builds its envelopes (`render/tileset.rs`).
        let metres = tile.mercator_envelope(margin).grown(1e-9);
        let envelope = match self.srid {
            4326 => metres.mercator_to_lonlat(),
            _ => metres,
        };
        let slack = |v: f64| v.abs() * 1e-6 + 1e-9;
        let [west, south, east, north] = self.bounds;
        west - slack(west) <= envelope.east + slack(envelope.east)
            && east + slack(east) >= envelope.west - slack(envelope.west)
            && south - slack(south) <= envelope.north + slack(envelope.north)
            && north + slack(north) >= envelope.south - slack(envelope.south)
    }
}

impl SourceBox {
    /// The box covering both, where the renderer may fetch either row; `None` (no prefilter)
    /// when either is unknown or they are in different SRIDs.
    pub fn union(a: Option<SourceBox>, b: Option<SourceBox>) -> Option<SourceBox> {
        let (a, b) = (a?, b?);
        (a.srid == b.srid).then(|| SourceBox {
            srid: a.srid,
            bounds: [
                a.bounds[0].min(b.bounds[0]),
                a.bounds[1].min(b.bounds[1]),
                a.bounds[2].max(b.bounds[2]),
                a.bounds[3].max(b.bounds[3]),
            ],
        })
    }

    /// The columns and rows `[min_x, min_y, max_x, max_y]` of zoom `z` outside which no tile
    /// can fetch the row, its fetch envelope being `margin` tile widths around it: a bound on the
    /// tiles [`SourceBox::fetched_at`] need test, so a box of the whole world costs nothing at
    /// a zoom where the row lies in a corner.
    fn tile_span(&self, z: u8, margin: f64) -> [u32; 4] {
        let n = (1u64 << z) as f64;
        let [west, south, east, north] = self.bounds;
        let world = 2.0 * MERCATOR_HALF_WORLD;
        // Fractions of the world from its north-west corner; degrees clamped to the Mercator
        // square, whose edge tiles' envelopes reach past it.
        let unit = |x: f64, y: f64| {
            let (x, y) = match self.srid {
                4326 => crate::tile::mercator(x, y),
                _ => (x, y),
            };
            (
                (x + MERCATOR_HALF_WORLD) / world * n,
                (MERCATOR_HALF_WORLD - y) / world * n,
            )
        };
        let (x0, y0) = unit(west, north);
        let (x1, y1) = unit(east, south);
        // A whole tile more than the margin on each side: the bound need not be tight.
        let grow = margin.ceil() + 1.0;
        let index = |v: f64| v.floor().clamp(0.0, n - 1.0) as u32;
        [
            index(x0 - grow),
            index(y0 - grow),
            index(x1 + grow),
            index(y1 + grow),
        ]
    }
}

impl ChangedBox {
    /// A changed point.
    #[cfg(test)]
    pub fn point(lon: f64, lat: f64) -> ChangedBox {
        let (x, y) = crate::tile::mercator(lon, lat);
        let at = [x, y, x, y];
        ChangedBox {
            whole: at,
            point: at,
            shape: None,
            source: None,
            moved: None,
        }
    }

    /// A geometry PostGIS could not project (a latitude past ±90°): no tile can tell where it
    /// lies, so every tile that may fetch it (by its `source` box) is dirty, and at clustered
    /// zooms every tile.
    pub fn unprojected(source: Option<SourceBox>) -> ChangedBox {
        ChangedBox {
            whole: ANYWHERE,
            point: ANYWHERE,
            shape: None,
            source,
            moved: None,
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
/// that zoom, the geometry itself, among the tiles whose fetch envelope can fetch it (see
/// [`ChangedBox::source`]); at clustered zooms, its representative point's box grown to whole grid
/// cells, since a change moves only the clusters of the cells its points lie in. `layers` are all
/// the tileset's layers, which decide how far around a tile rows are fetched. Lowest zoom first;
/// de-duplicated before anything is rendered. `None` when more than `limit` tiles are dirty: a
/// full seed is then cheaper.
pub fn dirty_tiles(
    boxes: &[(&LayerConfig, &[ChangedBox])],
    layers: &[LayerConfig],
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
    let fetch_margins: Vec<f64> = (0..=zooms.max)
        .map(|z| crate::config::fetch_margin(layers, z, extent, buffer))
        .collect();
    let fetched = |source: Option<&SourceBox>, tile: TileCoord| {
        source.is_none_or(|s| s.fetched_at(tile, fetch_margins[usize::from(tile.z())]))
    };
    for (layer, layer_boxes) in boxes {
        let margin_of_size = margin_of_size + simplified_slack(layer);
        let whole_at = |z: u8| {
            zooms.contains(z)
                && layer.zooms.is_none_or(|r| r.contains(z))
                && layer.cluster_at(z).is_none()
        };
        for changed in layer_boxes.iter() {
            let Some(shape) = changed.shape.as_deref() else {
                continue;
            };
            let source = changed.source.as_ref();
            let mut add = |tile: TileCoord| {
                dirty.insert((tile.z(), morton(tile.x(), tile.y()), tile));
                dirty.len() <= limit
            };
            let compared = changed.moved.as_ref().map(|m| &*m.zooms);
            let own_at = |z: u8| whole_at(z) && compared.is_none_or(|c| !c.contains_key(&z));
            let descent = Descent {
                max_zoom: zooms.max,
                margin: margin_of_size,
                ranges: &ranges,
                wanted: &own_at,
                // Clustered zooms are not descended into here (see below); above them, a tile
                // that cannot fetch the row still has descendants to test only if it can.
                fetched: &|tile| fetched(source, tile),
            };
            if !shape.tiles(&descent, &mut add) {
                return None;
            }
            let Some(moved) = changed.moved.as_ref().filter(|m| m.lead) else {
                continue;
            };
            for (&z, change) in moved.zooms.iter() {
                let DrawnChange::Within(difference) = change else {
                    continue;
                };
                if !whole_at(z) {
                    continue;
                }
                let only_z = |at: u8| at == z;
                let descent = Descent {
                    max_zoom: z,
                    // A tile clips what lies within its buffer and half a unit more; a unit
                    // more again for the snapping to the grid.
                    margin: margin_of_size + 2.0 / f64::from(extent),
                    ranges: &ranges,
                    wanted: &only_z,
                    fetched: &|tile| fetched(source, tile),
                };
                if !difference.tiles(&descent, &mut add) {
                    return None;
                }
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
                let [mut x0, mut y0, mut x1, mut y1] = match (cell, &changed.shape) {
                    (Some(_), _) => changed.point,
                    // Its own tiles are in already.
                    (None, Some(_)) => continue,
                    (None, None) => changed.whole,
                };
                // At clustered zooms a tile may read a cell from the layer's cell table whatever
                // rows it fetches itself, so no prefilter applies.
                let source = cell.is_none().then_some(changed.source.as_ref()).flatten();
                if let Some(cell) = cell {
                    x0 = ((x0 + MERCATOR_HALF_WORLD) / cell).floor() * cell - MERCATOR_HALF_WORLD;
                    x1 = (((x1 + MERCATOR_HALF_WORLD) / cell).floor() + 1.0) * cell
                        - MERCATOR_HALF_WORLD;
                    y1 = MERCATOR_HALF_WORLD - ((MERCATOR_HALF_WORLD - y1) / cell).floor() * cell;
                    y0 = MERCATOR_HALF_WORLD
                        - (((MERCATOR_HALF_WORLD - y0) / cell).floor() + 1.0) * cell;
                }
                let [min_x, min_y, max_x, max_y] = box_tiles([x0, y0, x1, y1], margin, z);
                let [span_x0, span_y0, span_x1, span_y1] = match source {
                    Some(source) => source.tile_span(z, fetch_margins[usize::from(z)]),
                    None => [0, 0, u32::MAX, u32::MAX],
                };
                let (min_x, max_x) = (min_x.max(span_x0), max_x.min(span_x1));
                let (min_y, max_y) = (min_y.max(span_y0), max_y.min(span_y1));
                for x in min_x.max(range.min_x)..=max_x.min(range.max_x) {
                    for y in min_y.max(range.min_y)..=max_y.min(range.max_y) {
                        let tile =
                            TileCoord::new(z, x, y).expect("indices are clamped to the zoom");
                        if !fetched(source, tile) {
                            continue;
                        }
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

/// The columns and rows `[min_x, min_y, max_x, max_y]` of zoom `z` whose envelope, grown by
/// `margin` metres, meets `rect` (Web-Mercator metres); unbounded boxes (an unprojected geometry)
/// clamp to the zoom's edges.
fn box_tiles(rect: [f64; 4], margin: f64, z: u8) -> [u32; 4] {
    let n = 1u64 << z;
    let size = 2.0 * MERCATOR_HALF_WORLD / n as f64;
    let index = |v: f64| (v / size).floor().clamp(0.0, (n - 1) as f64) as u32;
    let [x0, y0, x1, y1] = rect;
    [
        index(x0 - margin + MERCATOR_HALF_WORLD),
        index(MERCATOR_HALF_WORLD - y1 - margin),
        index(x1 + margin + MERCATOR_HALF_WORLD),
        index(MERCATOR_HALF_WORLD - y0 + margin),
    ]
}

/// What a set of changes dirties (as [`dirty_tiles`] reckons it), held to `limit` tiles: their
/// tiles while there are no more, else the tiles of the zooms above a root zoom, listed, and
/// below it subtrees, walked as a seed walks them, rooted at every tile of the root zoom the
/// changes may reach. The root zoom is the deepest at which both fit in `limit`, so the
/// subtrees cover as little as they can; at zoom 0 there is one root at most, the pyramid.
pub fn dirty_work(
    boxes: &[(&LayerConfig, &[ChangedBox])],
    layers: &[LayerConfig],
    bbox: BBox,
    zooms: ZoomRange,
    (extent, buffer): (u32, u32),
    limit: usize,
) -> Work {
    if let Some(tiles) = dirty_tiles(boxes, layers, bbox, zooms, extent, buffer, limit) {
        return Work::Tiles(tiles);
    }
    for root_zoom in (0..=zooms.max).rev() {
        let listed = match root_zoom
            .checked_sub(1)
            .map(|max| ZoomRange::new(zooms.min, max))
        {
            Some(Ok(above)) => dirty_tiles(boxes, layers, bbox, above, extent, buffer, limit),
            // No zoom of the run lies above the roots.
            _ => Some(Vec::new()),
        };
        let Some(tiles) = listed else {
            continue;
        };
        let left = limit.saturating_sub(tiles.len()).max(1);
        let roots = subtree_roots(boxes, bbox, zooms, root_zoom, (extent, buffer), left);
        if let Some(roots) = roots {
            let subtrees = Subtrees::new(roots);
            if subtrees.is_empty() {
                return Work::Tiles(tiles);
            }
            return Work::Subtrees { tiles, subtrees };
        }
    }
    Work::Pyramid
}

/// The tiles of `root_zoom` below which the changes may dirty a tile of `zooms`: a tile dirty at a
/// deeper zoom meets a change within a margin of its own size, and its envelope so grown lies
/// inside its ancestor's grown by the same share of the ancestor's size, so the ancestor meets
/// the change too. The margin here is the widest any zoom uses (buffer, simplification, the
/// grid a moved shape is drawn on, a cluster's cell); the renderer's source prefilter, which
/// only ever removes tiles, is left out. `None` past `limit` roots.
fn subtree_roots(
    boxes: &[(&LayerConfig, &[ChangedBox])],
    bbox: BBox,
    zooms: ZoomRange,
    root_zoom: u8,
    (extent, buffer): (u32, u32),
    limit: usize,
) -> Option<Vec<TileCoord>> {
    let below = |z: u8| z >= root_zoom && zooms.contains(z);
    let mut roots: BTreeSet<(u64, TileCoord)> = BTreeSet::new();
    let ranges: Vec<TileRange> = (0..=root_zoom).map(|z| bbox.tile_range(z)).collect();
    let range = ranges[usize::from(root_zoom)];
    let size = 2.0 * MERCATOR_HALF_WORLD / (1u64 << root_zoom) as f64;
    for (layer, layer_boxes) in boxes {
        let drawn = |z: u8| below(z) && layer.zooms.is_none_or(|r| r.contains(z));
        let levels = root_zoom..=zooms.max;
        let whole_somewhere = levels
            .clone()
            .any(|z| drawn(z) && layer.cluster_at(z).is_none());
        let widest_cell = levels
            .filter(|z| drawn(*z))
            .filter_map(|z| layer.cluster_at(z))
            .map(|c| f64::from(c.cell) / f64::from(extent))
            .reduce(f64::max);
        let margin = f64::from(buffer) / f64::from(extent)
            + simplified_slack(layer)
            + 2.0 / f64::from(extent)
            + 1e-6;
        for changed in layer_boxes.iter() {
            let mut add = |tile: TileCoord| {
                roots.insert((morton(tile.x(), tile.y()), tile));
                roots.len() <= limit
            };
            let mut boxed = Vec::new();
            match changed.shape.as_deref() {
                Some(shape) if whole_somewhere => {
                    let at_root = |z: u8| z == root_zoom;
                    let descent = Descent {
                        max_zoom: root_zoom,
                        margin,
                        ranges: &ranges,
                        wanted: &at_root,
                        fetched: &|_| true,
                    };
                    if !shape.tiles(&descent, &mut add) {
                        return None;
                    }
                }
                Some(_) => {}
                None if whole_somewhere => boxed.push((changed.whole, margin)),
                None => {}
            }
            if let Some(cell) = widest_cell {
                boxed.push((changed.point, margin + cell));
            }
            for (rect, margin) in boxed {
                let [min_x, min_y, max_x, max_y] = box_tiles(rect, margin * size, root_zoom);
                for x in min_x.max(range.min_x)..=max_x.min(range.max_x) {
                    for y in min_y.max(range.min_y)..=max_y.min(range.max_y) {
                        let tile = TileCoord::new(root_zoom, x, y)
                            .expect("indices are clamped to the zoom");
                        if !add(tile) {
                            return None;
                        }
                    }
                }
            }
        }
    }
    Some(roots.into_iter().map(|(_, tile)| tile).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(cluster: Option<crate::config::ClusterConfig>) -> LayerConfig {
        LayerConfig {
            cluster,
            ..LayerConfig::plain()
        }
    }

    /// The zoom-1 tiles one changed box dirties.
    fn at_zoom_1(layer: &LayerConfig, changed: ChangedBox) -> Vec<TileCoord> {
        let zoom = ZoomRange::new(1, 1).unwrap();
        dirty_tiles(
            &[(layer, &[changed][..])],
            &[],
            BBox::WORLD,
            zoom,
            4096,
            64,
            10,
        )
        .unwrap()
    }

    #[test]
    fn a_change_dirties_the_tiles_whose_buffer_covers_it_at_every_zoom() {
        let layer = layer(None);
        let boxes = [ChangedBox::point(90.4, 23.8)];
        let zooms = ZoomRange::new(0, 14).unwrap();
        let dirty = dirty_tiles(
            &[(&layer, &boxes[..])],
            &[],
            BBox::WORLD,
            zooms,
            4096,
            64,
            1000,
        )
        .unwrap();
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
            dirty_tiles(
                &[(&layer, &boxes[..])],
                &[],
                BBox::WORLD,
                zooms,
                4096,
                64,
                5
            )
            .is_none(),
            "over the limit"
        );
    }

    /// A line a tenth of a pixel east of tile 2/1/1's buffered envelope: once simplified with a
    /// quarter-pixel tolerance it may reach into the tile, which a full seed then draws.
    #[test]
    fn a_simplified_shape_dirties_the_tiles_within_its_tolerance() {
        let tile_size = MERCATOR_HALF_WORLD / 2.0;
        let x = (64.0 / 4096.0 + 0.1 / 256.0) * tile_size;
        let (_, south) = crate::tile::mercator(0.0, 10.0);
        let (_, north) = crate::tile::mercator(0.0, 20.0);
        let mut wkb = vec![1u8];
        wkb.extend(2u32.to_le_bytes());
        wkb.extend(2u32.to_le_bytes());
        for v in [x, south, x, north] {
            wkb.extend(f64::to_le_bytes(v));
        }
        let middle = (south + north) / 2.0;
        let line = ChangedBox {
            whole: [x, south, x, north],
            point: [x, middle, x, middle],
            shape: Some(Arc::new(Shape::from_wkb(&wkb, true).unwrap())),
            source: None,
            moved: None,
        };
        let zoom = ZoomRange::new(2, 2).unwrap();
        let west_of_it = TileCoord::new(2, 1, 1).unwrap();
        for (simplify, dirty) in [(0.25, true), (0.0, false)] {
            let mut layer = layer(None);
            layer.generalisation.simplify = simplify;
            let tiles = dirty_tiles(
                &[(&layer, &[line.clone()][..])],
                &[],
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
            let tiles = dirty_tiles(
                &[(&layer, &[boxed][..])],
                &[],
                BBox::WORLD,
                zoom,
                4096,
                64,
                100,
            )
            .unwrap();
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
        let (west, south) = crate::tile::mercator(-179.0, -80.0);
        let (east, north) = crate::tile::mercator(179.0, 80.0);
        let line = ChangedBox {
            whole: [west, south, east, north],
            point: [west, south, west, south],
            shape: None,
            source: None,
            moved: None,
        };
        let zooms = ZoomRange::new(3, 4).unwrap();
        let dirty = dirty_tiles(
            &[(&layer, &[line][..])],
            &[],
            BBox::WORLD,
            zooms,
            4096,
            64,
            1000,
        )
        .unwrap();
        let at = |z: u8| dirty.iter().filter(|t| t.z() == z).count();
        // The point's cell and the buffer of the tile beside it, not the 8 × 7 tiles of the box.
        assert_eq!(at(3), 2, "clustered at zoom 3");
        assert_eq!(at(4), 16 * 14, "drawn whole at zoom 4");
    }

    /// Fiji buffered past 180°: PROJ wraps the far vertices, so the projected polygon is a band
    /// across the world; only tiles whose fetch envelope meets its box in degrees fetch the row.
    #[test]
    fn a_band_across_the_world_dirties_only_the_tiles_that_fetch_its_row() {
        let layer = layer(None);
        let (west, south) = crate::tile::mercator(-179.5, -17.0);
        let (east, north) = crate::tile::mercator(179.0, -16.0);
        let ring = [
            (east, south),
            (west, south),
            (west, north),
            (east, north),
            (east, south),
        ];
        let mut wkb = vec![1u8];
        wkb.extend(3u32.to_le_bytes());
        wkb.extend(1u32.to_le_bytes());
        wkb.extend((ring.len() as u32).to_le_bytes());
        for (x, y) in ring {
            wkb.extend(x.to_le_bytes());
            wkb.extend(y.to_le_bytes());
        }
        let band = |source: Option<SourceBox>| ChangedBox {
            whole: [west, south, east, north],
            point: [east, south, east, south],
            shape: Some(Arc::new(Shape::from_wkb(&wkb, true).unwrap())),
            source,
            moved: None,
        };
        let zooms = ZoomRange::new(4, 4).unwrap();
        let tiles = |changed: ChangedBox| {
            dirty_tiles(
                &[(&layer, &[changed][..])],
                &[],
                BBox::WORLD,
                zooms,
                4096,
                64,
                1000,
            )
            .unwrap()
        };
        assert_eq!(tiles(band(None)).len(), 16, "every column of its row");
        let fetched = tiles(band(SourceBox::new(4326, [179.0, -17.0, 180.5, -16.0])));
        let columns: Vec<u32> = fetched.iter().map(|t| t.x()).collect();
        assert_eq!(columns, [15], "only the east edge fetches it: {fetched:?}");
        // In another SRID the prefilter is PostGIS's own: every tile the band meets.
        assert_eq!(tiles(band(SourceBox::new(2263, [0.0; 4]))).len(), 16);
    }

    #[test]
    fn a_geometry_postgis_cannot_project_dirties_every_tile_that_may_fetch_it() {
        let layer = layer(None);
        let zooms = ZoomRange::new(0, 3).unwrap();
        let tiles = |source: Option<SourceBox>| {
            let changed = ChangedBox::unprojected(source);
            dirty_tiles(
                &[(&layer, &[changed][..])],
                &[],
                BBox::WORLD,
                zooms,
                4096,
                64,
                1000,
            )
            .unwrap()
        };
        assert_eq!(tiles(None).len(), 1 + 4 + 16 + 64, "anywhere");
        // Past the pole: no tile's fetch envelope reaches it, as none fetches it.
        assert!(tiles(SourceBox::new(4326, [10.0, 91.0, 11.0, 92.0])).is_empty());
        let near = tiles(SourceBox::new(4326, [10.0, 80.0, 11.0, 91.0]));
        assert!(near.contains(&TileCoord::new(3, 4, 0).unwrap()), "{near:?}");
        assert_eq!(near.iter().filter(|t| t.z() == 3).count(), 1, "{near:?}");
    }

    /// A line in WKB from `(x, y)` metres pairs.
    fn line(points: &[(f64, f64)]) -> Arc<Shape> {
        let mut wkb = vec![1u8];
        wkb.extend(2u32.to_le_bytes());
        wkb.extend(u32::try_from(points.len()).unwrap().to_le_bytes());
        for (x, y) in points {
            wkb.extend(x.to_le_bytes());
            wkb.extend(y.to_le_bytes());
        }
        Arc::new(Shape::from_wkb(&wkb, true).unwrap())
    }

    #[test]
    fn a_moved_shape_dirties_only_its_difference_where_the_zoom_was_compared() {
        let half = MERCATOR_HALF_WORLD;
        // A line across the world's width, north of the equator; its old and new
        // shapes differ only near its western end at zoom 3, drawn alike at zoom 2, and zoom 1
        // was not compared.
        let y = 1_000_000.0;
        let across = line(&[(-half * 0.9, y), (half * 0.9, y)]);
        let near_west = line(&[(-half * 0.9, y), (-half * 0.85, y)]);
        let zooms: BTreeMap<u8, DrawnChange> = [
            (2, DrawnChange::Nothing),
            (3, DrawnChange::Within(near_west)),
        ]
        .into();
        let zooms = Arc::new(zooms);
        let side = |lead: bool| ChangedBox {
            whole: [-half * 0.9, y, half * 0.9, y],
            point: [0.0, y, 0.0, y],
            shape: Some(Arc::clone(&across)),
            source: None,
            moved: Some(Moved {
                zooms: Arc::clone(&zooms),
                lead,
            }),
        };
        let layer = layer(None);
        let tiles = |boxes: &[ChangedBox]| {
            dirty_tiles(
                &[(&layer, boxes)],
                &[],
                BBox::WORLD,
                ZoomRange::new(1, 3).unwrap(),
                4096,
                64,
                1000,
            )
            .unwrap()
        };
        let both = tiles(&[side(true), side(false)]);
        let at = |z: u8| -> Vec<(u32, u32)> {
            both.iter()
                .filter(|t| t.z() == z)
                .map(|t| (t.x(), t.y()))
                .collect()
        };
        assert_eq!(at(1), vec![(0, 0), (1, 0)], "not compared");
        assert_eq!(at(2), vec![], "drawn alike");
        assert_eq!(at(3), vec![(0, 3)], "only where they differ");
        // The other side reports nothing of the difference, only its own shape where the zoom
        // was not compared.
        let partner = tiles(&[side(false)]);
        assert!(partner.iter().all(|t| t.z() == 1), "{partner:?}");
    }

    /// A polygon in WKB from one ring of `(x, y)` metres pairs (closed by its last point).
    fn polygon(ring: &[(f64, f64)]) -> Arc<Shape> {
        let mut wkb = vec![1u8];
        wkb.extend(3u32.to_le_bytes());
        wkb.extend(1u32.to_le_bytes());
        wkb.extend(u32::try_from(ring.len()).unwrap().to_le_bytes());
        for (x, y) in ring {
            wkb.extend(x.to_le_bytes());
            wkb.extend(y.to_le_bytes());
        }
        Arc::new(Shape::from_wkb(&wkb, true).unwrap())
    }

    #[test]
    fn past_the_limit_every_dirty_tile_is_listed_or_below_a_subtree_root() {
        let m = |lon: f64, lat: f64| crate::tile::mercator(lon, lat);
        let triangle: Vec<(f64, f64)> = [(30.0, 50.0), (44.0, 58.0), (37.0, 41.0), (30.0, 50.0)]
            .iter()
            .map(|(lon, lat)| m(*lon, *lat))
            .collect();
        let road: Vec<(f64, f64)> = [(-70.0, -30.0), (-64.0, -25.0), (-60.0, -31.0)]
            .iter()
            .map(|(lon, lat)| m(*lon, *lat))
            .collect();
        let bounds = |points: &[(f64, f64)]| {
            points.iter().fold(
                [
                    f64::INFINITY,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    f64::NEG_INFINITY,
                ],
                |[w, s, e, n], (x, y)| [w.min(*x), s.min(*y), e.max(*x), n.max(*y)],
            )
        };
        let shaped = |shape: Arc<Shape>, points: &[(f64, f64)]| {
            let whole = bounds(points);
            let (x, y) = points[1];
            ChangedBox {
                whole,
                point: [x, y, x, y],
                shape: Some(shape),
                source: None,
                moved: None,
            }
        };
        let (x0, y0) = m(100.0, 10.0);
        let (x1, y1) = m(103.0, 12.0);
        let unshaped = ChangedBox {
            whole: [x0, y0, x1, y1],
            point: [x0, y0, x0, y0],
            shape: None,
            source: None,
            moved: None,
        };
        let plain = layer(None);
        let clustered = layer(Some(crate::config::ClusterConfig {
            maxzoom: 5,
            cell: 2048,
            position: crate::config::ClusterPosition::Centroid,
        }));
        let deep_only = LayerConfig {
            zooms: Some(ZoomRange::new(6, 9).unwrap()),
            ..layer(None)
        };
        let changes = [
            shaped(polygon(&triangle), &triangle),
            shaped(line(&road), &road),
            ChangedBox::point(-3.7, 40.4),
            unshaped,
        ];
        let boxes: Vec<(&LayerConfig, &[ChangedBox])> = vec![
            (&plain, &changes[..]),
            (&clustered, &changes[..]),
            (&deep_only, &changes[1..]),
        ];
        let zooms = ZoomRange::new(2, 12).unwrap();
        let all = dirty_tiles(&boxes, &[], BBox::WORLD, zooms, 4096, 64, usize::MAX).unwrap();
        assert!(all.len() > 20_000, "{}", all.len());
        for limit in [1, 40, 700, 5_000, all.len() / 2, all.len() - 1] {
            let work = dirty_work(&boxes, &[], BBox::WORLD, zooms, (4096, 64), limit);
            let Work::Subtrees { tiles, subtrees } = work else {
                panic!("limit {limit}: {work:?}");
            };
            let root_zoom = subtrees.top_zoom().unwrap();
            assert!(
                tiles.len() + subtrees.len() <= limit.max(1) || root_zoom == 0,
                "limit {limit}: {} listed, {} roots",
                tiles.len(),
                subtrees.len()
            );
            assert!(tiles.iter().all(|t| t.z() < root_zoom && all.contains(t)));
            let missed: Vec<&TileCoord> = all
                .iter()
                .filter(|t| !tiles.contains(t) && !subtrees.contains(**t))
                .collect();
            assert!(
                missed.is_empty(),
                "limit {limit}, roots at {root_zoom}: {} missed, first {:?}",
                missed.len(),
                &missed[..missed.len().min(5)]
            );
            // The subtrees follow the shapes: far fewer roots than the root zoom has tiles.
            if root_zoom >= 6 {
                assert!(
                    subtrees.len() < 1 << (2 * root_zoom - 4),
                    "{}",
                    subtrees.len()
                );
            }
        }
        let under = dirty_work(&boxes, &[], BBox::WORLD, zooms, (4096, 64), all.len());
        assert_eq!(under, Work::Tiles(all), "at the limit the tiles are listed");
    }
}
