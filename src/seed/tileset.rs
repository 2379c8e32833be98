//! Step 4 of a seed, for one tileset: output state → plan → cells → render → encode → write →
//! finish → watermark, with every failure leaving the output as it was.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::Pool;

use super::freshness::{self, AfterRun};
use super::live::{AheadTiles, Live};
use super::prepare::Prepared;
use crate::config::{LayerConfig, OutputTarget};
use crate::coordination::lock::{self, OutputLock};
use crate::coordination::shards::ShardStore;
use crate::coordination::{ChangedList, PartOf};
use crate::db::Replica;
use crate::delivery::RunOutbox;
use crate::edge::Holds;
use crate::error::{Error, Result};
use crate::job::{SeedJob, Selection};
use crate::plan::{PyramidWalk, Work, ZoomWay};
use crate::render::Connections;
use crate::report::{ProgressKind, SummaryHeader, Tally, TilesetSummary};
use crate::schedule::Stop;
use crate::sink::writer;
use crate::sink::{self, Resume, Sharding, Sink, Sweep};
use crate::state::digest::job_fingerprint;
use crate::state::reseed::Decision;
use crate::state::Watermark;
use crate::tile::{BBox, Subtrees, ZoomRange};

mod decide;
mod dry_run;
mod ending;
mod render;

/// What one tileset's seed works with.
pub(super) struct TilesetRun<'a> {
    pub job: &'a SeedJob,
    pub prepared: &'a Prepared<'a>,
    pub pool: &'a Pool,
    /// A shard's replica, which renders; `None`: `pool` does.
    pub replica: Option<&'a Replica>,
    pub connections: &'a Connections,
    /// CDN targets held back after failing, across the session's runs.
    pub holds: &'a Holds,
    pub stop: &'a Stop,
    pub locks: super::Locks,
    /// `watch`'s low lanes; `None` outside `watch`.
    pub live: Option<&'a Live>,
}

/// Low tiles `watch`'s lane rendered ahead, stored by a cycle rather than rendered in it.
struct Ahead {
    tiles: Arc<AheadTiles>,
    /// Those the run's own changes did not list, which it stores as the lane rendered them.
    injected: std::collections::HashSet<crate::tile::TileCoord>,
}

/// What a tileset's run renders.
enum Todo {
    /// The pyramid along a walk (a shard's, or the whole), skipping the tiles an interrupted run
    /// of the same job finished.
    Walk(Box<PyramidWalk>, HashMap<u64, [bool; 4]>),
    /// Exactly these tiles.
    Tiles(Vec<crate::tile::TileCoord>),
    /// These tiles, then the walk of these subtrees.
    Subtrees(Vec<crate::tile::TileCoord>, Subtrees),
}

/// The output once it is open, its state read and the run's work decided.
struct Opened {
    sink: Box<dyn Sink>,
    decision: Decision,
    resume: Resume,
    /// What becomes of the tiles `[tileset.freshness]` deferred once the run is complete.
    deferred: AfterRun,
    /// Low tiles `watch`'s lane rendered ahead, which the run stores.
    ahead: Option<Ahead>,
}

/// A tileset's run once its output is open and its work decided: what its later steps share.
struct Underway<'t> {
    target: &'t OutputTarget,
    outbox: RunOutbox,
    /// The run's changed-tile list, narrowed to a partition's prefix.
    changed: ChangedList,
    /// What the output claims to reflect once the run is complete.
    watermark: Option<Watermark>,
    /// What becomes of the tiles `[tileset.freshness]` deferred once the run is complete.
    deferred: AfterRun,
    /// Low tiles `watch`'s lane rendered ahead, stored by the run.
    ahead: Option<Ahead>,
    tally: Tally,
    /// When the changes read were committed: applied only by a complete run.
    committed: Vec<f64>,
    changes_read: Option<u64>,
    ways: Vec<ZoomWay>,
}

