//! `[tileset.freshness]`: low zooms refreshed at `watch`'s own pace. A change dirties one tile per
//! zoom, and the low ones hold most of an unclustered layer, so a cycle that renders them every
//! time is as slow as its heaviest tile, however small the change. A cycle under a deferral renders
//! the tiles at and below `defer_below_zoom`'s depth now and notes the shallower ones in the
//! output's outbox (`deferred-tiles.note.json`), written durably before any tile and before the
//! watermark moves past the changes that dirtied them; the first cycle `defer_seconds` after the
//! first of them renders them all at once, however many changes dirtied them meanwhile.
//!
//! Any other run that reads the change log (`seed --dirty`) or renders the whole pyramid renders
//! the noted tiles too and, once complete, removes the note: nothing a deferral holds back outlives
//! the next cron run.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::Freshness;
use crate::coordination::outbox::Outbox;
use crate::delivery::RunOutbox;
use crate::error::{Error, Result};
use crate::job::{SeedJob, Selection};
use crate::plan::Work;
use crate::sink;
use crate::tile::TileCoord;

/// The outbox note holding the tiles a deferral held back.
pub(super) const DEFERRED_TILES: &str = "deferred-tiles";

/// The outbox note holding the tiles `watch`'s low lane is rendering: removed once a complete
/// cycle stored them, and rendered by any run that finds it (a watcher stopped meanwhile).
pub(super) const RENDERING_TILES: &str = "deferred-tiles-rendering";

/// What the note holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Deferred {
    /// When the tiles must be rendered, in seconds since the Unix epoch.
    pub due: u64,
    /// The tiles, `z/x/y`.
    pub tiles: Vec<String>,
}

impl Deferred {
    /// When its tiles are due, in seconds since the Unix epoch. A time further from now than
    /// `defer` cannot be one a run wrote (a clock set back, an edited or damaged note): it is taken
    /// as now, with a warning, rather than hold the tiles back for the skew or for ever.
    fn due_within(&self, defer: Duration) -> u64 {
        let now = now();
        if self.due > now.saturating_add(defer.as_secs()) {
            tracing::warn!(
                "the outbox note `{DEFERRED_TILES}` says its tiles are due {} s from now, later \
                 than freshness.defer_seconds allows: they are rendered now",
                self.due - now
            );
            now
        } else {
            self.due
        }
    }

    fn tiles(&self) -> impl Iterator<Item = TileCoord> + '_ {
        // A line that is no tile cannot come from this tool; it is skipped rather than fail
        // every cycle.
        self.tiles.iter().filter_map(|line| line.parse().ok())
    }
}

/// What a run does about the note once it has rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterRun {
    /// Nothing: the note (if any) stays as it is.
    Keep,
    /// A complete run rendered what the note held: it goes.
    Remove,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When tiles deferred now for `defer` are due; `defer_seconds` has no upper bound, so the sum
/// saturates rather than overflow.
fn due_after(defer: Duration) -> u64 {
    now().saturating_add(defer.as_secs())
}

/// Applies the tileset's deferral to the run's `work`, before anything is recorded or written:
/// `deferring` is true for a `watch` cycle of a plain tileset, whose low lane renders the noted
/// tiles (`freshness` is then the tileset's, or the zooms its cycles found slow); any other run
/// that reads the change log renders what the notes hold.
pub(super) async fn apply(
    freshness: Option<Freshness>,
    deferring: bool,
    selection: &Selection,
    work: &mut Work,
    outbox: &RunOutbox,
) -> Result<AfterRun> {
    if matches!(work, Work::Pyramid) {
        // A full seed renders every tile, those the notes held back among them: it removes them
        // unread, so it also clears a note that cannot be read.
        for name in [DEFERRED_TILES, RENDERING_TILES] {
            if outbox.note_bytes(name).await?.0.is_some() {
                return Ok(AfterRun::Remove);
            }
        }
        return Ok(AfterRun::Keep);
    }
    let noted = read_note(outbox, DEFERRED_TILES).await?;
    if let (true, Work::Tiles(tiles), Selection::Dirty) = (deferring, &mut *work, selection) {
        // The notes are the low lane's: a cycle rendering them too could store bytes newer
        // than those the lane then stores over them.
        if let Some(freshness) = freshness {
            defer_low(freshness, tiles, noted, outbox).await?;
        }
        return Ok(AfterRun::Keep);
    }
    // A lane's note left by a watcher that stopped before its tiles were stored.
    let rendering = read_note(outbox, RENDERING_TILES).await?;
    let noted = match (noted, rendering) {
        (None, None) => return Ok(AfterRun::Keep),
        (Some(mut noted), Some(rendering)) => {
            noted.tiles.extend(rendering.tiles);
            noted
        }
        (Some(noted), None) | (None, Some(noted)) => noted,
    };
    match work {
        Work::Tiles(tiles) if *selection == Selection::Dirty => {
            add_tiles(tiles, &noted, |_| false);
            Ok(AfterRun::Remove)
        }
        // A reseed past `listed_tiles` holds nothing back: it renders the noted tiles too, those
        // its subtrees do not already cover.
        Work::Subtrees { tiles, subtrees } if *selection == Selection::Dirty => {
            add_tiles(tiles, &noted, |tile| subtrees.contains(tile));
            Ok(AfterRun::Remove)
        }
        _ => Ok(AfterRun::Keep),
    }
}

