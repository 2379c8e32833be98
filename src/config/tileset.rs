//! The `[[tileset]]` and `[[tileset.layer]]` tables: what each pyramid holds and how its layers are
//! read, checked key by key.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::output::{default_keep_versions, OutputSettings, OutputTarget, PmtilesVersions};
use crate::tile::{BBox, TileError, ZoomRange, MAX_ZOOM};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTileset {
    name: String,
    output: Option<String>,
    description: Option<String>,
    attribution: Option<String>,
    minzoom: Option<u32>,
    maxzoom: Option<u32>,
    bbox: Option<Vec<f64>>,
    extent: Option<u32>,
    buffer: Option<u32>,
    tile_extension: Option<String>,
    compress: Option<bool>,
    compression_level: Option<u32>,
    cache_control: Option<String>,
    tiles_url: Option<String>,
    pmtiles_versions: Option<bool>,
    pmtiles_keep_versions: Option<String>,
    size_budget: Option<u64>,
    listed_tiles: Option<u64>,
    partition_by: Option<String>,
    freshness: Option<RawFreshness>,
    feed: Option<RawFeed>,
    #[serde(default)]
    layer: Vec<Spanned<RawLayer>>,
    /// Checked apart from the rest by `cdn::resolve_cdns`, which reports each table's own line.
    #[serde(default)]
    pub(super) cdn: Vec<Spanned<super::cdn::RawCdn>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFreshness {
    defer_below_zoom: Option<u32>,
    defer_seconds: Option<u64>,
    #[serde(default)]
    cache_control: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    retention: Option<u64>,
    head_max_age: Option<u64>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    name: String,
    table: String,
    geometry_column: Option<String>,
    srid: Option<i32>,
    id_column: Option<String>,
    #[serde(default)]
    attributes: Vec<String>,
    filter: Option<String>,
    minzoom: Option<u32>,
    maxzoom: Option<u32>,
    cluster_maxzoom: Option<u32>,
    cluster_cell: Option<u32>,
    cluster_position: Option<ClusterPosition>,
    cluster_breakdown: Option<String>,
    simplify: Option<f64>,
    min_area: Option<f64>,
    min_length: Option<f64>,
}

/// Where a cluster's point goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterPosition {
    /// The mean position of its members.
    Centroid,
    /// The centre of its grid cell.
    CellCenter,
}

/// Grid clustering of a layer at low zooms. Each row counts at one representative point: a point
/// as it is, any other geometry (a line, a polygon, a collection) at `ST_PointOnSurface` of it, a
/// point on it that is the same wherever the row is read; rows of NULL or empty geometry are left
/// out. The cluster's extent is that of its members' points. Above `maxzoom` the layer's rows are
/// drawn whole, whatever their kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Zooms up to and including this one are clustered.
    pub maxzoom: u8,
    /// Cell size in tile units (a power of two dividing the extent).
    pub cell: u32,
    /// Where each cluster's point goes.
    pub position: ClusterPosition,
}

/// Properties every cluster feature carries; layer attributes may not use these names.
pub const CLUSTER_PROPERTIES: [&str; 5] = [
    "count",
    "extent_west",
    "extent_south",
    "extent_east",
    "extent_north",
];

/// How a layer's lines and polygons are generalised at each zoom, in pixels of that zoom, a pixel
/// being 1/256 of a tile's width (the scale web maps define their zoom levels at). Points are
/// never touched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Generalisation {
    /// Tolerance of the topology-preserving simplification applied before clipping; 0 keeps every
    /// vertex.
    pub simplify: f64,
    /// A polygonal feature whose whole area is below this many square pixels is left out; 0 keeps
    /// them all.
    pub min_area: f64,
    /// A linear feature whose whole length is below this many pixels is left out; 0 keeps them all.
    pub min_length: f64,
}

impl Generalisation {
    /// What a layer gets unless its config says otherwise: differences under a quarter of a pixel,
    /// invisible on a 512-pixel display of the tile, are generalised away.
    pub const DEFAULT: Generalisation = Generalisation {
        simplify: 0.25,
        min_area: 0.25,
        min_length: 0.25,
    };

    /// Whether it changes nothing at all.
    pub fn is_off(&self) -> bool {
        self.simplify == 0.0 && self.min_area == 0.0 && self.min_length == 0.0
    }
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

/// One value of a partitioned tileset: its layers render only the rows holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The column the tileset is partitioned by.
    pub column: String,
    /// The value, as the column's text form (`column::text`, or an element's for an array).
    pub value: String,
    /// Whether the column is an array, whose rows belong to the partition of each element.
    pub array: bool,
    /// The SQL type the value is cast to (an element's for an array): tile statements take the
    /// value as a parameter, so every partition of a tileset shares one set of statements.
    pub value_type: String,
    /// The temporary table each rendering session copies the value's rows into before its tiles
    /// (`crate::render::row_set`), which tiles then read through its own spatial index; `None`:
    /// tiles read the table, filtered by the value.
    pub row_set: Option<String>,
}

