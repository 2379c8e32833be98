//! The `[[tileset]]` and `[[tileset.layer]]` tables: what each pyramid holds and how its layers are
//! read, checked key by key.

use std::path::Path;

use super::output::{default_keep_versions, OutputSettings, OutputTarget, PmtilesVersions};
use crate::tile::{BBox, TileError, ZoomRange, MAX_ZOOM};

mod layer;
use layer::resolve_layer;
pub use layer::{
    breakdown_property, fetch_margin, ClusterConfig, ClusterPosition, Generalisation, LayerConfig,
    Partition, CLUSTER_PROPERTIES,
};
mod raw;
pub(super) use raw::RawTileset;
use raw::{RawFeed, RawFreshness};

/// What is wrong with a `[[tileset]]` table or one of its layers, in one line; the config's loader
/// places it at the table's line.
#[derive(Debug, thiserror::Error)]
pub(super) enum Problem {
    /// A key's value that cannot be used, in words.
    #[error("{0}")]
    Key(String),
    /// Zooms or a bbox the tile module refuses.
    #[error(transparent)]
    Tile(#[from] TileError),
    /// A `pmtiles_keep_versions` that is not a duration.
    #[error("pmtiles_keep_versions `{text}` is not a duration like \"2h\" ({source})")]
    KeepVersions {
        /// The value as written.
        text: String,
        /// Why it does not parse.
        #[source]
        source: humantime::DurationError,
    },
    /// A zoom range of `[tileset.freshness.cache_control]` that does not parse.
    #[error("freshness.cache_control: {0}")]
    CacheControlZooms(#[source] TileError),
    /// A problem inside a named table: the tileset's, a layer's.
    #[error("{table}: {problem}")]
    In {
        /// The table: ``tileset `facilities` ``, ``layer `sites` ``.
        table: String,
        /// What is wrong in it.
        #[source]
        problem: Box<Problem>,
    },
}

impl Problem {
    /// The problem as found in `table`.
    fn within(self, table: &str) -> Problem {
        Problem::In {
            table: table.to_string(),
            problem: Box::new(self),
        }
    }
}

impl From<&str> for Problem {
    fn from(message: &str) -> Self {
        Problem::Key(message.to_string())
    }
}

/// Segments a changes feed keeps unless the tileset says (`retention`).
pub const DEFAULT_FEED_RETENTION: u64 = 1000;
/// Seconds browsers and CDNs may keep a feed's head unless the tileset says (`head_max_age`).
pub const DEFAULT_FEED_HEAD_MAX_AGE: u64 = 1;

/// `[tileset.feed]`: the output publishes the tiles its runs changed, once its CDNs serve them
/// anew, for open maps to refresh (`coordination::feed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// Segments kept; a client further behind reloads every tile.
    pub retention: u64,
    /// The head's `Cache-Control`.
    pub head_cache_control: String,
    /// Tiles are listed as soon as the origin holds them, each segment with a version that
    /// following maps ask the tiles with (`?v=`), rather than once every CDN purged them.
    pub versioned: bool,
}

/// How long `watch` defers low-zoom tiles unless the tileset says (`defer_seconds`).
pub const DEFAULT_DEFER: std::time::Duration = std::time::Duration::from_secs(60);

/// `[tileset.freshness]`: which zooms `watch` refreshes at its own pace rather than every cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Tiles at zooms below this are rendered by `watch` at most every `defer`, coalesced.
    pub defer_below_zoom: u8,
    /// How long a deferred tile may wait for its render.
    pub defer: std::time::Duration,
}

/// Default tile size budget: 500 KiB stored (compressed), what map clients load without strain.
pub const DEFAULT_SIZE_BUDGET: u64 = 500 * 1024;

/// Dirty tiles a reseed lists by default: about 100 MB while they are gathered.
pub const DEFAULT_LISTED_TILES: usize = 2_000_000;

/// The tileset's `listed_tiles`: at least one.
fn listed_tiles(raw: Option<u64>) -> Result<usize, Problem> {
    match raw {
        None => Ok(DEFAULT_LISTED_TILES),
        Some(0) => Err("listed_tiles must be at least 1".into()),
        Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
    }
}

