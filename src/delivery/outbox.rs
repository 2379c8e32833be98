//! Step 4's outbox (see `coordination::outbox`): a run records what it may change before it changes
//! anything, what it changed once it ends, and then hands the output's pending changes to its
//! consumers (`deliver.rs`): the command's `--changed-list`, the tileset's CDN purge targets and
//! its changes feed. This file opens a run's outbox and keeps its notes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::config::StoreConfig;
use crate::coordination::changed_list::CHANGED_LIST_CONSUMER;
use crate::coordination::outbox::{Backlog, Outbox, OutboxRun, Planned, EVERYTHING};
use crate::coordination::ChangedList;
use crate::edge::StoredTiles;
use crate::edge::{sample_for_check, EdgeProbe};
use crate::edge::{Client, Holds, PurgeReport, PurgeTarget};
use crate::error::Result;
use crate::job::TilesetJob;
use crate::plan::Work;
use crate::sink::{self, OutputTarget};
use crate::tile::TileCoord;

use super::feed::{EarlyFeed, Edge, HeadPurges, RunFeed, FEED_CONSUMER};

mod calls;
mod deliver;
mod documents;
mod dry_run;
mod early;
mod journal;

pub use documents::{record_new_hash, Delivered};
pub use dry_run::purge_plans;
pub(super) use journal::accepted_lines;

/// One output's outbox during a run.
pub struct RunOutbox {
    outbox: Arc<Outbox>,
    run: Option<OutboxRun>,
    keeps_stopped_tiles: bool,
    /// The tileset's CDNs.
    targets: Vec<PurgeTarget>,
    /// Who takes this output's changes: `--changed-list` when the command writes one, and each
    /// CDN.
    consumers: Vec<String>,
    /// Where the output's paths go under the tileset's root (a partition's), and the tiles'
    /// file extension.
    prefix: Option<String>,
    extension: String,
    /// The output, for the edge check's probes.
    target: OutputTarget,
    /// Tiles per target the edge check samples (0: none).
    check_sample: usize,
    /// A partition's: its tileset's outbox, which takes over the purges this outbox could not
    /// deliver, and the partition's path.
    handover: Option<(Outbox, String)>,
    /// The tiles the output stores per zoom, where a target prices its purges.
    stored: Option<StoredTiles>,
    /// Whether the output's writer records a tile only once it is served (see
    /// [`RunOutbox::purges_as_stored`]).
    records_when_visible: bool,
    /// The targets (by consumer name) that purge a run's tiles as they are stored.
    early_targets: HashSet<String>,
    /// Per target (by consumer name), the lines it purged while the run wrote, and what that
    /// sent: the run's delivery leaves them out.
    early: HashMap<String, (HashSet<String>, PurgeReport)>,
    /// Per target (by consumer name), why a purge while the run wrote failed: the run's
    /// delivery reports it rather than wait on the same CDN a second time.
    early_failed: HashMap<String, String>,
    /// The output's changes feed (`[tileset.feed]`); a shard's part has none (its `finalize`
    /// publishes a reload).
    feed: Option<RunFeed>,
    /// The feed's segments published while the run renders.
    early_feed: EarlyFeed,
    /// The batches this run's `--changed-list` took, which a second delivery leaves to it.
    listed: HashSet<String>,
    /// What the feed's head purges sent since the last delivery.
    head_purges: HeadPurges,
}

/// The outbox note that records the tiles an output stores per zoom.
const STORED_TILES: &str = "stored-tiles";

