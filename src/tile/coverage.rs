//! What an output's stored tiles cover: the zooms, and the box outputs declare as their `bounds`:
//! the deepest zoom's tiles, reaching into every shallower tile too.

use super::{BBox, TileCoord, TileRange, ZoomRange};

/// Zooms a coverage tracks (tile coordinates go no deeper).
const ZOOMS: usize = 32;

/// The column and row ranges of the tiles an output holds at each zoom: what its `minzoom`,
/// `maxzoom` and `bounds` should claim, rather than the area a seed walked.
///
/// The bounds are the deepest zoom's tiles as a box (`mbtiles summary` reads bounds the same
/// way), widened just enough to reach into every shallower tile: a tile near the edge of a
/// regional seed holds rows in its buffer, or beyond the area, that no deeper tile of the
/// seed holds, and a reader (and `validate`) must find it within the bounds. Reaching into a
/// tile rather than covering it keeps a world seed's bounds those of its data, not the world
/// its zoom-0 tile spans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Per zoom, the column and row ranges of its tiles.
    ranges: [Option<TileRange>; ZOOMS],
}

/// The smallest step of a declared bound: PMTiles headers keep 1e-7 degrees.
const STEP: f64 = 1e-7;

impl Coverage {
    /// Counts `tile` in.
    pub fn add(&mut self, tile: TileCoord) {
        let Some(slot) = self.ranges.get_mut(usize::from(tile.z())) else {
            return;
        };
        *slot = Some(match *slot {
            None => TileRange {
                z: tile.z(),
                min_x: tile.x(),
                max_x: tile.x(),
                min_y: tile.y(),
                max_y: tile.y(),
            },
            Some(range) => TileRange {
                z: range.z,
                min_x: range.min_x.min(tile.x()),
                max_x: range.max_x.max(tile.x()),
                min_y: range.min_y.min(tile.y()),
                max_y: range.max_y.max(tile.y()),
            },
        });
    }

    fn held(&self) -> impl DoubleEndedIterator<Item = TileRange> + '_ {
        self.ranges.iter().flatten().copied()
    }

    /// The zooms holding tiles, shallowest to deepest; `None` when no tile was counted.
    pub fn zooms(&self) -> Option<ZoomRange> {
        let shallowest = self.held().next()?.z;
        ZoomRange::new(shallowest, self.held().next_back()?.z).ok()
    }

    /// The box the tiles cover (see [`Coverage`]), within `within` (the area the run was
    /// given); `None` when no tile was counted.
    pub fn bbox(&self, within: &BBox) -> Option<BBox> {
        let deepest = self.held().next_back()?;
        self.reaching(range_box(deepest), within)
    }

    /// `declared`, the bounds of an output whose deepest zoom is `deepest_declared`, with this
    /// coverage's tiles (written since) counted in: a deeper zoom's tiles replace the box, the
    /// same zoom's join it, and it reaches into every shallower tile; within `within`.
    pub fn widen(&self, (deepest_declared, declared): (u8, BBox), within: &BBox) -> Option<BBox> {
        let start = match self.held().next_back() {
            Some(deepest) if deepest.z > deepest_declared => range_box(deepest),
            Some(deepest) if deepest.z == deepest_declared => union(declared, range_box(deepest)),
            _ => declared,
        };
        self.reaching(start, within)
    }

    /// `start` widened to reach into every counted tile, then held within `within`.
    fn reaching(&self, start: BBox, within: &BBox) -> Option<BBox> {
        let mut bbox = start;
        for range in self.held() {
            let n = (1u64 << range.z) as f64;
            // Each side moves just past the near edge of the outermost tiles, into them.
            bbox.west = bbox.west.min(down(lon(range.min_x + 1, n) - STEP));
            bbox.east = bbox.east.max(up(lon(range.max_x, n) + STEP));
            bbox.north = bbox.north.max(up(lat(range.min_y + 1, n) + STEP));
            bbox.south = bbox.south.min(down(lat(range.max_y, n) - STEP));
        }
        BBox::new(
            bbox.west.max(within.west),
            bbox.south.max(within.south),
            bbox.east.min(within.east),
            bbox.north.min(within.north),
        )
        .ok()
    }
}

/// A range's tiles as a box, rounded outwards to [`STEP`], the precision PMTiles headers keep, so
/// a tile on the edge stays inside the bounds an archive declares.
fn range_box(range: TileRange) -> BBox {
    let n = (1u64 << range.z) as f64;
    BBox {
        west: down(lon(range.min_x, n)),
        south: down(lat(range.max_y + 1, n)),
        east: up(lon(range.max_x + 1, n)),
        north: up(lat(range.min_y, n)),
    }
}

fn union(a: BBox, b: BBox) -> BBox {
    BBox {
        west: a.west.min(b.west),
        south: a.south.min(b.south),
        east: a.east.max(b.east),
        north: a.north.max(b.north),
    }
}

fn lon(x: u32, n: f64) -> f64 {
    f64::from(x) / n * 360.0 - 180.0
}

fn lat(y: u32, n: f64) -> f64 {
    (std::f64::consts::PI * (1.0 - 2.0 * f64::from(y) / n))
        .sinh()
        .atan()
        .to_degrees()
}

fn down(v: f64) -> f64 {
    (v * 1e7).floor() / 1e7
}

fn up(v: f64) -> f64 {
    (v * 1e7).ceil() / 1e7
}
