//! `agg_tiles_hash`: one digest of every tile an output holds, computed exactly as martin's
//! `mbtiles` crate computes it (`calc_agg_tiles_hash`), so `mbtiles validate --agg-hash check`
//! accepts our MBTiles files and two outputs of any kinds can be compared by one string.
//!
//! It is the MD5 of, for every tile in (zoom, column, TMS row) order, the decimal text of the
//! zoom, the column and the TMS row followed by the tile's stored bytes, with no separators; in
//! upper-case hex, as sqlite-hashes' `md5_concat_hex` writes it. No tiles hash as `md5('')`. The
//! bytes are those stored (gzip where the output stores gzip), so outputs agree exactly when they
//! hold the same bytes at the same tiles.

use futures::StreamExt;
use md5::{Digest, Md5};

use super::read::OutputReader;
use crate::error::{Error, Result};
use crate::tile::TileCoord;

/// The metadata key (MBTiles row, TileJSON field, PMTiles JSON metadata field) holding the hash.
pub const AGG_TILES_HASH_KEY: &str = "agg_tiles_hash";

/// Set in an output's metadata (an MBTiles row; for a tree, by its reader from the stale marker)
/// while tiles changed since the hash was last computed: the hash is pending, not wrong.
pub const HASH_PENDING_KEY: &str = "oar_tiles_hash_pending";

/// Whether metadata, as [`OutputReader::metadata`] reads it, says the hash is pending.
pub fn hash_pending(metadata: &serde_json::Value) -> bool {
    match &metadata[HASH_PENDING_KEY] {
        serde_json::Value::Bool(pending) => *pending,
        serde_json::Value::String(text) => !text.is_empty(),
        _ => false,
    }
}

/// Hashes tiles fed in (zoom, column, TMS row) order; [`hash_order`] sorts them so.
#[derive(Clone, Default)]
pub struct AggHasher {
    md5: Md5,
}

impl AggHasher {
    /// A hasher that has seen no tile.
    pub fn new() -> AggHasher {
        AggHasher::default()
    }

    /// Adds the next tile in hash order with its stored bytes.
    pub fn add(&mut self, tile: TileCoord, data: &[u8]) {
        self.add_row(
            tile.z().into(),
            tile.x().into(),
            tile.tms_row().into(),
            data,
        );
    }

    /// Adds an MBTiles row as SQLite holds it: the numbers are hashed as stored, even in a file
    /// whose rows are no valid tiles, as martin's SQL does.
    pub(crate) fn add_row(&mut self, zoom: i64, column: i64, row: i64, data: &[u8]) {
        self.md5.update(zoom.to_string());
        self.md5.update(column.to_string());
        self.md5.update(row.to_string());
        self.md5.update(data);
    }

    /// The hash, in upper-case hex.
    pub fn finish(self) -> String {
        hex::encode_upper(self.md5.finalize())
    }
}

/// The sort key of the hash's order: zoom, column, TMS row, compared as numbers.
pub fn hash_order(tile: &TileCoord) -> (u8, u32, u32) {
    (tile.z(), tile.x(), tile.tms_row())
}

/// The metadata key (a tree's or prefix's TileJSON) holding the [`TileDigest`].
pub const TILE_DIGEST_KEY: &str = "oar_tiles_digest";

/// A digest of every tile an output holds that a run keeps up to date from the tiles it changes
/// alone, which `agg_tiles_hash` cannot be: that is one MD5 over every tile in order, so a change
/// at zoom 0 means reading every tile after it again. This one is the sum (modulo 2^128) of one
/// term per tile, the MD5 of its address (`z/x/y`, the XYZ row, then `:`) followed by the MD5 of its
/// stored bytes, so a run takes an old tile's term out and puts the new one's in. No tiles digest
/// as 32 zeros; upper-case hex, as the hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TileDigest(u128);

impl TileDigest {
    /// The digest of no tile.
    pub fn new() -> TileDigest {
        TileDigest::default()
    }

    fn term(tile: TileCoord, bytes_md5: &[u8; 16]) -> u128 {
        let mut md5 = Md5::new();
        md5.update(format!("{tile}:"));
        md5.update(bytes_md5);
        u128::from_be_bytes(md5.finalize().into())
    }

