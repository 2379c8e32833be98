//! `oar-tiles finalize`: ends a sharded run once every shard is done, leaving exactly the output one
//! run would have written.
//!
//! MBTiles part files are merged ([`merge_mbtiles`]). A PMTiles archive's shards kept MBTiles parts
//! with their records in its shard folder: once every record is there and of the plan, the archive's
//! sink takes the parts as its store and writes the archive once, through the outbox as a seed does.
//! Tree and S3 shards wrote their tiles into the
//! output already; finalize checks that every shard of the plan left a part record and that all ran
//! under that plan, then finishes the output as a single run would: it deletes the tiles in scope
//! that no shard produced, writes TileJSON, the tile hashes and the state. The recorded snapshot is
//! the one that sees only what every shard saw. Last, the plan and the parts are removed, so the next
//! sharded run plans afresh, and the watermark is recorded in the change log like a seed's.
//! Until then every step can be repeated: a finalize that dies is simply run again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::coordination::parts::{plan_id, PartRecord};
use crate::coordination::shards::{Part, ShardStore};
use crate::coordination::{lock, ChangedList, TilesetMetadata};
use crate::db;
use crate::delivery::RunOutbox;
use crate::edge::Holds;
use crate::error::{Error, Result};
use crate::job::{SeedJob, ShardSpec, TilesetJob};
use crate::plan::shard::ShardPlan;
use crate::plan::Work;
use crate::report::PurgeSummary;
use crate::sink::{self, Finish, OutputTarget, Sharding};
use crate::state::capture;
use crate::state::watermark::earliest_snapshot;
use crate::state::Watermark;

/// What finalizing one tileset's output did.
#[derive(Debug, Clone)]
pub struct Finalized {
    /// The tileset.
    pub tileset: String,
    /// The output, described.
    pub output: String,
    /// Shards combined.
    pub shards: u32,
    /// Tiles the output holds.
    pub tiles: u64,
    /// Tiles deleted because no shard produced them (trees and S3; a PMTiles archive is written
    /// anew from the parts alone, and counts none).
    pub deleted: u64,
    /// The snapshot the output now records.
    pub snapshot: String,
    /// What each CDN target was sent of the sweep's changes.
    pub purges: Vec<PurgeSummary>,
}

/// Finalizes every tileset of the job whose output holds a shard plan, one after the other; fails
/// when none does.
pub async fn finalize(job: &SeedJob, changed: ChangedList) -> Result<Vec<Finalized>> {
    let mut done = Vec::new();
    let mut pool = None;
    for tileset in &job.tilesets {
        let Some(target) = &tileset.output else {
            return Err(Error::Usage(format!(
                "tileset `{}` has no output to finalize",
                tileset.tileset.name
            )));
        };
        let lock = lock::acquire(
            &sink::lock_place(target, &job.store_settings),
            job.run.wait_lock,
            None,
            std::future::pending(),
        )
        .await?;
        // The lease is released however finalizing ends, so a retry need not wait for it.
        let finalized: Result<Option<Finalized>> = async {
            let Some(finalized) = finalize_output(job, tileset, target, changed.clone()).await?
            else {
                return Ok(None);
            };
            // Like a seed, the finished output holds back the change log's pruning at its
            // watermark.
            let pool = match &mut pool {
                Some(pool) => pool,
                None => pool.insert(db::connect(&job.database, 2).await?),
            };
            let watermark = Watermark {
                snapshot: finalized.snapshot.clone(),
                ..Watermark::default()
            };
            capture::advance_and_prune(pool, &job.change_schema, target, &watermark).await?;
            Ok(Some(finalized))
        }
        .await;
        lock.release().await;
        match finalized? {
            Some(finalized) => done.push(finalized),
            // A config's other tilesets need not have been sharded.
            None => tracing::info!(
                "tileset `{}`: no shard plan in {}, nothing to finalize",
                tileset.tileset.name,
                target.describe()
            ),
        }
    }
    if done.is_empty() {
        let outputs: Vec<String> = job
            .tilesets
            .iter()
            .filter_map(|t| t.output.as_ref().map(OutputTarget::describe))
            .collect();
        return Err(Error::Plan {
            location: outputs.join(", "),
            message: format!(
                "no shard plan in {}, so no sharded run to finalize",
                outputs.join(", ")
            ),
        });
    }
    Ok(done)
}

