//! What a shard's tiles cost to render, as the planner estimates it before any tile exists.
//!
//! A tile costs a fixed part (a statement's share, a write; more for a clustered tile) plus a part
//! per row it reads, per feature it carries and per byte it stores, in microseconds of CPU
//! (PostgreSQL's and the tool's); the coefficients below were fitted on the render times and CPU
//! real seeds and shards measured, and a tile's bytes are estimated from its features the same way.
//! A split-zoom tile's weight is what its whole subtree costs down to the deepest zoom, summed tile
//! by tile from one census: the rows per non-empty tile of the deepest zoom the features need,
//! aggregated upwards. The census knows which descendants are empty, so dense places weigh as the
//! few full tiles they are rather than as rows spread over as many tiles as possible (the estimate
//! an earlier, per-tile-unit model used, which overcounted tiles where the data is dense); and
//! clustered zooms are weighed by the non-empty cells a tile holds (its non-empty descendants that
//! many zooms deeper), not its rows.

use std::collections::HashMap;

use crate::tile::{BBox, TileCoord, ZoomRange};

/// Cost per tile, whatever it holds (µs). The costs are in µs of CPU, PostgreSQL's and the
/// tool's together: a shard's wall time follows them, as its connections keep the cores busy.
/// Two fits make them, both printed by `scripts/bench.sh --sections shards`
/// (`scripts/bench/sections/shards_report.py`) on the 1M-row sample, z0-14, clustered as shipped
/// (clusters aggregated from rows: the bench schema has no change capture, so no maintained cells)
/// and unclustered:
/// - the render: least squares (coefficients >= 0) on the full seeds' per-zoom render times
///   (`render_ms_total`), tiles, rows, cells and stored bytes, each zoom's rows and cells counted
///   as [`Pyramid`] counts them; the mean of two quiet runs (load 2), whose render part per tile
///   came out 0;
/// - what the shards' CPU took beyond their render (the "CPU beyond the render" line's fit,
///   over the 156 shards of 4 and 16 with more than 4 tiles of both runs): the tool's encoding,
///   compression and writes, 8-9 µs a tile and 0.027 µs a byte, and PostgreSQL's work around each
///   statement, about 8 µs a tile; both are added here and to [`BYTE_MICROS`].
///
/// The coefficients before (fitted on render times alone at load 4-8) priced a cluster at 93 µs
/// and a tile at 79: they put 37% of a clustered seed's cost at z8-z11, which takes 29% of its
/// render, and 16 clustered shards planned within 4% of the mean ran 5.1-7.2% of the total each.
pub const TILE_MICROS: f64 = 17.0;
/// What a clustered tile costs on top of [`TILE_MICROS`] (grouping its rows into cells).
pub const CLUSTER_TILE_MICROS: f64 = 5.5;
/// Cost per row drawn into a tile as a point feature (µs).
pub const ROW_MICROS: f64 = 2.6;
/// Cost per row a clustered tile reads and aggregates, its margin's rows included (µs).
pub const CLUSTER_ROW_MICROS: f64 = 2.1;
/// Cost per cluster a clustered tile carries (µs).
pub const CELL_MICROS: f64 = 5.8;
/// Cost per stored byte (µs): the render's 0.088 and the tool's compression and write.
pub const BYTE_MICROS: f64 = 0.115;
/// What one probe above the split zoom costs a shard (µs): an `EXISTS` per child, one zoom at a
/// time, priced as the connections' time it takes. Probes are the price of a deeper split, which
/// the cut alone never sees. Measured on the 1M-row sample, z0-14, the same shards cut deeper
/// and shallower (the split zoom the model chose before and after probes were priced): 4
/// unclustered shards at zoom 14 rather than 8 probed 364k more tiles and took 13.7 s more in all
/// (about 75 µs of two connections' time a probe); 16 clustered ones at 14 rather than 11, 340k
/// more and 9.2 s (54 µs); 16 unclustered ones at 13 rather than 11, 179k more and 7.4 s (83 µs).
pub const PROBE_MICROS: f64 = 70.0;
/// Stored bytes of a tile whatever it holds, fitted the same way on the same seeds.
pub const TILE_BYTES: f64 = 210.4;
/// Stored bytes per point feature.
pub const ROW_BYTES: f64 = 38.68;
/// Stored bytes per cluster.
pub const CELL_BYTES: f64 = 89.63;

/// The deepest zoom a census is taken at, whatever the clustering asks for: below it a tile's
/// cells are estimated from the census's tiles, and the census stays one grouped query of at most
/// as many rows as the table holds.
const MAX_CENSUS_ZOOM: u8 = 20;

/// A tile's place in a cut: the split-zoom tile's subtree, or a tile above the split zoom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weighed {
    /// The tile, at or above the split zoom.
    pub tile: TileCoord,
    /// Its estimated work.
    pub weight: u64,
    /// The estimated work of its dearest single tile, which one connection renders alone.
    pub dearest: u64,
}

