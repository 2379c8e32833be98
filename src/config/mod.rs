//! The configuration file: what the operator wrote, checked key by key, plus the environment overrides
//! for secrets. Turning it into a runnable job happens in [`crate::job`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};

pub mod cdn;
pub mod output;
pub mod tileset;
mod watch;

pub use cdn::{CdnConfig, CdnTarget, ConfigLine, EdgeCheckSettings, PurgeMethod};
pub use output::{
    is_partition_segment, partition_segment, Bucket, IndexLocation, OutputSettings, OutputTarget,
    Scheme, Sharding, DEFAULT_CACHE_CONTROL, POINTER_CACHE_CONTROL, VERSION_CACHE_CONTROL,
};
pub use tileset::{
    breakdown_property, fetch_margin, ClusterConfig, ClusterPosition, Feed, Freshness,
    Generalisation, LayerConfig, Partition, TilesetConfig, CLUSTER_PROPERTIES, DEFAULT_SIZE_BUDGET,
};
use tileset::{resolve_tileset, RawTileset};
pub use watch::WatchConfig;
use watch::{resolve_watch, RawWatch};

/// Environment variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "OAR_TILES_CONFIG";
/// Config file looked for in the working directory when neither `--config` nor the variable is given.
pub const DEFAULT_CONFIG_FILE: &str = "oar-tiles.toml";
/// The schema change capture lives in unless the config's `[changes] schema` names another.
pub const DEFAULT_CHANGE_SCHEMA: &str = "oar_tiles";
/// The longest name a PostgreSQL server built with the default `NAMEDATALEN` keeps whole.
const MAX_IDENTIFIER_BYTES: usize = 63;
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
    /// The `[watch]` table.
    pub watch: WatchConfig,
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
    watch: RawWatch,
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
    /// Size in MiB of the parts of a multipart upload: a PMTiles archive larger than one part is
    /// uploaded in parts of this size (S3 needs at least 5).
    pub part_size_mib: u64,
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
            part_size_mib: 8,
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
    pool_mode: Option<PoolMode>,
    listen_url: Option<String>,
    replicas: Option<Vec<String>>,
}

/// How the server side pools connections, which decides where session settings and statements live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A connection is one server session (direct, or PgBouncer in session mode): settings are sent
    /// once at connection time and tile statements are prepared once per zoom.
    #[default]
    Session,
    /// A transaction pooler (PgBouncer `pool_mode = transaction`): consecutive transactions may run
    /// in different server sessions, so no named statement or session setting is relied upon.
    Transaction,
}

/// How to reach PostgreSQL.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Connection URL or libpq `key=value` string; empty when the `PG*` environment alone says where
    /// to connect. May hold a password, so it is never printed as is.
    pub url: String,
    /// Whether a transaction pooler stands between us and the server.
    pub pool_mode: PoolMode,
    /// Connections in the pool; also the default number of tiles rendered at once.
    pub pool_size: usize,
    /// Longest one tile's statement may run before it is cancelled.
    pub statement_timeout: Duration,
    /// Longest a connection attempt may take.
    pub connect_timeout: Duration,
    /// Attempts per tile before it is reported as failed (transient errors only).
    pub max_attempts: u32,
    /// Where `watch` holds its LISTEN session when `url` goes through a transaction pooler, which
    /// cannot deliver notifications; `None`: a connection of its own to `url`.
    pub listen_url: Option<String>,
    /// Servers a sharded run renders from, as URLs or `key=value` strings like `url` (so they may
    /// hold a password too, and are never printed as is): shard I reads from replica I mod R.
    /// Empty: every shard renders from `url`.
    pub replicas: Vec<String>,
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
        let watch = resolve_watch(raw.watch, &at)?;
        if !(1..=256).contains(&raw.s3.max_concurrent_uploads)
            || !(1..=20).contains(&raw.s3.max_attempts)
        {
            return Err(at(
                None,
                "s3.max_concurrent_uploads must lie in 1..=256 and s3.max_attempts in 1..=20"
                    .into(),
            ));
        }
        // S3 refuses parts under 5 MiB (but the last) and uploads of over 10,000 parts.
        if !(5..=5120).contains(&raw.s3.part_size_mib) {
            return Err(at(
                None,
                "s3.part_size_mib must lie in 5..=5120 (S3 refuses smaller parts)".into(),
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
        if let Some(schema) = &raw.changes.schema {
            // PostgreSQL cuts longer names (NAMEDATALEN - 1) but refuses notification channels of
            // that length, and the schema's name is the channel: writes to the source tables would
            // fail. `changes install` checks the server's own limit too.
            if schema.len() > MAX_IDENTIFIER_BYTES {
                return Err(at(
                    None,
                    format!(
                        "[changes] schema `{schema}` is {} bytes long; PostgreSQL names and \
                         notification channels hold at most {MAX_IDENTIFIER_BYTES} bytes",
                        schema.len()
                    ),
                ));
            }
        }
        let mut tilesets: Vec<TilesetConfig> = Vec::new();
        for spanned in raw.tileset {
            let span = spanned.span();
            let mut raw_tileset = spanned.into_inner();
            let raw_cdn = std::mem::take(&mut raw_tileset.cdn);
            let mut tileset = resolve_tileset(raw_tileset, base_dir)
                .map_err(|problem| at(Some(span.clone()), problem.to_string()))?;
            tileset.cdn = cdn::resolve_cdns(raw_cdn, &tileset.name, path, text)?;
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
                .unwrap_or_else(|| DEFAULT_CHANGE_SCHEMA.to_string()),
            tilesets,
            watch,
        })
    }
}