async fn finalize_output(
    job: &SeedJob,
    tileset: &TilesetJob,
    target: &OutputTarget,
    changed: ChangedList,
) -> Result<Option<Finalized>> {
    let store = sink::kind_of(target)
        .shard_store(&job.store_settings)
        .await?;
    let location = store.plan_location();
    let Some(text) = store.read_plan().await? else {
        return Ok(None);
    };
    let plan = ShardPlan::from_json(&text, &location)?;
    let specs: Vec<ShardSpec> = (0..plan.shards())
        .map(|index| ShardSpec::new(index, plan.shards()))
        .collect::<Result<_>>()?;
    let name = tileset.tileset.name.clone();
    let output = target.describe();
    let finalized = |tiles, deleted, snapshot| Finalized {
        tileset: name.clone(),
        output: output.clone(),
        shards: plan.shards(),
        tiles,
        deleted,
        snapshot,
        purges: Vec::new(),
    };
    if target.sharding() == Sharding::PartStores {
        let parts = Parts {
            store,
            plan: &plan,
            plan_id: plan_id(&text),
            specs,
        };
        let (tiles, snapshot, purges) = join_parts(job, tileset, target, changed, parts).await?;
        return Ok(Some(Finalized {
            purges,
            ..finalized(tiles, 0, snapshot)
        }));
    }
    if target.sharding() == Sharding::PartFiles {
        let (tiles, snapshot) = merge_part_files(target, &specs, &store).await?;
        return Ok(Some(finalized(tiles, 0, snapshot)));
    }
    let mut parts = Vec::new();
    let mut missing = Vec::new();
    for spec in &specs {
        match store.read_part(*spec).await? {
            Some(part) => parts.push((*spec, part)),
            None => missing.push(spec.to_string()),
        }
    }
    refuse_missing(&output, &missing)?;
    let (tiles, watermark) = combine(&output, &plan, &plan_id(&text), &parts)?;
    let metadata = parts[0].1.record.metadata.clone();
    let count = tiles.len() as u64;
    let (deleted, purges) = store_combined(
        job,
        tileset,
        target,
        &changed,
        (tiles, metadata, &watermark),
    )
    .await?;
    store.clear(plan.shards()).await?;
    Ok(Some(Finalized {
        purges,
        ..finalized(count, deleted, watermark.snapshot)
    }))
}

/// Merges the MBTiles part files of `specs` into the output, then removes them and the plan from
/// `store`; returns the tiles the output holds and its snapshot. Refuses while a part is missing.
async fn merge_part_files(
    target: &OutputTarget,
    specs: &[ShardSpec],
    store: &ShardStore,
) -> Result<(u64, String)> {
    let parts: Vec<_> = specs
        .iter()
        .filter_map(|s| target.shard_part(s.index, s.count))
        .filter_map(|part| part.local_path().map(Path::to_path_buf))
        .collect();
    let missing: Vec<String> = specs
        .iter()
        .zip(&parts)
        .filter(|(_, part)| !part.is_file())
        .map(|(spec, _)| spec.to_string())
        .collect();
    refuse_missing(&target.describe(), &missing)?;
    let merged = {
        let (owned, parts) = (target.clone(), parts.clone());
        tokio::task::spawn_blocking(move || sink::kind_of(&owned).merge_parts(&parts))
            .await
            .map_err(|e| Error::output(path_of(target), format!("merging failed: {e}")))??
    };
    store.clear(0).await?;
    for part in &parts {
        std::fs::remove_file(part)
            .map_err(|e| Error::output(part, format!("cannot remove the part: {e}")))?;
    }
    Ok((merged.tiles, merged.snapshot))
}

/// Finishes a tree, an S3 prefix or a PMTiles archive as one run would, with the `tiles` the parts
/// combined, under their `metadata` and `watermark`, its sweep and documents going through the
/// output's outbox; returns the tiles the sweep deleted and the purges.
async fn store_combined(
    job: &SeedJob,
    tileset: &TilesetJob,
    target: &OutputTarget,
    changed: &ChangedList,
    (tiles, metadata, watermark): (HashMap<u64, [u8; 16]>, TilesetMetadata, &Watermark),
) -> Result<(u64, Vec<PurgeSummary>)> {
    let settings = &tileset.tileset.output_settings;
    // What the sweep deletes and the documents it rewrites go through the output's outbox, as a
    // seed's changes do, so the CDNs are purged of them and nothing is lost to a kill.
    let mut outbox =
        RunOutbox::open(target, tileset, &job.store_settings, None, changed, 0).await?;
    outbox.feed_reloads();
    let sink = sink::open(
        target,
        settings,
        &job.store_settings,
        outbox.recorder(),
        None,
        None,
    )
    .await?;
    let state = watermark.to_state();
    let intended = outbox.intend(sink.state().as_deref(), &Work::Pyramid).await;
    let finished = match intended {
        Ok(()) => tokio::task::spawn_blocking(move || {
            let mut sink = sink;
            sink.adopt(&tiles)?;
            sink.finish(Finish {
                metadata: &metadata,
                sweep: &crate::sink::Sweep::Everything,
                state: Some(&state),
                defer_hash: false,
            })
        })
        .await
        .map_err(|e| Error::output(path_of(target), format!("finishing failed: {e}")))
        .and_then(|finished| finished),
        Err(err) => {
            let _ = tokio::task::spawn_blocking(move || sink.abort()).await;
            Err(err)
        }
    };
    let delivered = outbox
        .commit_and_deliver(changed, finished.is_err(), &Holds::default(), None, &[])
        .await;
    let report = finished?;
    let purges = delivered?.purges;
    Ok((report.deleted, purges))
}

