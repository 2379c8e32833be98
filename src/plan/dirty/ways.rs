//! Which way a reseed takes each zoom: its dirty tiles listed, or walked from subtree roots as a
//! seed walks. A list renders every dirty tile, empty or not, while a walk renders only the tiles
//! its parents found content for (plus its roots), and a tile costs about the same either way (one
//! row of the same batched statement). So where a bulk change dirties most of a zoom, or dirties
//! tiles where nothing is left (rows moved or deleted), the walk renders fewer tiles: it is taken
//! from the zoom where that pays for every zoom below it, since a walk of a zoom needs its
//! parents walked too.
//!
//! The walk's tiles are estimated from a census of the rows: the tiles of the deepest zoom that
//! hold a row, and their ancestors. That is what the walk renders at least (it also renders the
//! empty neighbours a buffer reaches), so the estimate is raised by [`WALK_MARGIN`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{subtree_roots, ChangedBox};
use crate::config::LayerConfig;
use crate::plan::Work;
use crate::tile::{BBox, Subtrees, TileCoord, ZoomRange};

/// The walk's estimate over the census, in eighths: a walk also renders the empty tiles its
/// parents' buffers reach (at most 3% more in a z0-14 seed of the 100k sample at unclustered
/// zooms, 37% at clustered ones), so a walk is taken only where it is clearly cheaper.
const WALK_MARGIN: u64 = 9;

/// Source rows per dirty tile below which a census is not taken: the census reads every row
/// once (a grouped scan), about as costly as rendering one tile per 20 rows, so a reseed of few
/// tiles over a large table lists them without one.
pub const ROWS_PER_CENSUS_TILE: f64 = 20.0;

/// Dirty tiles below which a reseed lists them without weighing a walk: an edit of a few rows
/// renders in well under a second either way, and its list purges as it stores.
pub const MIN_CENSUS_TILES: usize = 1024;

/// Whether a census of `rows` source rows is worth taking for a reseed of `dirty` listed tiles.
pub fn census_pays(dirty: usize, rows: f64) -> bool {
    dirty >= MIN_CENSUS_TILES && (dirty as f64) * ROWS_PER_CENSUS_TILE >= rows
}

/// How one zoom was reseeded, for the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoomWay {
    /// The zoom.
    pub zoom: u8,
    /// Its dirty tiles, which a list renders.
    pub dirty: u64,
    /// The tiles a walk was estimated to render there (roots included).
    pub walk: u64,
    /// Whether it was walked.
    pub walked: bool,
}

/// The work for `tiles` (every dirty tile, within the tileset's `listed_tiles`), given `census`,
/// the tiles of the deepest zoom that hold a row: the list, or the list above the root zoom whose
/// walk below it renders the fewest tiles in all; and each zoom's way.
pub fn choose(
    tiles: Vec<TileCoord>,
    census: &[TileCoord],
    (boxes, bbox, zooms): (&[(&LayerConfig, &[ChangedBox])], BBox, ZoomRange),
    (extent, buffer): (u32, u32),
    limit: usize,
) -> (Work, Vec<ZoomWay>) {
    let mut dirty: BTreeMap<u8, u64> = zooms.levels().map(|z| (z, 0)).collect();
    for tile in &tiles {
        *dirty.entry(tile.z()).or_default() += 1;
    }
    // The census' tiles and their ancestors, per zoom of the run.
    let mut held: BTreeMap<u8, BTreeSet<TileCoord>> = BTreeMap::new();
    for tile in census.iter().filter(|t| t.z() == zooms.max) {
        let mut at = Some(*tile);
        while let Some(tile) = at.filter(|t| t.z() >= zooms.min) {
            held.entry(tile.z()).or_default().insert(tile);
            at = tile.parent();
        }
    }
    let listed_cost: u64 = dirty.values().sum();
    let mut best: Option<(u64, u8, Subtrees, Vec<u64>)> = None;
    for root_zoom in zooms.levels() {
        let Some(roots) = subtree_roots(boxes, bbox, zooms, root_zoom, (extent, buffer), limit)
        else {
            continue;
        };
        let subtrees = Subtrees::new(roots);
        if subtrees.is_empty() {
            continue;
        }
        let walk: Vec<u64> = zooms
            .levels()
            .filter(|z| *z >= root_zoom)
            .map(|z| {
                if z == root_zoom {
                    return subtrees.len() as u64;
                }
                let within = held.get(&z).map_or(0, |tiles| {
                    tiles.iter().filter(|t| subtrees.contains(**t)).count()
                });
                (within as u64 * WALK_MARGIN).div_ceil(8)
            })
            .collect();
        let above: u64 = dirty.range(..root_zoom).map(|(_, n)| n).sum();
        let cost = above + walk.iter().sum::<u64>();
        if cost < listed_cost && best.as_ref().is_none_or(|(c, ..)| cost < *c) {
            best = Some((cost, root_zoom, subtrees, walk));
        }
    }
    let ways = |root_zoom: Option<u8>, walk: &[u64]| -> Vec<ZoomWay> {
        dirty
            .iter()
            .map(|(&zoom, &n)| {
                let walked = root_zoom.is_some_and(|root| zoom >= root);
                let estimate = match root_zoom {
                    Some(root) if walked => walk[usize::from(zoom - root)],
                    _ => held.get(&zoom).map_or(0, |t| t.len() as u64),
                };
                ZoomWay {
                    zoom,
                    dirty: n,
                    walk: estimate,
                    walked,
                }
            })
            .collect()
    };
    match best {
        None => {
            let ways = ways(None, &[]);
            (Work::Tiles(tiles), ways)
        }
        Some((_, root_zoom, subtrees, walk)) => {
            let ways = ways(Some(root_zoom), &walk);
            let listed = tiles.into_iter().filter(|t| t.z() < root_zoom).collect();
            let work = Work::Subtrees {
                tiles: listed,
                subtrees,
            };
            (work, ways)
        }
    }
}

