//! The scheduler tests' world: an in-memory renderer whose tiles hold content above a set of
//! "facility" tiles, counting what it is asked and how many heavy statements overlap, and an
//! in-memory sink that keeps what it is given.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::plan::Mode;
use crate::render::{Mvt, Rendered, Renderer};
use crate::sink::{Finish, Resume, Sink, SinkReport};
use crate::tile::TileCoord;

/// Tiles hold content where a facility tile lies beneath them.
pub(super) struct MemoryRenderer {
    facilities: BTreeSet<TileCoord>,
    pub(super) failing: HashSet<TileCoord>,
    /// Tiles that fail only to render, as a row PostGIS cannot transform fails them: a probe,
    /// which reads no geometry, still answers.
    pub(super) failing_renders: HashSet<TileCoord>,
    pub(super) unclustered_rows: f64,
    pub(super) calls: Mutex<Vec<(Vec<TileCoord>, Mode)>>,
    heavy_in_flight: AtomicUsize,
    pub(super) most_heavy_in_flight: AtomicUsize,
    /// Whether a z0 tile is in flight, and the most heavy tiles in flight while one was.
    top_in_flight: AtomicBool,
    pub(super) most_heavy_beside_top: AtomicUsize,
    pub(super) eager_depth: u8,
    /// Per statement, its first tile and when it started and ended on `clock`.
    spans: Mutex<Vec<(TileCoord, usize, usize)>>,
    clock: AtomicUsize,
}

impl MemoryRenderer {
    pub(super) fn new(facilities: &[(u8, u32, u32)]) -> Self {
        MemoryRenderer {
            facilities: facilities
                .iter()
                .map(|(z, x, y)| TileCoord::new(*z, *x, *y).unwrap())
                .collect(),
            failing: HashSet::new(),
            failing_renders: HashSet::new(),
            unclustered_rows: 10.0,
            calls: Mutex::new(Vec::new()),
            heavy_in_flight: AtomicUsize::new(0),
            most_heavy_in_flight: AtomicUsize::new(0),
            top_in_flight: AtomicBool::new(false),
            most_heavy_beside_top: AtomicUsize::new(0),
            eager_depth: 0,
            spans: Mutex::new(Vec::new()),
            clock: AtomicUsize::new(0),
        }
    }

    fn holds(&self, tile: TileCoord) -> bool {
        self.facilities.iter().any(|f| {
            f.z() >= tile.z()
                && f.x() >> (f.z() - tile.z()) == tile.x()
                && f.y() >> (f.z() - tile.z()) == tile.y()
        })
    }

    /// The statements whose first tile `which` accepts, as (start, end) on `clock`.
    pub(super) fn spans_of(&self, which: impl Fn(TileCoord) -> bool) -> Vec<(usize, usize)> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|(tile, _, _)| which(*tile))
            .map(|(_, start, end)| (*start, *end))
            .collect()
    }

    pub(super) fn rendered(&self) -> Vec<TileCoord> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(_, mode)| *mode == Mode::Render)
            .flat_map(|(tiles, _)| tiles.iter().copied())
            .collect()
    }
}

impl Renderer for MemoryRenderer {
    async fn render_batch<T, F, Fut>(
        &self,
        tiles: &[TileCoord],
        mode: Mode,
        finish: &F,
    ) -> Vec<Result<T>>
    where
        F: Fn(Rendered) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        self.calls.lock().unwrap().push((tiles.to_vec(), mode));
        let started = self.clock.fetch_add(1, Ordering::SeqCst);
        let heavy = tiles[0].z() <= self.eager_depth;
        let top = tiles[0].z() == 0;
        if heavy {
            let now = self.heavy_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_heavy_in_flight.fetch_max(now, Ordering::SeqCst);
            if top {
                self.top_in_flight.store(true, Ordering::SeqCst);
            }
            if self.top_in_flight.load(Ordering::SeqCst) {
                self.most_heavy_beside_top.fetch_max(now, Ordering::SeqCst);
            }
        }
        // Yield so that other statements really are in flight at the same time.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let ended = self.clock.fetch_add(1, Ordering::SeqCst);
        self.spans.lock().unwrap().push((tiles[0], started, ended));
        if heavy {
            self.heavy_in_flight.fetch_sub(1, Ordering::SeqCst);
            if top {
                self.top_in_flight.store(false, Ordering::SeqCst);
            }
        }
        let mut finished = Vec::with_capacity(tiles.len());
        for tile in tiles {
            let fails_render = mode == Mode::Render && self.failing_renders.contains(tile);
            if self.failing.contains(tile) || fails_render {
                finished.push(Err(Error::Render {
                    tileset: "memory".into(),
                    tile: *tile,
                    message: "refused".into(),
                }));
                continue;
            }
            let mut children = [false; 4];
            for (flag, child) in children.iter_mut().zip(tile.children()) {
                *flag = self.holds(child);
            }
            let mvt = if mode == Mode::Render && self.holds(*tile) {
                Mvt::from_bytes(tile.to_string().into_bytes())
            } else {
                Mvt::default()
            };
            let rendered = Rendered {
                tile: *tile,
                mvt,
                children,
                elapsed: Duration::ZERO,
            };
            finished.push(Ok(finish(rendered).await));
        }
        finished
    }

    fn unclustered_rows(&self) -> f64 {
        self.unclustered_rows
    }
}

/// Keeps what it is given: tiles by coordinate, deletions, and the walk's journal.
#[derive(Default, Clone)]
pub(super) struct MemorySink(pub(super) Arc<Mutex<Stored>>);

#[derive(Default)]
pub(super) struct Stored {
    pub(super) tiles: BTreeMap<TileCoord, Vec<u8>>,
    pub(super) deleted: Vec<TileCoord>,
    pub(super) journaled: Vec<TileCoord>,
}

impl Sink for MemorySink {
    fn write_tile(&mut self, tile: TileCoord, data: &[u8]) -> Result<()> {
        self.0.lock().unwrap().tiles.insert(tile, data.to_vec());
        Ok(())
    }

    fn delete_tile(&mut self, tile: TileCoord) -> Result<()> {
        self.0.lock().unwrap().deleted.push(tile);
        Ok(())
    }

    fn state(&self) -> Option<String> {
        None
    }

    fn begin_journal(&mut self, _watermark: Option<&str>) -> Result<Option<Resume>> {
        Ok(None)
    }

    fn journal(&mut self, tile: TileCoord, _children: [bool; 4], _written: bool) -> Result<()> {
        self.0.lock().unwrap().journaled.push(tile);
        Ok(())
    }

    fn finish(self: Box<Self>, _finish: Finish<'_>) -> Result<SinkReport> {
        Ok(SinkReport::default())
    }

    fn abort(self: Box<Self>) {}
}
