//! The `seed` command: the pipeline's wiring, in the order a job really runs.
//!
//! 0. Expand each partitioned tileset into one tileset per value ([`crate::partition`]); after
//!    step 5, remove vanished partitions and write the partition indexes.
//! 1. Connect a bounded pool ([`crate::db`]), as libpq would (URL, environment, TLS); a
//!    shard with `[database] replicas` also connects its replica, which it renders from, while
//!    everything that writes (cluster cells, the change log) stays on the primary.
//! 2. Per tileset, describe every layer's source, keep its cluster cells, and check its statements
//!    with the server (`prepare.rs`), so a bad config fails before any output is touched.
//! 3. Take the run's connections and start watching for SIGINT and SIGTERM.
//! 4. Per tileset (`tileset.rs`): lock and open the output and read its state, decide the work
//!    ([`crate::state::reseed`]), refresh the cluster cells, render → encode → write through the
//!    scheduler ([`crate::schedule`]), finish the output, then advance the watermark.
//! 5. Close the changed-tile list; write the JSON summary and the failed-tile list ([`write_reports`]).

mod finalize;
mod freshness;
mod live;
mod prepare;
mod shard;
mod tileset;

use std::path::Path;
use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::coordination::ChangedList;
use crate::db::{self, Replica};
use crate::edge::Holds;
use crate::error::{Error, Result};
use crate::job::{SeedJob, TilesetJob};
use crate::metrics::Metrics;
use crate::partition;
use crate::render::Connections;
use crate::report::{PartitionProgress, ProgressKind, TilesetSummary};
use crate::schedule::Stop;
pub use finalize::finalize;
pub use freshness::{begin_low_lane, next_deferral};
pub use live::{AheadTiles, Live};
use prepare::Prepared;
use tileset::TilesetRun;

/// Runs a seed job and returns one summary per tileset run (per partition, for partitioned
/// tilesets).
pub async fn run(job: &SeedJob, progress: ProgressKind) -> Result<Vec<TilesetSummary>> {
    // 0.
    let partitions = partition::expand(job, partition::TilesetLocks::Take).await?;
    let holds = Arc::new(Holds::default());
    // Boxed: a run's future nests every stage's, and `validate` and `--verify-sample` nest a
    // whole run inside theirs; on the heap, it is laid out apart from the futures that await it,
    // within the compiler's default recursion limit.
    let mut summaries = Box::pin(run_expanded(partitions.job(job), progress, &holds)).await?;
    let delivered = partitions.finish(job, &summaries, &holds).await?;
    summaries.extend(delivered);
    Ok(summaries)
}

async fn run_expanded(
    job: &SeedJob,
    progress: ProgressKind,
    holds: &Arc<Holds>,
) -> Result<Vec<TilesetSummary>> {
    // Before the session opens: its first store requests (the output's state) may hang too, and a
    // signal must end them as it ends the renders.
    let stop = Stop::on_signals();
    let session = Session::open_sharing(job, holds.clone()).await?;
    check_cdns(job).await?;
    let changed = match (&job.run.changed_list, job.run.dry_run) {
        (Some(path), false) => ChangedList::create(path)?,
        _ => ChangedList::disabled(),
    };
    let mut summaries = session
        .seed(progress, &stop, changed.clone(), Locks::Take)
        .await?;
    check_edges(job, &mut summaries).await;
    // 5.
    changed.close_and_acknowledge().await?;
    Ok(summaries)
}