/// The ways as one line: each run of zooms taken the same way, with its tiles.
pub fn ways_text(ways: &[ZoomWay]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ways.len() {
        let run = ways[i..]
            .iter()
            .take_while(|w| w.walked == ways[i].walked)
            .count();
        let (first, last) = (&ways[i], &ways[i + run - 1]);
        let zooms = if first.zoom == last.zoom {
            format!("zoom {}", first.zoom)
        } else {
            format!("zooms {}-{}", first.zoom, last.zoom)
        };
        let part = &ways[i..i + run];
        let dirty: u64 = part.iter().map(|w| w.dirty).sum();
        let walk: u64 = part.iter().map(|w| w.walk).sum();
        parts.push(if first.walked {
            format!("{zooms} walked (about {walk} tiles against {dirty} dirty)")
        } else {
            format!("{zooms} listed ({dirty} dirty tiles)")
        });
        i += run;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> LayerConfig {
        LayerConfig::plain()
    }

    /// The tile of zoom `z` holding a point.
    fn tile_at(lon: f64, lat: f64, z: u8) -> TileCoord {
        let (x, y) = crate::tile::mercator(lon, lat);
        let half = crate::tile::MERCATOR_HALF_WORLD;
        let size = 2.0 * half / f64::from(1u32 << z);
        TileCoord::new(z, ((x + half) / size) as u32, ((half - y) / size) as u32).unwrap()
    }

    /// The tiles `changed` dirties over `zooms` in a plain layer, and how `choose` takes them
    /// with the rows of `census` left.
    fn dirty_and_chosen(
        changed: &[ChangedBox],
        census: &[TileCoord],
        zooms: ZoomRange,
    ) -> (Vec<TileCoord>, (Work, Vec<ZoomWay>)) {
        let layer = layer();
        let boxes = [(&layer, changed)];
        let (extent, buffer, limit) = (4096, 64, 1 << 20);
        let layers = std::slice::from_ref(&layer);
        let tiles =
            super::super::dirty_tiles(&boxes, layers, BBox::WORLD, zooms, extent, buffer, limit)
                .unwrap();
        let chosen = choose(
            tiles.clone(),
            census,
            (&boxes, BBox::WORLD, zooms),
            (extent, buffer),
            limit,
        );
        (tiles, chosen)
    }

    #[test]
    fn a_zoom_mostly_dirty_where_rows_moved_away_is_walked_and_a_few_changes_are_listed() {
        let zooms = ZoomRange::new(0, 8).unwrap();
        // Sixty points moved along a parallel: each dirties its old and its new tiles.
        let moved: Vec<ChangedBox> = (0..60)
            .flat_map(|i| {
                let lon = -150.0 + 5.0 * f64::from(i);
                [
                    ChangedBox::point(lon, 10.0),
                    ChangedBox::point(lon + 2.0, 10.0),
                ]
            })
            .collect();
        // Rows are left only at the new places.
        let census: Vec<TileCoord> = (0..60)
            .map(|i| {
                let lon = -148.0 + 5.0 * f64::from(i);
                tile_at(lon, 10.0, 8)
            })
            .collect();
        let (_, (work, ways)) = dirty_and_chosen(&moved, &census, zooms);
        let Work::Subtrees {
            tiles: listed,
            subtrees,
        } = work
        else {
            panic!("listed: {ways:?}");
        };
        assert!(ways.last().unwrap().walked, "{ways:?}");
        let root = subtrees.top_zoom().unwrap();
        assert!(listed.iter().all(|t| t.z() < root));
        assert!(ways.iter().all(|w| w.walked == (w.zoom >= root)));
        assert!(ways_text(&ways).contains("walked"), "{}", ways_text(&ways));

        // One point renamed in place: its own tiles, listed.
        let one = [ChangedBox::point(12.0, 45.0)];
        let census = [tile_at(12.0, 45.0, 8)];
        let (tiles, (work, ways)) = dirty_and_chosen(&one, &census, zooms);
        assert_eq!(work, Work::Tiles(tiles));
        assert!(ways.iter().all(|w| !w.walked));
    }
}
