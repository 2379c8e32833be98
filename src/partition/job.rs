//! One value's tileset: the partitioned tileset's job limited to the rows holding the value,
//! its output named after it, its layers reading a row set where sessions keep them.

use deadpool_postgres::Pool;

use crate::config::{partition_segment, Partition, PoolMode};
use crate::error::Result;
use crate::job::{SeedJob, TilesetJob};
use crate::render::row_set;
use crate::render::source::PartitionColumn;

/// The name a partition's run goes by in logs, summaries and its metadata.
pub(super) fn partition_name(tileset: &str, value: &str) -> String {
    format!("{tileset}[{value}]")
}

/// Whether partitions' tiles may read row sets ([`row_set`]): sessions that keep temporary
/// tables from one statement to the next, on a server that allows them. A shard rendering from
/// a replica reads the table: a hot standby has no temporary tables.
pub(super) async fn row_sets_allowed(pool: &Pool, job: &SeedJob) -> Result<bool> {
    if job.database.pool_mode != PoolMode::Session || job.replica().is_some() {
        return Ok(false);
    }
    let allowed = row_set::available(pool).await?;
    if !allowed {
        tracing::info!(
            "the server allows no temporary tables here: partitions' tiles read the table, \
             filtered by the value"
        );
    }
    Ok(allowed)
}

/// The tileset of one value: every layer limited to its rows, the output named after it; with
/// `row_sets`, each layer reads them from a row set.
pub(super) fn partition_job(
    tileset: &TilesetJob,
    column: &str,
    value: &str,
    arrays: &[PartitionColumn],
    full_seed: bool,
    row_sets: bool,
) -> Result<TilesetJob> {
    let family = tileset.tileset.name.clone();
    let segment = partition_segment(value)?;
    let mut job = tileset.clone();
    job.full_seed = full_seed;
    job.list_prefix = Some(segment.clone());
    job.tileset_output = tileset.output.clone();
    job.partition_of = Some(tileset.tileset.name.clone());
    job.output = tileset.output.as_ref().map(|t| t.for_partition(&segment));
    let config = &mut job.tileset;
    config.name = partition_name(&config.name, value);
    config.partition_by = None;
    // A tree's TileJSON names the tiles under the value's own prefix.
    if let Some(url) = &mut config.output_settings.tiles_url {
        *url = url.replacen("{z}", &format!("{segment}/{{z}}"), 1);
    }
    for (index, (layer, array)) in config.layers.iter_mut().zip(arrays).enumerate() {
        layer.partition = Some(Partition {
            row_set: row_sets.then(|| row_set::table_name(&family, index)),
            column: column.to_string(),
            value: value.to_string(),
            array: array.array,
            value_type: array.value_type.clone(),
        });
    }
    Ok(job)
}