/// One `[[tileset]]`: a pyramid of tiles written to one output.
#[derive(Debug, Clone)]
pub struct TilesetConfig {
    /// Name used on the command line (`--tileset`) and in metadata.
    pub name: String,
    /// Output location, already resolved against the config file's directory.
    pub output: Option<String>,
    /// Free text for the output's metadata.
    pub description: Option<String>,
    /// Attribution for the output's metadata.
    pub attribution: Option<String>,
    /// Default zoom range.
    pub zooms: ZoomRange,
    /// Default area.
    pub bbox: BBox,
    /// Tile extent in MVT units.
    pub extent: u32,
    /// Buffer around each tile in MVT units.
    pub buffer: u32,
    /// How directory and S3 outputs store tiles.
    pub output_settings: OutputSettings,
    /// Stored bytes above which a tile is reported (or, with `--strict-size`, fails the job).
    pub size_budget: u64,
    /// How many dirty tiles a reseed lists at most; past that it lists those above a zoom and
    /// walks subtrees below it, so what it holds stays bounded.
    pub listed_tiles: usize,
    /// The layers each tile holds.
    pub layers: Vec<LayerConfig>,
    /// A column (or array column) whose every value gets a pyramid of its own, with only its rows.
    pub partition_by: Option<String>,
    /// The caches purged of the tiles runs change (`[[tileset.cdn]]`).
    pub cdn: Vec<super::cdn::CdnConfig>,
    /// Low zooms `watch` refreshes at most every so often (`[tileset.freshness]`).
    pub freshness: Option<Freshness>,
    /// The changes feed open maps follow (`[tileset.feed]`).
    pub feed: Option<Feed>,
}

/// A zoom key's value, `default` when absent.
fn zoom(value: Option<u32>, default: u8, key: &str) -> Result<u8, Problem> {
    match value {
        None => Ok(default),
        Some(z) if z <= u32::from(MAX_ZOOM) => Ok(z as u8),
        Some(z) => Err(Problem::Key(format!("{key} {z} is outside 0..={MAX_ZOOM}"))),
    }
}

pub(super) fn resolve_tileset(
    mut raw: RawTileset,
    base_dir: &Path,
) -> Result<TilesetConfig, Problem> {
    let name = raw.name.trim().to_string();
    if name.is_empty() {
        return Err("tileset name is empty".into());
    }
    let in_tileset = format!("tileset `{name}`");
    let context = |problem: Problem| problem.within(&in_tileset);
    let refuse = |message: String| context(Problem::Key(message));
    let zooms = ZoomRange::new(
        zoom(raw.minzoom, 0, "minzoom").map_err(context)?,
        zoom(raw.maxzoom, 14, "maxzoom").map_err(context)?,
    )
    .map_err(|e| context(e.into()))?;
    let bbox = match raw.bbox.as_deref() {
        None => BBox::WORLD,
        Some([w, s, e, n]) => BBox::new(*w, *s, *e, *n).map_err(|e| context(e.into()))?,
        Some(_) => {
            return Err(context(
                "bbox must be four numbers [west, south, east, north]".into(),
            ))
        }
    };
    let extent = raw.extent.unwrap_or(4096);
    if !(256..=65536).contains(&extent) || !extent.is_power_of_two() {
        return Err(refuse(format!(
            "extent {extent} must be a power of two in 256..=65536"
        )));
    }
    let buffer = raw.buffer.unwrap_or(64);
    if buffer > extent / 2 {
        return Err(refuse(format!(
            "buffer {buffer} must not exceed half the extent ({})",
            extent / 2
        )));
    }
    if raw.layer.is_empty() {
        return Err(context("no [[tileset.layer]] is defined".into()));
    }
    let mut layers: Vec<LayerConfig> = Vec::new();
    for layer in std::mem::take(&mut raw.layer) {
        let layer = resolve_layer(layer.into_inner(), zooms, extent).map_err(context)?;
        if layers.iter().any(|l| l.name == layer.name) {
            return Err(refuse(format!("layer `{}` is defined twice", layer.name)));
        }
        layers.push(layer);
    }
    let partition_by = match raw.partition_by.take() {
        Some(column) if column.trim().is_empty() => {
            return Err(context("partition_by is empty".into()))
        }
        Some(column) => {
            if let Some(layer) = layers.iter().find(|l| l.geometry_column == column) {
                return Err(refuse(format!(
                    "partition_by `{column}` is the geometry column of layer `{}`",
                    layer.name
                )));
            }
            Some(column)
        }
        None => None,
    };
    let freshness = resolve_freshness(raw.freshness.as_ref(), zooms).map_err(context)?;
    let feed = resolve_feed(raw.feed.as_ref()).map_err(context)?;
    let output_settings = resolve_output_settings(&mut raw).map_err(context)?;
    let output = raw.output.map(|output| resolve_output(&output, base_dir));
    if let (Some(_), Some(output)) = (output_settings.pmtiles_versions, &output) {
        // An output the config cannot parse is the job's to report, with --output's own errors.
        if let Ok(target) = OutputTarget::parse(output) {
            if !target.is_pmtiles() {
                return Err(refuse(format!(
                    "pmtiles_versions and pmtiles_keep_versions apply to PMTiles outputs; \
                     output `{output}` is {}",
                    target.describe()
                )));
            }
        }
    }
    let listed_tiles = listed_tiles(raw.listed_tiles).map_err(context)?;
    Ok(TilesetConfig {
        name,
        output,
        description: raw.description,
        attribution: raw.attribution,
        zooms,
        bbox,
        extent,
        buffer,
        output_settings,
        size_budget: raw.size_budget.unwrap_or(DEFAULT_SIZE_BUDGET),
        listed_tiles,
        layers,
        partition_by,
        cdn: Vec::new(),
        freshness,
        feed,
    })
}

