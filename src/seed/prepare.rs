//! Step 2 of a seed: everything about a tileset that can be checked before its output is touched.

use deadpool_postgres::Pool;

use crate::config::PoolMode;
use crate::db::Replica;
use crate::error::Result;
use crate::job::{SeedJob, TilesetJob};
use crate::render::source::{describe, LayerSource};
use crate::render::TilesetRenderer;
use crate::state::capture;
use crate::state::cells::{self, CellTable};
use crate::state::digest::TileSettings;

/// A tileset whose sources are described, cluster cells in place and statements checked.
pub(super) struct Prepared<'a> {
    pub tileset: &'a TilesetJob,
    pub layers: Vec<LayerSource>,
    /// Per layer, the maintained cluster cells its clustered zooms read, if any.
    pub cell_tables: Vec<Option<CellTable>>,
    /// Whether a run that writes reads maintained cluster cells: a dry run makes no cell table,
    /// yet plans (a shard plan's prices) as the run it stands for.
    pub cells_maintained: bool,
    pub renderer: TilesetRenderer,
    /// The pool the renderer reads from, and how it is pooled.
    render_pool: (Pool, PoolMode),
}

impl<'a> Prepared<'a> {
    /// The digest of the settings that decide the tileset's tile bytes.
    pub fn settings_digest(&self) -> String {
        let configured = &self.tileset.tileset;
        TileSettings::new(
            configured.extent,
            configured.buffer,
            self.layers.iter().map(|l| &l.config),
        )
        .with_lists(self.layers.iter().map(|l| l.list_properties()))
        .with_generalisation(self.layers.iter().map(|l| l.generalised()))
        .digest()
    }

    /// Describes the sources and keeps the cells on the primary `pool`; the renderer reads from
    /// `replica` when there is one.
    pub async fn new(
        pool: &Pool,
        replica: Option<&Replica>,
        job: &SeedJob,
        tileset: &'a TilesetJob,
    ) -> Result<Prepared<'a>> {
        let config = &tileset.tileset;
        let mut layers = Vec::new();
        for layer in &config.layers {
            let source = describe(pool, &config.name, layer).await?;
            if !source.has_spatial_index {
                let table = layer.qualified_table();
                let column = &layer.geometry_column;
                let indexed = if source.geography {
                    format!("({column}::geometry)")
                } else {
                    column.clone()
                };
                tracing::warn!(
                    "tileset `{}`, layer `{}`: no spatial index on {table}.{indexed}; every tile will \
                     scan the table (CREATE INDEX ON {table} USING gist ({indexed}))",
                    config.name,
                    layer.name,
                );
            }
            layers.push(source);
        }
        // A dry run only probes rows, and creates nothing. A partition aggregates its own rows:
        // maintained cells per value would mean one table per value, each refreshed every run.
        let partitioned = config.layers.iter().any(|l| l.partition.is_some());
        let clustered = layers.iter().any(|l| l.config.cluster.is_some());
        let mut cells_maintained = false;
        let cell_tables = if job.run.scratch || partitioned {
            vec![None; layers.len()]
        } else if job.run.dry_run {
            // As `cells::ensure` decides, without making anything.
            cells_maintained = clustered
                && capture::installed(pool, &job.change_schema).await?
                && !capture::read_only_standby(pool).await?;
            vec![None; layers.len()]
        } else {
            cells::ensure(
                pool,
                &job.change_schema,
                &config.name,
                &layers,
                config.extent,
            )
            .await?
        };
        cells_maintained |= cell_tables.iter().any(Option::is_some);
        let render_pool = match replica {
            // The renderer's statements read the cell tables just created on the primary.
            Some(replica) if cell_tables.iter().any(Option::is_some) => {
                replica
                    .catch_up(pool, job.database.statement_timeout)
                    .await?;
                &replica.pool
            }
            Some(replica) => &replica.pool,
            None => pool,
        };
        let cell_names: Vec<Option<String>> = cell_tables
            .iter()
            .map(|t| t.as_ref().map(|t| t.qualified.clone()))
            .collect();
        let render_pool = (render_pool.clone(), job.database.pool_mode);
        let renderer = TilesetRenderer::new(
            render_pool.clone(),
            &config.name,
            &layers,
            &cell_names,
            tileset.zooms,
            (config.extent, config.buffer),
        );
        renderer.check().await?;
        Ok(Prepared {
            tileset,
            layers,
            cell_tables,
            cells_maintained,
            renderer,
            render_pool,
        })
    }

    /// Another partition of the same partitioned tileset, prepared from this one without asking
    /// the server: the sources are the same tables, and the statements, which take the value as
    /// a parameter, the same text. A run prepares each partition just before it runs and drops it
    /// after, so memory does not grow with the number of values.
    pub fn sibling<'b>(&self, tileset: &'b TilesetJob) -> Prepared<'b> {
        let config = &tileset.tileset;
        let layers: Vec<LayerSource> = self
            .layers
            .iter()
            .zip(&config.layers)
            .map(|(source, layer)| LayerSource {
                config: layer.clone(),
                ..source.clone()
            })
            .collect();
        let cell_names = vec![None; layers.len()];
        let renderer = TilesetRenderer::new(
            self.render_pool.clone(),
            &config.name,
            &layers,
            &cell_names,
            tileset.zooms,
            (config.extent, config.buffer),
        );
        Prepared {
            tileset,
            layers,
            cell_tables: vec![None; cell_names.len()],
            cells_maintained: false,
            renderer,
            render_pool: self.render_pool.clone(),
        }
    }
}