/// One `watch` cycle of a job of partitioned tilesets, whose locks the watcher holds: reads each
/// tileset's changes once, reseeds the partitions they touched (new and vanished values
/// included) under their own locks, and writes the indexes. Returns one summary per partition
/// rendered, and what each tileset's run covered. `holds` are the watcher's, kept across cycles.
pub async fn partitioned_cycle(
    job: &SeedJob,
    stop: &Stop,
    holds: &Arc<Holds>,
) -> Result<(Vec<TilesetSummary>, Vec<partition::PartitionScope>)> {
    let partitions = partition::expand(job, partition::TilesetLocks::Held).await?;
    let expanded = partitions.job(job);
    let mut summaries = if expanded.tilesets.is_empty() {
        Vec::new()
    } else {
        let session = Session::open_sharing(expanded, holds.clone()).await?;
        session
            .seed(
                ProgressKind::Quiet,
                stop,
                ChangedList::disabled(),
                Locks::Take,
            )
            .await?
    };
    let delivered = partitions.finish(job, &summaries, holds).await?;
    summaries.extend(delivered);
    Ok((summaries, partitions.scope()))
}

/// `--check-edge`: fetches each summary's sampled tiles through the CDN targets that purged them.
async fn check_edges(job: &SeedJob, summaries: &mut [TilesetSummary]) {
    for summary in summaries {
        for probe in std::mem::take(&mut summary.edge_probes) {
            let check =
                crate::edge::check_edge(&probe, &job.store_settings, job.run.check_edge.within)
                    .await;
            summary.edge.push(check);
        }
    }
}

/// A tileset of a session, ready to run.
enum Ready<'a> {
    /// Described and checked with the server.
    Own(Box<Prepared<'a>>),
    /// A later partition of the tileset the `of`th entry is a partition of: prepared from it when
    /// it runs, and dropped after.
    Sibling { of: usize, tileset: &'a TilesetJob },
}

impl<'a> Ready<'a> {
    /// The tileset it runs.
    fn tileset(&self) -> &'a TilesetJob {
        match self {
            Ready::Own(prepared) => prepared.tileset,
            Ready::Sibling { tileset, .. } => tileset,
        }
    }

    /// The prepared tileset, unless it is prepared only when it runs.
    fn own(&self) -> Option<&Prepared<'a>> {
        match self {
            Ready::Own(prepared) => Some(prepared),
            Ready::Sibling { .. } => None,
        }
    }
}

/// Whether a run takes each output's lock itself, or runs under locks its caller holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locks {
    /// Lock each output for the time of its run (`seed`).
    Take,
    /// The caller holds every output's lock for longer than one run (`watch`).
    Held,
}

/// Steps 1-3 done: a pool, the tilesets prepared and the run's connections taken. `seed` runs it
/// once; `watch` runs it once per cycle, so every cycle is exactly a `seed --dirty`.
pub struct Session<'a> {
    job: &'a SeedJob,
    pool: Pool,
    /// The replica a shard renders from; `None`: it renders from `pool`.
    replica: Option<Replica>,
    prepared: Vec<Ready<'a>>,
    connections: Connections,
    /// CDN targets that failed, held back across the session's runs (`watch`'s cycles, which
    /// share them with their partitioned tilesets' cycles).
    holds: Arc<Holds>,
    /// `watch`'s low lanes.
    live: Option<Arc<Live>>,
}

