//! Tile maths: XYZ coordinates, zoom ranges, bounding boxes and Web-Mercator envelopes, plus the
//! compact keys and orderings the other stages use to hold sets of tiles.
//!
//! Everything in oar-tiles speaks XYZ (y grows southwards). The TMS row flip that MBTiles needs is
//! [`TileCoord::tms_row`] / [`TileCoord::from_tms`], written once here and used only for MBTiles.

use std::fmt;
use std::str::FromStr;

mod coverage;
mod keys;
mod subtrees;

pub use coverage::Coverage;
#[cfg(test)]
pub use keys::locality_key;
pub use keys::{morton, tile_from_key, tile_from_walk_order_key, tile_key, walk_order_key};
pub use subtrees::Subtrees;

/// Highest zoom level oar-tiles accepts.
pub const MAX_ZOOM: u8 = 24;

/// Half the width of the Web-Mercator world in metres (EPSG:3857).
pub const MERCATOR_HALF_WORLD: f64 = 20_037_508.342_789_244;

/// The Web-Mercator sphere's radius in metres.
pub const EARTH_RADIUS: f64 = 6_378_137.0;

/// Latitude at which the Web-Mercator square ends.
pub const MAX_MERCATOR_LAT: f64 = 85.051_128_779_806_59;

/// Why a tile address, zoom range or bbox was refused; each reads as one line naming the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TileError {
    /// A zoom above [`MAX_ZOOM`].
    #[error("zoom {0} is above the maximum {MAX_ZOOM}")]
    ZoomTooHigh(u32),
    /// A zoom that is not a number in `0..=MAX_ZOOM`.
    #[error("zoom {0} is outside 0..={MAX_ZOOM}")]
    ZoomOutOfRange(i64),
    /// x or y at or beyond `2^z`.
    #[error("tile {z}/{x}/{y} is outside zoom {z} (x and y must be below {})", 1u64 << z)]
    OutsideZoom {
        /// Zoom.
        z: u8,
        /// Column.
        x: u32,
        /// Row.
        y: u32,
    },
    /// Text that is not `z/x/y`, `N`, `A-B` or `W,S,E,N`; the message says which was expected.
    #[error("{0}")]
    Syntax(String),
    /// A zoom range whose start lies above its end.
    #[error("zoom range {min}-{max} starts above its end")]
    ZoomRangeReversed {
        /// Start.
        min: u8,
        /// End.
        max: u8,
    },
    /// A bbox with a value out of range or its sides the wrong way round.
    #[error(transparent)]
    BBox(#[from] BBoxError),
}

/// What is wrong with a bbox's four values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BBoxError {
    /// A value that is NaN or infinite.
    #[error("bbox values must be finite numbers")]
    NotFinite,
    /// A longitude outside -180..180.
    #[error("bbox longitudes must lie in -180..180 (got west {west}, east {east})")]
    Longitude {
        /// Western longitude.
        west: f64,
        /// Eastern longitude.
        east: f64,
    },
    /// A latitude outside -90..90.
    #[error("bbox latitudes must lie in -90..90 (got south {south}, north {north})")]
    Latitude {
        /// Southern latitude.
        south: f64,
        /// Northern latitude.
        north: f64,
    },
    /// West of east: a bbox across the antimeridian, which must be given as two.
    #[error(
        "bbox west {west} is east of east {east}; a bbox across the antimeridian must be split in two"
    )]
    WestOfEast {
        /// Western longitude.
        west: f64,
        /// Eastern longitude.
        east: f64,
    },
    /// South of north.
    #[error("bbox south {south} is north of north {north}")]
    SouthOfNorth {
        /// Southern latitude.
        south: f64,
        /// Northern latitude.
        north: f64,
    },
}

/// A validated tile address; it cannot hold x or y outside its zoom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileCoord {
    z: u8,
    x: u32,
    y: u32,
}

impl TileCoord {
    /// Builds a tile coordinate, refusing zooms above [`MAX_ZOOM`] and x or y outside `0..2^z`.
    pub fn new(z: u8, x: u32, y: u32) -> Result<Self, TileError> {
        if z > MAX_ZOOM {
            return Err(TileError::ZoomTooHigh(u32::from(z)));
        }
        let n = 1u64 << z;
        if u64::from(x) >= n || u64::from(y) >= n {
            return Err(TileError::OutsideZoom { z, x, y });
        }
        Ok(Self { z, x, y })
    }

