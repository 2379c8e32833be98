//! The exact tiles a changed line or polygon touches. Its box would dirty every tile between its
//! ends: a road across a country, a border, a country with islands far away. The shape's own
//! tiles are found by descending the pyramid from zoom 0: a tile whose buffered envelope misses
//! the shape has no descendant that touches it (a child's buffered envelope lies inside its
//! parent's), and a tile whose buffered envelope lies wholly inside a polygon has every
//! descendant inside it, without another test.
//!
//! The shape is read in Web-Mercator metres as PostGIS projected it for the tiles (the change log
//! is read through the renderer's own transform), never projected here: PROJ wraps a longitude
//! past ±180° to the other side of the world, and a polygon with such a vertex is drawn as a band
//! across it, which only PostGIS's own projection shows.

use crate::tile::{TileCoord, TileRange, MERCATOR_HALF_WORLD};

/// A changed geometry other than a point, in Web-Mercator metres: its lines, and its polygons'
/// rings, each polygon apart (a point inside an even number of one polygon's rings is outside it).
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// Lines, and isolated points as lines of one vertex.
    lines: Vec<Vec<(f64, f64)>>,
    /// Polygons, each a list of closed rings.
    polygons: Vec<Vec<Vec<(f64, f64)>>>,
    /// Whether PostGIS found the geometry valid. `ST_AsMVTGeom` makes an invalid polygon valid
    /// (a bow tie, a ring winding twice, a hole outside its shell), and what it keeps lies within
    /// the rings' own areas but not always where even-odd says: an invalid polygon's area is
    /// taken as wherever any of its rings winds.
    valid: bool,
}

/// Where the descent of [`Shape::tiles`] goes and what it reports.
pub struct Descent<'a> {
    /// The deepest zoom.
    pub max_zoom: u8,
    /// How far around a tile, in tile sizes, the shape dirties it.
    pub margin: f64,
    /// The tiles wanted, one range per zoom from 0.
    pub ranges: &'a [TileRange],
    /// The zooms whose tiles are reported.
    pub wanted: &'a dyn Fn(u8) -> bool,
    /// Whether the renderer may fetch the row for a tile at all; false for a tile is false for
    /// its descendants, whose fetch envelopes lie inside its own.
    pub fetched: &'a dyn Fn(TileCoord) -> bool,
}
/// A rectangle `[west, south, east, north]` in Web-Mercator metres.
type Rect = [f64; 4];

/// How a shape and a rectangle lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overlap {
    Apart,
    Touching,
    /// The rectangle lies inside one of the shape's polygons.
    Inside,
}

impl Shape {
    /// The shape of a 2D WKB geometry (ISO or OGC: types 1 to 7) in Web-Mercator metres, as
    /// `ST_AsBinary(ST_Force2D(geometry))` writes it, `valid` as `ST_IsValid` says; `None` when
    /// the bytes are not such WKB (a curve, a TIN: the caller's box stands in).
    pub fn from_wkb(bytes: &[u8], valid: bool) -> Option<Shape> {
        let mut shape = Shape {
            lines: Vec::new(),
            polygons: Vec::new(),
            valid,
        };
        let mut reader = Wkb { bytes, at: 0 };
        reader.geometry(&mut shape)?;
        (reader.at == bytes.len()).then_some(shape)
    }

    /// Whether it has nothing to test against.
    pub fn is_empty(&self) -> bool {
        self.lines.iter().all(Vec::is_empty) && self.polygons.iter().flatten().all(Vec::is_empty)
    }

    fn overlap(&self, rect: &Rect) -> Overlap {
        let crosses = |ring: &Vec<(f64, f64)>| path_meets(ring, rect);
        if self.lines.iter().any(crosses) {
            return Overlap::Touching;
        }
        let centre = ((rect[0] + rect[2]) / 2.0, (rect[1] + rect[3]) / 2.0);
        let mut touching = false;
        for rings in &self.polygons {
            if rings.iter().any(crosses) {
                touching = true;
            } else if self.covers(rings, centre) {
                // No edge enters the rectangle and its centre is inside: so is all of it.
                return Overlap::Inside;
            }
        }
        if touching {
            Overlap::Touching
        } else {
            Overlap::Apart
        }
    }

