//! Which values a `--dirty` run or `watch` cycle of a partitioned tileset renders: every value, or
//! only those the changes since the index's watermark touched.

use deadpool_postgres::Pool;

use crate::coordination::partitions::PartitionIndex;
use crate::error::Result;
use crate::job::{SeedJob, Selection, TilesetJob};
use crate::render::source::quoted_table;
use crate::state::capture;
use crate::state::Watermark;

/// Which values a run of a partitioned tileset renders.
pub(super) enum Scope {
    /// Every value, each as the job asks.
    Every,
    /// Every value: the tileset-wide read of the change log found changes it cannot attribute
    /// (a TRUNCATE, or changes logged before the column's values were).
    EveryNow(capture::Touched),
    /// Only the values the changes since the index's watermark touched.
    Touched(capture::Touched),
}

impl Scope {
    /// Decides the scope, and the watermark the index records if the run completes.
    pub(super) async fn decide(
        pool: &Pool,
        job: &SeedJob,
        tileset: &TilesetJob,
        column: &str,
        previous: &Option<PartitionIndex>,
    ) -> Result<(Scope, Option<Watermark>)> {
        let applies_everything = job.partitions.is_empty()
            && tileset.output.is_some()
            && !job.run.dry_run
            && matches!(job.selection, Selection::Pyramid | Selection::Dirty);
        if !applies_everything {
            return Ok((Scope::Every, None));
        }
        let since = previous
            .as_ref()
            .and_then(|index| index.watermark.clone())
            .filter(|_| job.selection == Selection::Dirty);
        let Some(since) = since else {
            // Taken before any partition runs: each partition's own, later snapshot sees at least
            // as much, so the next tileset-wide read misses nothing.
            let now = capture::current_watermark(pool).await?;
            return Ok((Scope::Every, Some(now)));
        };
        let mut tables: Vec<String> = tileset.tileset.layers.iter().map(quoted_table).collect();
        tables.sort();
        tables.dedup();
        let since = Watermark {
            snapshot: since,
            ..Watermark::default()
        };
        let (touched, next) =
            capture::read_touched(pool, &job.change_schema, &tables, column, &since).await?;
        tracing::info!(
            "tileset `{}`: {} change(s) since the index's watermark touched {}",
            tileset.tileset.name,
            touched.changes,
            if touched.every_value {
                "every value".to_string()
            } else {
                format!("{} value(s)", touched.values.len())
            }
        );
        if let Some(why) = &touched.uncaptured {
            tracing::info!(
                "tileset `{}`: {why}; every partition is reseeded whole",
                tileset.tileset.name
            );
        }
        let scope = if touched.every_value {
            Scope::EveryNow(touched)
        } else {
            Scope::Touched(touched)
        };
        Ok((scope, Some(next)))
    }

    /// Whether the run looks at `value`.
    pub(super) fn covers(&self, value: &str) -> bool {
        match self {
            Scope::Every | Scope::EveryNow(_) => true,
            Scope::Touched(touched) => touched.values.contains(value),
        }
    }
}
