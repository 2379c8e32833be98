//! The configuration file: what the operator wrote, checked key by key, plus the environment overrides
//! for secrets. Turning it into a runnable job happens in [`crate::job`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::sink::OutputSettings;
use crate::tile::{BBox, ZoomRange, MAX_ZOOM};

/// Environment variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "OAR_TILES_CONFIG";
/// Config file looked for in the working directory when neither `--config` nor the variable is given.
pub const DEFAULT_CONFIG_FILE: &str = "oar-tiles.toml";
/// Environment variable that overrides `database.url`.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";

/// A parsed and checked configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// The `[database]` table, with `DATABASE_URL` applied.
    pub database: DatabaseConfig,
    /// The `[s3]` table.
    pub s3: S3Config,
    /// Schema holding the change log and its triggers' functions (`[changes] schema`).
    pub change_schema: String,
    /// The `[[tileset]]` tables, in file order.
    pub tilesets: Vec<TilesetConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    s3: S3Config,
    #[serde(default)]
    changes: RawChanges,
    #[serde(default)]
    tileset: Vec<Spanned<RawTileset>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChanges {
    schema: Option<String>,
}

/// How to reach S3 (or an S3-compatible store). Credentials always come from the standard AWS chain
/// (environment, profile, instance role), never from this file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible store (MinIO, Ceph, R2); `AWS_ENDPOINT_URL` also works.
    pub endpoint: Option<String>,
    /// Region; default from the AWS chain (`AWS_REGION`, profile), else us-east-1.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible stores need.
    pub force_path_style: bool,
    /// Public base URL that serves the bucket's objects (a CDN domain whose origin is the bucket);
    /// TileJSON tile URLs are built on it. Default: the bucket's own URL.
    pub public_url: Option<String>,
    /// Uploads in flight at once.
    pub max_concurrent_uploads: usize,
    /// Attempts per request before the job fails, with exponential backoff between them.
    pub max_attempts: u32,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            force_path_style: false,
            public_url: None,
            max_concurrent_uploads: 16,
            max_attempts: 6,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
    pool_size: Option<usize>,
    statement_timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    max_attempts: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTileset {
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
    size_budget: Option<u64>,
    #[serde(default)]
    layer: Vec<Spanned<RawLayer>>,
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

/// Grid clustering of a point layer at low zooms.
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

/// Default tile size budget: 500 KiB stored (compressed), what map clients load without strain.
pub const DEFAULT_SIZE_BUDGET: u64 = 500 * 1024;

/// How to reach PostgreSQL.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Connection URL; may hold a password, so it is never printed as is.
    pub url: String,
    /// Connections in the pool; also the default number of tiles rendered at once.
    pub pool_size: usize,
    /// Longest one tile's statement may run before it is cancelled.
    pub statement_timeout: Duration,
    /// Longest a connection attempt may take.
    pub connect_timeout: Duration,
    /// Attempts per tile before it is reported as failed (transient errors only).
    pub max_attempts: u32,
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
    /// The layers each tile holds.
    pub layers: Vec<LayerConfig>,
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
    /// Grid clustering at low zooms, if configured.
    pub cluster: Option<ClusterConfig>,
}

