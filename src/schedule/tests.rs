//! The scheduler's policies, exercised without PostGIS: tiles come from an in-memory renderer whose
//! world is a set of "facility" tiles at the deepest zoom, and go to an in-memory sink.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::*;
use crate::report::ProgressKind;
use crate::sink::writer;
use crate::tile::{BBox, ZoomRange};

mod memory;

use memory::{MemoryRenderer, MemorySink};

struct Run {
    result: Result<bool>,
    tally: Tally,
    stored: MemorySink,
}

fn scheduler<'a>(
    renderer: &'a MemoryRenderer,
    stop: &'a Stop,
    keep_going: bool,
) -> Scheduler<'a, MemoryRenderer> {
    Scheduler {
        renderer,
        tileset: "memory",
        concurrency: 2,
        encoding: Encoding {
            gzip: false,
            level: 3,
        },
        budget: SizeBudget {
            bytes: 1 << 20,
            strict: false,
        },
        keep_going,
        stop,
    }
}

/// Walks zooms 0..=`max` of the world, resuming after the tiles in `done`.
async fn walk(
    renderer: &MemoryRenderer,
    max: u8,
    keep_going: bool,
    done: HashMap<u64, [bool; 4]>,
) -> Run {
    let walk = PyramidWalk::new(BBox::WORLD, ZoomRange::new(0, max).unwrap());
    walk_with(renderer, &walk, keep_going, done).await
}

async fn walk_with(
    renderer: &MemoryRenderer,
    walk: &PyramidWalk,
    keep_going: bool,
    done: HashMap<u64, [bool; 4]>,
) -> Run {
    let (stop, _never) = Stop::manual();
    let stored = MemorySink::default();
    let (writer, written) = writer::spawn(Box::new(stored.clone()), "memory");
    let mut tally = Tally::default();
    let mut progress = Progress::start(ProgressKind::Quiet, "memory");
    let result = scheduler(renderer, &stop, keep_going)
        .walk(walk, Some(&writer), done, &mut tally, &mut progress)
        .await
        .map(|()| true);
    drop(writer);
    written.await.unwrap().ok().unwrap();
    Run {
        result,
        tally,
        stored,
    }
}

/// Every tile that holds one of `facilities`, from z0 down to theirs.
fn tiles_above(facilities: &[(u8, u32, u32)]) -> BTreeSet<TileCoord> {
    let mut tiles = BTreeSet::new();
    for (z, x, y) in facilities {
        let mut tile = Some(TileCoord::new(*z, *x, *y).unwrap());
        while let Some(t) = tile {
            tiles.insert(t);
            tile = t.parent();
        }
    }
    tiles
}

fn stored_tiles(run: &Run) -> BTreeSet<TileCoord> {
    run.stored.0.lock().unwrap().tiles.keys().copied().collect()
}

#[tokio::test]
async fn a_walk_writes_exactly_the_tiles_above_the_facilities_and_queries_nothing_else() {
    let renderer = MemoryRenderer::new(&[(6, 40, 20), (6, 41, 20), (6, 3, 60)]);
    let run = walk(&renderer, 6, false, HashMap::new()).await;
    assert!(*run.result.as_ref().unwrap());
    let expected: BTreeSet<TileCoord> = (0..=6u8)
        .flat_map(|z| {
            [(40u32, 20u32), (41, 20), (3, 60)]
                .map(|(x, y)| TileCoord::new(z, x >> (6 - z), y >> (6 - z)).unwrap())
        })
        .collect();
    assert_eq!(stored_tiles(&run), expected);
    let rendered = renderer.rendered();
    let rendered_set: BTreeSet<TileCoord> = rendered.iter().copied().collect();
    assert_eq!(
        rendered.len(),
        rendered_set.len(),
        "no tile is rendered twice"
    );
    let walk = PyramidWalk::new(BBox::WORLD, ZoomRange::new(0, 6).unwrap());
    let queried: BTreeSet<TileCoord> = walk.roots().into_iter().chain(expected.clone()).collect();
    assert_eq!(
        rendered_set, queried,
        "the eager top tiles, then only tiles with facilities beneath them"
    );
    let store = &run.stored.0.lock().unwrap();
    assert_eq!(store.tiles[&"6/40/20".parse().unwrap()], b"6/40/20");
}