/// How the planner prices tiles for one tileset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostModel {
    /// The zooms the run renders.
    pub zooms: ZoomRange,
    /// `(cluster_maxzoom, cells per tile)` when the tileset clusters its low zooms.
    pub cluster: Option<(u8, u64)>,
    /// Whether clustered tiles read maintained cell tables (one row per cell) rather than
    /// aggregate the rows under them.
    pub maintained_cells: bool,
}

/// One tile's load: its rows, and its non-empty cells where it is clustered (else its rows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Load {
    rows: u64,
    /// The rows the tile reads: its own, and at a clustered zoom those of its margin's cells.
    read: u64,
    features: u64,
    /// The tile's own estimated cost (µs), 0 outside the run's zooms.
    own: u64,
    /// The tile's and its descendants' estimated cost down to the deepest rendered zoom (µs).
    subtree: u64,
    /// The dearest single tile's cost among the tile and its descendants (µs).
    dearest: u64,
}

impl CostModel {
    /// How many zooms below a clustered tile its cells are tiles: the cells per tile rounded up to
    /// a power of four.
    fn cell_depth(cells: u64) -> u8 {
        let mut depth = 0u8;
        while depth < 16 && (1u64 << (2 * u32::from(depth))) < cells {
            depth += 1;
        }
        depth
    }

    /// Whether tiles of zoom `z` carry cells rather than rows, and how many zooms deeper a cell is
    /// a tile.
    fn clustered_at(&self, z: u8) -> Option<u8> {
        match self.cluster {
            Some((maxzoom, cells)) if z <= maxzoom => Some(Self::cell_depth(cells)),
            _ => None,
        }
    }

    /// The zoom the census counts rows at: the deepest rendered zoom, or deeper where the deepest
    /// clustered zoom's cells are finer than its tiles.
    pub fn census_zoom(&self) -> u8 {
        let cells = (self.zooms.min..=self.zooms.max)
            .filter_map(|z| self.clustered_at(z).map(|depth| z.saturating_add(depth)))
            .max()
            .unwrap_or(0);
        self.zooms.max.max(cells.min(MAX_CENSUS_ZOOM))
    }

    /// The estimated cost (µs) of one tile of zoom `z` that reads `rows` rows (a clustered
    /// tile's margin included) and carries `features` features (its rows, or at a clustered zoom
    /// its non-empty cells).
    pub fn tile(&self, z: u8, rows: u64, features: u64) -> u64 {
        let (rows, features) = (rows as f64, features as f64);
        let micros = if self.clustered_at(z).is_none() {
            TILE_MICROS + rows * ROW_MICROS + BYTE_MICROS * (TILE_BYTES + ROW_BYTES * rows)
        } else {
            // Maintained cells are read one row per cell instead of the rows under them.
            let read = if self.maintained_cells {
                features
            } else {
                rows
            };
            TILE_MICROS
                + CLUSTER_TILE_MICROS
                + read * CLUSTER_ROW_MICROS
                + features * CELL_MICROS
                + BYTE_MICROS * (TILE_BYTES + CELL_BYTES * features)
        };
        micros.round() as u64
    }
}

/// Every non-empty tile of every zoom down to the census zoom, with its rows and features: the
/// estimate of what each subtree of the pyramid holds.
#[derive(Debug, Clone)]
pub struct Pyramid {
    model: CostModel,
    /// Per zoom from 0, the non-empty tiles by `(x, y)`.
    levels: Vec<HashMap<(u32, u32), Load>>,
}

impl Pyramid {
    /// The pyramid above a census: `rows` per non-empty tile of the model's census zoom (tiles of
    /// other zooms and outside `bbox` are left out).
    pub fn from_census(model: CostModel, bbox: &BBox, rows: &[(TileCoord, u64)]) -> Pyramid {
        let deepest = model.census_zoom();
        let range = bbox.tile_range(deepest);
        let mut levels: Vec<HashMap<(u32, u32), Load>> =
            (0..=deepest).map(|_| HashMap::new()).collect();
        for (tile, n) in rows {
            if range.contains(*tile) && *n > 0 {
                let load = levels[usize::from(deepest)]
                    .entry((tile.x(), tile.y()))
                    .or_default();
                load.rows += n;
            }
        }
        for z in (0..deepest).rev() {
            let (upper, lower) = levels.split_at_mut(usize::from(z) + 1);
            for ((x, y), load) in &lower[0] {
                upper[usize::from(z)]
                    .entry((x >> 1, y >> 1))
                    .or_default()
                    .rows += load.rows;
            }
        }
        for z in 0..=deepest {
            let cells_at = model
                .clustered_at(z)
                .map(|depth| z.saturating_add(depth).min(deepest));
            match cells_at {
                Some(cz) if cz > z => {
                    let shift = cz - z;
                    let mut cells: HashMap<(u32, u32), u64> = HashMap::new();
                    for (x, y) in levels[usize::from(cz)].keys() {
                        *cells.entry((x >> shift, y >> shift)).or_default() += 1;
                    }
                    for (key, load) in levels[usize::from(z)].iter_mut() {
                        // A tile holds at most as many features as rows, however fine its grid.
                        load.features = cells.get(key).copied().unwrap_or(1).min(load.rows);
                    }
                    if shift == model.clustered_at(z).unwrap_or(0) {
                        Self::add_margins(&mut levels, z, shift);
                    }
                }
                Some(_) => {
                    for load in levels[usize::from(z)].values_mut() {
                        load.features = 1;
                    }
                }
                None => {
                    for load in levels[usize::from(z)].values_mut() {
                        load.features = load.rows;
                    }
                }
            }
            for load in levels[usize::from(z)].values_mut() {
                load.read = load.read.saturating_add(load.rows);
            }
        }
        let mut pyramid = Pyramid { model, levels };
        pyramid.price();
        pyramid
    }