/// `[tileset.feed]`, checked.
fn resolve_feed(raw: Option<&RawFeed>) -> Result<Option<Feed>, Problem> {
    let Some(raw) = raw else { return Ok(None) };
    let retention = raw.retention.unwrap_or(DEFAULT_FEED_RETENTION);
    if retention == 0 {
        return Err("feed: retention must be at least 1 segment".into());
    }
    let max_age = raw.head_max_age.unwrap_or(DEFAULT_FEED_HEAD_MAX_AGE);
    Ok(Some(Feed {
        retention,
        head_cache_control: format!("public, max-age={max_age}"),
        versioned: raw.versioned.unwrap_or(false),
    }))
}

/// `[tileset.freshness]`'s deferral, checked against the tileset's zooms.
fn resolve_freshness(
    raw: Option<&RawFreshness>,
    zooms: ZoomRange,
) -> Result<Option<Freshness>, Problem> {
    let Some(raw) = raw else { return Ok(None) };
    let Some(below) = raw.defer_below_zoom else {
        if raw.defer_seconds.is_some() {
            return Err("freshness: defer_seconds needs defer_below_zoom".into());
        }
        return Ok(None);
    };
    if below > u32::from(zooms.max) {
        return Err(Problem::Key(format!(
            "freshness: defer_below_zoom {below} would defer every zoom (the tileset's deepest is {}):              the change's own tiles must stay in each cycle",
            zooms.max
        )));
    }
    let defer = raw
        .defer_seconds
        .map_or(DEFAULT_DEFER, std::time::Duration::from_secs);
    if defer.is_zero() {
        return Err("freshness: defer_seconds must be at least 1".into());
    }
    Ok(Some(Freshness {
        defer_below_zoom: below as u8,
        defer,
    }))
}

/// `[tileset.freshness.cache_control]`: zoom or zoom range → `Cache-Control`, ranges apart.
fn resolve_cache_control_by_zoom(
    raw: Option<&RawFreshness>,
) -> Result<Vec<(ZoomRange, String)>, Problem> {
    let mut by_zoom: Vec<(ZoomRange, String)> = Vec::new();
    for (zooms, value) in raw.iter().flat_map(|raw| &raw.cache_control) {
        let range: ZoomRange = zooms.parse().map_err(Problem::CacheControlZooms)?;
        if value.chars().any(|c| c.is_control()) {
            return Err(Problem::Key(format!(
                "freshness.cache_control `{zooms}` must be one line"
            )));
        }
        if let Some((other, _)) = by_zoom
            .iter()
            .find(|(other, _)| other.min <= range.max && range.min <= other.max)
        {
            return Err(Problem::Key(format!(
                "freshness.cache_control: zooms `{zooms}` overlap zooms {other}"
            )));
        }
        by_zoom.push((range, value.clone()));
    }
    Ok(by_zoom)
}

/// A TileJSON tile URL must be absolute: MapLibre GL JS resolves a relative one against the page
/// that shows the map, not against the TileJSON's own address, and then finds no tiles.
fn check_tiles_url(url: &str) -> Result<(), Problem> {
    let absolute = url.starts_with("https://") || url.starts_with("http://");
    if !absolute {
        return Err(Problem::Key(format!(
            "tiles_url `{url}` must be an absolute URL such as \
             \"https://tiles.example.org/facilities/{{z}}/{{x}}/{{y}}.pbf\": map clients resolve a \
             relative one against their page, not against tiles.json"
        )));
    }
    for part in ["{z}", "{x}", "{y}"] {
        if !url.contains(part) {
            return Err(Problem::Key(format!(
                "tiles_url `{url}` has no {part} placeholder"
            )));
        }
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Problem::Key(format!(
            "tiles_url `{url}` must not contain spaces"
        )));
    }
    Ok(())
}