#[tokio::test]
async fn shard_walks_render_disjoint_parts_that_together_are_the_single_walk() {
    use crate::plan::shard::{CostModel, DealtTile, ShardPlan, ShardSpec};
    let facilities: Vec<(u8, u32, u32)> = (0..60u32)
        .map(|i| (7, (i * 37 + i * i) % 128, (i * 11 + 5 * i * i) % 128))
        .collect();
    let zooms = ZoomRange::new(0, 7).unwrap();
    let single = walk(&MemoryRenderer::new(&facilities), 7, false, HashMap::new()).await;
    let expected = stored_tiles(&single);
    for shards in [1u32, 3, 4] {
        let model = CostModel {
            zooms,
            cluster: None,
            maintained_cells: false,
        };
        let plan = ShardPlan::choose(&model, 5, shards, "d", |z| {
            let mut counts: BTreeMap<TileCoord, u64> = BTreeMap::new();
            for (fz, x, y) in &facilities {
                let shift = fz - z;
                *counts
                    .entry(TileCoord::new(z, x >> shift, y >> shift).unwrap())
                    .or_default() += 1;
            }
            Ok(counts.into_iter().collect())
        })
        .unwrap();
        // The top whole on the last shard, spread over the ranges, and spread with every top
        // tile of z1 and below dealt round the shards from the last: all split the same walk.
        let dealt: Vec<DealtTile> = (1..plan.split_zoom)
            .flat_map(|z| {
                let side = 1u32 << z;
                (0..side).flat_map(move |x| (0..side).map(move |y| (z, x, y)))
            })
            .enumerate()
            .map(|(i, (z, x, y))| DealtTile {
                z,
                x,
                y,
                shard: shards - 1 - (i as u32 % shards),
            })
            .collect();
        for (top, dealt) in [(Some(shards - 1), vec![]), (None, vec![]), (None, dealt)] {
            let mut plan = plan.clone();
            plan.top.shard = top;
            plan.top.dealt = dealt;
            let mut union = BTreeSet::new();
            let mut rendered = BTreeSet::new();
            for index in 0..shards {
                let spec = ShardSpec::new(index, shards).unwrap();
                let walk = PyramidWalk::for_shard(BBox::WORLD, zooms, plan.clone(), spec).unwrap();
                let renderer = MemoryRenderer::new(&facilities);
                let run = walk_with(&renderer, &walk, false, HashMap::new()).await;
                assert!(*run.result.as_ref().unwrap());
                for tile in stored_tiles(&run) {
                    assert_eq!(plan.owner(tile), index, "{tile} written by shard {spec}");
                    assert!(union.insert(tile), "{tile} written by two shards");
                }
                for tile in renderer.rendered() {
                    assert!(rendered.insert(tile), "{tile} rendered by two shards");
                }
            }
            assert_eq!(union, expected, "{shards} shards write what one run writes");
        }
    }
}

#[tokio::test]
async fn keep_going_lists_a_failed_tile_and_finishes_the_rest_without_its_subtree() {
    let mut renderer = MemoryRenderer::new(&[(5, 1, 1), (5, 30, 30)]);
    // Its probe fails too, so what lies below it stays unknown.
    renderer.failing.insert("3/0/0".parse().unwrap());
    let run = walk(&renderer, 5, true, HashMap::new()).await;
    assert!(*run.result.as_ref().unwrap());
    let failed: Vec<String> = run
        .tally
        .failed()
        .iter()
        .map(|(t, _)| t.to_string())
        .collect();
    assert_eq!(failed, ["3/0/0"]);
    let stored = stored_tiles(&run);
    assert!(
        stored.contains(&"5/30/30".parse().unwrap()),
        "the rest is finished"
    );
    assert!(
        !stored
            .iter()
            .any(|t| t.z() > 3 && t.x() >> (t.z() - 3) == 0 && t.y() >> (t.z() - 3) == 0),
        "nothing below the failed tile is walked: {stored:?}"
    );

    let without = walk(&renderer, 5, false, HashMap::new()).await;
    let err = without.result.unwrap_err();
    assert!(err.to_string().contains("tile 3/0/0"), "{err}");
}

#[tokio::test]
async fn keep_going_walks_below_a_tile_that_failed_to_render_where_a_probe_finds_content() {
    let facilities = [(5, 1, 1), (5, 2, 3), (5, 30, 30)];
    let mut renderer = MemoryRenderer::new(&facilities);
    // 3/0/0 holds 5/1/1 and 5/2/3; its children 4/0/0 and 4/1/1 render.
    renderer.failing_renders.insert("3/0/0".parse().unwrap());
    renderer.failing_renders.insert("4/0/0".parse().unwrap());
    let run = walk(&renderer, 5, true, HashMap::new()).await;
    assert!(*run.result.as_ref().unwrap());
    let failed: BTreeSet<String> = run
        .tally
        .failed()
        .iter()
        .map(|(t, _)| t.to_string())
        .collect();
    assert_eq!(failed, BTreeSet::from(["3/0/0".into(), "4/0/0".into()]));
    let stored = stored_tiles(&run);
    let mut expected = tiles_above(&facilities);
    expected.remove(&"3/0/0".parse().unwrap());
    expected.remove(&"4/0/0".parse().unwrap());
    assert_eq!(
        stored, expected,
        "every tile but the failed ones, below them too"
    );
    let journaled = run.stored.0.lock().unwrap().journaled.clone();
    assert!(
        !journaled.contains(&"3/0/0".parse().unwrap()),
        "a failed tile is not journaled as done: {journaled:?}"
    );
}