    /// The row MBTiles stores this tile under: TMS counts rows from the south. The one place the
    /// flip is written; [`TileCoord::from_tms`] undoes it.
    pub fn tms_row(&self) -> u32 {
        (1u32 << self.z) - 1 - self.y
    }

    /// The tile MBTiles stores at `(zoom_level, tile_column, tile_row)`, refusing values no tile has.
    pub fn from_tms(z: i64, x: i64, tms_row: i64) -> Result<Self, TileError> {
        let z = u8::try_from(z)
            .ok()
            .filter(|z| *z <= MAX_ZOOM)
            .ok_or(TileError::ZoomOutOfRange(z))?;
        let rows = 1i64 << z;
        let outside =
            || TileError::Syntax(format!("invalid tile: zoom {z}, column {x}, row {tms_row}"));
        let x = u32::try_from(x).map_err(|_| outside())?;
        if !(0..rows).contains(&tms_row) {
            return Err(outside());
        }
        TileCoord::new(z, x, (rows - 1 - tms_row) as u32)
    }

    /// The zoom level.
    pub fn z(&self) -> u8 {
        self.z
    }

    /// The column, counted from the antimeridian eastwards.
    pub fn x(&self) -> u32 {
        self.x
    }

    /// The row, counted from the north (XYZ convention).
    pub fn y(&self) -> u32 {
        self.y
    }

    /// The tile of the previous zoom that covers this one; none above zoom 0.
    pub fn parent(&self) -> Option<TileCoord> {
        (self.z > 0).then(|| TileCoord {
            z: self.z - 1,
            x: self.x / 2,
            y: self.y / 2,
        })
    }

    /// The four tiles of the next zoom that this tile splits into; none at [`MAX_ZOOM`].
    pub fn children(&self) -> impl Iterator<Item = TileCoord> {
        let (z, x, y) = (self.z, self.x, self.y);
        let children = (z < MAX_ZOOM).then(|| {
            [(0, 0), (1, 0), (0, 1), (1, 1)].map(|(dx, dy)| TileCoord {
                z: z + 1,
                x: 2 * x + dx,
                y: 2 * y + dy,
            })
        });
        children.into_iter().flatten()
    }

    /// The tile's envelope in Web-Mercator metres, grown by `margin` tile widths on each side.
    ///
    /// This matches PostGIS' `ST_TileEnvelope(z, x, y, margin => margin)`; the margin is not wrapped
    /// around the antimeridian, consistently with how tiles are rendered.
    pub fn mercator_envelope(&self, margin: f64) -> Envelope {
        let size = 2.0 * MERCATOR_HALF_WORLD / (1u64 << self.z) as f64;
        let west = -MERCATOR_HALF_WORLD + f64::from(self.x) * size;
        let north = MERCATOR_HALF_WORLD - f64::from(self.y) * size;
        Envelope {
            west: west - margin * size,
            south: north - size - margin * size,
            east: west + size + margin * size,
            north: north + margin * size,
        }
    }
}

impl fmt::Display for TileCoord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.z, self.x, self.y)
    }
}

impl FromStr for TileCoord {
    type Err = TileError;

    /// Parses `z/x/y`, the format of osm2pgsql expire lists and tegola tile lists.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let [z, x, y] = parts.as_slice() else {
            return Err(TileError::Syntax(format!(
                "`{s}` is not a tile address of the form z/x/y"
            )));
        };
        let number = |name: &str, text: &str| {
            text.parse::<u32>()
                .map_err(|_| TileError::Syntax(format!("`{s}`: {name} `{text}` is not a number")))
        };
        let z = number("zoom", z)?;
        let z = u8::try_from(z).map_err(|_| TileError::ZoomTooHigh(z))?;
        TileCoord::new(z, number("x", x)?, number("y", y)?)
    }
}

/// An axis-aligned rectangle: west, south, east, north.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Envelope {
    /// Minimum x.
    pub west: f64,
    /// Minimum y.
    pub south: f64,
    /// Maximum x.
    pub east: f64,
    /// Maximum y.
    pub north: f64,
}

