//! Tile objects under a prefix: their keys, and the listing of what a prefix holds.

use crate::store::{key_under, ObjectStore, StoreError};
use crate::tile::TileCoord;

/// The key of a tile under a prefix.
pub fn tile_object_key(prefix: &str, tile: TileCoord, extension: &str) -> String {
    let path = format!("{}/{}/{}.{extension}", tile.z(), tile.x(), tile.y());
    if prefix.is_empty() {
        path
    } else {
        format!("{prefix}/{path}")
    }
}

/// The tile a key names, if it is a tile key under the prefix.
fn parse_tile_key(prefix: &str, key: &str, extension: &str) -> Option<TileCoord> {
    let rest = if prefix.is_empty() {
        key
    } else {
        key.strip_prefix(prefix)?.strip_prefix('/')?
    };
    let rest = rest.strip_suffix(extension)?.strip_suffix('.')?;
    rest.parse().ok()
}

/// A tile object a listing found: the tile, its MD5 where the listing tells it, its size.
pub type ListedTile = (TileCoord, Option<[u8; 16]>, u64);

/// Lists the tile objects under a prefix with their MD5s (where the store's listing tells them) and
/// sizes.
pub async fn list_tiles(
    store: &dyn ObjectStore,
    prefix: &str,
    extension: &str,
) -> Result<Vec<ListedTile>, StoreError> {
    let folder = key_under(prefix, "");
    Ok(store
        .list(&folder, false)
        .await?
        .into_iter()
        .filter_map(|object| {
            let tile = parse_tile_key(prefix, &object.key, extension)?;
            Some((tile, object.md5, object.size))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_keys_round_trip_under_a_prefix() {
        let tile = TileCoord::new(14, 13105, 7032).unwrap();
        assert_eq!(
            tile_object_key("tiles/v1", tile, "pbf"),
            "tiles/v1/14/13105/7032.pbf"
        );
        assert_eq!(tile_object_key("", tile, "pbf"), "14/13105/7032.pbf");
        assert_eq!(
            parse_tile_key("tiles/v1", "tiles/v1/14/13105/7032.pbf", "pbf"),
            Some(tile)
        );
        assert_eq!(parse_tile_key("", "14/13105/7032.pbf", "pbf"), Some(tile));
        assert_eq!(
            parse_tile_key("tiles/v1", "tiles/v1/tiles.json", "pbf"),
            None
        );
        assert_eq!(parse_tile_key("tiles", "tiles2/1/0/0.pbf", "pbf"), None);
    }
}