    /// Counts `tile` holding bytes whose MD5 is `bytes_md5`.
    pub fn add_md5(&mut self, tile: TileCoord, bytes_md5: &[u8; 16]) {
        self.0 = self.0.wrapping_add(Self::term(tile, bytes_md5));
    }

    /// Takes out `tile` holding bytes whose MD5 is `bytes_md5`.
    pub fn remove_md5(&mut self, tile: TileCoord, bytes_md5: &[u8; 16]) {
        self.0 = self.0.wrapping_sub(Self::term(tile, bytes_md5));
    }

    /// Counts `tile` holding `data`.
    pub fn add(&mut self, tile: TileCoord, data: &[u8]) {
        self.add_md5(tile, &Md5::digest(data).into());
    }

    /// Takes out `tile` holding `data`.
    pub fn remove(&mut self, tile: TileCoord, data: &[u8]) {
        self.remove_md5(tile, &Md5::digest(data).into());
    }

    /// The digest as metadata names it.
    pub fn to_hex(self) -> String {
        hex::encode_upper(self.0.to_be_bytes())
    }

    /// A digest as [`TileDigest::to_hex`] wrote it; `None` for other text.
    pub fn parse(text: &str) -> Option<TileDigest> {
        let bytes: [u8; 16] = hex::decode(text).ok()?.try_into().ok()?;
        Some(TileDigest(u128::from_be_bytes(bytes)))
    }
}

/// Recomputes an output's `agg_tiles_hash` from what its reader lists and reads (in order,
/// through [`OutputReader::read_many`]); fails when a
/// listed tile vanishes before it is read (the output changed meanwhile).
pub async fn agg_tiles_hash(reader: &OutputReader) -> Result<String> {
    let mut tiles: Vec<TileCoord> = reader
        .tile_sizes()
        .await?
        .into_iter()
        .map(|(tile, _)| tile)
        .collect();
    tiles.sort_unstable_by_key(hash_order);
    tiles.dedup();
    let mut reads = reader.read_many(tiles);
    let mut hasher = AggHasher::new();
    while let Some(read) = reads.next().await {
        match read? {
            (tile, Some(data)) => hasher.add(tile, &data),
            (tile, None) => {
                return Err(Error::output(
                    format!("tile {tile}"),
                    "was listed but is gone: the output changed while it was hashed; try again",
                ))
            }
        }
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(text: &str) -> TileCoord {
        text.parse().unwrap()
    }

    #[test]
    fn no_tiles_hash_as_the_md5_of_nothing_in_upper_case() {
        assert_eq!(
            AggHasher::new().finish(),
            "D41D8CD98F00B204E9800998ECF8427E"
        );
    }

    #[test]
    fn tiles_hash_as_their_tms_address_text_followed_by_their_bytes() {
        let mut hasher = AggHasher::new();
        // 3/1/6 in XYZ is TMS row 1; 10/512/300 is TMS row 723.
        hasher.add(tile("3/1/6"), b"ab");
        hasher.add(tile("10/512/300"), b"c");
        let expected = hex::encode_upper(Md5::digest(b"311ab10512723c"));
        assert_eq!(hasher.finish(), expected);
    }

    #[test]
    fn the_digest_takes_a_tile_out_as_it_put_it_in_whatever_the_order() {
        let mut forwards = TileDigest::new();
        forwards.add(tile("3/1/6"), b"ab");
        forwards.add(tile("10/512/300"), b"c");
        let mut backwards = TileDigest::new();
        backwards.add(tile("10/512/300"), b"c");
        backwards.add(tile("3/1/6"), b"old");
        backwards.remove(tile("3/1/6"), b"old");
        backwards.add(tile("3/1/6"), b"ab");
        assert_eq!(forwards, backwards);
        assert_ne!(forwards, TileDigest::new());
        assert_eq!(TileDigest::parse(&forwards.to_hex()), Some(forwards));
        assert_eq!(TileDigest::new().to_hex(), "0".repeat(32));
        assert_eq!(TileDigest::parse("not hex"), None);
    }

    #[test]
    fn the_order_is_numeric_by_zoom_column_then_tms_row() {
        let mut tiles = [tile("10/2/0"), tile("2/3/0"), tile("2/3/3"), tile("1/0/0")];
        tiles.sort_by_key(hash_order);
        let names: Vec<String> = tiles.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["1/0/0", "2/3/3", "2/3/0", "10/2/0"]);
    }
}