    /// Whether `point`, which no edge of `rings` comes near, lies in the polygon's area: even-odd
    /// for a valid polygon, any ring winding around it for an invalid one.
    fn covers(&self, rings: &[Vec<(f64, f64)>], point: (f64, f64)) -> bool {
        if self.valid {
            contains(rings, point)
        } else {
            rings.iter().any(|ring| winding(ring, point) != 0)
        }
    }

    /// Calls `dirty` with every tile the descent allows (see [`Descent`]) whose envelope, grown by
    /// its margin, meets the shape. Stops, returning false, as soon as `dirty` does.
    pub fn tiles(&self, descent: &Descent, dirty: &mut dyn FnMut(TileCoord) -> bool) -> bool {
        let mut stack = vec![(TileCoord::new(0, 0, 0).expect("zoom 0 has one tile"), false)];
        while let Some((tile, inside)) = stack.pop() {
            let z = tile.z();
            let Some(range) = descent.ranges.get(usize::from(z)) else {
                continue;
            };
            let in_range = (range.min_x..=range.max_x).contains(&tile.x())
                && (range.min_y..=range.max_y).contains(&tile.y());
            if !in_range || !(descent.fetched)(tile) {
                continue;
            }
            let inside = inside || {
                match self.overlap(&buffered(tile, descent.margin)) {
                    Overlap::Apart => continue,
                    Overlap::Touching => false,
                    Overlap::Inside => true,
                }
            };
            if (descent.wanted)(z) && !dirty(tile) {
                return false;
            }
            if z < descent.max_zoom {
                stack.extend(tile.children().map(|c| (c, inside)));
            }
        }
        true
    }
}

/// A tile's envelope in Web-Mercator metres, grown by `margin` of its size on every side, and by
/// [`single_precision_slack`].
fn buffered(tile: TileCoord, margin: f64) -> Rect {
    let size = 2.0 * MERCATOR_HALF_WORLD / (1u64 << tile.z()) as f64;
    let west = -MERCATOR_HALF_WORLD + f64::from(tile.x()) * size;
    let north = MERCATOR_HALF_WORLD - f64::from(tile.y()) * size;
    let grown = margin * size;
    let rect = [
        west - grown,
        north - size - grown,
        west + size + grown,
        north + grown,
    ];
    let m = grown + single_precision_slack(&rect);
    [west - m, north - size - m, west + size + m, north + m]
}

/// How far past a box, in metres, PostGIS' `&&` may still find a row in it: it compares boxes
/// rounded outwards to single precision, which moves an edge by up to a unit in the last place
/// of its coordinate (1 m around 10,000 km from the origin), on the row's box and the
/// envelope's alike. A render finds its tile's children so (`MERC && env.childN`), and the child
/// then draws a point that far past its buffer, snapped onto its edge: a change there dirties the
/// child too (`watch` missed 2 of 5,401 tiles of a 2,000-row sample before).
pub(super) fn single_precision_slack(rect: &Rect) -> f64 {
    let magnitude = rect
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |m, v| m.max(v.abs()));
    2.0 * magnitude * f64::from(f32::EPSILON)
}

/// Whether a path (a line, or a ring, closed by its last vertex) has a vertex in `rect` or a
/// segment crossing it.
fn path_meets(path: &[(f64, f64)], rect: &Rect) -> bool {
    match path {
        [] => false,
        [only] => in_rect(*only, rect),
        _ => path.windows(2).any(|s| segment_meets(s[0], s[1], rect)),
    }
}

fn in_rect((x, y): (f64, f64), rect: &Rect) -> bool {
    rect[0] <= x && x <= rect[2] && rect[1] <= y && y <= rect[3]
}

