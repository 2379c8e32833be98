//! oar-tiles: pregenerates static vector tiles of the Open Apparel Registry from PostGIS and keeps them
//! fresh. The pipeline is config → plan → render → encode → sink → state; `seed` wires it, and
//! ARCHITECTURE.md draws it.

mod config;
mod coordination;
mod db;
mod delivery;
mod edge;
mod encode;
mod error;
mod inspect;
mod job;
mod listen;
mod metrics;
mod partition;
mod plan;
mod redact;
mod render;
mod report;
mod retry;
mod schedule;
mod seed;
mod serve;
mod sink;
mod state;
mod store;
mod tile;
mod validate;
mod watch;

pub use error::{Error, ExitCode, Result};

// What the command (`main.rs`) and the integration tests use; everything else is the crate's own.
pub use config::{
    output_forms, Config, EdgeCheckSettings, OutputTarget, StoreConfig, DEFAULT_SIZE_BUDGET,
};
pub use coordination::ChangedList;
pub use job::{RunSettings, SeedJob, SeedOptions, ShardSpec, WatchJob, WatchOptions};
pub use report::ProgressKind;
pub use sink::mbtiles::merge::merge_mbtiles;
pub use tile::{BBox, TileError, ZoomRange};

/// Change capture in the source database: `oar-tiles changes install|uninstall|status|forget`.
pub mod changes {
    pub use crate::state::capture::{forget, install, status, uninstall};
}

/// Connecting to PostgreSQL as libpq would.
pub mod database {
    pub use crate::db::connect;
}

/// The commands.
pub mod commands {
    pub use crate::config::{json_schema as config_schema, reference as config_reference};
    pub use crate::inspect::inspect;
    pub use crate::partition::totals as partition_totals;
    pub use crate::seed::{finalize, run as seed, write_metrics, write_reports, Session};
    pub use crate::serve::{bind as bind_server, run as serve, PublicHost, Server};
    pub use crate::validate::{
        validate, verify_sample, DbCheck, ValidateOptions, ValidationReport,
    };
    pub use crate::watch::run as watch;
}

/// Tile maths and the pieces of the pipeline the integration tests check directly.
pub mod testing {
    pub use crate::plan::shard::{CostModel, ShardPlan};
    pub use crate::plan::EAGER_TILES;
    pub use crate::sink::agg_hash::{agg_tiles_hash, AggHasher};
    pub use crate::sink::OutputReader;
    pub use crate::store::s3::https_client;
    pub use crate::store::{ObjectHeaders, ObjectStore, Put, Splice};

    /// The container `name` of the Azurite at `url`, as outputs use a store.
    pub fn azurite_store(url: &str, name: &str) -> std::sync::Arc<dyn ObjectStore> {
        std::sync::Arc::new(
            crate::store::azure::AzureStore::on_azurite(url, name)
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// The bucket `name` of the GCS emulator at `url`, as outputs use a store.
    pub fn gcs_emulator_store(url: &str, name: &str) -> std::sync::Arc<dyn ObjectStore> {
        std::sync::Arc::new(
            crate::store::gcs::GcsStore::on_emulator(url, name).unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// The S3 bucket `bucket` through `client` (a test's, with credentials of its own), as
    /// outputs use a store.
    pub fn s3_store(client: aws_sdk_s3::Client, bucket: &str) -> std::sync::Arc<dyn ObjectStore> {
        let settings = crate::config::StoreConfig::default();
        std::sync::Arc::new(crate::store::s3::S3Store::with_client(
            client, bucket, &settings,
        ))
    }
    pub use crate::sink::{check_container, Finding};
    pub use crate::state::digest::SETTINGS_VERSION;
    pub use crate::tile::{mercator, TileCoord, MERCATOR_HALF_WORLD};
    pub use crate::validate::mvt::{check_tile, LayerSummary, TileReport};
}

#[cfg(test)]
mod architecture;