/// One `[[tileset.layer]]`: a source table rendered into one MVT layer.
#[derive(Debug, Clone)]
pub struct LayerConfig {
    /// Layer name inside the tile.
    pub name: String,
    /// Schema (when given) of the source table.
    pub schema: Option<String>,
    /// Source table.
    pub table: String,
    /// Geometry column.
    pub geometry_column: String,
    /// SRID the geometry is stored in, when the config states it.
    pub srid: Option<i32>,
    /// Column that orders features and, when integer, becomes the MVT feature id.
    pub id_column: String,
    /// Columns carried as feature properties.
    pub attributes: Vec<String>,
    /// Operator-written SQL boolean expression; the one place config text becomes SQL.
    pub filter: Option<String>,
    /// Zooms at which this layer appears; `None` means every zoom the job renders.
    pub zooms: Option<ZoomRange>,
    /// Grid clustering at low zooms, if configured: every row clustered at a representative point
    /// (see [`ClusterConfig`]), and drawn whole above the clustered zooms.
    pub cluster: Option<ClusterConfig>,
    /// An attribute whose per-value member counts each cluster carries, as [`breakdown_property`]
    /// names it.
    pub cluster_breakdown: Option<String>,
    /// Set on the layers of one partition of a partitioned tileset; never by the config itself.
    pub partition: Option<Partition>,
    /// Per-zoom generalisation of lines and polygons.
    pub generalisation: Generalisation,
}

/// The cluster property holding the per-value member counts of `column`.
pub fn breakdown_property(column: &str) -> String {
    format!("count_by_{column}")
}

/// How far beyond a tile its rows are fetched at zoom `z`, in tile widths: the buffer, or, where a
/// layer is clustered, whole grid cells around the tile, so every cell reaching into the buffer is
/// aggregated from all of its members. Never larger at a deeper zoom, so a child's fetch envelope
/// stays inside its parent's and pruning stays sound. The renderer builds its envelopes with it
/// and the dirty-tile planner reckons which tiles can fetch a row with it: one rule for both.
pub fn fetch_margin<'a>(
    layers: impl IntoIterator<Item = &'a LayerConfig>,
    z: u8,
    extent: u32,
    buffer: u32,
) -> f64 {
    let pixels = layers
        .into_iter()
        .filter_map(|layer| layer.cluster_at(z))
        .map(|cluster| buffer.div_ceil(cluster.cell.max(1)) * cluster.cell)
        .fold(buffer, u32::max);
    f64::from(pixels) / f64::from(extent)
}

impl LayerConfig {
    /// The clustering in force at zoom `z`, if any.
    pub fn cluster_at(&self, z: u8) -> Option<&ClusterConfig> {
        self.cluster.as_ref().filter(|c| z <= c.maxzoom)
    }

    /// A layer `l` of table `t` (geometry `g`, id `id`) as a config without keys of its own
    /// gets it: unclustered, unfiltered, no attributes, the default generalisation.
    #[cfg(test)]
    pub fn plain() -> LayerConfig {
        LayerConfig {
            name: "l".into(),
            schema: None,
            table: "t".into(),
            geometry_column: "g".into(),
            srid: None,
            id_column: "id".into(),
            attributes: vec![],
            filter: None,
            zooms: None,
            cluster: None,
            cluster_breakdown: None,
            partition: None,
            generalisation: Generalisation::DEFAULT,
        }
    }
}

impl LayerConfig {
    /// `schema.table` as written, for messages.
    pub fn qualified_table(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.table),
            None => self.table.clone(),
        }
    }
}

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