impl LayerConfig {
    /// The clustering in force at zoom `z`, if any.
    pub fn cluster_at(&self, z: u8) -> Option<&ClusterConfig> {
        self.cluster.as_ref().filter(|c| z <= c.maxzoom)
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

impl Config {
    /// Finds the config file: `--config`, then `$OAR_TILES_CONFIG`, then `./oar-tiles.toml`.
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
        if let Some(path) = explicit {
            return Ok(path.to_path_buf());
        }
        if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(path));
        }
        let default = PathBuf::from(DEFAULT_CONFIG_FILE);
        if default.exists() {
            return Ok(default);
        }
        Err(Error::Usage(format!(
            "no config file: pass --config FILE, set {CONFIG_ENV}, or create ./{DEFAULT_CONFIG_FILE}"
        )))
    }

    /// Reads and checks a config file, applying `DATABASE_URL` when it is set.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|err| Error::Config {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read the config file: {err}"),
        })?;
        let env_url = std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|u| !u.is_empty());
        Self::parse(path, &text, env_url)
    }

    /// Checks config text; `env_url` stands for `DATABASE_URL`.
    pub fn parse(path: &Path, text: &str, env_url: Option<String>) -> Result<Config> {
        let at = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = span.map(|s| line_column(text, s.start)).unzip();
            Error::Config {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|err| at(err.span(), err.message().replace('\n', " ")))?;

        let base_dir = path.parent().unwrap_or(Path::new(""));
        let database = resolve_database(raw.database, env_url, &at)?;
        if !(1..=256).contains(&raw.s3.max_concurrent_uploads)
            || !(1..=20).contains(&raw.s3.max_attempts)
        {
            return Err(at(
                None,
                "s3.max_concurrent_uploads must lie in 1..=256 and s3.max_attempts in 1..=20"
                    .into(),
            ));
        }
        if let Some(url) = &raw.s3.public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains('{') {
                return Err(at(
                    None,
                    format!("s3.public_url `{url}` must be a base URL such as \"https://tiles.example.org\""),
                ));
            }
        }
        if raw.tileset.is_empty() {
            return Err(at(None, "no [[tileset]] is defined".into()));
        }
        let mut tilesets: Vec<TilesetConfig> = Vec::new();
        for spanned in raw.tileset {
            let span = spanned.span();
            let tileset = resolve_tileset(spanned.into_inner(), base_dir)
                .map_err(|message| at(Some(span.clone()), message))?;
            if tilesets.iter().any(|t| t.name == tileset.name) {
                return Err(at(
                    Some(span),
                    format!("tileset `{}` is defined twice", tileset.name),
                ));
            }
            tilesets.push(tileset);
        }
        Ok(Config {
            path: path.to_path_buf(),
            database,
            s3: raw.s3,
            change_schema: raw
                .changes
                .schema
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| crate::changes::DEFAULT_SCHEMA.to_string()),
            tilesets,
        })
    }
}

fn resolve_database(
    raw: RawDatabase,
    env_url: Option<String>,
    at: &impl Fn(Option<std::ops::Range<usize>>, String) -> Error,
) -> Result<DatabaseConfig> {
    let url = env_url.or(raw.url).ok_or_else(|| {
        at(
            None,
            format!("no database: set `url` in [database] or the {DATABASE_URL_ENV} environment variable"),
        )
    })?;
    let duration =
        |value: Option<Spanned<String>>, key: &str, default: Duration| -> Result<Duration> {
            match value {
                None => Ok(default),
                Some(spanned) => humantime::parse_duration(spanned.get_ref()).map_err(|err| {
                    at(
                        Some(spanned.span()),
                        format!(
                            "database.{key} `{}` is not a duration like \"30s\" ({err})",
                            spanned.get_ref()
                        ),
                    )
                }),
            }
        };
    let max_attempts = raw.max_attempts.unwrap_or(6);
    if !(1..=20).contains(&max_attempts) {
        return Err(at(
            None,
            format!("database.max_attempts {max_attempts} must lie in 1..=20"),
        ));
    }
    let pool_size = raw.pool_size.unwrap_or_else(default_pool_size);
    if !(1..=256).contains(&pool_size) {
        return Err(at(
            None,
            format!("database.pool_size {pool_size} must lie in 1..=256"),
        ));
    }
    Ok(DatabaseConfig {
        url,
        pool_size,
        statement_timeout: duration(
            raw.statement_timeout,
            "statement_timeout",
            Duration::from_secs(60),
        )?,
        connect_timeout: duration(
            raw.connect_timeout,
            "connect_timeout",
            Duration::from_secs(10),
        )?,
        max_attempts,
    })
}

/// One connection per core: rendering is CPU-bound on the database side.
fn default_pool_size() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

fn zoom(value: Option<u32>, default: u8, key: &str) -> Result<u8, String> {
    match value {
        None => Ok(default),
        Some(z) if z <= u32::from(MAX_ZOOM) => Ok(z as u8),
        Some(z) => Err(format!("{key} {z} is outside 0..={MAX_ZOOM}")),
    }
}

