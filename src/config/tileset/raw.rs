//! The `[[tileset]]` table as written, with what each key means: the config's schema and
//! reference are generated from these declarations.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::layer::RawLayer;
use super::{
    DEFAULT_DEFER, DEFAULT_FEED_HEAD_MAX_AGE, DEFAULT_FEED_RETENTION, DEFAULT_LISTED_TILES,
    DEFAULT_SIZE_BUDGET,
};
use crate::config::cdn::RawCdn;
use crate::config::output::{
    DEFAULT_CACHE_CONTROL, DEFAULT_COMPRESSION_LEVEL, DEFAULT_PMTILES_COMPACT_ABOVE,
};

/// One pyramid of tiles written to one output; `oar-tiles seed --tileset NAME` picks one.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Tileset")]
#[schemars(transform = |schema: &mut schemars::Schema| crate::config::schema::require(schema, "layer"))]
pub(in crate::config) struct RawTileset {
    /// Name used by `--tileset` and written to the output's metadata; unique in the file.
    pub(super) name: String,
    /// Where tiles go: `path.mbtiles` (an MBTiles 1.3 file), `path.pmtiles` (a PMTiles v3
    /// archive), `dir:PATH` or `PATH/` (a `z/x/y` tree with `tiles.json`), `s3://bucket/prefix`,
    /// `az://container/prefix` or `gs://bucket/prefix` (tile objects), `s3://bucket/key.pmtiles`
    /// (one PMTiles object; `az://` and `gs://` alike).
    /// Relative paths are relative to the config file. `--output` overrides it.
    pub(super) output: Option<String>,
    /// Free text for the output's metadata.
    pub(super) description: Option<String>,
    /// Attribution for the output's metadata.
    pub(super) attribution: Option<String>,
    /// Shallowest zoom rendered when `--zoom` is not given.
    #[schemars(extend("default" = 0), range(max = 24))]
    pub(super) minzoom: Option<u32>,
    /// Deepest zoom rendered when `--zoom` is not given (at most 24).
    #[schemars(extend("default" = 14), range(max = 24))]
    pub(super) maxzoom: Option<u32>,
    /// Area rendered when `--bbox` is not given: `[west, south, east, north]` in degrees, not
    /// crossing the antimeridian. Default: the whole Web-Mercator world.
    #[schemars(length(equal = 4))]
    pub(super) bbox: Option<Vec<f64>>,
    /// Tile extent in MVT units: a power of two from 256 to 65536.
    #[schemars(extend("default" = 4096, "enum" = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]))]
    pub(super) extent: Option<u32>,
    /// Buffer around each tile in MVT units (at most half the extent): features within it are
    /// repeated in the neighbouring tile so symbols are not cut at tile edges.
    #[schemars(extend("default" = 64))]
    pub(super) buffer: Option<u32>,
    /// File extension of directory and object-store tiles (letters and digits).
    #[schemars(extend("default" = "pbf"), regex(pattern = r"^[A-Za-z0-9.]+$"))]
    pub(super) tile_extension: Option<String>,
    /// Whether directory and object-store tiles are gzip-compressed (MBTiles tiles always are):
    /// turn it off only for web servers that cannot send `Content-Encoding: gzip`.
    #[schemars(extend("default" = true))]
    pub(super) compress: Option<bool>,
    /// Gzip level of stored tiles, 1 (fastest) to 9 (smallest).
    #[schemars(extend("default" = DEFAULT_COMPRESSION_LEVEL))]
    pub(super) compression_level: Option<u32>,
    /// `Cache-Control` of object-store objects (tiles, `tiles.json`, PMTiles): the CDN keeps a tile
    /// a day, a browser revalidates it each time, so an open map told a tile changed gets the new
    /// one. Use "public, max-age=31536000, immutable" only with a new prefix per seed.
    #[schemars(extend("default" = DEFAULT_CACHE_CONTROL))]
    pub(super) cache_control: Option<String>,
    /// The absolute tile URL `tiles.json` names, with `{z}`, `{x}` and `{y}`
    /// ("https://tiles.example.org/facilities/{z}/{x}/{y}.pbf"). Default for object stores: under
    /// `[store] public_url` or the bucket's address; set it for a directory. With
    /// `pmtiles_versions`: the URL of the folder serving the archive's versions instead.
    #[schemars(regex(pattern = r"^https?://\S*$"))]
    pub(super) tiles_url: Option<String>,
    /// PMTiles outputs only: also publish each archive under a name derived from its bytes
    /// (`NAME.HASH.pmtiles`) and switch the pointer `NAME.latest.json` and the TileJSON `NAME.json`
    /// to it, so a map behind a CDN never reads ranges of a new archive with an old header.
    #[schemars(extend("default" = false))]
    pub(super) pmtiles_versions: Option<bool>,
    /// How long a superseded version stays for maps that read an older pointer (a duration; needs
    /// `pmtiles_versions`). Default: the pointer's max-age plus an hour.
    #[schemars(extend("default" = "1h 1m"))]
    pub(super) pmtiles_keep_versions: Option<String>,
    /// PMTiles outputs in a store that rebuilds objects from what it holds (S3, GCS): a reseed
    /// writes the changed tiles before the archive's tile data (on GCS, before the whole old
    /// archive), kept where it is, and sends only them and the directories; when the share of tile
    /// data no directory references passes this (0 to 1), the next run writes the archive whole
    /// and clustered again.
    #[schemars(extend("default" = DEFAULT_PMTILES_COMPACT_ABOVE))]
    pub(super) pmtiles_compact_above: Option<f64>,
    /// Stored (compressed) bytes above which a tile is listed in the summary; `--strict-size`
    /// makes it an error.
    #[schemars(extend("default" = DEFAULT_SIZE_BUDGET))]
    pub(super) size_budget: Option<u64>,
    /// Dirty tiles a reseed lists at most (at least 1); past that it lists those above a zoom
    /// and walks subtrees below it, so what it holds stays bounded.
    #[schemars(extend("default" = DEFAULT_LISTED_TILES))]
    pub(super) listed_tiles: Option<u64>,
    /// One pyramid per value of this column (or array column), each with only its rows, written
    /// beside the output under the value's escaped name, with an index `partitions.json`; every
    /// layer's table must have the column. Default: off.
    pub(super) partition_by: Option<String>,
    /// How fresh each zoom is kept. Default: off, every `watch` cycle renders every zoom.
    pub(super) freshness: Option<RawFreshness>,
    /// A changes feed open maps follow to refresh changed tiles in place. Default: off.
    pub(super) feed: Option<RawFeed>,
    /// One `[[tileset.layer]]` per MVT layer in each tile; at least one.
    #[serde(default)]
    #[schemars(with = "Vec<RawLayer>", length(min = 1))]
    pub(super) layer: Vec<Spanned<RawLayer>>,
    /// Caches in front of the output that `seed` and `watch` purge of the tiles they change
    /// (repeatable). Default: none.
    // Checked apart from the rest by `cdn::resolve_cdns`, which reports each table's own line.
    #[serde(default)]
    #[schemars(with = "Vec<RawCdn>")]
    pub(in crate::config) cdn: Vec<Spanned<RawCdn>>,
}

