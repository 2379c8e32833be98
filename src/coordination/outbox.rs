//! The outbox: what a run changed in an output, kept durably in the output's own state until every
//! consumer (the `--changed-list` file, each CDN purge target) has taken it.
//!
//! A run writes, in order:
//! 1. an *intent* (`ID.intent`) before its first tile: the output's state at the start and the
//!    tiles it may change (the dirty or listed tiles, or `*`, everything, for a pyramid walk);
//! 2. a *batch* (`ID.batch`), one line per tile stored with new bytes or deleted and per document
//!    or archive rewritten, once the output is finished (or the run failed);
//! 3. then it removes the intent.
//!
//! A run that was killed leaves its intent. The next run (under the same lock) turns it into a
//! batch of everything the intent names when the killed run may have changed the output: when the
//! output's state moved since the intent (the run finished) or the kind keeps the tiles of a
//! stopped run (trees, remote prefixes). Otherwise (an MBTiles or PMTiles output left as it was) it
//! drops the intent. So delivery is at least once, and only a crash makes it more than once.
//!
//! A consumer takes a batch by leaving a marker beside it (`ID.batch.taken.CONSUMER`); a batch
//! every configured consumer has taken is removed with its markers. A consumer that took part of
//! a batch (a CDN purge stopped part way) lists the lines it took in `ID.batch.done.CONSUMER`,
//! which [`Outbox::pending`] leaves out for it: the batch stays whole for the others. An output
//! without consumers keeps nothing.
//!
//! The folder is `NAME.oar-tiles-outbox/` beside an MBTiles or PMTiles file, `.oar-tiles-outbox/`
//! inside a tree, and `PREFIX/.oar-tiles/outbox/` in a remote store (`home.rs` names them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::coordination::ChangedList;
use crate::error::{Error, Result};
use crate::store::document::{read_capped, DOCUMENT_CAP, LIST_CAP};
use crate::tile::TileCoord;

mod merge;
mod partitions;
mod store;
pub use store::OutboxStore;

/// The line that stands for every tile of the output.
pub const EVERYTHING: &str = "*";

const INTENT: &str = ".intent";
const BATCH: &str = ".batch";
const TAKEN: &str = ".taken.";
const DONE: &str = ".done.";
const NOTE: &str = ".note.json";

/// What a stopped run's intent tells of it, so its output can clear what the run left half done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedRun {
    /// The process that ran it, from its id (`MILLIS-PID`, with a part's tag after it).
    pub pid: Option<u32>,
    /// The tiles it planned to change; `None` when it planned everything (or its intent names
    /// something other than tiles).
    pub planned: Option<Vec<TileCoord>>,
}

impl StoppedRun {
    fn from_intent<'a>(id: &str, lines: impl Iterator<Item = &'a str>) -> StoppedRun {
        let pid = id
            .split_once('-')
            .and_then(|(_, rest)| rest.split('.').next())
            .and_then(|pid| pid.parse().ok());
        let planned = lines
            .filter(|line| !line.is_empty())
            .map(|line| line.parse::<TileCoord>().ok())
            .collect::<Option<Vec<_>>>();
        StoppedRun { pid, planned }
    }
}

/// What a run may change, recorded before it changes anything.
pub enum Planned<'a> {
    /// Any tile (a pyramid walk).
    Everything,
    /// These tiles.
    Tiles(&'a [TileCoord]),
}

/// An output's outbox.
pub struct Outbox {
    store: OutboxStore,
    /// The part of a sharded output this run writes (`part-I-of-N`), which tags its files so
    /// shards running side by side recover only their own.
    part: Option<String>,
}

/// A run's open entry in the outbox: its intent is written, its batch is being recorded.
pub struct OutboxRun {
    id: String,
    recorder: ChangedList,
}

impl OutboxRun {
    /// The recorder the output's sink writes its changes to.
    pub fn recorder(&self) -> ChangedList {
        self.recorder.clone()
    }

    /// The name its batch has once committed (or once a stopped run's intent is recovered),
    /// which what its consumers take of it while it runs is recorded against.
    pub fn batch(&self) -> String {
        format!("{}{BATCH}", self.id)
    }
}

/// What an outbox holds that some consumer has not taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Backlog {
    /// Batches waiting.
    pub batches: u64,
    /// Their lines (tiles and documents).
    pub entries: u64,
    /// How long the oldest batch has waited, in seconds.
    pub oldest_seconds: Option<f64>,
}

impl Backlog {
    /// Counts the batch (or record) `name`, with `entries` lines, and its age, from its name.
    fn add(&mut self, name: &str, entries: u64) {
        self.batches += 1;
        self.entries += entries;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let created = name
            .split('-')
            .next()
            .and_then(|millis| millis.parse::<u64>().ok())
            .map(Duration::from_millis);
        if let Some(created) = created {
            let age = now.saturating_sub(created).as_secs_f64();
            self.oldest_seconds = Some(self.oldest_seconds.map_or(age, |o| o.max(age)));
        }
    }
}