fn resolve_tileset(raw: RawTileset, base_dir: &Path) -> Result<TilesetConfig, String> {
    let name = raw.name.trim().to_string();
    if name.is_empty() {
        return Err("tileset name is empty".into());
    }
    let context = |message: String| format!("tileset `{name}`: {message}");
    let zooms = ZoomRange::new(
        zoom(raw.minzoom, 0, "minzoom").map_err(context)?,
        zoom(raw.maxzoom, 14, "maxzoom").map_err(context)?,
    )
    .map_err(context)?;
    let bbox = match raw.bbox.as_deref() {
        None => BBox::WORLD,
        Some([w, s, e, n]) => BBox::new(*w, *s, *e, *n).map_err(context)?,
        Some(_) => {
            return Err(context(
                "bbox must be four numbers [west, south, east, north]".into(),
            ))
        }
    };
    let extent = raw.extent.unwrap_or(4096);
    if !(256..=65536).contains(&extent) || !extent.is_power_of_two() {
        return Err(context(format!(
            "extent {extent} must be a power of two in 256..=65536"
        )));
    }
    let buffer = raw.buffer.unwrap_or(64);
    if buffer > extent / 2 {
        return Err(context(format!(
            "buffer {buffer} must not exceed half the extent ({})",
            extent / 2
        )));
    }
    if raw.layer.is_empty() {
        return Err(context("no [[tileset.layer]] is defined".into()));
    }
    let mut layers: Vec<LayerConfig> = Vec::new();
    for layer in raw.layer {
        let layer = resolve_layer(layer.into_inner(), zooms, extent).map_err(context)?;
        if layers.iter().any(|l| l.name == layer.name) {
            return Err(context(format!("layer `{}` is defined twice", layer.name)));
        }
        layers.push(layer);
    }
    let output = raw.output.map(|output| resolve_output(&output, base_dir));
    let defaults = OutputSettings::default();
    let tile_extension = raw.tile_extension.unwrap_or(defaults.tile_extension);
    if tile_extension.is_empty()
        || !tile_extension
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.')
    {
        return Err(context(format!(
            "tile_extension `{tile_extension}` must be letters and digits, like \"pbf\""
        )));
    }
    let cache_control = raw.cache_control.unwrap_or(defaults.cache_control);
    if cache_control.chars().any(|c| c.is_control()) {
        return Err(context("cache_control must be one line".into()));
    }
    let compression_level = raw.compression_level.unwrap_or(defaults.compression_level);
    if !(1..=9).contains(&compression_level) {
        return Err(context(format!(
            "compression_level must be 1 (fastest) to 9 (smallest), got {compression_level}"
        )));
    }
    if let Some(url) = &raw.tiles_url {
        check_tiles_url(url).map_err(context)?;
    }
    let output_settings = OutputSettings {
        tile_extension,
        compress: raw.compress.unwrap_or(defaults.compress),
        compression_level,
        cache_control,
        tiles_url: raw.tiles_url,
    };
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
        layers,
    })
}