impl<'a> Session<'a> {
    /// Connects and prepares every tileset of the job; a bad config fails here, before any output
    /// is touched.
    pub async fn open(job: &'a SeedJob) -> Result<Session<'a>> {
        Session::open_sharing(job, Arc::new(Holds::default())).await
    }

    /// [`Session::open`], with targets held back by failures others saw (`watch`'s).
    pub async fn open_sharing(job: &'a SeedJob, holds: Arc<Holds>) -> Result<Session<'a>> {
        // 1. Headroom beyond the working connections, for replacing broken ones and start-up checks.
        let pool = db::connect(&job.database, job.concurrency * 2).await?;
        db::check_replicas(&job.database)?;
        let replica = match job.replica() {
            Some((index, _)) => {
                Some(Replica::connect(&job.database, index, job.concurrency * 2, &pool).await?)
            }
            None => None,
        };
        let render_pool = replica.as_ref().map_or(&pool, |r| &r.pool);
        // 2, while the run's connections of 3 are set up (each a TLS handshake, authentication and a
        // new backend): a reseed with little to do would otherwise wait for them one after the other.
        let prepare = async {
            let mut prepared = Vec::new();
            let mut first_partition = std::collections::HashMap::new();
            for tileset in &job.tilesets {
                if let Some(family) = &tileset.partition_of {
                    if let Some(&of) = first_partition.get(family) {
                        prepared.push(Ready::Sibling { of, tileset });
                        continue;
                    }
                    first_partition.insert(family.clone(), prepared.len());
                }
                let ready = Prepared::new(&pool, replica.as_ref(), job, tileset).await?;
                prepared.push(Ready::Own(Box::new(ready)));
            }
            Ok::<_, Error>(prepared)
        };
        let connect = Connections::open(render_pool, job.concurrency, &job.database);
        let (prepared, connections) = tokio::join!(prepare, connect);
        let (prepared, connections) = (prepared?, connections?);
        Ok(Session {
            job,
            pool,
            replica,
            prepared,
            connections,
            holds,
            live: None,
        })
    }

    /// The session of a `watch` whose cycles leave slow low zooms to its low lanes.
    pub fn with_live(mut self, live: Arc<Live>) -> Session<'a> {
        self.live = Some(live);
        self
    }

    /// `watch`'s low lane: renders `tiles` of the tileset writing `output` into memory, on a
    /// connection of its own so the cycles keep theirs for the deep tiles of new commits.
    pub async fn render_ahead(
        &self,
        output: &str,
        tiles: &[crate::tile::TileCoord],
        stop: &Stop,
    ) -> Result<AheadTiles> {
        let Some(prepared) = self.prepared.iter().filter_map(Ready::own).find(|p| {
            p.tileset
                .output
                .as_ref()
                .is_some_and(|o| o.describe() == output)
        }) else {
            return Err(Error::output(output, "no tileset of the session writes it"));
        };
        let render_pool = self.replica.as_ref().map_or(&self.pool, |r| &r.pool);
        let connections = Connections::open(render_pool, 1, &self.job.database).await?;
        let run = TilesetRun {
            job: self.job,
            prepared,
            pool: &self.pool,
            replica: self.replica.as_ref(),
            connections: &connections,
            holds: &self.holds,
            stop,
            locks: Locks::Held,
            live: self.live.as_deref(),
        };
        let target = prepared
            .tileset
            .output
            .as_ref()
            .expect("matched on its output");
        run.render_ahead(target, tiles).await
    }

    /// The session's pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Step 4: seeds every tileset into its output, one after the other; the partitions of a
    /// partitioned tileset side by side, one on each connection ([`Session::seed_partitions`]).
    pub async fn seed(
        &self,
        progress: ProgressKind,
        stop: &Stop,
        changed: ChangedList,
        locks: Locks,
    ) -> Result<Vec<TilesetSummary>> {
        let mut summaries = Vec::new();
        let mut first = 0;
        while first < self.prepared.len() {
            let family = self.prepared[first].tileset().partition_of.as_ref();
            let end = (first + 1..self.prepared.len())
                .find(|&i| {
                    family.is_none() || self.prepared[i].tileset().partition_of.as_ref() != family
                })
                .unwrap_or(self.prepared.len());
            if end - first > 1 && self.connections.count() > 1 {
                let runs = first..end;
                summaries.extend(
                    self.seed_partitions(runs, progress, stop, &changed, locks)
                        .await?,
                );
            } else {
                for index in first..end {
                    let run = self.run_one(index, &self.connections, progress, stop, locks);
                    summaries.push(run.seed(changed.clone()).await?);
                }
            }
            first = end;
        }
        Ok(summaries)
    }

    /// The partitions `runs` of one partitioned tileset, as many at once as there are
    /// connections, each on a connection of its own: a partition's walk waits for each zoom's
    /// tiles before it knows the next zoom's, and a small one is mostly such waits, which the
    /// other partitions fill. A session holds one partition's row sets at a time. The partitions
    /// come largest first (see [`crate::partition`]), so the last to finish are small ones.
    /// After a failure no partition starts; those running finish, and the first error is
    /// returned.
    async fn seed_partitions(
        &self,
        runs: std::ops::Range<usize>,
        progress: ProgressKind,
        stop: &Stop,
        changed: &ChangedList,
        locks: Locks,
    ) -> Result<Vec<TilesetSummary>> {
        use futures::StreamExt;
        let lanes = self.connections.lanes();
        let family = self.prepared[runs.start]
            .tileset()
            .partition_of
            .clone()
            .unwrap_or_default();
        let mut shown = PartitionProgress::start(progress, &family, runs.len());
        // Each partition's own bar would fight the others' for the terminal's last line.
        let each = match progress {
            ProgressKind::Bar => ProgressKind::Quiet,
            kind => kind,
        };
        let mut free: Vec<usize> = (0..lanes.len()).rev().collect();
        let mut waiting = runs.clone();
        let mut running = futures::stream::FuturesUnordered::new();
        let mut summaries: Vec<Option<TilesetSummary>> = vec![None; runs.len()];
        let mut failed = None;
        loop {
            while failed.is_none() && !free.is_empty() {
                let Some(index) = waiting.next() else { break };
                let lane = free.pop().expect("a free lane");
                let run = self.run_one(index, &lanes[lane], each, stop, locks);
                let changed = changed.clone();
                running.push(async move { (index, lane, run.seed(changed).await) });
            }
            let Some((index, lane, outcome)) = running.next().await else {
                break;
            };
            free.push(lane);
            shown.done();
            match outcome {
                Ok(summary) => summaries[index - runs.start] = Some(summary),
                Err(err) => {
                    failed.get_or_insert(err);
                }
            }
        }
        shown.finish();
        if let Some(err) = failed {
            return Err(err);
        }
        Ok(summaries.into_iter().flatten().collect())
    }

    /// The run of the `index`th tileset on `connections`.
    fn run_one<'s>(
        &'s self,
        index: usize,
        connections: &'s Connections,
        progress: ProgressKind,
        stop: &'s Stop,
        locks: Locks,
    ) -> OneRun<'s> {
        OneRun {
            session: self,
            index,
            connections,
            progress,
            stop,
            locks,
        }
    }
}