/// Whether the segment from `a` to `b` meets the closed rectangle (Liang-Barsky clipping).
fn segment_meets(a: (f64, f64), b: (f64, f64), rect: &Rect) -> bool {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - rect[0]),
        (dx, rect[2] - a.0),
        (-dy, a.1 - rect[1]),
        (dy, rect[3] - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return false;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
            if t0 > t1 {
                return false;
            }
        }
    }
    true
}

/// Whether `point` is inside a polygon of `rings` (even-odd: holes are rings too).
fn contains(rings: &[Vec<(f64, f64)>], (x, y): (f64, f64)) -> bool {
    let mut inside = false;
    for ring in rings {
        for s in ring.windows(2) {
            let ((x0, y0), (x1, y1)) = (s[0], s[1]);
            if (y0 > y) != (y1 > y) && x < x0 + (y - y0) / (y1 - y0) * (x1 - x0) {
                inside = !inside;
            }
        }
    }
    inside
}

/// How many times `ring` winds around `point` (counter-clockwise positive).
fn winding(ring: &[(f64, f64)], (x, y): (f64, f64)) -> i32 {
    let mut turns = 0;
    for s in ring.windows(2) {
        let ((x0, y0), (x1, y1)) = (s[0], s[1]);
        let side = (x1 - x0) * (y - y0) - (x - x0) * (y1 - y0);
        if y0 <= y && y1 > y && side > 0.0 {
            turns += 1;
        } else if y0 > y && y1 <= y && side < 0.0 {
            turns -= 1;
        }
    }
    turns
}

/// A reader of WKB bytes.
struct Wkb<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Wkb<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let taken = self.bytes.get(self.at..self.at + N)?.try_into().ok()?;
        self.at += N;
        Some(taken)
    }

    fn u32(&mut self, little: bool) -> Option<u32> {
        let b = self.take::<4>()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn f64(&mut self, little: bool) -> Option<f64> {
        let b = self.take::<8>()?;
        Some(if little {
            f64::from_le_bytes(b)
        } else {
            f64::from_be_bytes(b)
        })
    }

    /// Vertices, in the metres PostGIS wrote.
    fn points(&mut self, little: bool) -> Option<Vec<(f64, f64)>> {
        let count = self.u32(little)? as usize;
        // Each vertex takes 16 bytes: a count beyond what is left is corrupt, not an allocation.
        if count > (self.bytes.len() - self.at) / 16 {
            return None;
        }
        (0..count)
            .map(|_| Some((self.f64(little)?, self.f64(little)?)))
            .filter(|p| p.is_none_or(|(x, y)| x.is_finite() && y.is_finite()))
            .collect()
    }

    fn rings(&mut self, little: bool) -> Option<Vec<Vec<(f64, f64)>>> {
        let count = self.u32(little)?;
        (0..count).map(|_| self.points(little)).collect()
    }

    fn geometry(&mut self, shape: &mut Shape) -> Option<()> {
        let little = match self.take::<1>()? {
            [0] => false,
            [1] => true,
            _ => return None,
        };
        match self.u32(little)? {
            1 => {
                let point = (self.f64(little)?, self.f64(little)?);
                // An empty point is written as NaN coordinates.
                if point.0.is_finite() && point.1.is_finite() {
                    shape.lines.push(vec![point]);
                }
            }
            2 => shape.lines.push(self.points(little)?),
            3 => shape.polygons.push(self.rings(little)?),
            kind @ 4..=7 => {
                for _ in 0..self.u32(little)? {
                    let start = self.at;
                    self.geometry(shape)?;
                    // A multi-geometry holds members of its own kind only.
                    let member = self.bytes.get(start + 1..start + 5)?;
                    let member = if little {
                        u32::from_le_bytes(member.try_into().ok()?)
                    } else {
                        u32::from_be_bytes(member.try_into().ok()?)
                    };
                    if kind != 7 && member != kind - 3 {
                        return None;
                    }
                }
            }
            _ => return None,
        }
        Some(())
    }
}

#[cfg(test)]
mod tests;
