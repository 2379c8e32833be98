//! `seed --dirty --dry-run`'s side of the outbox: what each target would be sent, read only.

use crate::config::StoreConfig;
use crate::coordination::outbox::{Backlog, Outbox, EVERYTHING};
use crate::edge::StoredTiles;
use crate::edge::{Client, PurgeTarget};
use crate::error::Result;
use crate::job::TilesetJob;
use crate::plan::Work;
use crate::report::TargetPlan;
use crate::sink::{self, OutputTarget};

use super::{purge_path, read_json, STORED_TILES};

/// `seed --dirty --dry-run`: what each CDN target of the tileset would be sent for the changes
/// waiting in the output's outbox and the planned `work`, folded as its purge folds them. Reads
/// only; returns the outbox's backlog too.
pub async fn purge_plans(
    target: &OutputTarget,
    tileset: &TilesetJob,
    store_settings: &StoreConfig,
    work: &Work,
) -> Result<(Backlog, Vec<TargetPlan>)> {
    let outbox = Outbox::new(
        sink::kind_of(target).home().outbox(store_settings).await?,
        None,
    );
    let stored: Option<StoredTiles> = read_json(&outbox, STORED_TILES).await?;
    let prefix = tileset.list_prefix.as_deref();
    let extension = &tileset.tileset.output_settings.tile_extension;
    let planned: Vec<String> = match work {
        // Which tiles of a subtree change is known only once it is walked; the run itself purges
        // those, folded into wildcards where dense. Planned ahead, a subtree may be any of them.
        Work::Pyramid | Work::Subtrees { .. } => vec![purge_path(prefix, extension, EVERYTHING)],
        // What the tiles cover, and so the documents declaring it, may change with any of them.
        Work::Tiles(tiles) if !tiles.is_empty() => tiles
            .iter()
            .map(|tile| purge_path(prefix, extension, &tile.to_string()))
            .chain(
                sink::kind_of(target)
                    .documents()
                    .iter()
                    .map(|name| purge_path(prefix, extension, name)),
            )
            .collect(),
        Work::Tiles(_) => Vec::new(),
    };
    let mut plans = Vec::new();
    if !tileset.tileset.cdn.is_empty() {
        let client = Client::new()?;
        for cdn in &tileset.tileset.cdn {
            let planner = PurgeTarget::planner(cdn, tileset.bbox, &client).await?;
            let waiting: Vec<String> = outbox
                .pending(&planner.consumer())
                .await?
                .into_iter()
                .flat_map(|(_, lines)| lines)
                .collect();
            let mut paths: Vec<String> = waiting
                .iter()
                .map(|line| purge_path(prefix, extension, line))
                .chain(planned.iter().cloned())
                .collect();
            paths.sort();
            paths.dedup();
            plans.push(TargetPlan {
                target: planner.name().to_string(),
                waiting: waiting.len() as u64,
                changed: paths.len() as u64,
                plan: planner.plan(&paths, stored.as_ref()),
            });
        }
    }
    Ok((outbox.backlog().await?, plans))
}