#[tokio::test]
async fn a_resumed_walk_skips_journaled_tiles_but_still_descends_below_them() {
    let renderer = MemoryRenderer::new(&[(5, 9, 9)]);
    let journaled: TileCoord = "3/2/2".parse().unwrap();
    let mut done = HashMap::new();
    done.insert(tile_key(journaled), [true, false, false, false]);
    let run = walk(&renderer, 5, false, done).await;
    assert!(*run.result.as_ref().unwrap());
    assert!(
        !renderer.rendered().contains(&journaled),
        "not rendered again"
    );
    let stored = stored_tiles(&run);
    assert!(
        !stored.contains(&journaled),
        "its bytes are already in the output"
    );
    assert!(
        stored.contains(&"4/4/4".parse().unwrap()) && stored.contains(&"5/9/9".parse().unwrap())
    );
}

#[tokio::test]
async fn with_huge_layers_the_z0_tile_shares_the_connections_with_the_other_heavy_tiles() {
    // Its pieces are compressed as they arrive, so it holds no more than any other heavy tile
    // and need not leave a connection idle beside it.
    let mut renderer = MemoryRenderer::new(&[(4, 1, 1), (4, 14, 14), (4, 7, 8)]);
    renderer.unclustered_rows = HUGE_TOP_ROWS * 2.0;
    renderer.eager_depth =
        PyramidWalk::new(BBox::WORLD, ZoomRange::new(0, 4).unwrap()).eager_depth();
    let run = walk(&renderer, 4, false, HashMap::new()).await;
    assert!(*run.result.as_ref().unwrap());
    assert_eq!(
        renderer.most_heavy_beside_top.load(Ordering::SeqCst),
        2,
        "another heavy tile renders beside z0"
    );
    assert_eq!(
        renderer.most_heavy_in_flight.load(Ordering::SeqCst),
        2,
        "heavy tiles go one per connection"
    );
    let heavy_alone = renderer
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(tiles, _)| tiles[0].z() <= renderer.eager_depth)
        .all(|(tiles, _)| tiles.len() == 1);
    assert!(heavy_alone);
}

#[tokio::test]
async fn light_tiles_pass_heavy_tiles_that_have_to_wait() {
    let facilities = [(6, 1, 1), (6, 60, 60), (6, 31, 33)];
    let mut renderer = MemoryRenderer::new(&facilities);
    renderer.eager_depth =
        PyramidWalk::new(BBox::WORLD, ZoomRange::new(0, 6).unwrap()).eager_depth();
    let eager = renderer.eager_depth;
    let run = walk(&renderer, 6, false, HashMap::new()).await;
    assert!(*run.result.as_ref().unwrap());
    assert_eq!(stored_tiles(&run), tiles_above(&facilities));

    // Heavy tiles go one per connection (two here): the third heavy root waits, and the children
    // of the first z2 tile, which are light, start before the last heavy root does.
    let last_heavy_start = renderer
        .spans_of(|t| t.z() <= eager)
        .iter()
        .map(|(start, _)| *start)
        .max()
        .unwrap();
    let first_light_start = renderer
        .spans_of(|t| t.z() > eager)
        .iter()
        .map(|(start, _)| *start)
        .min()
        .unwrap();
    assert!(
        first_light_start < last_heavy_start,
        "light tiles waited behind heavy ones: first light at {first_light_start}, last heavy at {last_heavy_start}"
    );
    assert!(renderer.most_heavy_in_flight.load(Ordering::SeqCst) <= 2);
}

#[tokio::test]
async fn a_list_run_stops_at_its_deadline_and_says_it_is_incomplete() {
    let renderer = MemoryRenderer::new(&[(8, 0, 1)]);
    let (stop, _never) = Stop::manual();
    let stored = MemorySink::default();
    let (writer, written) = writer::spawn(Box::new(stored.clone()), "memory");
    let list: Vec<TileCoord> = (0..200).map(|x| TileCoord::new(8, x, 1).unwrap()).collect();
    let mut tally = Tally::default();
    let mut progress = Progress::start(ProgressKind::Quiet, "memory");
    let past = Instant::now();
    let finished = scheduler(&renderer, &stop, false)
        .render_list(
            &list,
            ListOrder::DeepestFirst,
            &writer,
            Some(past),
            &mut tally,
            &mut progress,
        )
        .await
        .unwrap();
    drop(writer);
    written.await.unwrap().ok().unwrap();
    assert!(!finished);
    let store = stored.0.lock().unwrap();
    let handled = store.tiles.len() + store.deleted.len();
    assert!(
        handled > 0 && handled < list.len(),
        "{handled} of {}",
        list.len()
    );
    // Which statement finishes first is not fixed (a statement with a tile to compress waits for
    // its chunk), so only what may be stored is.
    let holding: TileCoord = "8/0/1".parse().unwrap();
    assert!(store.tiles.keys().all(|tile| *tile == holding));
}