/// Relative file outputs are taken relative to the config file, so cron jobs need not `cd` first.
fn resolve_output(output: &str, base_dir: &Path) -> String {
    let is_url = output.contains("://");
    let (prefix, path) = match output.strip_prefix("dir:") {
        Some(rest) => ("dir:", rest),
        None => ("", output),
    };
    if is_url || Path::new(path).is_absolute() || base_dir.as_os_str().is_empty() {
        return output.to_string();
    }
    format!("{prefix}{}", base_dir.join(path).display())
}

/// How directory and S3 tiles are stored, and the TileJSON tile URL.
fn resolve_output_settings(raw: &mut RawTileset) -> Result<OutputSettings, Problem> {
    let defaults = OutputSettings::default();
    let tile_extension = raw.tile_extension.take().unwrap_or(defaults.tile_extension);
    if tile_extension.is_empty()
        || !tile_extension
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.')
    {
        return Err(Problem::Key(format!(
            "tile_extension `{tile_extension}` must be letters and digits, like \"pbf\""
        )));
    }
    let cache_control = raw.cache_control.take().unwrap_or(defaults.cache_control);
    if cache_control.chars().any(|c| c.is_control()) {
        return Err("cache_control must be one line".into());
    }
    let compression_level = raw.compression_level.unwrap_or(defaults.compression_level);
    if !(1..=9).contains(&compression_level) {
        return Err(Problem::Key(format!(
            "compression_level must be 1 (fastest) to 9 (smallest), got {compression_level}"
        )));
    }
    let pmtiles_versions = resolve_pmtiles_versions(raw)?;
    let pmtiles_compact_above = raw
        .pmtiles_compact_above
        .unwrap_or(f64::from(defaults.pmtiles_compact_above_per_mille) / 1000.0);
    if !(0.0..=1.0).contains(&pmtiles_compact_above) {
        return Err(Problem::Key(format!(
            "pmtiles_compact_above must be a share from 0 to 1 (0.3 compacts when 30 % of the \
             archive's tile data is unreferenced), got {pmtiles_compact_above}"
        )));
    }
    match (&raw.tiles_url, pmtiles_versions) {
        (Some(url), None) => check_tiles_url(url)?,
        (Some(url), Some(_)) => check_folder_url(url)?,
        (None, _) => {}
    }
    Ok(OutputSettings {
        tile_extension,
        compress: raw.compress.unwrap_or(defaults.compress),
        compression_level,
        cache_control,
        cache_control_by_zoom: resolve_cache_control_by_zoom(raw.freshness.as_ref())?,
        tiles_url: raw.tiles_url.take(),
        pmtiles_versions,
        pmtiles_compact_above_per_mille: (pmtiles_compact_above * 1000.0).round() as u32,
    })
}

/// `pmtiles_versions` and how long superseded versions stay (`pmtiles_keep_versions`).
fn resolve_pmtiles_versions(raw: &RawTileset) -> Result<Option<PmtilesVersions>, Problem> {
    let keep = match &raw.pmtiles_keep_versions {
        None => default_keep_versions(),
        Some(text) => humantime::parse_duration(text).map_err(|source| Problem::KeepVersions {
            text: text.clone(),
            source,
        })?,
    };
    match raw.pmtiles_versions {
        Some(true) => Ok(Some(PmtilesVersions { keep })),
        _ if raw.pmtiles_keep_versions.is_some() => {
            Err("pmtiles_keep_versions needs pmtiles_versions = true".into())
        }
        _ => Ok(None),
    }
}

/// With `pmtiles_versions`, `tiles_url` is where the archive's folder is served: TileJSON names
/// `pmtiles://URL/NAME.HASH.pmtiles/{z}/{x}/{y}`, which map clients resolve against their page when
/// relative.
fn check_folder_url(url: &str) -> Result<(), Problem> {
    let absolute = url.starts_with("https://") || url.starts_with("http://");
    if !absolute
        || url.contains(['{', '}'])
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Problem::Key(format!(
            "tiles_url `{url}`: with pmtiles_versions it is the absolute URL of the folder that \
             serves the archive's versions, such as \"https://tiles.example.org/maps\", without \
             {{z}}/{{x}}/{{y}}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