/// How fresh each zoom is kept: a change dirties one tile per zoom and the low ones hold most of
/// the rows, so `watch` may render the low zooms' tiles less often, all changes since coalesced.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Freshness")]
pub(super) struct RawFreshness {
    /// `watch` renders the tiles at zooms below this one at most every `defer_seconds`, and keeps
    /// them noted in the output's outbox meanwhile; `seed --dirty` renders whatever is noted.
    pub(super) defer_below_zoom: Option<u32>,
    /// How long a deferred tile may wait for its render, in seconds (needs `defer_below_zoom`).
    #[schemars(extend("default" = DEFAULT_DEFER.as_secs()))]
    pub(super) defer_seconds: Option<u64>,
    /// `Cache-Control` of object-store tiles per zoom ("8") or zoom range ("0-8"), instead of
    /// `cache_control`; the ranges must not overlap.
    #[serde(default)]
    pub(super) cache_control: BTreeMap<String, String>,
}

/// A changes feed open maps follow: numbered segments and a head in `changes/` inside a tree or
/// prefix (`NAME.changes/` beside a file), published after the CDNs took the same changes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Feed")]
pub(super) struct RawFeed {
    /// Segments kept (at least 1); a client further behind reloads every tile.
    #[schemars(extend("default" = DEFAULT_FEED_RETENTION))]
    pub(super) retention: Option<u64>,
    /// Seconds browsers and CDNs may keep the feed's head.
    #[schemars(extend("default" = DEFAULT_FEED_HEAD_MAX_AGE))]
    pub(super) head_max_age: Option<u64>,
    /// List each tile as soon as the origin holds its new bytes, with a version that maps
    /// following the feed put in the tile's query string (`?v=`), instead of once every CDN
    /// purged it; every CDN in front must key its cache on the query string.
    #[schemars(extend("default" = false))]
    pub(super) versioned: Option<bool>,
}