/// Moves the low tiles out of `tiles` into the output's note, durably, before the watermark moves
/// past the changes that dirtied them.
async fn defer_low(
    freshness: Freshness,
    tiles: &mut Vec<TileCoord>,
    noted: Option<Deferred>,
    outbox: &RunOutbox,
) -> Result<()> {
    let below = freshness.defer_below_zoom;
    let mut low: Vec<TileCoord> = Vec::new();
    tiles.retain(|tile| {
        let deep = tile.z() >= below;
        if !deep {
            low.push(*tile);
        }
        deep
    });
    if low.is_empty() {
        return Ok(());
    }
    let mut note = noted.unwrap_or_else(|| Deferred {
        due: due_after(freshness.defer),
        tiles: Vec::new(),
    });
    let mut known: HashSet<String> = note.tiles.iter().cloned().collect();
    for tile in low {
        let line = tile.to_string();
        if known.insert(line.clone()) {
            note.tiles.push(line);
        }
    }
    tracing::debug!(
        "{} low-zoom tile(s) below zoom {below} wait for the low lane, in {} s at most",
        note.tiles.len(),
        note.due.saturating_sub(now())
    );
    outbox.write_note(DEFERRED_TILES, &note).await
}

/// The note `name` of the run's output; a note that cannot be read fails the run, as taken for
/// absent it would lose the low-zoom tiles it holds back for good.
async fn read_note(outbox: &RunOutbox, name: &str) -> Result<Option<Deferred>> {
    let (bytes, place) = outbox.note_bytes(name).await?;
    match bytes.map(|b| serde_json::from_slice(&b)) {
        None => Ok(None),
        Some(Ok(noted)) => Ok(Some(noted)),
        Some(Err(e)) => Err(Error::output(
            place,
            format!(
                "cannot be read ({e}): the low-zoom tiles it holds back are unknown; a full \
                 `oar-tiles seed` of the tileset renders them and removes it"
            ),
        )),
    }
}

/// The low lane's start: moves the tiles of `target`'s note (and of a lane's note a stopped
/// watcher left) into the lane's note, durably, and returns them for the lane to render. A
/// change that dirties one of them from now on notes it anew, so a render that started before
/// that change cannot take its place.
pub async fn begin_low_lane(
    tileset: &crate::job::TilesetJob,
    store_settings: &crate::config::StoreConfig,
    max_delay: Duration,
) -> Result<Vec<TileCoord>> {
    let (Some(target), None) = (&tileset.output, &tileset.tileset.partition_by) else {
        return Ok(Vec::new());
    };
    let defer = tileset.tileset.freshness.map_or(max_delay, |f| f.defer);
    let outbox = Outbox::new(
        sink::kind_of(target).home().outbox(store_settings).await?,
        None,
    );
    let mut tiles: Vec<String> = Vec::new();
    for name in [RENDERING_TILES, DEFERRED_TILES] {
        if let Some(bytes) = outbox.read_note(name).await? {
            let noted = serde_json::from_slice::<Deferred>(&bytes);
            if let (DEFERRED_TILES, Ok(noted)) = (name, &noted) {
                if tiles.is_empty() && noted.due_within(defer) > now() {
                    return Ok(Vec::new());
                }
            }
            let Ok(noted) = noted else {
                return Err(Error::output(
                    outbox.note_location(name),
                    "cannot be read: the low-zoom tiles it holds back are unknown; a full \
                     `oar-tiles seed` of the tileset renders them and removes it",
                ));
            };
            tiles.extend(noted.tiles);
        }
    }
    if tiles.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = HashSet::new();
    tiles.retain(|line| seen.insert(line.clone()));
    let rendering = Deferred { due: 0, tiles };
    let bytes = serde_json::to_vec(&rendering).expect("a note serializes");
    outbox.write_note(RENDERING_TILES, &bytes).await?;
    outbox.remove_note(DEFERRED_TILES).await?;
    let mut tiles: Vec<TileCoord> = rendering.tiles().collect();
    tiles.sort_by_key(|tile| std::cmp::Reverse(tile.z()));
    Ok(tiles)
}