fn resolve_layer(
    raw: RawLayer,
    tileset_zooms: ZoomRange,
    extent: u32,
) -> Result<LayerConfig, Problem> {
    let name = raw.name.trim().to_string();
    if name.is_empty() {
        return Err("a layer has an empty name".into());
    }
    let in_layer = format!("layer `{name}`");
    let context = |problem: Problem| problem.within(&in_layer);
    let refuse = |message: String| context(Problem::Key(message));
    let (schema, table) = match raw.table.split_once('.') {
        Some((schema, table)) => (Some(schema.to_string()), table.to_string()),
        None => (None, raw.table.clone()),
    };
    if table.is_empty() || schema.as_deref() == Some("") {
        return Err(refuse(format!("table `{}` is not a table name", raw.table)));
    }
    let zooms = match (raw.minzoom, raw.maxzoom) {
        (None, None) => None,
        (min, max) => Some(
            ZoomRange::new(
                zoom(min, tileset_zooms.min, "minzoom").map_err(context)?,
                zoom(max, tileset_zooms.max, "maxzoom").map_err(context)?,
            )
            .map_err(|e| context(e.into()))?,
        ),
    };
    let cluster = resolve_cluster(&raw, extent).map_err(context)?;
    let generalisation = resolve_generalisation(&raw).map_err(context)?;
    if let Some(column) = &raw.cluster_breakdown {
        if cluster.is_none() {
            return Err(context("cluster_breakdown needs cluster_maxzoom".into()));
        }
        if !raw.attributes.contains(column) {
            return Err(refuse(format!(
                "cluster_breakdown `{column}` must be one of the layer's attributes"
            )));
        }
        let property = breakdown_property(column);
        if raw.attributes.contains(&property) {
            return Err(refuse(format!(
                "attribute `{property}` clashes with the cluster breakdown's property"
            )));
        }
    }
    let geometry_column = raw.geometry_column.unwrap_or_else(|| "geom".into());
    let id_column = raw.id_column.unwrap_or_else(|| "id".into());
    for column in raw.attributes.iter().chain([&geometry_column, &id_column]) {
        if column.is_empty() {
            return Err(context("a column name is empty".into()));
        }
    }
    if let Some(reserved) = raw.attributes.iter().find(|a| a.starts_with("__oar_")) {
        return Err(refuse(format!(
            "attribute `{reserved}`: names starting with __oar_ are reserved"
        )));
    }
    if raw.attributes.contains(&geometry_column) {
        return Err(refuse(format!(
            "attribute `{geometry_column}` is the geometry column"
        )));
    }
    if let Some(filter) = &raw.filter {
        if filter.contains(';') {
            return Err(context(
                "filter must be one SQL expression, without `;`".into(),
            ));
        }
    }
    Ok(LayerConfig {
        name,
        schema,
        table,
        geometry_column,
        srid: raw.srid,
        id_column,
        attributes: raw.attributes,
        filter: raw.filter.filter(|f| !f.trim().is_empty()),
        zooms,
        cluster,
        cluster_breakdown: raw.cluster_breakdown,
        partition: None,
        generalisation,
    })
}

/// The layer's `simplify`, `min_area` and `min_length`, each a finite number of (square) pixels.
fn resolve_generalisation(raw: &RawLayer) -> Result<Generalisation, Problem> {
    let defaults = Generalisation::DEFAULT;
    let pixels = |value: Option<f64>, default: f64, key: &str| match value {
        None => Ok(default),
        Some(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Some(v) => Err(Problem::Key(format!(
            "{key} {v} must be a number of pixels, 0 or more (0 turns it off)"
        ))),
    };
    Ok(Generalisation {
        simplify: pixels(raw.simplify, defaults.simplify, "simplify")?,
        min_area: pixels(raw.min_area, defaults.min_area, "min_area")?,
        min_length: pixels(raw.min_length, defaults.min_length, "min_length")?,
    })
}

/// The layer's grid clustering, if `cluster_maxzoom` asks for it.
fn resolve_cluster(raw: &RawLayer, extent: u32) -> Result<Option<ClusterConfig>, Problem> {
    Ok(match raw.cluster_maxzoom {
        None if raw.cluster_cell.is_some() || raw.cluster_position.is_some() => {
            return Err("cluster_cell and cluster_position need cluster_maxzoom".into())
        }
        None => None,
        Some(maxzoom) => {
            let maxzoom = zoom(Some(maxzoom), 0, "cluster_maxzoom")?;
            let cell = raw.cluster_cell.unwrap_or(512);
            if !cell.is_power_of_two() || !(8..=extent).contains(&cell) {
                return Err(Problem::Key(format!(
                    "cluster_cell {cell} must be a power of two between 8 and the extent ({extent})"
                )));
            }
            if let Some(clash) = raw
                .attributes
                .iter()
                .find(|a| CLUSTER_PROPERTIES.contains(&a.as_str()))
            {
                return Err(Problem::Key(format!(
                    "attribute `{clash}` clashes with a cluster property ({})",
                    CLUSTER_PROPERTIES.join(", ")
                )));
            }
            Some(ClusterConfig {
                maxzoom,
                cell,
                position: raw.cluster_position.unwrap_or(ClusterPosition::Centroid),
            })
        }
    })
}

#[cfg(test)]
mod tests;