impl Todo {
    /// What rendering `work` takes: a pyramid walks the shard's plan (else the pyramid over `bbox`
    /// and `zooms`, a reseed's those the output holds),
    /// skipping the tiles `done` by an interrupted run.
    fn of(
        work: Work,
        walk: Option<PyramidWalk>,
        done: HashMap<u64, [bool; 4]>,
        (bbox, zooms): (BBox, ZoomRange),
    ) -> Todo {
        match work {
            Work::Pyramid => Todo::Walk(
                Box::new(walk.unwrap_or_else(|| PyramidWalk::new(bbox, zooms))),
                done,
            ),
            Work::Tiles(tiles) => Todo::Tiles(tiles),
            Work::Subtrees { tiles, subtrees } => Todo::Subtrees(tiles, subtrees),
        }
    }
}

/// Where finishing a run of `work` deletes the stored tiles it did not write.
fn sweep_of(work: &Work) -> Sweep {
    match work {
        Work::Pyramid => Sweep::Everything,
        Work::Subtrees { subtrees, .. } => Sweep::Within(subtrees.clone()),
        Work::Tiles(_) => Sweep::Nothing,
    }
}

/// The watermark a run claims once complete: the decision's, or an interrupted run's it resumes,
/// as the output must not claim more than the oldest tiles in it reflect.
fn resumed_watermark(decided: Option<Watermark>, resume: &Resume) -> Option<Watermark> {
    if resume.done.is_empty() {
        return decided;
    }
    tracing::info!(
        "resuming: {} tile(s) were finished by an interrupted run of this job",
        resume.done.len()
    );
    match resume.watermark.as_deref().and_then(Watermark::from_state) {
        Some(earlier) => Some(earlier),
        None => decided,
    }
}

