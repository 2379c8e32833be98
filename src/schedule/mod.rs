//! The scheduler: drives a [`Renderer`] over a pyramid walk or a tile list with a bounded number of
//! statements in flight, encodes what comes back, and feeds the single writer. Its policies live
//! here and nowhere else: batching, a walk's lowest zoom first and a list's deepest zoom first
//! ([`ListOrder`]), heavy tiles one per connection, `--keep-going`, `--max-duration`, resuming a
//! journaled walk, and stopping on a signal.
//!
//! It knows neither PostGIS nor the output: any [`Renderer`] works (the tests use one that makes
//! tiles in memory), and tiles leave through a [`Writer`].

mod offload;
pub mod stop;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Instant;

use futures::stream::FuturesUnordered;
use futures::StreamExt;

use crate::encode::{Encoded, Encoding, SizeBudget};
use crate::error::{Error, Result};
use crate::plan::{Mode, PyramidWalk};
use crate::render::{Rendered, Renderer};
use crate::report::{Progress, Tally};
use crate::sink::writer::{Writer, WriterCommand};
use crate::tile::{tile_from_walk_order_key, tile_key, walk_order_key, TileCoord};
pub use stop::Stop;

/// Statements in flight per connection: enough to hide the round trip, few enough that one slow
/// tile holds up little behind it.
pub const PIPELINE_DEPTH: usize = 4;

/// Unclustered features (the tables' row estimates) above which tiles deeper than the eager zooms
/// can be heavy too (see [`BIG_TILE_BYTES`]).
pub const HUGE_TOP_ROWS: f64 = 300_000.0;

/// Stored bytes above which a tile's children count as heavy where the layers are huge (see
/// [`HUGE_TOP_ROWS`]).
pub const BIG_TILE_BYTES: usize = 4 << 20;

/// Most tiles one statement renders. Batches spread a statement's fixed cost over many small tiles:
/// besides bind and executor start-up, each statement's memory is mapped, faulted in and unmapped
/// again by the backend. Raising this from 48 to 192 took a z0-14 seed of the 100k sample from
/// about 10.1 to 9.5 s of PostgreSQL CPU; a failed batch is retried tile by
/// tile, so larger batches cost more only when something fails.
const MAX_BATCH: usize = 192;

/// How one tileset's tiles are rendered and stored.
pub struct Scheduler<'a, R> {
    /// Makes the tiles.
    pub renderer: &'a R,
    /// The tileset's name, for errors.
    pub tileset: &'a str,
    /// Connections the renderer works on; `PIPELINE_DEPTH` statements ride on each.
    pub concurrency: usize,
    /// How tiles are stored.
    pub encoding: Encoding,
    /// The size budget and what exceeding it means.
    pub budget: SizeBudget,
    /// Note a tile that fails after its retries and go on (`--keep-going`) instead of failing.
    pub keep_going: bool,
    /// Watched between batches.
    pub stop: &'a Stop,
}

/// The order a list of tiles (a reseed's dirty tiles) is rendered in, zoom by zoom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListOrder {
    /// Deepest zoom first. A change's own tiles at the zooms a visitor looks at are cheap, while
    /// its low-zoom tiles hold most of an unclustered layer and take seconds: rendered first,
    /// the deep tiles are stored (and purged, where the output shows them at once) before the
    /// heavy ones end. A walk cannot do this: it learns a tile's children from the tile.
    #[default]
    DeepestFirst,
    /// Lowest zoom first, as a walk goes (kept to compare against).
    LowestFirst,
}

/// One finished statement: its mode, whether it held a heavy tile, whether it probed a tile that
/// failed to render (for its children only), and its tiles; with the queue it came from (a walk's
/// own, or its leaves').
type Statement = (usize, (Mode, bool, bool, Vec<Result<Encoded>>));

/// A tile through the render's `finish`: encoded, or gathered into a chunk compressed later.
enum Finished {
    Done(Encoded),
    Chunked(TileCoord),
}

