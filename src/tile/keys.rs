//! Tiles packed into one integer: a compact key for sets of tiles, and the walk's order key,
//! lowest zoom first and then along the Z-order curve.

use super::TileCoord;

/// Packs a tile into one integer, for compact sets of tiles.
pub fn tile_key(tile: TileCoord) -> u64 {
    (u64::from(tile.z()) << 58) | (u64::from(tile.x()) << 29) | u64::from(tile.y())
}

/// The tile a [`tile_key`] packs; `None` for a number no tile packs to.
pub fn tile_from_key(key: u64) -> Option<TileCoord> {
    let mask = (1u64 << 29) - 1;
    let z = u8::try_from(key >> 58).ok()?;
    let x = u32::try_from((key >> 29) & mask).ok()?;
    let y = u32::try_from(key & mask).ok()?;
    TileCoord::new(z, x, y).ok()
}

/// A tile's place along a Z-order curve within its zoom: rendering in this order keeps neighbours
/// close in time, so the database finds their rows still in its cache. (The walk order key, which orders
/// the walk, keeps this order within a zoom; the tests check it against this key.)
#[cfg(test)]
pub fn locality_key(tile: TileCoord) -> u64 {
    morton(tile.x(), tile.y())
}

/// Packs a tile into one integer that sorts lowest zoom first, then along the Z-order curve: a
/// walk's queue of millions of tiles holds 8 bytes per tile instead of the 24 of a tuple.
pub fn walk_order_key(tile: TileCoord) -> u64 {
    (u64::from(tile.z()) << 58) | morton(tile.x(), tile.y())
}

/// The tile a [`walk_order_key`] packs.
pub fn tile_from_walk_order_key(key: u64) -> TileCoord {
    let z = (key >> 58) as u8;
    let code = key & ((1u64 << 58) - 1);
    let gather = |v: u64| {
        let mut v = v & 0x5555_5555_5555_5555;
        v = (v | (v >> 1)) & 0x3333_3333_3333_3333;
        v = (v | (v >> 2)) & 0x0f0f_0f0f_0f0f_0f0f;
        v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
        v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
        ((v | (v >> 16)) & 0x0000_0000_ffff_ffff) as u32
    };
    TileCoord::new(z, gather(code), gather(code >> 1))
        .expect("walk order keys are only made from tiles")
}

/// Interleaves the bits of x and y (Z-order).
pub fn morton(x: u32, y: u32) -> u64 {
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