impl TilesetRun<'_> {
    /// Seeds the tileset into its output and summarizes what happened: step 4 of a run, in the
    /// sub-steps 4a-4i marked below.
    pub async fn seed(
        &self,
        progress_kind: ProgressKind,
        changed: ChangedList,
    ) -> Result<TilesetSummary> {
        let started = Instant::now();
        let tileset = self.prepared.tileset;
        if self.job.run.dry_run {
            return match (tileset.output.as_ref(), self.selection()) {
                (Some(target), Selection::Dirty) => self.dry_run_dirty(target, started).await,
                _ => self.dry_run(progress_kind, started).await,
            };
        }
        let Some(target) = tileset.output.as_ref() else {
            let name = &tileset.tileset.name;
            return Err(Error::Usage(format!("tileset `{name}` has no output")));
        };
        self.announce(target);
        // 4a. A shard walks the run's plan, read (or made) before its output is opened: a tree or
        // S3 shard records in its part which plan it ran under.
        let (walk, part) = self.shard_walk().await?;
        // 4b. Lock the output (`watch` holds its locks already); a remote output's lease is
        // released however the run ends, so another machine need not wait for it to expire.
        let lock = self
            .lock(target, part.as_ref().map(|(part, _)| part))
            .await?;
        let outcome = self
            .seed_locked(target, (walk, part), changed, progress_kind, started)
            .await;
        if let Some(lock) = lock {
            lock.release().await;
        }
        outcome
    }

    /// Steps 4c-4i, with the output locked.
    async fn seed_locked(
        &self,
        target: &OutputTarget,
        (walk, part): (Option<PyramidWalk>, Option<(PartOf, ShardStore)>),
        changed: ChangedList,
        progress_kind: ProgressKind,
        started: Instant,
    ) -> Result<TilesetSummary> {
        let tileset = self.prepared.tileset;
        let part = match part {
            Some((part, store)) => {
                // A part record means the shard finished in this run: one left by an earlier run
                // or attempt must not outlive this attempt's start.
                store.forget_part(part.spec).await?;
                Some(part)
            }
            None => None,
        };
        let changed = match &tileset.list_prefix {
            Some(prefix) => changed.under(prefix),
            None => changed,
        };
        // 4c. Open the output, read its state and decide the work (plan), refreshing the cells;
        // record in its outbox what the run may change before it changes anything.
        let part_tag = part
            .as_ref()
            .map(|part| format!("part-{}-of-{}", part.spec.index, part.spec.count));
        let outbox = RunOutbox::open(
            target,
            tileset,
            &self.job.store_settings,
            part_tag,
            &changed,
            self.job.run.check_edge.sample,
        )
        .await?;
        let quiet = self.live.map(crate::seed::Live::quiet_mark);
        let Opened {
            sink,
            decision,
            resume,
            deferred,
            ahead,
        } = self.open(target, &outbox, part).await?;
        // 4d. Resume what an interrupted run of the same job finished.
        let watermark = resumed_watermark(decision.watermark, &resume);
        let mut run = Underway {
            target,
            outbox,
            changed,
            watermark,
            deferred,
            ahead,
            tally: Tally::default(),
            committed: decision.committed,
            changes_read: decision.changes_read,
            ways: decision.ways,
        };
        // 4e. Render, encode and store through the scheduler and the one writer.
        let sweep = sweep_of(&decision.work);
        let todo = Todo::of(decision.work, walk, resume.done, decision.area);
        let (rendered, written) = self
            .render_stored(&mut run, sink, todo, progress_kind)
            .await;
        // 4f. Finish the output (sweep, metadata, state) or abort it; store what changed in the
        // outbox and hand it to the consumers.
        // A full seed reads every tile anyway and ends with its hash, as a shard's part must
        // (`finalize` merges it); a run that changed some tiles leaves the hash, which reads
        // every tile, until its purges are out. So does a reseed that rendered whole (a bulk
        // change, a gap in capture): it kept the output's digest tile by tile, and reading every
        // tile for the hash before its purges was about 1 s of the 100k sample's 8 s.
        let whole = sweep == Sweep::Everything;
        let reseed = *self.selection() == Selection::Dirty;
        let defer_hash = (!whole || reseed) && tileset.shard.is_none();
        let (complete, mut delivered) = self
            .finish_and_deliver(&mut run, (written, rendered), (sweep, defer_hash))
            .await?;
        // 4g. Advance the change log's consumer (watermark, pruning), with what the run found
        // slow for later watchers.
        self.advance_consumer(&run, complete).await?;
        self.record_slow_zooms(&run, (complete, whole), quiet).await;
        // 4h. Bring the hash up to date, now that the purges are out, unless the caller
        // (`watch`, not for a partition it runs through its partitioned tileset) does it when
        // idle.
        // A run stopped while purging ends now; the hash stays pending, as the output says.
        let hash_now = !self.job.run.defer_agg_hash || tileset.list_prefix.is_some();
        if defer_hash && hash_now && delivered.stopped.is_none() {
            self.deliver_new_hash(&mut run, &mut delivered).await?;
        }
        // 4i. Summarize.
        self.summarize(run, complete, delivered, started).await
    }

    /// Logs what the run is about to do, and to which output.
    fn announce(&self, target: &OutputTarget) {
        let tileset = self.prepared.tileset;
        tracing::info!(
            "{} tileset `{}` zoom {} bbox {} -> {}",
            match self.selection() {
                Selection::Pyramid => "seeding",
                Selection::Dirty => "reseeding what changed in",
                Selection::List(_) => "rendering listed tiles of",
            },
            tileset.tileset.name,
            tileset.zooms,
            tileset.bbox,
            target.describe()
        );
    }

    /// Step 4a: a shard's walk of the run's plan, and the part it records with the store that
    /// holds it (none where its output's parts are files of their own).
    async fn shard_walk(&self) -> Result<(Option<PyramidWalk>, Option<(PartOf, ShardStore)>)> {
        let Some(shard) = &self.prepared.tileset.shard else {
            return Ok((None, None));
        };
        let store = sink::kind_of(&shard.output)
            .shard_store(&self.job.store_settings)
            .await?;
        let (walk, plan) = super::shard::shard_walk(
            self.render_pool(),
            self.prepared,
            self.job.concurrency,
            shard,
            &store,
        )
        .await?;
        let records_part = shard.output.sharding() != Sharding::PartFiles;
        let part = records_part.then_some(PartOf {
            spec: shard.spec,
            plan,
        });
        Ok((Some(walk), part.map(|part| (part, store))))
    }

    /// Step 4b: the output's lock (a partition's own, a part's named after it), unless the caller
    /// holds it already.
    async fn lock(
        &self,
        target: &OutputTarget,
        part: Option<&PartOf>,
    ) -> Result<Option<OutputLock>> {
        if self.locks == super::Locks::Held {
            return Ok(None);
        }
        let tileset = self.prepared.tileset;
        let place = match (&tileset.tileset_output, &tileset.list_prefix) {
            (Some(of), Some(segment)) => {
                sink::partition_lock_place(target, of, segment, &self.job.store_settings)
            }
            _ => sink::lock_place(target, &self.job.store_settings),
        };
        let lock = lock::acquire(
            &place,
            self.job.run.wait_lock,
            part.map(|part| part.name("lock")).as_deref(),
            self.stop.stopped(),
        )
        .await?;
        Ok(Some(lock))
    }

    /// Finishes the output once rendering ended well (sweeping and recording the watermark only when
    /// the run is complete), or aborts it; returns whether the run was complete.
    async fn complete(
        &self,
        written: writer::Written,
        rendered: Result<bool>,
        tally: &mut Tally,
        (sweep, defer_hash): (Sweep, bool),
        watermark: Option<&Watermark>,
    ) -> Result<bool> {
        let name = &self.prepared.tileset.tileset.name;
        let sink = written
            .await
            .map_err(|e| Error::output(name, format!("the writer stopped: {e}")))?;
        match (rendered, sink) {
            (Ok(finished), Ok(sink)) => {
                // Tiles that failed (--keep-going) leave their subtrees unknown: nothing is swept,
                // and the watermark stays so the next reseed covers them too.
                let complete = finished && tally.failed().is_empty();
                let state = watermark.filter(|_| complete);
                let sweep = if complete { sweep } else { Sweep::Nothing };
                let stored = self.finish(sink, sweep, state, defer_hash).await?;
                tally.set_stored(stored);
                Ok(complete)
            }
            (Err(err), Ok(sink)) => {
                let _ = tokio::task::spawn_blocking(move || sink.abort()).await;
                Err(err)
            }
            // The writer's own error explains why rendering could not hand it more tiles.
            (_, Err(err)) => Err(err),
        }
    }

    /// Opens the output, reads its state, decides the work, brings the cluster cells up to date
    /// and starts the journal; on any failure the output is left as it was.
    async fn open(
        &self,
        target: &OutputTarget,
        outbox: &RunOutbox,
        part: Option<PartOf>,
    ) -> Result<Opened> {
        let tileset = self.prepared.tileset;
        let stored_as = &tileset.tileset.output_settings;
        // A full seed journals its walk, so an interrupted run can be picked up where it stopped.
        let settings = self.settings_digest();
        let fingerprint = (*self.selection() == Selection::Pyramid).then(|| {
            job_fingerprint(
                &tileset.tileset.name,
                tileset.zooms,
                tileset.bbox,
                &settings,
            )
        });
        let mut sink = sink::open(
            target,
            stored_as,
            &self.job.store_settings,
            outbox.recorder(),
            fingerprint.as_deref(),
            part,
        )
        .await?;
        let state = sink.state();
        // A watch cycle of a plain tileset (not a shard's, not a partition's, which no cycle
        // is sure to come back to) may hold low zooms back.
        let deferring = self.locks == super::Locks::Held
            && tileset.shard.is_none()
            && tileset.list_prefix.is_none();
        let freshness = self.freshness(target);
        let decided = match self.decide(state.clone(), settings).await {
            Ok(mut decision) => {
                match freshness::apply(
                    freshness,
                    deferring,
                    self.selection(),
                    &mut decision.work,
                    outbox,
                )
                .await
                {
                    Ok(after) => {
                        let ahead = self.take_ahead(target, deferring, &mut decision.work);
                        outbox
                            .intend(state.as_deref(), &decision.work)
                            .await
                            .map(|()| (decision, (after, ahead)))
                    }
                    Err(err) => Err(err),
                }
            }
            Err(err) => Err(err),
        };
        let (decision, (deferred, ahead)) = match decided {
            Ok(decision) => decision,
            Err(err) => {
                let _ = tokio::task::spawn_blocking(move || sink.abort()).await;
                return Err(err);
            }
        };
        let planned = match &decision.work {
            Work::Pyramid | Work::Subtrees { .. } => None,
            Work::Tiles(tiles) => Some(tiles.len()),
        };
        let state = decision.watermark.as_ref().map(Watermark::to_state);
        // Preparing may copy a file or list a bucket: off the async threads.
        let (sink, started) = tokio::task::spawn_blocking(move || {
            let started = sink
                .prepare(planned)
                .and_then(|()| sink.begin_journal(state.as_deref()));
            (sink, started)
        })
        .await
        .map_err(|e| {
            Error::output(
                &tileset.tileset.name,
                format!("preparing the output failed: {e}"),
            )
        })?;
        match started {
            Ok(resume) => Ok(Opened {
                sink,
                decision,
                resume: resume.unwrap_or_default(),
                deferred,
                ahead,
            }),
            Err(err) => {
                let _ = tokio::task::spawn_blocking(move || sink.abort()).await;
                Err(err)
            }
        }
    }

    /// The tileset's `[tileset.freshness]`, else in `watch` the zooms its cycles found slow.
    fn freshness(&self, target: &OutputTarget) -> Option<crate::config::Freshness> {
        let tileset = &self.prepared.tileset.tileset;
        let live = || self.live?.freshness(&target.describe());
        tileset.freshness.or_else(live)
    }

    /// In a `watch` cycle, what the low lane rendered ahead, added to a list of tiles so the run's
    /// intent covers it; a run that renders whole or subtrees makes whatever the lane holds stale.
    fn take_ahead(&self, target: &OutputTarget, deferring: bool, work: &mut Work) -> Option<Ahead> {
        let live = self.live.filter(|_| deferring)?;
        let output = target.describe();
        let Work::Tiles(tiles) = work else {
            live.invalidate(&output);
            return None;
        };
        let ahead = live.ahead(&output)?;
        let listed: std::collections::HashSet<_> = tiles.iter().copied().collect();
        let injected: std::collections::HashSet<_> = ahead
            .iter()
            .map(|(tile, _)| *tile)
            .filter(|tile| !listed.contains(tile))
            .collect();
        tiles.extend(injected.iter().copied());
        Some(Ahead {
            tiles: ahead,
            injected,
        })
    }

    fn header(&self, output: String, complete: bool, changes_read: Option<u64>) -> SummaryHeader {
        let tileset = self.prepared.tileset;
        SummaryHeader {
            tileset: tileset.tileset.name.clone(),
            output,
            zooms: tileset.zooms.to_string(),
            dry_run: false,
            complete,
            changes_read,
            committed: Vec::new(),
            settings: Some(self.prepared.settings_digest()),
            ways: Vec::new(),
        }
    }

    /// Where tiles are rendered from: a shard's replica, else the primary.
    fn render_pool(&self) -> &Pool {
        self.replica.map_or(self.pool, |r| &r.pool)
    }

    fn selection(&self) -> &Selection {
        self.prepared.tileset.selection(&self.job.selection)
    }

    fn layer_configs(&self) -> Vec<LayerConfig> {
        self.prepared
            .layers
            .iter()
            .map(|l| l.config.clone())
            .collect()
    }

    fn settings_digest(&self) -> String {
        self.prepared.settings_digest()
    }
}