/// Renders `list` in `order` and returns the tiles in the order their statements started.
async fn started_in_order(list: &[TileCoord], order: ListOrder) -> Vec<TileCoord> {
    let renderer = MemoryRenderer::new(&[(14, 8000, 5000)]);
    let (stop, _never) = Stop::manual();
    let (writer, written) = writer::spawn(Box::new(MemorySink::default()), "memory");
    let mut tally = Tally::default();
    let mut progress = Progress::start(ProgressKind::Quiet, "memory");
    let finished = scheduler(&renderer, &stop, false)
        .render_list(list, order, &writer, None, &mut tally, &mut progress)
        .await
        .unwrap();
    drop(writer);
    written.await.unwrap().ok().unwrap();
    assert!(finished);
    renderer.rendered()
}

#[tokio::test]
async fn a_dirty_list_starts_its_deepest_zoom_first_and_its_z0_tile_last() {
    // As a reseed lists a change's tiles: lowest zoom first.
    let mut list: Vec<TileCoord> = tiles_above(&[(14, 8000, 5000)]).into_iter().collect();
    list.sort_by_key(|t| t.z());
    let zooms = |tiles: Vec<TileCoord>| tiles.iter().map(|t| t.z()).collect::<Vec<u8>>();
    let started = zooms(started_in_order(&list, ListOrder::DeepestFirst).await);
    assert_eq!(started, (0..=14).rev().collect::<Vec<u8>>());
    let started = zooms(started_in_order(&list, ListOrder::LowestFirst).await);
    assert_eq!(started, (0..=14).collect::<Vec<u8>>());
}

#[tokio::test]
async fn a_stop_request_ends_the_walk_with_the_signal_named() {
    let renderer = MemoryRenderer::new(&[(6, 1, 1)]);
    let (stop, request) = Stop::manual();
    request("SIGTERM");
    let (writer, written) = writer::spawn(Box::new(MemorySink::default()), "memory");
    let walk = PyramidWalk::new(BBox::WORLD, ZoomRange::new(0, 6).unwrap());
    let mut tally = Tally::default();
    let mut progress = Progress::start(ProgressKind::Quiet, "memory");
    let result = scheduler(&renderer, &stop, false)
        .walk(
            &walk,
            Some(&writer),
            HashMap::new(),
            &mut tally,
            &mut progress,
        )
        .await;
    drop(writer);
    written.await.unwrap().ok().unwrap();
    assert!(
        matches!(result, Err(Error::Stopped { signal: "SIGTERM" })),
        "{result:?}"
    );
}

#[test]
fn a_list_deals_neighbouring_tiles_of_a_zoom_to_different_statements() {
    // As a reseed lists them: lowest zoom first, neighbours side by side (a hot spot's tiles).
    let mut list = vec![TileCoord::new(11, 500, 900).unwrap()];
    list.extend((0..64).map(|i| TileCoord::new(12, 1000 + i % 8, 1800 + i / 8).unwrap()));
    let batches = list_batches(&list, 8);

    let mut dealt: Vec<TileCoord> = batches.iter().flat_map(|b| b.iter()).copied().collect();
    dealt.sort();
    let mut expected = list.clone();
    expected.sort();
    assert_eq!(dealt, expected, "every tile once");
    assert!(batches.iter().all(|b| b.iter().all(|t| t.z() == b[0].z())));
    assert!(batches.windows(2).all(|w| w[0][0].z() <= w[1][0].z()));

    let at_12: Vec<_> = batches.iter().filter(|b| b[0].z() == 12).collect();
    let statement_of = |tile: &TileCoord| at_12.iter().position(|b| b.contains(tile));
    let neighbours: HashSet<Option<usize>> = list[1..9].iter().map(statement_of).collect();
    assert_eq!(
        neighbours.len(),
        8,
        "eight neighbours share statements: {batches:?}"
    );
    let sizes: Vec<usize> = at_12.iter().map(|b| b.len()).collect();
    assert!(
        sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
        "{sizes:?}"
    );
}