/// Reads a JSON note of the outbox; one that cannot be read (not JSON, not a regular file within
/// the cap) counts as absent (it is an estimate the next full seed rewrites), with a warning.
async fn read_json<T: serde::de::DeserializeOwned>(
    outbox: &Outbox,
    name: &str,
) -> Result<Option<T>> {
    let read = match outbox.read_note(name).await {
        Ok(None) => return Ok(None),
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    read.map(Some).or_else(|why| {
        let place = outbox.note_location(name);
        tracing::warn!("the outbox note {place} cannot be read ({why}); it is written anew");
        Ok(None)
    })
}

async fn write_json<T: serde::Serialize>(outbox: &Outbox, name: &str, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    outbox.write_note(name, &bytes).await
}

impl RunOutbox {
    /// Opens the output's outbox and starts recording this run's changes; `part` tags a shard's
    /// files.
    pub async fn open(
        target: &OutputTarget,
        tileset: &TilesetJob,
        store_settings: &StoreConfig,
        part: Option<String>,
        changed: &ChangedList,
        check_sample: usize,
    ) -> Result<RunOutbox> {
        let kind = sink::kind_of(target);
        let mut targets = Vec::new();
        if !tileset.tileset.cdn.is_empty() {
            let client = Client::new()?;
            for cdn in &tileset.tileset.cdn {
                targets.push(PurgeTarget::build(cdn, tileset.bbox, &client).await?);
            }
        }
        let feed = match (&tileset.tileset.feed, &part) {
            (Some(settings), None) => Some(RunFeed {
                store: kind.home().feed(store_settings).await?,
                settings: settings.clone(),
                reload: false,
            }),
            _ => None,
        };
        let outbox = Outbox::new(kind.home().outbox(store_settings).await?, part);
        let run = outbox.start()?;
        let handover = match (&tileset.tileset_output, &tileset.list_prefix) {
            (Some(root), Some(path)) if !targets.is_empty() => Some((
                Outbox::new(
                    sink::kind_of(root).home().outbox(store_settings).await?,
                    None,
                ),
                path.clone(),
            )),
            _ => None,
        };
        let mut consumers: Vec<String> = targets.iter().map(PurgeTarget::consumer).collect();
        if changed.is_enabled() {
            consumers.push(CHANGED_LIST_CONSUMER.to_string());
        }
        if feed.is_some() {
            consumers.push(FEED_CONSUMER.to_string());
        }
        let stored = if targets.iter().any(PurgeTarget::uses_census) {
            read_json(&outbox, STORED_TILES).await?
        } else {
            None
        };
        let opened = RunOutbox {
            stored,
            records_when_visible: kind.home().stores_tile_by_tile(),
            early_targets: HashSet::new(),
            early: HashMap::new(),
            early_failed: HashMap::new(),
            early_feed: EarlyFeed::default(),
            listed: HashSet::new(),
            head_purges: HeadPurges::default(),
            feed,
            outbox: Arc::new(outbox),
            run: Some(run),
            keeps_stopped_tiles: kind.home().stores_tile_by_tile(),
            targets,
            consumers,
            prefix: tileset.list_prefix.clone(),
            extension: tileset.tileset.output_settings.tile_extension.clone(),
            target: target.clone(),
            check_sample,
            handover,
        };
        opened.learn_api_calls().await?;
        Ok(opened)
    }

    /// Makes every publication of the feed ask maps to reload every tile: `finalize`'s, whose
    /// parts' tiles the feed never saw.
    pub fn feed_reloads(&mut self) {
        if let Some(feed) = &mut self.feed {
            feed.reload = true;
        }
    }

    fn purge_path(&self, line: &str) -> String {
        purge_path(self.prefix.as_deref(), &self.extension, line)
    }

    /// Records the tiles a complete full seed left in the output, per zoom, which prices the
    /// wildcards of this and later purges (only where a target's purges cost money or may be
    /// coarsened to keep to its pace).
    pub async fn record_stored(
        &mut self,
        zooms: std::collections::BTreeMap<u8, u64>,
    ) -> Result<()> {
        if !self.targets.iter().any(PurgeTarget::uses_census) {
            return Ok(());
        }
        let stored = StoredTiles { zooms };
        write_json(&self.outbox, STORED_TILES, &stored).await?;
        self.stored = Some(stored);
        Ok(())
    }

    /// The outbox's note `name` as stored, for a note that must not be taken as absent when it
    /// cannot be read; and where it is, for messages.
    pub async fn note_bytes(&self, name: &str) -> Result<(Option<Vec<u8>>, String)> {
        let bytes = self.outbox.read_note(name).await?;
        Ok((bytes, self.outbox.note_location(name)))
    }

    /// Replaces the outbox's note `name`, durably.
    pub async fn write_note<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<()> {
        write_json(&self.outbox, name, value).await
    }

    /// Removes the outbox's note `name`, then the outbox's folder when nothing else is in it.
    pub async fn remove_note(&self, name: &str) -> Result<()> {
        self.outbox.remove_note(name).await?;
        self.outbox.prune(&self.consumers).await
    }

    /// What the output's sink records its changes to.
    pub fn recorder(&self) -> ChangedList {
        self.run
            .as_ref()
            .map_or_else(ChangedList::disabled, OutboxRun::recorder)
    }

    /// Once the output is open (its `state` read) and the work decided, and before any tile is
    /// written: settles what a stopped run left, then records what this run may change.
    pub async fn intend(&self, state: Option<&str>, work: &Work) -> Result<()> {
        let stopped = self.outbox.recover(state, self.keeps_stopped_tiles).await?;
        if !stopped.is_empty() {
            sink::kind_of(&self.target).remove_leftovers(&stopped)?;
        }
        let Some(run) = &self.run else {
            return Ok(());
        };
        let planned = match work {
            // A killed walk of subtrees may have changed any tile in them, which no short list
            // names: its recovery delivers everything as changed, as a killed seed's does.
            Work::Pyramid | Work::Subtrees { .. } => Planned::Everything,
            Work::Tiles(tiles) => Planned::Tiles(tiles),
        };
        self.outbox.intend(run, state, planned).await
    }

    /// What the changes feed waits on, given the closures naming a line's purge path and a
    /// target's hold key.
    fn feed_edge<'a>(
        &'a self,
        holds: &'a Holds,
        path_of: &'a (dyn Fn(&str) -> String + Sync),
        hold_key: &'a (dyn Fn(&PurgeTarget) -> String + Sync),
    ) -> Edge<'a> {
        Edge {
            targets: &self.targets,
            handover: self.handover.as_ref().map(|(outbox, _)| outbox),
            prefix: self.prefix.as_deref(),
            path_of,
            holds,
            hold_key,
            head_purges: &self.head_purges,
        }
    }

    /// The key `target`'s failures hold it back under: a partition's is its tileset's, so one
    /// partition's failure holds the CDN back for its siblings and the tileset's own delivery.
    fn hold_key(&self, target: &PurgeTarget) -> String {
        let place = match &self.handover {
            Some((tileset_outbox, _)) => tileset_outbox.describe(),
            None => self.target.describe(),
        };
        Holds::key(&place, target.name())
    }

    /// A sample of `lines`, which `target` just purged, for the edge check, when it has a public URL.
    fn probe<'l>(
        &self,
        target: &PurgeTarget,
        lines: impl Iterator<Item = &'l String>,
    ) -> Option<EdgeProbe> {
        let public_url = target.public_url().filter(|_| self.check_sample > 0)?;
        let tiles = lines
            .filter(|line| reaches_the_edge(&self.target, line))
            .filter_map(|line| Some((line.parse::<TileCoord>().ok()?, self.purge_path(line))))
            .collect();
        let tiles = sample_for_check(tiles, self.check_sample);
        (!tiles.is_empty()).then(|| EdgeProbe {
            output: self.target.clone(),
            extension: self.extension.clone(),
            target: target.name().to_string(),
            public_url: public_url.to_string(),
            tiles,
            purged_at: std::time::SystemTime::now(),
        })
    }

    /// What waits in the outbox for a consumer once this run is done: `changed`, the run's
    /// `--changed-list`, takes everything waiting for it when it closes, so that is not counted.
    pub async fn backlog(&self, changed: &ChangedList) -> Result<Backlog> {
        let waiting: Vec<String> = self
            .consumers
            .iter()
            .filter(|c| !changed.is_enabled() || c.as_str() != CHANGED_LIST_CONSUMER)
            .cloned()
            .collect();
        self.outbox.backlog_for(&waiting).await
    }
}

/// Whether `line` of `target`'s outbox goes to its CDNs and `--changed-list`. A PMTiles archive's
/// tiles are served from inside the archive: there is no URL of a tile to purge or list, only the
/// archive's, which its writer records when it rewrites it. Its tiles still reach the changes feed,
/// whose maps fetch them again from the new archive.
fn reaches_the_edge(target: &OutputTarget, line: &str) -> bool {
    !(target.is_pmtiles() && line.parse::<TileCoord>().is_ok())
}

/// The path a line of the outbox purges: a tile's `[PREFIX/]z/x/y.ext`, a document's or an
/// archive's name in its folder, `*` for everything.
fn purge_path(prefix: Option<&str>, extension: &str, line: &str) -> String {
    if line == EVERYTHING {
        return match prefix {
            Some(prefix) => format!("{prefix}/{EVERYTHING}"),
            None => EVERYTHING.to_string(),
        };
    }
    let path = match line.parse::<TileCoord>() {
        Ok(tile) => format!("{tile}.{extension}"),
        Err(_) => line.rsplit('/').next().unwrap_or(line).to_string(),
    };
    match prefix {
        Some(prefix) => format!("{prefix}/{path}"),
        None => path,
    }
}