/// A TileJSON tile URL must be absolute: MapLibre GL JS resolves a relative one against the page
/// that shows the map, not against the TileJSON's own address, and then finds no tiles.
fn check_tiles_url(url: &str) -> Result<(), String> {
    let absolute = url.starts_with("https://") || url.starts_with("http://");
    if !absolute {
        return Err(format!(
            "tiles_url `{url}` must be an absolute URL such as \
             \"https://tiles.example.org/facilities/{{z}}/{{x}}/{{y}}.pbf\": map clients resolve a \
             relative one against their page, not against tiles.json"
        ));
    }
    for part in ["{z}", "{x}", "{y}"] {
        if !url.contains(part) {
            return Err(format!("tiles_url `{url}` has no {part} placeholder"));
        }
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("tiles_url `{url}` must not contain spaces"));
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

fn resolve_layer(
    raw: RawLayer,
    tileset_zooms: ZoomRange,
    extent: u32,
) -> Result<LayerConfig, String> {
    let name = raw.name.trim().to_string();
    if name.is_empty() {
        return Err("a layer has an empty name".into());
    }
    let context = |message: String| format!("layer `{name}`: {message}");
    let (schema, table) = match raw.table.split_once('.') {
        Some((schema, table)) => (Some(schema.to_string()), table.to_string()),
        None => (None, raw.table.clone()),
    };
    if table.is_empty() || schema.as_deref() == Some("") {
        return Err(context(format!(
            "table `{}` is not a table name",
            raw.table
        )));
    }
    let zooms = match (raw.minzoom, raw.maxzoom) {
        (None, None) => None,
        (min, max) => Some(
            ZoomRange::new(
                zoom(min, tileset_zooms.min, "minzoom").map_err(context)?,
                zoom(max, tileset_zooms.max, "maxzoom").map_err(context)?,
            )
            .map_err(context)?,
        ),
    };
    let geometry_column = raw.geometry_column.unwrap_or_else(|| "geom".into());
    let id_column = raw.id_column.unwrap_or_else(|| "id".into());
    for column in raw.attributes.iter().chain([&geometry_column, &id_column]) {
        if column.is_empty() {
            return Err(context("a column name is empty".into()));
        }
    }
    if let Some(reserved) = raw.attributes.iter().find(|a| a.starts_with("__oar_")) {
        return Err(context(format!(
            "attribute `{reserved}`: names starting with __oar_ are reserved"
        )));
    }
    if raw.attributes.contains(&geometry_column) {
        return Err(context(format!(
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
    let cluster = match raw.cluster_maxzoom {
        None if raw.cluster_cell.is_some() || raw.cluster_position.is_some() => {
            return Err(context(
                "cluster_cell and cluster_position need cluster_maxzoom".into(),
            ))
        }
        None => None,
        Some(maxzoom) => {
            let maxzoom = zoom(Some(maxzoom), 0, "cluster_maxzoom").map_err(context)?;
            let cell = raw.cluster_cell.unwrap_or(512);
            if !cell.is_power_of_two() || !(8..=extent).contains(&cell) {
                return Err(context(format!(
                    "cluster_cell {cell} must be a power of two between 8 and the extent ({extent})"
                )));
            }
            if let Some(clash) = raw
                .attributes
                .iter()
                .find(|a| CLUSTER_PROPERTIES.contains(&a.as_str()))
            {
                return Err(context(format!(
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
    };
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
    })
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[database]
url = "postgresql://u:secret@db:5432/oar"

[[tileset]]
name = "facilities"
output = "out.mbtiles"

[[tileset.layer]]
name = "facilities"
table = "public.facilities"
geometry_column = "location"
attributes = ["name"]
"#;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("conf/oar.toml"), text, None)
    }

    #[test]
    fn a_minimal_config_gets_documented_defaults() {
        let config = parse(MINIMAL).unwrap();
        let tileset = &config.tilesets[0];
        assert_eq!((tileset.extent, tileset.buffer), (4096, 64));
        assert_eq!(tileset.zooms, ZoomRange { min: 0, max: 14 });
        assert_eq!(tileset.bbox, BBox::WORLD);
        assert_eq!(tileset.output.as_deref(), Some("conf/out.mbtiles"));
        let layer = &tileset.layers[0];
        assert_eq!(
            (layer.schema.as_deref(), layer.table.as_str()),
            (Some("public"), "facilities")
        );
        assert_eq!(layer.id_column, "id");
        assert_eq!(config.database.statement_timeout, Duration::from_secs(60));
    }

    #[test]
    fn database_url_from_the_environment_wins() {
        let config = Config::parse(
            Path::new("x.toml"),
            MINIMAL,
            Some("postgresql://other/db".into()),
        )
        .unwrap();
        assert_eq!(config.database.url, "postgresql://other/db");
    }

    #[test]
    fn an_unknown_key_is_reported_with_its_line() {
        let text = MINIMAL.replace("attributes", "atributes");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("conf/oar.toml:13:"), "{err}");
        assert!(err.contains("unknown field `atributes`"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_tileset_and_line() {
        let text = MINIMAL.replace("output = ", "maxzoom = 30\noutput = ");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("conf/oar.toml:5:"), "{err}");
        assert!(
            err.contains("tileset `facilities`: maxzoom 30 is outside 0..=24"),
            "{err}"
        );
        let text = MINIMAL.replace("output = ", "bbox = [10, 0, -10, 5]\noutput = ");
        assert!(parse(&text)
            .unwrap_err()
            .to_string()
            .contains("antimeridian"));
    }

    #[test]
    fn a_bad_duration_is_reported_with_its_line() {
        let text = MINIMAL.replace("[database]", "[database]\nstatement_timeout = \"soon\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("conf/oar.toml:3:"), "{err}");
        assert!(err.contains("statement_timeout `soon`"), "{err}");
    }

    #[test]
    fn a_missing_database_url_is_explained() {
        let text = MINIMAL.replace("url = \"postgresql://u:secret@db:5432/oar\"", "");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
    }
}
