//! How a tileset's tiles are stored beyond where: extension, compression, `Cache-Control`, and
//! PMTiles archives published in versions.

use std::time::Duration;

/// How a tileset's tiles are stored, beyond where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSettings {
    /// File extension of directory and S3 tiles.
    pub tile_extension: String,
    /// Whether directory and S3 tiles are gzip-compressed (MBTiles tiles always are).
    pub compress: bool,
    /// Gzip level, 1 (fastest) to 9 (smallest).
    pub compression_level: u32,
    /// `Cache-Control` of S3 tile objects.
    pub cache_control: String,
    /// `Cache-Control` of S3 tile objects at some zooms (`[tileset.freshness.cache_control]`),
    /// instead of `cache_control`; the ranges do not overlap.
    pub cache_control_by_zoom: Vec<(crate::tile::ZoomRange, String)>,
    /// Tile URL template for TileJSON; default relative `{z}/{x}/{y}.ext`. With
    /// `pmtiles_versions`, the URL of the folder serving the archive's versions instead.
    pub tiles_url: Option<String>,
    /// A PMTiles archive is also published under content-derived names with a pointer to the
    /// current one (`pmtiles_versions = true`); `None` when it is not.
    pub pmtiles_versions: Option<PmtilesVersions>,
    /// The share of a remote PMTiles archive's tile data that no directory references above which
    /// a run writes it whole and clustered again, instead of updating it in place
    /// (`pmtiles_compact_above`), in thousandths (a whole number, so settings compare exactly).
    pub pmtiles_compact_above_per_mille: u32,
}

impl OutputSettings {
    /// The `Cache-Control` of a tile object at `zoom`.
    pub fn cache_control_at(&self, zoom: u8) -> &str {
        self.cache_control_by_zoom
            .iter()
            .find(|(zooms, _)| zooms.contains(zoom))
            .map_or(self.cache_control.as_str(), |(_, value)| value.as_str())
    }
}

/// How a PMTiles archive is published in versions: `NAME.HASH.pmtiles` beside `NAME.pmtiles`, and
/// the pointer `NAME.latest.json` (with the TileJSON `NAME.json`) naming the current one, so a
/// client behind a CDN never reads ranges of one archive with another's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmtilesVersions {
    /// How long a version stays after the pointer moved on from it (`pmtiles_keep_versions`).
    pub keep: Duration,
}

/// `Cache-Control` of a versioned archive's pointer documents (`NAME.latest.json`, `NAME.json`):
/// short, so that clients and CDNs learn of a new version within a minute, without a purge.
pub const POINTER_CACHE_CONTROL: &str = "public, max-age=60";

/// `Cache-Control` of a published version: its name changes whenever its bytes do, so a cache may
/// keep it as long as it likes.
pub const VERSION_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// How long a superseded version stays unless the tileset says (`pmtiles_keep_versions`): as long
/// as a cache may still hand out the pointer that named it (its max-age plus its
/// stale-while-revalidate), plus an hour for a map that read that pointer to go on reading ranges.
pub fn default_keep_versions() -> Duration {
    cache_lifetime(POINTER_CACHE_CONTROL) + Duration::from_secs(3600)
}

/// How long caches may serve a response with this `Cache-Control`: its `max-age` plus its
/// `stale-while-revalidate`, each 0 when absent.
fn cache_lifetime(cache_control: &str) -> Duration {
    let seconds = |directive: &str| {
        cache_control
            .split(',')
            .filter_map(|part| part.trim().split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case(directive))
            .and_then(|(_, value)| value.trim().trim_matches('"').parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_secs(seconds("max-age") + seconds("stale-while-revalidate"))
}

impl Default for OutputSettings {
    fn default() -> Self {
        Self {
            tile_extension: "pbf".into(),
            compress: true,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            cache_control: DEFAULT_CACHE_CONTROL.into(),
            cache_control_by_zoom: Vec::new(),
            tiles_url: None,
            pmtiles_versions: None,
            pmtiles_compact_above_per_mille: (DEFAULT_PMTILES_COMPACT_ABOVE * 1000.0) as u32,
        }
    }
}

/// The share of a remote PMTiles archive's tile data left unreferenced by updates in place above
/// which the next run writes it whole and clustered again, unless the tileset sets
/// `pmtiles_compact_above`.
pub const DEFAULT_PMTILES_COMPACT_ABOVE: f64 = 0.3;

/// Gzip level of stored tiles unless the tileset sets `compression_level`.
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 3;

/// CDNs keep a tile a day (`s-maxage`, cut short by purges); browsers revalidate it with its `ETag`
/// (`max-age=0`), so an open map's refresh is never answered from a cache no purge reaches.
pub const DEFAULT_CACHE_CONTROL: &str = "public, max-age=0, s-maxage=86400";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superseded_versions_outlive_every_cached_pointer_by_an_hour() {
        assert_eq!(default_keep_versions(), Duration::from_secs(60 + 3600));
        assert_eq!(
            cache_lifetime("public, max-age=3600, stale-while-revalidate=86400"),
            Duration::from_secs(3600 + 86400)
        );
        assert_eq!(cache_lifetime("no-cache"), Duration::ZERO);
    }
}