impl Envelope {
    /// Converts a Web-Mercator envelope to longitude/latitude degrees (EPSG:4326).
    pub fn mercator_to_lonlat(&self) -> Envelope {
        let lon = |x: f64| (x / EARTH_RADIUS).to_degrees();
        let lat = |y: f64| (y / EARTH_RADIUS).sinh().atan().to_degrees();
        Envelope {
            west: lon(self.west),
            south: lat(self.south),
            east: lon(self.east),
            north: lat(self.north),
        }
    }

    /// Grows the envelope by `fraction` of its size on every side.
    pub fn grown(&self, fraction: f64) -> Envelope {
        let dx = (self.east - self.west) * fraction;
        let dy = (self.north - self.south) * fraction;
        Envelope {
            west: self.west - dx,
            south: self.south - dy,
            east: self.east + dx,
            north: self.north + dy,
        }
    }
}

/// Longitude/latitude in degrees to Web-Mercator metres, latitude clamped to `±max_lat`.
pub fn lonlat_to_mercator(lon: f64, lat: f64, max_lat: f64) -> (f64, f64) {
    let lat = lat.clamp(-max_lat, max_lat).to_radians();
    (
        EARTH_RADIUS * lon.to_radians(),
        EARTH_RADIUS * (std::f64::consts::FRAC_PI_4 + lat / 2.0).tan().ln(),
    )
}

/// An inclusive range of zoom levels, `min <= max <= MAX_ZOOM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "ZoomBounds")]
pub struct ZoomRange {
    /// Lowest zoom, inclusive.
    pub min: u8,
    /// Highest zoom, inclusive.
    pub max: u8,
}

/// A zoom range as read, before [`ZoomRange::new`] checks it.
#[derive(serde::Deserialize)]
struct ZoomBounds {
    min: u8,
    max: u8,
}

impl TryFrom<ZoomBounds> for ZoomRange {
    type Error = TileError;

    fn try_from(bounds: ZoomBounds) -> Result<Self, TileError> {
        ZoomRange::new(bounds.min, bounds.max)
    }
}

impl ZoomRange {
    /// Builds a range, refusing `min > max` and zooms above [`MAX_ZOOM`].
    pub fn new(min: u8, max: u8) -> Result<Self, TileError> {
        if max > MAX_ZOOM {
            return Err(TileError::ZoomTooHigh(u32::from(max)));
        }
        if min > max {
            return Err(TileError::ZoomRangeReversed { min, max });
        }
        Ok(Self { min, max })
    }

    /// Whether `z` lies in the range.
    pub fn contains(&self, z: u8) -> bool {
        (self.min..=self.max).contains(&z)
    }

    /// The zoom levels of the range, in ascending order.
    pub fn levels(&self) -> std::ops::RangeInclusive<u8> {
        self.min..=self.max
    }
}

impl fmt::Display for ZoomRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

impl FromStr for ZoomRange {
    type Err = TileError;

    /// Parses `N` or `A-B`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |part: &str| -> Result<u8, TileError> {
            let part = part.trim();
            let value: i64 = part.parse().map_err(|_| {
                TileError::Syntax(format!(
                    "`{s}` is not a zoom or zoom range (expected N or A-B, e.g. 0-14)"
                ))
            })?;
            u8::try_from(value)
                .ok()
                .filter(|z| *z <= MAX_ZOOM)
                .ok_or(TileError::ZoomOutOfRange(value))
        };
        match s.split_once('-') {
            Some((a, b)) => ZoomRange::new(parse(a)?, parse(b)?),
            None => {
                let z = parse(s)?;
                ZoomRange::new(z, z)
            }
        }
    }
}

/// A geographic bounding box in degrees; never crosses the antimeridian (west <= east).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BBox {
    /// Western longitude.
    pub west: f64,
    /// Southern latitude.
    pub south: f64,
    /// Eastern longitude.
    pub east: f64,
    /// Northern latitude.
    pub north: f64,
}

impl BBox {
    /// The whole Web-Mercator world.
    pub const WORLD: BBox = BBox {
        west: -180.0,
        south: -MAX_MERCATOR_LAT,
        east: 180.0,
        north: MAX_MERCATOR_LAT,
    };

    /// Builds a bbox, refusing coordinates out of range, west > east and south > north.
    pub fn new(west: f64, south: f64, east: f64, north: f64) -> Result<Self, TileError> {
        Ok(Self::checked(west, south, east, north)?)
    }