/// The shards' parts of an output written whole, kept in its shard store.
struct Parts<'a> {
    store: ShardStore,
    plan: &'a ShardPlan,
    plan_id: String,
    specs: Vec<ShardSpec>,
}

/// Finalizes an output written whole (PMTiles): its sink takes the MBTiles parts the shards kept
/// as its tiles and writes the output once, through the output's outbox as a seed does, so its
/// consumers (CDN purges, the changes feed) learn of it. Returns the tiles, the snapshot recorded
/// and the purges.
async fn join_parts(
    job: &SeedJob,
    tileset: &TilesetJob,
    target: &OutputTarget,
    changed: ChangedList,
    parts: Parts<'_>,
) -> Result<(u64, String, Vec<PurgeSummary>)> {
    let output = target.describe();
    let mut records = Vec::new();
    let mut missing = Vec::new();
    for spec in &parts.specs {
        match parts.store.read_record(*spec).await? {
            Some(record) => records.push((*spec, record)),
            None => missing.push(spec.to_string()),
        }
    }
    refuse_missing(&output, &missing)?;
    let watermarks = records
        .iter()
        .map(|(spec, record)| check_record(&output, parts.plan, &parts.plan_id, *spec, record))
        .collect::<Result<Vec<_>>>()?;
    let watermark = merged_watermark(&output, &watermarks)?;
    let metadata = records[0].1.metadata.clone();
    let settings = &tileset.tileset.output_settings;
    let mut outbox =
        RunOutbox::open(target, tileset, &job.store_settings, None, &changed, 0).await?;
    // Every tile may have changed: followers reload the whole source.
    outbox.feed_reloads();
    let sink = sink::open(
        target,
        settings,
        &job.store_settings,
        outbox.recorder(),
        None,
        None,
    )
    .await?;
    let state = watermark.to_state();
    let intended = outbox.intend(sink.state().as_deref(), &Work::Pyramid).await;
    let store = Arc::new(parts.store);
    let finished = match intended {
        Ok(()) => {
            let (store, specs) = (store.clone(), parts.specs.clone());
            tokio::task::spawn_blocking(move || {
                let (sink, tiles) = sink.adopt_parts(&store, &specs)?;
                // The parts are every tile the output holds now: nothing is left to sweep.
                sink.finish(Finish {
                    metadata: &metadata,
                    sweep: &crate::sink::Sweep::Nothing,
                    state: Some(&state),
                    defer_hash: false,
                })?;
                Ok(tiles)
            })
            .await
            .map_err(|e| Error::output(path_of(target), format!("joining the parts failed: {e}")))
            .and_then(|finished| finished)
        }
        Err(err) => {
            let _ = tokio::task::spawn_blocking(move || sink.abort()).await;
            Err(err)
        }
    };
    let delivered = outbox
        .commit_and_deliver(&changed, finished.is_err(), &Holds::default(), None, &[])
        .await;
    let tiles = finished?;
    let purges = delivered?.purges;
    store.clear(parts.plan.shards()).await?;
    Ok((tiles, watermark.snapshot, purges))
}

fn refuse_missing(output: &str, missing: &[String]) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Plan {
        location: output.to_string(),
        message: format!(
            "{output}: shard(s) {} have not finished; finalize once every shard is done",
            missing.join(", ")
        ),
    })
}

/// Checks that the parts belong to one run of the plan and combines them: every tile with its
/// hash, and the watermark whose snapshot sees only what every shard saw.
fn combine(
    output: &str,
    plan: &ShardPlan,
    plan_id: &str,
    parts: &[(ShardSpec, Part)],
) -> Result<(HashMap<u64, [u8; 16]>, Watermark)> {
    let mut tiles: HashMap<u64, [u8; 16]> = HashMap::new();
    let mut watermarks = Vec::new();
    for (spec, part) in parts {
        watermarks.push(check_record(output, plan, plan_id, *spec, &part.record)?);
        for (key, md5) in &part.tiles {
            if tiles.insert(*key, *md5).is_some() {
                return Err(refuse_part(
                    output,
                    spec,
                    "holds a tile another shard holds too",
                ));
            }
        }
    }
    Ok((tiles, merged_watermark(output, &watermarks)?))
}