impl Outbox {
    /// The outbox in `store`; `part` for a shard's run.
    pub fn new(store: OutboxStore, part: Option<String>) -> Outbox {
        Outbox { store, part }
    }

    /// Where it is, for messages.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    fn tag(&self) -> String {
        self.part
            .as_deref()
            .map_or_else(String::new, |part| format!(".{part}"))
    }

    /// Turns the intents a stopped run left into batches, or drops them, as the module explains,
    /// and returns what each intent told of its run. `state` is the output's state now;
    /// `keeps_stopped_tiles` whether its kind keeps the tiles of a stopped run.
    pub async fn recover(
        &self,
        state: Option<&str>,
        keeps_stopped_tiles: bool,
    ) -> Result<Vec<StoppedRun>> {
        let names = self.store.list().await?;
        let tag = self.tag();
        let mut stopped = Vec::new();
        for intent in names
            .iter()
            .filter(|n| n.ends_with(&format!("{tag}{INTENT}")))
        {
            let id = intent.trim_end_matches(INTENT);
            // Another shard's intent (or, for a shard, the whole output's) is not ours to judge.
            if self.part.is_none() && id.contains(".part-") {
                continue;
            }
            let batch = format!("{id}{BATCH}");
            let Some(bytes) = self.store.read(intent, LIST_CAP).await? else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            let mut lines = text.lines();
            let recorded_state = lines.next().unwrap_or_default();
            let moved = recorded_state != state.unwrap_or("-");
            stopped.push(StoppedRun::from_intent(id, lines.clone()));
            if !names.contains(&batch) && (moved || keeps_stopped_tiles) {
                let planned: Vec<&str> = lines.collect();
                tracing::warn!(
                    "{}: a stopped run left {} planned change(s); they are delivered as changed",
                    self.describe(),
                    planned.len()
                );
                let mut body = planned.join("\n");
                body.push('\n');
                self.store.write(&batch, body.as_bytes()).await?;
            } else if !names.contains(&batch) {
                // What a purge of the run's tiles as they were stored took of a batch that never
                // comes.
                let done = format!("{batch}{DONE}");
                for name in names.iter().filter(|n| n.starts_with(&done)) {
                    self.store.remove(name).await?;
                }
            }
            match &self.store {
                OutboxStore::Folder(path) => remove_recordings(path, &batch),
                OutboxStore::Objects { local, .. } => remove_recordings(local, &batch),
            }
            self.store.remove(intent).await?;
        }
        Ok(stopped)
    }

    /// Starts recording a run's batch; the sink writes its changes to [`OutboxRun::recorder`].
    pub fn start(&self) -> Result<OutboxRun> {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let id = format!("{millis:015}-{}{}", std::process::id(), self.tag());
        if let OutboxStore::Objects { .. } = self.store {
            self.store.ensure_folder()?;
        }
        let recorder =
            ChangedList::create_lazily(&self.store.recording_path(&format!("{id}{BATCH}")));
        Ok(OutboxRun { id, recorder })
    }

    /// Records, durably and before the run changes anything, the output's state now and what
    /// the run may change.
    pub async fn intend(
        &self,
        run: &OutboxRun,
        state: Option<&str>,
        planned: Planned<'_>,
    ) -> Result<()> {
        let mut body = String::new();
        body.push_str(state.unwrap_or("-"));
        body.push('\n');
        match planned {
            Planned::Everything => body.push_str(EVERYTHING),
            Planned::Tiles(tiles) => {
                for tile in tiles {
                    body.push_str(&tile.to_string());
                    body.push('\n');
                }
            }
        }
        self.store
            .write(&format!("{}{INTENT}", run.id), body.as_bytes())
            .await
    }

    /// Ends a run's entry: its batch (if it changed anything) is stored durably, then its intent
    /// is removed. Called when the run finished and when it failed; a killed run leaves its intent.
    pub async fn commit(&self, run: OutboxRun) -> Result<()> {
        let batch = format!("{}{BATCH}", run.id);
        let recorded = run.recorder.close_recording()?;
        if recorded > 0 {
            if let OutboxStore::Objects { local, .. } = &self.store {
                let path = local.join(&batch);
                let bytes = read_capped(&path, LIST_CAP)?.ok_or_else(|| {
                    Error::output(&path, "the recorded batch is gone: cannot read it")
                })?;
                self.store.write(&batch, &bytes).await?;
                let _ = std::fs::remove_file(&path);
            }
        }
        self.store.remove(&format!("{}{INTENT}", run.id)).await
    }

    /// Ends a failed run's entry whose output kept nothing of it (a single file left as it was):
    /// its recording and intent are removed.
    pub async fn discard(&self, run: OutboxRun) -> Result<()> {
        run.recorder.discard_recording();
        self.store.remove(&format!("{}{INTENT}", run.id)).await
    }

    /// The batches `consumer` has not taken, oldest first, with their lines, less those it took
    /// part of a batch in ([`Outbox::took_lines`]).
    pub async fn pending(&self, consumer: &str) -> Result<Vec<(String, Vec<String>)>> {
        let names = self.store.list().await?;
        let taken: BTreeSet<&str> = names
            .iter()
            .filter_map(|n| {
                let (batch, who) = n.split_once(TAKEN)?;
                (who == consumer).then_some(batch)
            })
            .collect();
        let mut pending = Vec::new();
        for batch in names.iter().filter(|n| n.ends_with(BATCH)) {
            if taken.contains(batch.as_str()) {
                continue;
            }
            if let Some(bytes) = self.store.read(batch, LIST_CAP).await? {
                let done_name = format!("{batch}{DONE}{consumer}");
                let done = if names.contains(&done_name) {
                    self.read_done(&done_name).await
                } else {
                    BTreeSet::new()
                };
                let lines = String::from_utf8_lossy(&bytes)
                    .lines()
                    .filter(|l| !l.is_empty() && !done.contains(*l))
                    .map(str::to_string)
                    .collect();
                pending.push((batch.clone(), lines));
            }
        }
        Ok(pending)
    }

    /// Records, durably, that `consumer` took these lines of each batch (a purge stopped part
    /// way): its later [`Outbox::pending`] leaves them out.
    pub async fn took_lines(&self, consumer: &str, lines: &[(String, Vec<String>)]) -> Result<()> {
        for (batch, took) in lines.iter().filter(|(_, took)| !took.is_empty()) {
            let name = format!("{batch}{DONE}{consumer}");
            let mut done = self.read_done(&name).await;
            done.extend(took.iter().cloned());
            let done: Vec<String> = done.into_iter().collect();
            self.store.write(&name, &lines_bytes(&done)).await?;
        }
        Ok(())
    }

    /// Whether the outbox is a folder on this machine, whose partial records a consumer appends
    /// to as it takes lines ([`Outbox::append_done`]); a remote one's are rewritten whole
    /// ([`Outbox::took_lines`]).
    pub fn is_local(&self) -> bool {
        matches!(self.store, OutboxStore::Folder(_))
    }

    /// Appends `lines` to what `consumer` took of `batch` (its partial record), at once and
    /// without waiting for the disk: a kill of the process loses none of them, a power loss at
    /// most the last moments' (which are then sent again). Only for a local outbox.
    pub fn append_done(&self, consumer: &str, batch: &str, lines: &[String]) -> Result<()> {
        use std::io::Write;
        let OutboxStore::Folder(folder) = &self.store else {
            return Err(Error::output(
                self.describe(),
                "a remote outbox's partial records are not appended to",
            ));
        };
        let path = folder.join(format!("{batch}{DONE}{consumer}"));
        self.store.ensure_folder()?;
        // One write per call: a kill lands between two, and a line cut short by a crash has no
        // newline, so `read_done` never takes it; it is cut off before the next append, which
        // would otherwise end it (`12/1/1` of `12/1/13`, say) as a line of its own.
        std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| {
                cut_partial_line(&mut file)?;
                file.write_all(&lines_bytes(lines))
            })
            .map_err(|e| Error::output(&path, format!("cannot append to it: {e}")))
    }

    /// Removes a batch's markers and partial records, `taken` its takers.
    async fn remove_companions(
        &self,
        names: &[String],
        batch: &str,
        taken: impl Iterator<Item = String>,
    ) -> Result<()> {
        for who in taken {
            self.store.remove(&format!("{batch}{TAKEN}{who}")).await?;
        }
        let done = format!("{batch}{DONE}");
        for name in names.iter().filter(|n| n.starts_with(&done)) {
            self.store.remove(name).await?;
        }
        Ok(())
    }

    /// Marks `batches` taken by `consumer`, then removes every batch all of `consumers` took.
    pub async fn taken(
        &self,
        consumer: &str,
        batches: &[String],
        consumers: &[String],
    ) -> Result<()> {
        for batch in batches {
            self.store
                .write(&format!("{batch}{TAKEN}{consumer}"), b"")
                .await?;
        }
        self.prune(consumers).await
    }

    /// Removes every batch all of `consumers` have taken (every batch, without consumers).
    pub async fn prune(&self, consumers: &[String]) -> Result<()> {
        let names = self.store.list().await?;
        let mut takers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for name in &names {
            if let Some((batch, who)) = name.split_once(TAKEN) {
                takers.entry(batch).or_default().insert(who);
            }
        }
        for batch in names.iter().filter(|n| n.ends_with(BATCH)) {
            let took = takers.get(batch.as_str());
            if consumers
                .iter()
                .all(|c| took.is_some_and(|t| t.contains(c.as_str())))
            {
                self.store.remove(batch).await?;
                let took = took.into_iter().flatten().map(|who| who.to_string());
                self.remove_companions(&names, batch, took).await?;
            }
        }
        // An empty outbox leaves no folder beside or inside the output; one in use stays (the
        // removal fails on a folder that is not empty, which is what it should do).
        if let OutboxStore::Folder(path) = &self.store {
            let _ = std::fs::remove_dir(path);
        }
        Ok(())
    }

    /// Stores one batch of `lines` durably, outside any run: a document a run rewrote after its
    /// tilesets' own outboxes closed (a partitioned tileset's index).
    pub async fn add_batch(&self, lines: &[String]) -> Result<()> {
        let run = self.start()?;
        let name = format!("{}{BATCH}", run.id);
        run.recorder.discard_recording();
        self.store.write(&name, &lines_bytes(lines)).await
    }

    /// Every line some of `consumers` has not taken, in any batch: what still waits for them.
    pub async fn waiting_lines(&self, consumers: &[String]) -> Result<BTreeSet<String>> {
        let mut lines = BTreeSet::new();
        for consumer in consumers {
            for (_, pending) in self.pending(consumer).await? {
                lines.extend(pending);
            }
        }
        Ok(lines)
    }

    /// A note kept beside the batches (what the output stores, what a CDN target spent), which
    /// no consumer takes: `None` when there is none. Only a regular file (or object) within the
    /// cap on a document is read: anything else is an error naming it.
    pub async fn read_note(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.store
            .read(&format!("{name}{NOTE}"), DOCUMENT_CAP)
            .await
    }

    /// Where the note `name` is, for messages.
    pub fn note_location(&self, name: &str) -> String {
        self.store.location(&format!("{name}{NOTE}"))
    }

    /// Removes the note `name`; one that is not there is fine.
    pub async fn remove_note(&self, name: &str) -> Result<()> {
        self.store.remove(&format!("{name}{NOTE}")).await
    }

    /// Replaces the note `name`, durably.
    pub async fn write_note(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.store.write(&format!("{name}{NOTE}"), bytes).await
    }

    /// What waits for some consumer: every batch (and record of a stopped partitioned run), each
    /// line counted once per batch.
    pub async fn backlog(&self) -> Result<Backlog> {
        let mut backlog = Backlog::default();
        for name in self.store.list().await? {
            // A killed partitioned run's record stands for what its partitions left.
            if !name.ends_with(BATCH) && !Outbox::is_partition_record(&name) {
                continue;
            }
            backlog.add(&name, 0);
            if let Some(bytes) = self.store.read(&name, LIST_CAP).await? {
                backlog.entries += bytes.iter().filter(|b| **b == b'\n').count() as u64;
            }
        }
        Ok(backlog)
    }

    /// What waits for some of `consumers` after their deliveries: the batches one of them has
    /// not taken (and the records of stopped partitioned runs), and their lines it has not taken
    /// yet, each counted once.
    pub async fn backlog_for(&self, consumers: &[String]) -> Result<Backlog> {
        let mut backlog = Backlog::default();
        let mut batches = BTreeSet::new();
        let mut lines = BTreeSet::new();
        for consumer in consumers {
            for (batch, pending) in self.pending(consumer).await? {
                batches.insert(batch);
                lines.extend(pending);
            }
        }
        let records = self.store.list().await?;
        let records = records.iter().filter(|n| Outbox::is_partition_record(n));
        for name in batches.iter().chain(records) {
            backlog.add(name, 0);
        }
        backlog.entries = lines.len() as u64;
        Ok(backlog)
    }
}

/// Lines as a batch stores them, each ended by a newline.
fn lines_bytes(lines: &[String]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in lines {
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
    }
    bytes
}

/// Cuts a partial record's last line when a crash left it without its newline. The file is read
/// back from its end a block at a time up to its last newline, never whole: a partial record
/// grows with every line its consumer took.
fn cut_partial_line(file: &mut std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const BLOCK: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    let mut block = vec![0u8; BLOCK as usize];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let read = &mut block[..(end - start) as usize];
        file.read_exact_at(read, start)?;
        if let Some(at) = read.iter().rposition(|b| *b == b'\n') {
            let keep = start + at as u64 + 1;
            return if keep == len {
                Ok(())
            } else {
                file.set_len(keep)
            };
        }
        end = start;
    }
    file.set_len(0)
}

/// Removes the files a killed run's recorder left for `batch` (`BATCH.PID.writing`).
fn remove_recordings(folder: &Path, batch: &str) {
    if let Ok(entries) = std::fs::read_dir(folder) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!("{batch}.")) && name.ends_with(".writing") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests;