impl<R: Renderer> Scheduler<'_, R> {
    /// Walks the pyramid, lowest zoom first, sending tiles to `writer` (none: a dry run, which only
    /// probes). A tile's children are queued as soon as it is done, so no zoom level waits for the
    /// slowest tile of the one above. Tiles in `done` were finished by an interrupted run: their
    /// children are queued without rendering them again.
    pub async fn walk(
        &self,
        walk: &PyramidWalk,
        writer: Option<&Writer>,
        done: HashMap<u64, [bool; 4]>,
        tally: &mut Tally,
        progress: &mut Progress,
    ) -> Result<()> {
        // A shard's walk probes the tiles above its plan's split zoom; those it owns render as
        // leaves, in a queue of their own, so its subtrees never wait for them (issue 65).
        let leaves = walk.leaves();
        let rows = self.renderer.unclustered_rows();
        let mut queues = [
            WalkQueue::new(walk, done, rows),
            WalkQueue::new(&leaves, HashMap::new(), rows),
        ];
        progress.discovered(queues.iter().map(WalkQueue::len).sum());
        let mut in_flight = FuturesUnordered::new();
        let mut heavy_in_flight = 0;
        let writes = writer.is_some();
        // One closure makes every statement's future, so they share one type.
        let start = |part: usize,
                     batch: Vec<TileCoord>,
                     mode: Mode,
                     heavy: bool,
                     after_failure: bool| async move {
            let results = self.render_encoded(&batch, mode, writes).await;
            (part, (mode, heavy, after_failure, results))
        };
        loop {
            while in_flight.len() < self.capacity() {
                let heavy_allowed = heavy_in_flight < self.concurrency;
                // Shared among the connections, not among every statement in flight: a walk
                // learns a zoom's tiles a few at a time, and dealt out four to a connection they
                // went one or two to a statement, whose fixed cost then outweighed the tiles'
                // (200 small partitions at z0-10: 1.2 tiles a statement, 20% more wall time).
                // The statements pipelined behind a connection's first take what comes next.
                // Of two walks, the one whose next tile is the lower zoom goes first.
                let mut order: Vec<usize> = (0..queues.len()).collect();
                order.sort_by_key(|part| queues[*part].next_key());
                let Some((part, (batch, heavy))) = order.into_iter().find_map(|part| {
                    let next = queues[part].next_batch(self.concurrency, heavy_allowed);
                    next.map(|next| (part, next))
                }) else {
                    break;
                };
                let mode = if writer.is_none() {
                    Mode::Probe
                } else {
                    queues[part].walk.mode(batch[0])
                };
                heavy_in_flight += usize::from(heavy);
                in_flight.push(start(part, batch, mode, heavy, false));
            }
            let Some((part, (mode, heavy, after_failure, results))) =
                self.next_finished(&mut in_flight).await?
            else {
                break;
            };
            heavy_in_flight -= usize::from(heavy);
            let mut leaf_tiles = Vec::new();
            let queue = &mut queues[part];
            for result in results {
                if after_failure {
                    // Only the children of a tile that failed to render: the tile itself is
                    // neither stored nor journaled as done, so a resumed run tries it again.
                    match result {
                        Ok((rendered, _)) => progress.discovered(queue.push_children(&rendered)),
                        Err(err) => tracing::warn!("{err}; the tiles below it are not walked"),
                    }
                    continue;
                }
                let failed = match &result {
                    Err(Error::Render { tile, .. }) if mode == Mode::Render && writes => {
                        Some(*tile)
                    }
                    _ => None,
                };
                let Some((rendered, data)) = self.keep_going(result, tally)? else {
                    // With --keep-going, the rest of the failed tile's subtree is still walked:
                    // its children come from a probe, which reads no geometry, so a row that
                    // fails the render (a shape PostGIS cannot transform) fails only its own tiles.
                    if let Some(tile) = failed {
                        in_flight.push(start(part, vec![tile], Mode::Probe, false, true));
                    }
                    continue;
                };
                queue.note_size(rendered.tile, data.as_ref().map_or(0, Vec::len));
                let stored = match (writer, data) {
                    (Some(writer), Some(data)) => {
                        let children = Some(rendered.children);
                        Some(
                            self.store_rendered(writer, rendered.tile, data, tally, children)
                                .await?,
                        )
                    }
                    (Some(writer), None) if queue.walk.journals(rendered.tile) => {
                        let visited = WriterCommand::Visited(rendered.tile, rendered.children);
                        writer.send(visited).await?;
                        None
                    }
                    _ => None,
                };
                tally.record(rendered.tile, mode, rendered.elapsed, stored);
                progress.tile_done(rendered.tile.z(), tally);
                progress.discovered(queue.push_children(&rendered));
                if writes && mode == Mode::Probe && queue.walk.renders_after_probe(rendered.tile) {
                    leaf_tiles.push(rendered.tile);
                }
            }
            progress.discovered(leaf_tiles.len());
            for tile in leaf_tiles.drain(..) {
                queues[1].push(tile);
            }
        }
        Ok(())
    }

    /// Renders a list of tiles zoom by zoom in `order`: those that hold something are written,
    /// the others deleted. Returns false when `deadline` passed before the end.
    pub async fn render_list(
        &self,
        tiles: &[TileCoord],
        order: ListOrder,
        writer: &Writer,
        deadline: Option<Instant>,
        tally: &mut Tally,
        progress: &mut Progress,
    ) -> Result<bool> {
        progress.planned(tiles.len());
        let mut tiles = tiles.to_vec();
        // Stable: within a zoom the list keeps its order (neighbours side by side).
        match order {
            ListOrder::DeepestFirst => tiles.sort_by_key(|tile| Reverse(tile.z())),
            ListOrder::LowestFirst => tiles.sort_by_key(|tile| tile.z()),
        }
        let batches = list_batches(&tiles, self.capacity());
        let mut results = futures::stream::iter(batches)
            .map(|batch| async move { self.render_encoded(&batch, Mode::Render, true).await })
            .buffer_unordered(self.capacity());
        loop {
            let next = tokio::select! {
                biased;
                signal = self.stop.stopped() => return Err(Error::Stopped { signal }),
                next = results.next() => next,
            };
            let Some(batch) = next else { break };
            for result in batch {
                let Some((rendered, data)) = self.keep_going(result, tally)? else {
                    continue;
                };
                let stored = match data {
                    None => {
                        writer.send(WriterCommand::Delete(rendered.tile)).await?;
                        None
                    }
                    Some(data) => Some(
                        self.store_rendered(writer, rendered.tile, data, tally, None)
                            .await?,
                    ),
                };
                tally.record(rendered.tile, Mode::Render, rendered.elapsed, stored);
                progress.tile_done(rendered.tile.z(), tally);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn capacity(&self) -> usize {
        self.concurrency * PIPELINE_DEPTH
    }

    /// The next finished statement, or an error once a stop was requested; `None` when none is left.
    async fn next_finished(
        &self,
        in_flight: &mut FuturesUnordered<impl std::future::Future<Output = Statement>>,
    ) -> Result<Option<Statement>> {
        tokio::select! {
            biased;
            signal = self.stop.stopped() => Err(Error::Stopped { signal }),
            next = in_flight.next() => Ok(next),
        }
    }

    /// Renders a batch and encodes each tile that holds something and is to be written: light
    /// tiles in chunks on the blocking pool as they arrive (see [`offload`]), a large one alone
    /// there as soon as it starts arriving, so this task only routes bytes and the renders keep
    /// flowing.
    async fn render_encoded(
        &self,
        tiles: &[TileCoord],
        mode: Mode,
        writes: bool,
    ) -> Vec<Result<Encoded>> {
        let encoding = self.encoding;
        let gathered = offload::Chunks::new(encoding);
        let chunks = &gathered;
        let finish = |rendered: Rendered| async move {
            if !writes {
                return Ok(Finished::Done((rendered, None)));
            }
            if rendered.mvt.is_empty() {
                return Ok(Finished::Done(encoding.encode(rendered)));
            }
            if !encoding.is_heavy(&rendered) {
                let tile = rendered.tile;
                chunks.push(rendered);
                return Ok(Finished::Chunked(tile));
            }
            let tile = rendered.tile;
            tokio::task::spawn_blocking(move || encoding.encode(rendered))
                .await
                .map(Finished::Done)
                .map_err(|e| Error::output(self.tileset, format!("compressing tile {tile}: {e}")))
        };
        let results = self.renderer.render_batch(tiles, mode, &finish).await;
        let mut compressed = gathered.finish().await;
        results
            .into_iter()
            .map(|result| match result.and_then(|finished| finished)? {
                Finished::Done(encoded) => Ok(encoded),
                Finished::Chunked(tile) => match &mut compressed {
                    Ok(done) => offload::take(done, tile).ok_or_else(|| {
                        Error::output(self.tileset, format!("tile {tile} was not compressed"))
                    }),
                    Err(e) => Err(Error::output(
                        self.tileset,
                        format!("compressing tile {tile}: {e}"),
                    )),
                },
            })
            .collect()
    }

    /// With `--keep-going`, a tile that failed after its retries is noted and skipped (`None`);
    /// otherwise its error ends the run.
    fn keep_going<T>(&self, result: Result<T>, tally: &mut Tally) -> Result<Option<T>> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(Error::Render { tile, message, .. }) if self.keep_going => {
                tracing::error!("tile {tile} failed: {message}");
                tally.failed_tile(tile, message);
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Checks an encoded tile against the size budget and hands it to the writer.
    async fn store_rendered(
        &self,
        writer: &Writer,
        tile: TileCoord,
        data: Vec<u8>,
        tally: &mut Tally,
        children: Option<[bool; 4]>,
    ) -> Result<usize> {
        if self.budget.check(self.tileset, tile, data.len())? {
            tally.over_budget(tile, data.len());
        }
        let size = data.len();
        writer
            .send(WriterCommand::Write(tile, data, children))
            .await?;
        Ok(size)
    }
}

/// The tiles a walk still has to visit, lowest zoom first and neighbours together, and which of
/// them are heavy: the top zooms' tiles always, and where the layers hold more unclustered features
/// than [`HUGE_TOP_ROWS`], the children of tiles that came out over [`BIG_TILE_BYTES`]. Heavy tiles
/// go alone, one per connection; one that may not start yet waits aside, so the light tiles queued
/// behind it keep the connections busy.
///
/// The z0 tile, which holds every feature, is one of them. It once rendered with no other heavy
/// tile beside it where the layers are huge, since its 90 MB of MVT (1M facilities) were held
/// until the last piece arrived; every other tile queued then was heavy too, so a core idled for
/// its whole render (10.8-11.2 s of idle CPU in a 1M-row z0-14 seed). Now that pieces are
/// compressed as they arrive, a tile in flight holds about its compressed size, and the z0 tile
/// shares the connections: idle CPU 1.1 s, peak RSS 158-164 MB against 194-207 MB (a 1M-row
/// seed).
struct WalkQueue<'w> {
    walk: &'w PyramidWalk,
    heap: BinaryHeap<Reverse<u64>>,
    done: HashMap<u64, [bool; 4]>,
    huge: bool,
    big_parents: HashSet<u64>,
    /// Heavy tiles set aside while no heavy tile may start.
    waiting: Vec<Reverse<u64>>,
}

impl<'w> WalkQueue<'w> {
    fn new(walk: &'w PyramidWalk, done: HashMap<u64, [bool; 4]>, unclustered_rows: f64) -> Self {
        let mut queue = WalkQueue {
            walk,
            heap: BinaryHeap::new(),
            done,
            huge: unclustered_rows > HUGE_TOP_ROWS,
            big_parents: HashSet::new(),
            waiting: Vec::new(),
        };
        for root in walk.roots() {
            queue.push(root);
        }
        queue
    }

    /// The walk order of the next tile queued or waiting, `u64::MAX` when none is.
    fn next_key(&self) -> u64 {
        let queued = self.heap.peek().map(|key| key.0);
        let waiting = self.waiting.iter().map(|key| key.0).min();
        queued.into_iter().chain(waiting).min().unwrap_or(u64::MAX)
    }

    /// Tiles queued or waiting.
    fn len(&self) -> usize {
        self.heap.len() + self.waiting.len()
    }

    fn push(&mut self, tile: TileCoord) {
        self.heap.push(Reverse(walk_order_key(tile)));
    }

    /// Queues the children a rendered tile found content for; returns how many.
    fn push_children(&mut self, rendered: &Rendered) -> usize {
        let walk = self.walk;
        let mut pushed = 0;
        for child in walk.children(rendered.tile, rendered.children) {
            self.push(child);
            pushed += 1;
        }
        pushed
    }

    fn is_heavy(&self, tile: TileCoord) -> bool {
        // A shard's probes above the split zoom read no geometry: none of them is heavy.
        let eager = tile.z() <= self.walk.eager_depth() && !self.walk.passes_through(tile);
        eager
            || tile
                .parent()
                .is_some_and(|parent| self.big_parents.contains(&tile_key(parent)))
    }

    /// Remembers a tile that came out big, so its children go alone.
    fn note_size(&mut self, tile: TileCoord, stored: usize) {
        if self.huge && stored > BIG_TILE_BYTES {
            self.big_parents.insert(tile_key(tile));
        }
    }

    /// The next statement's tiles (one zoom, a share for one of `connections`; a heavy tile alone)
    /// and whether it is heavy. While
    /// `heavy_allowed` is false, heavy tiles wait aside and the light ones behind them are taken.
    /// `None` when nothing is queued that may start.
    fn next_batch(
        &mut self,
        connections: usize,
        heavy_allowed: bool,
    ) -> Option<(Vec<TileCoord>, bool)> {
        if heavy_allowed {
            self.heap.extend(self.waiting.drain(..));
        }
        loop {
            let next = tile_from_walk_order_key(self.heap.peek()?.0);
            let heavy = self.is_heavy(next);
            if heavy && !heavy_allowed {
                self.waiting.extend(self.heap.pop());
                continue;
            }
            let limit = if heavy {
                1
            } else {
                batch_limit(self.heap.len(), connections)
            };
            let mut batch: Vec<TileCoord> = Vec::new();
            while batch.len() < limit {
                let peeked = self.heap.peek().map(|key| tile_from_walk_order_key(key.0));
                let same_zoom = match (peeked, batch.first()) {
                    (None, _) => false,
                    // The first tile may have been finished by an interrupted run: the next one
                    // must be as heavy as the one the batch was started for.
                    (Some(tile), None) => self.is_heavy(tile) == heavy,
                    (Some(tile), Some(first)) => {
                        // One statement renders or probes all its tiles, so a shard's walk keeps
                        // the tiles it renders apart from those it only passes through.
                        tile.z() == first.z()
                            && !self.is_heavy(tile)
                            && self.walk.mode(tile) == self.walk.mode(*first)
                    }
                };
                if !same_zoom {
                    break;
                }
                let Some(Reverse(key)) = self.heap.pop() else {
                    break;
                };
                let tile = tile_from_walk_order_key(key);
                if let Some(children) = self.done.remove(&tile_key(tile)) {
                    // Finished by an interrupted run: its children are known without rendering it.
                    let walk = self.walk;
                    for child in walk.children(tile, children) {
                        self.push(child);
                    }
                    continue;
                }
                batch.push(tile);
            }
            if !batch.is_empty() {
                return Some((batch, heavy));
            }
        }
    }
}

/// How many of `queued` tiles one statement takes: each of `in_flight` statements (or
/// connections) gets a share, so no connection idles while another works through a long batch (a
/// z0 tile goes alone).
fn batch_limit(queued: usize, in_flight: usize) -> usize {
    (queued / in_flight.max(1)).clamp(1, MAX_BATCH)
}

/// Splits a tile list into batches of one zoom each, as many per zoom as [`batch_limit`] sizes
/// them, with the zoom's tiles dealt to its batches in turn. Neighbouring tiles cost alike (a
/// city's tiles are all slow), and a list holds them side by side: dealt apart, they spread over
/// the statements instead of making one statement the run's slowest, which its connection's
/// pipelined statements would wait behind.
fn list_batches(tiles: &[TileCoord], in_flight: usize) -> Vec<Vec<TileCoord>> {
    let mut batches = Vec::new();
    let mut rest = tiles;
    while let Some(first) = rest.first() {
        let same_zoom = rest.iter().take_while(|t| t.z() == first.z()).count();
        let (mut count, mut left, mut queued) = (0, same_zoom, rest.len());
        while left > 0 {
            let size = left.min(batch_limit(queued, in_flight));
            (count, left, queued) = (count + 1, left - size, queued - size);
        }
        let (zoom, tail) = rest.split_at(same_zoom);
        let mut dealt = vec![Vec::with_capacity(same_zoom.div_ceil(count)); count];
        for (i, &tile) in zoom.iter().enumerate() {
            dealt[i % count].push(tile);
        }
        batches.extend(dealt);
        rest = tail;
    }
    batches
}
