//! What an output's stored tiles cover: the zooms and the box of the deepest, which outputs
//! declare as their `minzoom`, `maxzoom` and `bounds`.

use super::{BBox, TileCoord, TileRange, ZoomRange};

/// The tiles of the deepest zoom an output holds, as a box: what its `bounds` should claim
/// (`mbtiles summary` reads bounds the same way), rather than the area a seed walked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    /// The deepest zoom seen and the column and row ranges of its tiles.
    deepest: Option<TileRange>,
    /// The shallowest zoom seen.
    shallowest: Option<u8>,
}

impl Coverage {
    /// Counts `tile` in.
    pub fn add(&mut self, tile: TileCoord) {
        self.shallowest = Some(self.shallowest.map_or(tile.z(), |z| z.min(tile.z())));
        let single = TileRange {
            z: tile.z(),
            min_x: tile.x(),
            max_x: tile.x(),
            min_y: tile.y(),
            max_y: tile.y(),
        };
        self.deepest = Some(match self.deepest {
            None => single,
            Some(range) if tile.z() > range.z => single,
            Some(range) if tile.z() < range.z => range,
            Some(range) => TileRange {
                z: range.z,
                min_x: range.min_x.min(tile.x()),
                max_x: range.max_x.max(tile.x()),
                min_y: range.min_y.min(tile.y()),
                max_y: range.max_y.max(tile.y()),
            },
        });
    }

    /// The zooms holding tiles, shallowest to deepest; `None` when no tile was counted.
    pub fn zooms(&self) -> Option<ZoomRange> {
        ZoomRange::new(self.shallowest?, self.deepest?.z).ok()
    }

    /// The box the deepest tiles cover, within `within` (the area the run was given); `None`
    /// when no tile was counted.
    pub fn bbox(&self, within: &BBox) -> Option<BBox> {
        let range = self.deepest?;
        let n = (1u64 << range.z) as f64;
        let lon = |x: u32| f64::from(x) / n * 360.0 - 180.0;
        let lat = |y: u32| {
            (std::f64::consts::PI * (1.0 - 2.0 * f64::from(y) / n))
                .sinh()
                .atan()
                .to_degrees()
        };
        // Rounded outwards to 1e-7 degrees, the precision PMTiles headers keep, so a tile on the
        // edge stays inside the bounds an archive declares.
        let down = |v: f64| (v * 1e7).floor() / 1e7;
        let up = |v: f64| (v * 1e7).ceil() / 1e7;
        BBox::new(
            down(lon(range.min_x)).max(within.west),
            down(lat(range.max_y + 1)).max(within.south),
            up(lon(range.max_x + 1)).min(within.east),
            up(lat(range.min_y)).min(within.north),
        )
        .ok()
    }
}