    fn checked(west: f64, south: f64, east: f64, north: f64) -> Result<Self, BBoxError> {
        let all = [west, south, east, north];
        if all.iter().any(|v| !v.is_finite()) {
            return Err(BBoxError::NotFinite);
        }
        if !(-180.0..=180.0).contains(&west) || !(-180.0..=180.0).contains(&east) {
            return Err(BBoxError::Longitude { west, east });
        }
        if !(-90.0..=90.0).contains(&south) || !(-90.0..=90.0).contains(&north) {
            return Err(BBoxError::Latitude { south, north });
        }
        if west > east {
            return Err(BBoxError::WestOfEast { west, east });
        }
        if south > north {
            return Err(BBoxError::SouthOfNorth { south, north });
        }
        Ok(Self {
            west,
            south,
            east,
            north,
        })
    }

    /// The tiles of zoom `z` that the bbox touches, edges included.
    pub fn tile_range(&self, z: u8) -> TileRange {
        let n = 1u64 << z;
        let max_index = (n - 1) as f64;
        let column = |lon: f64| {
            ((lon + 180.0) / 360.0 * n as f64)
                .floor()
                .clamp(0.0, max_index) as u32
        };
        let row = |lat: f64| {
            let lat = lat.clamp(-MAX_MERCATOR_LAT, MAX_MERCATOR_LAT).to_radians();
            let y = (1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0;
            (y * n as f64).floor().clamp(0.0, max_index) as u32
        };
        TileRange {
            z,
            min_x: column(self.west),
            max_x: column(self.east),
            min_y: row(self.north),
            max_y: row(self.south),
        }
    }

    /// The centre of the bbox.
    pub fn center(&self) -> (f64, f64) {
        (
            (self.west + self.east) / 2.0,
            (self.south + self.north) / 2.0,
        )
    }
}

impl fmt::Display for BBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{},{}",
            self.west, self.south, self.east, self.north
        )
    }
}

impl FromStr for BBox {
    type Err = TileError;

    /// Parses `W,S,E,N` in degrees.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let values: Result<Vec<f64>, _> = s.split(',').map(|v| v.trim().parse::<f64>()).collect();
        match values.as_deref() {
            Ok([w, so, e, n]) => BBox::new(*w, *so, *e, *n),
            _ => Err(TileError::Syntax(format!(
                "`{s}` is not a bbox (expected four numbers W,S,E,N in degrees)"
            ))),
        }
    }
}

/// The rectangle of tiles of one zoom that a bbox covers, bounds inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileRange {
    /// The zoom level.
    pub z: u8,
    /// Westernmost column.
    pub min_x: u32,
    /// Easternmost column.
    pub max_x: u32,
    /// Northernmost row.
    pub min_y: u32,
    /// Southernmost row.
    pub max_y: u32,
}

impl TileRange {
    /// Whether the tile lies in the range (its zoom must match).
    pub fn contains(&self, tile: TileCoord) -> bool {
        tile.z() == self.z
            && (self.min_x..=self.max_x).contains(&tile.x())
            && (self.min_y..=self.max_y).contains(&tile.y())
    }

    /// How many tiles the range holds.
    pub fn count(&self) -> u64 {
        u64::from(self.max_x - self.min_x + 1) * u64::from(self.max_y - self.min_y + 1)
    }

    /// The tiles of the range, row by row.
    pub fn tiles(&self) -> impl Iterator<Item = TileCoord> + '_ {
        (self.min_y..=self.max_y).flat_map(move |y| {
            (self.min_x..=self.max_x).map(move |x| {
                TileCoord::new(self.z, x, y).expect("a range holds tiles of its zoom")
            })
        })
    }
}

/// Whether a tile lies within a zoom range and the tile ranges of a bbox.
pub fn in_scope(tile: TileCoord, zooms: ZoomRange, bounds: &BBox) -> bool {
    zooms.contains(tile.z()) && bounds.tile_range(tile.z()).contains(tile)
}

/// Longitude/latitude in degrees to Web-Mercator metres, latitude clamped to the Mercator square.
pub fn mercator(lon: f64, lat: f64) -> (f64, f64) {
    lonlat_to_mercator(lon.clamp(-180.0, 180.0), lat, MAX_MERCATOR_LAT)
}

#[cfg(test)]
mod tests;