/// The parts' output disagrees with itself: a runtime failure of the output (exit 1), not a
/// usage error.
fn refuse_part(output: &str, spec: &ShardSpec, why: &str) -> Error {
    Error::output(
        output,
        format!("the part of shard {spec} {why}; run that shard again"),
    )
}

/// Checks that shard `spec`'s record belongs to one run of the plan; returns its watermark.
fn check_record(
    output: &str,
    plan: &ShardPlan,
    plan_id: &str,
    spec: ShardSpec,
    record: &PartRecord,
) -> Result<Watermark> {
    if record.plan != plan_id || record.shard != spec.to_string() {
        return Err(refuse_part(
            output,
            &spec,
            "was written under another shard plan",
        ));
    }
    let Some(watermark) = Watermark::from_state(&record.state) else {
        return Err(refuse_part(output, &spec, "holds no readable watermark"));
    };
    if watermark.settings.as_deref() != Some(plan.settings_digest.as_str()) {
        return Err(refuse_part(
            output,
            &spec,
            "was rendered with other settings than the plan's",
        ));
    }
    Ok(watermark)
}

/// The watermark whose snapshot sees only what every shard saw.
fn merged_watermark(output: &str, watermarks: &[Watermark]) -> Result<Watermark> {
    let snapshot = earliest_snapshot(watermarks.iter().map(|w| w.snapshot.as_str()))
        .ok_or_else(|| Error::output(output, "a part's snapshot is not readable"))?;
    Ok(Watermark {
        snapshot,
        ..watermarks[0].clone()
    })
}

fn path_of(target: &OutputTarget) -> std::path::PathBuf {
    std::path::PathBuf::from(target.describe())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordination::parts::PART_VERSION;
    use crate::coordination::TilesetMetadata;
    use crate::plan::shard::{ShardRange, PLAN_VERSION};
    use crate::tile::{BBox, ZoomRange};

    fn plan() -> ShardPlan {
        let range = |start, end| ShardRange {
            start,
            end,
            weight: 1,
        };
        ShardPlan {
            version: PLAN_VERSION,
            settings_digest: "s".into(),
            split_zoom: 1,
            top: crate::plan::shard::ShardTop {
                shard: Some(0),
                weight: 1,
                dearest: 1,
                dealt: Vec::new(),
            },
            dearest: 1,
            ranges: vec![range(0, 2), range(2, 4)],
        }
    }

    fn part(index: u32, plan: &str, settings: &str, snapshot: &str, tiles: &[u64]) -> Part {
        let watermark = Watermark {
            snapshot: snapshot.into(),
            settings: Some(settings.into()),
            ..Watermark::default()
        };
        Part {
            record: PartRecord {
                version: PART_VERSION,
                shard: format!("{index}/2"),
                plan: plan.into(),
                state: watermark.to_state(),
                metadata: TilesetMetadata::bare("t", BBox::WORLD, ZoomRange::new(0, 3).unwrap()),
                tiles: tiles.len() as u64,
            },
            tiles: tiles.iter().map(|key| (*key, [*key as u8; 16])).collect(),
        }
    }

    fn spec(index: u32) -> ShardSpec {
        ShardSpec::new(index, 2).unwrap()
    }

    #[test]
    fn parts_of_one_run_combine_into_every_tile_and_the_earliest_snapshot() {
        let parts = [
            (spec(0), part(0, "p", "s", "10:20:12", &[1, 2])),
            (spec(1), part(1, "p", "s", "15:18:15", &[3])),
        ];
        let (tiles, watermark) = combine("out", &plan(), "p", &parts).unwrap();
        assert_eq!(tiles.len(), 3);
        assert_eq!(tiles[&3], [3; 16]);
        assert_eq!(watermark.snapshot, "12:18:12,15");
        assert_eq!(watermark.settings.as_deref(), Some("s"));
    }

    #[test]
    fn parts_of_another_plan_other_settings_or_overlapping_tiles_are_refused() {
        let good = (spec(0), part(0, "p", "s", "10:20:", &[1, 2]));
        let cases = [
            (part(1, "q", "s", "10:20:", &[3]), "another shard plan"),
            (part(0, "p", "s", "10:20:", &[3]), "another shard plan"),
            (part(1, "p", "t", "10:20:", &[3]), "other settings"),
            (
                part(1, "p", "s", "10:20:", &[2]),
                "holds a tile another shard holds",
            ),
            (
                part(1, "p", "s", "garbage", &[3]),
                "snapshot is not readable",
            ),
        ];
        for (bad, why) in cases {
            let parts = [good.clone(), (spec(1), bad)];
            let err = combine("out", &plan(), "p", &parts)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }
}