    /// Adds to each clustered tile of zoom `z` the rows of its neighbours' cells (tiles `depth`
    /// zooms deeper) that its one-cell fetch margin takes in.
    fn add_margins(levels: &mut [HashMap<(u32, u32), Load>], z: u8, depth: u8) {
        let (upper, lower) = levels.split_at_mut(usize::from(z + depth));
        let tiles = &mut upper[usize::from(z)];
        let side = 1i64 << (z + depth);
        for ((cx, cy), cell) in &lower[0] {
            let (own_x, own_y) = (cx >> depth, cy >> depth);
            let neighbours = |c: u32, own: u32| {
                [-1i64, 1]
                    .into_iter()
                    .map(move |d| i64::from(c) + d)
                    .filter(move |n| (0..side).contains(n))
                    .map(move |n| (n >> depth) as u32)
                    .filter(move |t| *t != own)
            };
            let xs: Vec<u32> = std::iter::once(own_x)
                .chain(neighbours(*cx, own_x))
                .collect();
            let ys: Vec<u32> = std::iter::once(own_y)
                .chain(neighbours(*cy, own_y))
                .collect();
            for x in &xs {
                for y in &ys {
                    if (*x, *y) == (own_x, own_y) {
                        continue;
                    }
                    if let Some(tile) = tiles.get_mut(&(*x, *y)) {
                        tile.read = tile.read.saturating_add(cell.rows);
                    }
                }
            }
        }
    }

    /// Each tile's own cost and its subtree's, from the deepest rendered zoom up; tiles outside the
    /// run's zooms cost nothing of their own.
    fn price(&mut self) {
        let deepest = self.model.zooms.max.min(self.census_zoom());
        for z in (0..=deepest).rev() {
            let rendered = self.model.zooms.contains(z);
            for load in self.levels[usize::from(z)].values_mut() {
                load.own = if rendered {
                    self.model.tile(z, load.read, load.features)
                } else {
                    0
                };
                load.subtree = load.own;
                load.dearest = load.own;
            }
            if z < deepest {
                let (upper, lower) = self.levels.split_at_mut(usize::from(z) + 1);
                for ((x, y), child) in &lower[0] {
                    if let Some(parent) = upper[usize::from(z)].get_mut(&(x >> 1, y >> 1)) {
                        parent.subtree = parent.subtree.saturating_add(child.subtree);
                        parent.dearest = parent.dearest.max(child.dearest);
                    }
                }
            }
        }
    }

    /// The probes a walk split at `split` sends above it: every non-empty tile of the zooms above
    /// the split zoom, which the shards over it probe for their subtrees.
    pub fn probes_above(&self, split: u8) -> u64 {
        self.levels
            .iter()
            .take(usize::from(split))
            .map(|level| level.len() as u64)
            .sum()
    }

    /// The weights of a cut at `split`: each non-empty split-zoom tile weighs its whole subtree
    /// down to the deepest rendered zoom, each tile above the split zoom its own cost.
    pub fn weights(&self, split: u8) -> Vec<Weighed> {
        let tiles = |z: u8| {
            self.levels
                .get(usize::from(z))
                .into_iter()
                .flatten()
                .filter_map(move |((x, y), load)| Some((TileCoord::new(z, *x, *y).ok()?, *load)))
        };
        let mut weights: Vec<Weighed> = tiles(split)
            .map(|(tile, load)| Weighed {
                tile,
                weight: load.subtree,
                dearest: load.dearest,
            })
            .collect();
        for z in 0..split {
            weights.extend(
                tiles(z)
                    .filter(|(_, load)| load.own > 0)
                    .map(|(tile, load)| Weighed {
                        tile,
                        weight: load.own,
                        dearest: load.own,
                    }),
            );
        }
        weights
    }

    /// The non-empty tiles of every zoom down to the census's: a floor of the run's tiles.
    pub fn tiles(&self) -> u64 {
        self.levels.iter().map(|level| level.len() as u64).sum()
    }

    /// The deepest zoom of the census.
    pub fn census_zoom(&self) -> u8 {
        (self.levels.len() as u8).saturating_sub(1)
    }

    /// The estimated cost of the whole run (µs).
    pub fn total(&self) -> u64 {
        self.levels
            .first()
            .map_or(0, |level| level.values().map(|load| load.subtree).sum())
    }
}