/// Adds to `tiles` those the output's deferral notes hold, as a reseed would render them; reads
/// only (`seed --dirty --dry-run`).
pub(super) async fn add_noted(
    target: &crate::config::OutputTarget,
    store_settings: &crate::config::StoreConfig,
    tiles: &mut Vec<TileCoord>,
) -> Result<()> {
    let outbox = Outbox::new(
        sink::kind_of(target).home().outbox(store_settings).await?,
        None,
    );
    for name in [DEFERRED_TILES, RENDERING_TILES] {
        let Some(bytes) = outbox.read_note(name).await? else {
            continue;
        };
        if let Ok(noted) = serde_json::from_slice::<Deferred>(&bytes) {
            add_tiles(tiles, &noted, |_| false);
        }
    }
    Ok(())
}

/// Adds to `tiles` those `noted` holds that are not there yet nor `covered` otherwise, lowest
/// zoom first.
fn add_tiles(tiles: &mut Vec<TileCoord>, noted: &Deferred, covered: impl Fn(TileCoord) -> bool) {
    let mut listed: HashSet<TileCoord> = tiles.iter().copied().collect();
    for tile in noted.tiles() {
        if !covered(tile) && listed.insert(tile) {
            tiles.push(tile);
        }
    }
    tiles.sort_by_key(|tile| tile.z());
}

/// When `watch`'s low lane must render the tiles some output's notes hold back, though no change
/// came: the earliest note's due time (now for a lane's note a stopped watcher left), `None` when
/// nothing is deferred. A tileset without `[tileset.freshness]` defers for `max_delay`.
pub async fn next_deferral(job: &SeedJob, max_delay: Duration) -> Result<Option<SystemTime>> {
    let mut earliest: Option<u64> = None;
    for tileset in &job.tilesets {
        let Some(target) = &tileset.output else {
            continue;
        };
        if tileset.tileset.partition_by.is_some() {
            continue;
        }
        let defer = tileset.tileset.freshness.map_or(max_delay, |f| f.defer);
        let outbox = sink::outbox_of(target, &job.store_settings).await?;
        let mut due = None;
        if outbox.read_note(RENDERING_TILES).await?.is_some() {
            due = Some(now());
        } else if let Some(bytes) = outbox.read_note(DEFERRED_TILES).await? {
            if let Ok(noted) = serde_json::from_slice::<Deferred>(&bytes) {
                due = Some(noted.due_within(defer));
            }
        }
        if let Some(due) = due {
            earliest = Some(earliest.map_or(due, |e| e.min(due)));
        }
    }
    Ok(earliest.and_then(due_time))
}

/// `due` (seconds since the epoch) as a time `watch` can wait for; `None` past what the clock can
/// say (a deferral of billions of years), which no cycle needs to wait for. Never "now": a time
/// taken as now for ever would make `watch` run a cycle at every turn of its loop.
fn due_time(due: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(due))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_due_time_or_deferral_overflows() {
        let longest = Duration::from_secs(u64::MAX);
        assert_eq!(due_after(longest), u64::MAX);
        for due in [u64::MAX, i64::MAX as u64, u64::MAX - 1] {
            let noted = Deferred {
                due,
                tiles: Vec::new(),
            };
            // Further off than the deferral allows: now, with a warning.
            let within = noted.due_within(Duration::from_secs(60));
            assert!(within <= now(), "{due}: {within}");
            // As far off as the longest deferral allows: kept, and a time `watch` can wait for.
            assert_eq!(noted.due_within(longest), due);
            assert!(
                due_time(due).is_none_or(|at| at > SystemTime::now()),
                "{due}"
            );
        }
    }
}