fn resolve_database(
    raw: RawDatabase,
    env_url: Option<String>,
    at: &impl Fn(Option<std::ops::Range<usize>>, String) -> Error,
) -> Result<DatabaseConfig> {
    // Without a URL, libpq's environment (PGHOST, PGUSER, ...) says where to connect, as for psql.
    let url = env_url.or(raw.url).unwrap_or_default();
    let duration = |value: Option<Spanned<String>>, key: &str, default: Duration| {
        duration_key(value, &format!("database.{key}"), default, at)
    };
    let max_attempts = raw.max_attempts.unwrap_or(6);
    if !(1..=20).contains(&max_attempts) {
        return Err(at(
            None,
            format!("database.max_attempts {max_attempts} must lie in 1..=20"),
        ));
    }
    let replicas = raw.replicas.unwrap_or_default();
    if let Some(index) = replicas.iter().position(|r| r.trim().is_empty()) {
        // `url` may be empty to mean the PG* environment; a replica so given would be the primary.
        return Err(at(
            None,
            format!(
                "database.replicas[{index}] is empty: give each replica a URL or key=value string"
            ),
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
        pool_mode: raw.pool_mode.unwrap_or_default(),
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
        listen_url: raw.listen_url.filter(|u| !u.is_empty()),
        replicas,
    })
}

/// A `key = "30s"` duration of a table, with the key's line and column when it is not one.
pub(super) fn duration_key(
    value: Option<Spanned<String>>,
    key: &str,
    default: Duration,
    at: &impl Fn(Option<std::ops::Range<usize>>, String) -> Error,
) -> Result<Duration> {
    match value {
        None => Ok(default),
        Some(spanned) => humantime::parse_duration(spanned.get_ref()).map_err(|err| {
            at(
                Some(spanned.span()),
                format!(
                    "{key} `{}` is not a duration like \"30s\" ({err})",
                    spanned.get_ref()
                ),
            )
        }),
    }
}

/// One connection per core: rendering is CPU-bound on the database side.
fn default_pool_size() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
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
    use crate::tile::{BBox, ZoomRange};

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
    fn replicas_are_a_list_of_non_empty_urls() {
        assert!(parse(MINIMAL).unwrap().database.replicas.is_empty());
        let with = |list: &str| {
            MINIMAL.replace(
                "url = \"postgresql://u:secret@db:5432/oar\"",
                &format!("url = \"postgresql://db/oar\"\nreplicas = {list}"),
            )
        };
        let config = parse(&with(r#"["postgresql://r1/oar", "host=r2 dbname=oar"]"#)).unwrap();
        assert_eq!(
            config.database.replicas,
            ["postgresql://r1/oar", "host=r2 dbname=oar"]
        );
        let err = parse(&with(r#"["postgresql://r1/oar", " "]"#)).unwrap_err();
        assert!(
            err.to_string().contains("database.replicas[1] is empty"),
            "{err}"
        );
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

    /// The error of the minimal config with `from` replaced by `to`.
    fn error_with(from: &str, to: &str) -> String {
        parse(&MINIMAL.replace(from, to)).unwrap_err().to_string()
    }

    #[test]
    fn an_unknown_key_is_reported_with_its_line() {
        let err = error_with("attributes", "atributes");
        assert!(err.starts_with("conf/oar.toml:13:"), "{err}");
        assert!(err.contains("unknown field `atributes`"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_tileset_and_line() {
        let err = error_with("output = ", "maxzoom = 30\noutput = ");
        assert!(err.contains("conf/oar.toml:5:"), "{err}");
        assert!(
            err.contains("tileset `facilities`: maxzoom 30 is outside 0..=24"),
            "{err}"
        );
        let err = error_with("output = ", "bbox = [10, 0, -10, 5]\noutput = ");
        assert!(err.contains("antimeridian"), "{err}");
    }

    #[test]
    fn database_errors_say_where_and_what_to_do() {
        let err = error_with("[database]", "[database]\nstatement_timeout = \"soon\"");
        assert!(
            err.contains("conf/oar.toml:3:") && err.contains("statement_timeout `soon`"),
            "{err}"
        );
        let err = error_with("[database]", "[database]\npool_mode = \"statement\"");
        assert!(
            err.contains("conf/oar.toml:3:") && err.contains("expected `session` or `transaction`"),
            "{err}"
        );
    }

    #[test]
    fn without_a_url_the_environment_says_where_to_connect() {
        let config =
            parse(&MINIMAL.replace("url = \"postgresql://u:secret@db:5432/oar\"", "")).unwrap();
        assert_eq!(config.database.url, "");
        assert_eq!(config.database.pool_mode, PoolMode::Session);
    }
}
