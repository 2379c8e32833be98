//! Dirty tiles: the tiles a set of changed geometries touches, expanded over the zoom range and
//! de-duplicated before anything is rendered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::Work;
use crate::config::LayerConfig;
use crate::tile::{morton, BBox, Subtrees, TileCoord, TileRange, ZoomRange, MERCATOR_HALF_WORLD};

mod shape;
mod ways;

use shape::Descent;
pub use shape::Shape;
pub use ways::{census_pays, choose, ways_text, ZoomWay};

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
    let margin = margin + shape::single_precision_slack(&rect);
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
mod tests;
