//! The configuration file: what the operator wrote, checked key by key, plus the environment overrides
//! for secrets. Turning it into a runnable job happens in [`crate::job`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};

pub mod cdn;
mod database;
pub mod output;
mod schema;
mod store;
pub mod tileset;
mod watch;

use database::{resolve_database, RawDatabase};
pub use database::{DatabaseConfig, PoolMode};
pub use schema::{json_schema, reference};
use store::resolve_store;
pub use store::StoreConfig;

pub use cdn::{CdnConfig, CdnTarget, ConfigLine, EdgeCheckSettings, PurgeMethod};
pub use output::{
    is_partition_segment, partition_segment, supported_forms as output_forms, Bucket,
    IndexLocation, OutputSettings, OutputTarget, Scheme, Sharding, DEFAULT_CACHE_CONTROL,
    POINTER_CACHE_CONTROL, VERSION_CACHE_CONTROL,
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
/// How long an output may go without reading the change log before `changes status` flags it,
/// unless `[changes] stale_consumer_after` says otherwise.
pub const DEFAULT_STALE_CONSUMER_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
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
    /// The `[store]` table (or `[s3]`, its old name).
    pub store: StoreConfig,
    /// Schema holding the change log and its triggers' functions (`[changes] schema`).
    pub change_schema: String,
    /// How long an output may go without reading the change log before `changes status` flags it
    /// (`[changes] stale_consumer_after`).
    pub stale_consumer_after: Duration,
    /// The `[[tileset]]` tables, in file order.
    pub tilesets: Vec<TilesetConfig>,
    /// The `[watch]` table.
    pub watch: WatchConfig,
    /// What the file should change though it was read (an old table name), each naming the file;
    /// [`Config::load`] logs them.
    pub warnings: Vec<String>,
}

/// The configuration file of oar-tiles: where tiles come from (`[database]`), which pyramids to
/// render and where to write them (`[[tileset]]`), how remote stores are reached (`[store]`), and
/// how `watch` keeps outputs fresh (`[changes]`, `[watch]`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Config", title = "oar-tiles configuration")]
#[schemars(transform = |schema: &mut schemars::Schema| schema::require(schema, "tileset"))]
// `[s3]` is the old name of `[store]`: the two at once are refused, as the parser refuses them.
#[schemars(extend("not" = {"required": ["store", "s3"]}))]
pub(super) struct RawConfig {
    /// How to reach PostgreSQL.
    #[serde(default)]
    database: RawDatabase,
    /// How outputs in a remote object store (`s3://`, `az://`, `gs://`) are reached and written.
    /// Credentials come from the store's standard chain (for S3: the AWS environment variables, a
    /// profile, an instance role), never from this file. Formerly `[s3]`. A key marked S3 only is
    /// refused at its line when every tileset's output is in another store.
    #[schemars(with = "Option<StoreConfig>")]
    store: Option<Spanned<StoreConfig>>,
    /// The old name of `[store]`: still read, with a warning. Rename it to `[store]`.
    #[schemars(with = "Option<StoreConfig>", extend("deprecated" = true))]
    s3: Option<Spanned<StoreConfig>>,
    /// Change capture for `seed --dirty` and `watch` (set up with `oar-tiles changes install`).
    #[serde(default)]
    changes: RawChanges,
    /// `oar-tiles watch`: keeps every output fresh within seconds of a commit.
    #[serde(default)]
    watch: RawWatch,
    /// One `[[tileset]]` per pyramid of tiles; `oar-tiles seed --tileset NAME` picks one (default:
    /// all). At least one is required.
    #[serde(default)]
    #[schemars(with = "Vec<RawTileset>", length(min = 1))]
    tileset: Vec<Spanned<RawTileset>>,
}

/// Change capture for `seed --dirty` and `watch`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Changes")]
struct RawChanges {
    /// Schema holding the change log, its trigger functions and the outputs' watermarks (at most
    /// 63 bytes). The triggers also `pg_notify` a channel of the same name, which `watch` listens
    /// on.
    #[schemars(extend("default" = DEFAULT_CHANGE_SCHEMA))]
    schema: Option<String>,
    /// `changes status` flags an output that has not read the change log for this long (a
    /// duration like "7d"): it holds back pruning, so the log grows until it reads it again or
    /// `changes forget` drops it.
    #[schemars(with = "Option<String>", extend("default" = "7d"))]
    stale_consumer_after: Option<Spanned<String>>,
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
        let config = Self::parse(path, &text, env_url)?;
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        Ok(config)
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
        let stale_consumer_after = duration_key(
            raw.changes.stale_consumer_after,
            "changes.stale_consumer_after",
            DEFAULT_STALE_CONSUMER_AFTER,
            &at,
        )?;
        let mut warnings = Vec::new();
        let store = resolve_store(raw.store, raw.s3, &mut warnings, &at)?;
        let warnings = warnings
            .into_iter()
            .map(|warning| format!("{}: {warning}", path.display()))
            .collect();
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
        let outputs = tilesets.iter().filter_map(|t| t.output.as_deref());
        store::refuse_other_kinds_keys(text, outputs, &at)?;
        Ok(Config {
            path: path.to_path_buf(),
            database,
            store,
            change_schema: raw
                .changes
                .schema
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_CHANGE_SCHEMA.to_string()),
            stale_consumer_after,
            tilesets,
            watch,
            warnings,
        })
    }
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

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The smallest config the parser takes, one tileset of one layer, which the tests of the config
/// vary a key at a time.
#[cfg(test)]
const MINIMAL: &str = r#"
[database]
url = "postgresql://db/oar"

[[tileset]]
name = "facilities"
output = "out.mbtiles"

[[tileset.layer]]
name = "facilities"
table = "public.facilities"
attributes = ["name"]
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tile::{BBox, ZoomRange};

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
                "url = \"postgresql://db/oar\"",
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
        assert!(err.starts_with("conf/oar.toml:12:"), "{err}");
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
    fn the_store_table_configures_remote_stores() {
        let config = parse(&format!(
            "[store]\nregion = \"eu-west-1\"\nmax_attempts = 3\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(config.store.region.as_deref(), Some("eu-west-1"));
        assert_eq!(config.store.max_attempts, 3);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        let err = parse(&format!("[store]\nmax_attempts = 0\n{MINIMAL}")).unwrap_err();
        assert!(err.to_string().contains("store.max_attempts"), "{err}");
    }

    #[test]
    fn the_old_s3_table_is_read_with_a_warning_naming_the_file() {
        let config = parse(&format!("[s3]\nregion = \"eu-west-1\"\n{MINIMAL}")).unwrap();
        assert_eq!(config.store.region.as_deref(), Some("eu-west-1"));
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        let warning = &config.warnings[0];
        assert!(
            warning.starts_with("conf/oar.toml: the [s3] table is now called [store]")
                && warning.contains("rename it"),
            "{warning}"
        );
    }

    #[test]
    fn the_store_and_s3_tables_at_once_are_an_error_naming_the_file() {
        let err = parse(&format!(
            "[store]\nregion = \"a\"\n\n[s3]\nregion = \"b\"\n{MINIMAL}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("conf/oar.toml:4:")
                && err.contains("both [store] and [s3] are present"),
            "{err}"
        );
    }

    #[test]
    fn without_a_url_the_environment_says_where_to_connect() {
        let config = parse(&MINIMAL.replace("url = \"postgresql://db/oar\"", "")).unwrap();
        assert_eq!(config.database.url, "");
        assert_eq!(config.database.pool_mode, PoolMode::Session);
    }
}