/// One tileset's run in a session, prepared (a partition from its first sibling) only when it
/// starts, so memory does not grow with the number of partitions.
struct OneRun<'s> {
    session: &'s Session<'s>,
    index: usize,
    connections: &'s Connections,
    progress: ProgressKind,
    stop: &'s Stop,
    locks: Locks,
}

impl OneRun<'_> {
    async fn seed(self, changed: ChangedList) -> Result<TilesetSummary> {
        let session = self.session;
        let sibling;
        let prepared = match &session.prepared[self.index] {
            Ready::Own(prepared) => prepared,
            Ready::Sibling { of, tileset } => {
                let Ready::Own(first) = &session.prepared[*of] else {
                    unreachable!("a sibling refers to a prepared partition");
                };
                sibling = first.sibling(tileset);
                &sibling
            }
        };
        let run = TilesetRun {
            job: session.job,
            prepared,
            pool: &session.pool,
            replica: session.replica.as_ref(),
            connections: self.connections,
            holds: &session.holds,
            stop: self.stop,
            locks: self.locks,
            live: session.live.as_deref(),
        };
        run.seed(self.progress, changed).await
    }
}

/// Step 2 for the CDN targets: their secrets and credentials, checked before any tile renders,
/// so a purge that cannot work fails the run before it stores anything rather than after. A dry
/// run sends nothing and needs no credentials. Not part of [`Session::open`]: `watch` checks once
/// when it starts, not at each reconnection (a passing hiccup of the credential chain must not end
/// a watcher), and `shard-plan` purges nothing.
pub async fn check_cdns(job: &SeedJob) -> Result<()> {
    if job.run.dry_run {
        return Ok(());
    }
    let mut checked: Vec<&crate::config::CdnConfig> = Vec::new();
    for tileset in &job.tilesets {
        for cdn in &tileset.tileset.cdn {
            // Partitions repeat their tileset's targets.
            if !checked.contains(&cdn) {
                crate::edge::check(cdn).await?;
                checked.push(cdn);
            }
        }
        check_query_keys(tileset).await?;
    }
    Ok(())
}

/// A versioned feed's maps ask changed tiles with `?v=`: each CDN in front with a `public_url`
/// must key its cache on the query string, or it answers them with the old bytes.
async fn check_query_keys(tileset: &crate::job::TilesetJob) -> Result<()> {
    if !tileset.tileset.feed.as_ref().is_some_and(|f| f.versioned) {
        return Ok(());
    }
    let tile = format!("0/0/0.{}", tileset.tileset.output_settings.tile_extension);
    for cdn in &tileset.tileset.cdn {
        let Some(public_url) = &cdn.public_url else {
            continue;
        };
        crate::edge::check_keys_on_query(&cdn.name, public_url, &tile)
            .await
            .map_err(|refusal| cdn.defined_at.error(refusal))?;
    }
    Ok(())
}

/// Writes what a finished job promised besides the output: the JSON summary (`--summary-json`) and,
/// with `--keep-going`, the list of failed tiles; the latter makes the job fail (exit 1).
pub fn write_reports(job: &SeedJob, summaries: &[TilesetSummary]) -> Result<()> {
    if let Some(path) = &job.run.summary_json {
        let json = serde_json::to_string_pretty(summaries).expect("summaries serialize");
        write_file(path, json + "\n", "the summary")?;
    }
    let failed: Vec<&str> = summaries
        .iter()
        .flat_map(|s| &s.failed_tiles)
        .map(|f| f.tile.as_str())
        .collect();
    if let (Some(list), false) = (&job.run.keep_going, failed.is_empty()) {
        let text: String = failed.iter().map(|tile| format!("{tile}\n")).collect();
        write_file(list, text, "the failed-tile list")?;
        return Err(Error::TilesFailed {
            count: failed.len(),
            list: list.clone(),
        });
    }
    let wrong: Vec<&TilesetSummary> = summaries
        .iter()
        .filter(|s| s.verified.as_ref().is_some_and(|v| !v.wrong.is_empty()))
        .collect();
    if !wrong.is_empty() {
        for summary in &wrong {
            let check = summary.verified.as_ref().expect("filtered on it");
            tracing::error!(
                "{}: --verify-sample found {} wrong tile(s): {}",
                summary.header.output,
                check.wrong.len(),
                check.wrong.join(" ")
            );
        }
        return Err(Error::Invalid {
            problems: wrong
                .iter()
                .map(|s| s.verified.as_ref().map_or(0, |v| v.wrong.len() as u64))
                .sum(),
            outputs: wrong.len(),
        });
    }
    if let Some((summary, purge)) = summaries
        .iter()
        .find_map(|s| s.purges.iter().find(|p| p.failed.is_some()).map(|p| (s, p)))
    {
        return Err(Error::output(
            format!("cdn `{}` of {}", purge.target, summary.header.output),
            format!(
                "{}; the tiles are stored, and the changes stay in the outbox for the next run to purge",
                purge.failed.as_deref().unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

/// With `--metrics-file`, writes the run's metrics (or its failure) for node_exporter's textfile
/// collector.
pub fn write_metrics(job: &SeedJob, outcome: &Result<Vec<TilesetSummary>>) -> Result<()> {
    let Some(path) = &job.run.metrics_file else {
        return Ok(());
    };
    let metrics = Metrics::new();
    match outcome {
        Ok(summaries) => {
            let now = std::time::SystemTime::now();
            for summary in summaries {
                metrics.record(summary, now);
            }
            metrics.succeeded(now);
        }
        Err(err) => metrics.failed(err),
    }
    metrics.write_textfile(path)
}

fn write_file(path: &Path, text: String, what: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: format!("cannot write {what}: {e}"),
    })
}
