//! Unit tests of `shard`.

use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::tile::{BBox, ZoomRange};

fn tile(z: u8, x: u32, y: u32) -> TileCoord {
    TileCoord::new(z, x, y).unwrap()
}

/// Row counts per tile of zoom `z` for a set of points in tile coordinates of zoom 16.
fn counts(points: &[(u32, u32)], z: u8) -> Vec<(TileCoord, u64)> {
    let mut counts: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for (x, y) in points {
        *counts.entry((x >> (16 - z), y >> (16 - z))).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((x, y), n)| (tile(z, x, y), n))
        .collect()
}

/// A deterministic pseudo-random sequence, so the data sets need no extra crate.
fn lcg(seed: &mut u64) -> u32 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (*seed >> 33) as u32
}

/// Most points in three small dense regions, the rest spread thin: the shape of facility data.
fn skewed(points: usize) -> Vec<(u32, u32)> {
    let mut seed = 7;
    let centres = [(20_000u32, 24_000u32), (34_000, 22_000), (51_000, 40_000)];
    (0..points)
        .map(|i| {
            if i % 10 < 9 {
                let (cx, cy) = centres[i % 3];
                (cx + lcg(&mut seed) % 400, cy + lcg(&mut seed) % 300)
            } else {
                (lcg(&mut seed) % 65_536, lcg(&mut seed) % 65_536)
            }
        })
        .collect()
}

fn uniform(points: usize) -> Vec<(u32, u32)> {
    let mut seed = 11;
    (0..points)
        .map(|_| (lcg(&mut seed) % 65_536, lcg(&mut seed) % 65_536))
        .collect()
}

#[test]
fn the_hilbert_index_visits_every_tile_once_through_neighbours() {
    for z in 0..=5u8 {
        let side = 1u32 << z;
        let mut by_index = HashMap::new();
        for x in 0..side {
            for y in 0..side {
                assert!(by_index
                    .insert(hilbert_index(tile(z, x, y)), (x, y))
                    .is_none());
            }
        }
        for index in 1..u64::from(side * side) {
            let (ax, ay) = by_index[&(index - 1)];
            let (bx, by) = by_index[&index];
            assert_eq!(ax.abs_diff(bx) + ay.abs_diff(by), 1, "z{z} step {index}");
        }
    }
}

#[test]
fn shard_specs_come_from_the_flag_or_the_batch_engines_environment() {
    let none = |_: &str| None;
    assert_eq!(ShardSpec::resolve(None, None, none).unwrap(), None);
    let flag: ShardSpec = "2/4".parse().unwrap();
    assert_eq!(
        ShardSpec::resolve(Some(flag), None, none).unwrap(),
        Some(flag)
    );
    assert!(ShardSpec::resolve(Some(flag), Some(3), none).is_err());
    let k8s = |name: &str| (name == "JOB_COMPLETION_INDEX").then(|| "3".to_string());
    assert_eq!(
        ShardSpec::resolve(None, Some(4), k8s).unwrap(),
        Some(ShardSpec::new(3, 4).unwrap())
    );
    let err = ShardSpec::resolve(None, None, k8s).unwrap_err().to_string();
    assert!(err.contains("OAR_TILES_SHARDS"), "{err}");
    let batch = |name: &str| match name {
        "AWS_BATCH_JOB_ARRAY_INDEX" => Some("1".to_string()),
        "AWS_BATCH_JOB_ARRAY_SIZE" => Some("2".to_string()),
        _ => None,
    };
    assert_eq!(
        ShardSpec::resolve(None, None, batch).unwrap(),
        Some(ShardSpec::new(1, 2).unwrap())
    );
    // Google Cloud Run jobs and Google Cloud Batch give a 0-based index and the task count.
    for (index, count) in [
        ("CLOUD_RUN_TASK_INDEX", "CLOUD_RUN_TASK_COUNT"),
        ("BATCH_TASK_INDEX", "BATCH_TASK_COUNT"),
    ] {
        let google = |name: &str| match name {
            _ if name == index => Some("2".to_string()),
            _ if name == count => Some("3".to_string()),
            _ => None,
        };
        assert_eq!(
            ShardSpec::resolve(None, None, google).unwrap(),
            Some(ShardSpec::new(2, 3).unwrap()),
            "{index}"
        );
        let index_only = |name: &str| (name == index).then(|| "1".to_string());
        let err = ShardSpec::resolve(None, None, index_only)
            .unwrap_err()
            .to_string();
        assert!(err.contains("OAR_TILES_SHARDS"), "{err}");
        let past = |name: &str| match name {
            _ if name == index => Some("3".to_string()),
            _ if name == count => Some("3".to_string()),
            _ => None,
        };
        assert!(ShardSpec::resolve(None, None, past).is_err(), "{index}");
    }
    // SLURM counts from the array's first task, by its step: --array=10-16:2 is shards 0-3.
    let slurm = |id: &'static str| {
        move |name: &str| match name {
            "SLURM_ARRAY_TASK_ID" => Some(id.to_string()),
            "SLURM_ARRAY_TASK_MIN" => Some("10".to_string()),
            "SLURM_ARRAY_TASK_STEP" => Some("2".to_string()),
            "SLURM_ARRAY_TASK_COUNT" => Some("4".to_string()),
            _ => None,
        }
    };
    assert_eq!(
        ShardSpec::resolve(None, None, slurm("14")).unwrap(),
        Some(ShardSpec::new(2, 4).unwrap())
    );
    let err = ShardSpec::resolve(None, None, slurm("13"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("SLURM_ARRAY_TASK_ID=13"), "{err}");
    assert!(
        ShardSpec::resolve(None, None, slurm("18")).is_err(),
        "past the count"
    );
    let plain = |name: &str| match name {
        "SLURM_ARRAY_TASK_ID" => Some("3".to_string()),
        "SLURM_ARRAY_TASK_COUNT" => Some("4".to_string()),
        _ => None,
    };
    assert_eq!(
        ShardSpec::resolve(None, None, plain).unwrap(),
        Some(ShardSpec::new(3, 4).unwrap())
    );
    let bad = |name: &str| (name == "JOB_COMPLETION_INDEX").then(|| "x".to_string());
    assert!(ShardSpec::resolve(None, Some(2), bad).is_err());
    for text in ["4/4", "1", "a/2", "0/0"] {
        assert!(text.parse::<ShardSpec>().is_err(), "{text}");
    }
}

fn check_partition(plan: &ShardPlan, zooms: ZoomRange) {
    // Every tile of the split zoom and below has exactly one owner, and descendants follow
    // their ancestor.
    let split = plan.split_zoom;
    let side = 1u32 << split;
    for x in (0..side).step_by((side as usize / 16).max(1)) {
        for y in 0..side {
            let owner = plan.owner(tile(split, x, y));
            assert!(owner < plan.shards());
            if split < zooms.max {
                for child in tile(split, x, y).children() {
                    assert_eq!(plan.owner(child), owner);
                }
            }
        }
    }
}

/// Every tile the points really fill at every zoom, priced by the model, counted from the points
/// themselves (not from the census the plan aggregates): a tile reads its rows and carries them, or
/// at a clustered zoom carries its non-empty cells (tiles `depth` zooms deeper) and reads the rows
/// of every cell within one cell of its edges.
fn priced_tiles(
    model: &CostModel,
    points: &[(u32, u32)],
    cells: Option<(u8, u8)>,
) -> Vec<(TileCoord, u64)> {
    let mut priced = Vec::new();
    for z in model.zooms.levels() {
        let own: BTreeMap<(u32, u32), u64> = counts(points, z)
            .into_iter()
            .map(|(t, n)| ((t.x(), t.y()), n))
            .collect();
        let mut features: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        let mut read: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        if let Some((_, depth)) = cells.filter(|(maxzoom, _)| z <= *maxzoom) {
            let span = 1i64 << depth;
            for (cell, n) in counts(points, z + depth) {
                let (cx, cy) = (i64::from(cell.x()), i64::from(cell.y()));
                *features
                    .entry((cell.x() >> depth, cell.y() >> depth))
                    .or_default() += 1;
                // Tiles whose extent widened by one cell holds the cell.
                for tx in (cx - 1).div_euclid(span)..=(cx + 1).div_euclid(span) {
                    for ty in (cy - 1).div_euclid(span)..=(cy + 1).div_euclid(span) {
                        if tx >= 0 && ty >= 0 && own.contains_key(&(tx as u32, ty as u32)) {
                            *read.entry((tx as u32, ty as u32)).or_default() += n;
                        }
                    }
                }
            }
        }
        for ((x, y), rows) in &own {
            let carried = features.get(&(*x, *y)).copied().unwrap_or(*rows);
            let reads = read.get(&(*x, *y)).copied().unwrap_or(*rows);
            priced.push((tile(z, *x, *y), model.tile(z, reads, carried)));
        }
    }
    priced
}

/// Skewed and uniform data of 50,000 points at z0-14, clustered (`cluster`, `cells`) or not, cut
/// into each of `shard_counts` shards: the heaviest shard within the balance limit of the mean or
/// the dearest tile.
fn cut_within_the_balance_limit(
    cluster: Option<(u8, u64)>,
    cells: Option<(u8, u8)>,
    shard_counts: &[u32],
) {
    let zooms = ZoomRange::new(0, 14).unwrap();
    let model = CostModel {
        zooms,
        cluster,
        maintained_cells: false,
    };
    for (name, points) in [("skewed", skewed(50_000)), ("uniform", uniform(50_000))] {
        let priced = priced_tiles(&model, &points, cells);
        let pyramid =
            Pyramid::from_census(model, &BBox::WORLD, &counts(&points, model.census_zoom()));
        for &shards in shard_counts {
            let plan = ShardPlan::most_balanced(&pyramid, zooms.levels(), 1, shards, "d").unwrap();
            assert_eq!(plan.shards(), shards);
            let mut work = vec![0u64; shards as usize];
            for (tile, cost) in &priced {
                work[plan.owner(*tile) as usize] += cost;
            }
            let mean = work.iter().sum::<u64>() as f64 / f64::from(shards);
            let dearest = priced.iter().map(|(_, cost)| *cost).max().unwrap() as f64;
            let heaviest = *work.iter().max().unwrap() as f64;
            assert!(
                heaviest <= BALANCE_TARGET * mean.max(dearest),
                "{name}, cluster {cluster:?}, {shards} shards: heaviest {:.3} × max(mean, \
                 dearest tile) at split zoom {} (the plan estimated {:.3})",
                heaviest / mean.max(dearest),
                plan.split_zoom,
                plan.imbalance()
            );
            check_partition(&plan, zooms);
        }
    }
}

// Clustered up to z11 with 8 × 8 cells per tile, as the sample config does, and unclustered, as
// two tests the harness runs side by side (each a minute or more unoptimized). The z0 tile reads
// every row (it aggregates them where clustered): a single tile dearer than a 64th of the whole
// clustered, a 16th unclustered. Past that the floor is the dearest tile, and the heaviest shard
// is held to it (issue 65): its top tiles are dealt by size.
#[test]
fn skewed_and_uniform_clustered_data_are_cut_within_the_balance_limit() {
    cut_within_the_balance_limit(Some((11, 64)), Some((11, 3)), &[1, 3, 4, 16]);
}

#[test]
fn skewed_and_uniform_unclustered_data_are_cut_within_the_balance_limit() {
    cut_within_the_balance_limit(None, None, &[1, 3, 4, 16]);
}

#[test]
fn a_deeper_split_is_taken_only_where_its_balance_pays_for_its_probes() {
    // Every shard probes the non-empty tiles above its split zoom, four times as many a zoom
    // deeper; on uniform data the cuts balance about as well at most zooms, and the finest cut
    // alone would probe every tile down to the deepest zoom for a fraction of a percent.
    let zooms = ZoomRange::new(0, 12).unwrap();
    let model = CostModel {
        zooms,
        cluster: None,
        maintained_cells: false,
    };
    let points = uniform(200_000);
    let pyramid = Pyramid::from_census(model, &BBox::WORLD, &counts(&points, 12));
    let shards = 4;
    let priced = |plan: &ShardPlan| {
        plan.heaviest() as f64
            + PROBE_MICROS * pyramid.probes_above(plan.split_zoom) as f64 / f64::from(shards)
    };
    let plan = ShardPlan::most_balanced(&pyramid, zooms.levels(), 1, shards, "d").unwrap();
    let cuts: Vec<ShardPlan> = zooms
        .levels()
        .map(|split| ShardPlan::cut_weighed(split, &pyramid.weights(split), 1, shards, "d"))
        .collect::<Result<_>>()
        .unwrap();
    let finest = cuts
        .iter()
        .min_by(|a, b| a.imbalance().total_cmp(&b.imbalance()))
        .unwrap();
    for cut in &cuts {
        assert!(
            priced(&plan) <= priced(cut),
            "split {} prices lower",
            cut.split_zoom
        );
    }
    assert!(
        plan.split_zoom < finest.split_zoom,
        "split at {}, the finest cut's zoom",
        plan.split_zoom
    );
    assert!(plan.imbalance() <= BALANCE_TARGET, "{}", plan.imbalance());
    check_partition(&plan, zooms);
}

#[test]
fn a_subtree_weighs_its_non_empty_descendants_and_clustered_tiles_their_cells() {
    let zooms = ZoomRange::new(0, 6).unwrap();
    let model = CostModel {
        zooms,
        cluster: None,
        maintained_cells: false,
    };
    // 64 rows in one tile of zoom 6 against 64 rows in 64 tiles of zoom 6, under neighbouring
    // tiles of zoom 3: the same rows, but the spread ones fill more tiles at every zoom below 3.
    let mut census: Vec<(TileCoord, u64)> = vec![(tile(6, 0, 0), 64)];
    for x in 0..8u32 {
        for y in 0..8u32 {
            census.push((tile(6, 8 + x, y), 1));
        }
    }
    let pyramid = Pyramid::from_census(model, &BBox::WORLD, &census);
    let weights = weights_by_tile(&pyramid, 3);
    let dense = weights[&tile(3, 0, 0)];
    let spread = weights[&tile(3, 1, 0)];
    // z3..z6: the dense subtree is 4 tiles of 64 features; the spread one 1 + 4 + 16 + 64 tiles.
    assert_eq!(dense, 4 * model.tile(3, 64, 64));
    assert_eq!(
        spread,
        model.tile(3, 64, 64)
            + 4 * model.tile(4, 16, 16)
            + 16 * model.tile(5, 4, 4)
            + 64 * model.tile(6, 1, 1)
    );
    assert!(spread > dense);
    // Above the split each tile weighs its own cost once: z0..z2 hold one tile of 128 rows each.
    assert_eq!(weights[&tile(0, 0, 0)], model.tile(0, 128, 128));
    assert_eq!(weights.len(), 2 + 3);
    assert_eq!(pyramid.total(), weights.values().sum::<u64>());

    // Clustered to zoom 4 with 4 × 4 cells (a cell is a tile two zooms deeper): a tile's features
    // are its non-empty cells, however many rows they hold.
    let clustered = CostModel {
        zooms,
        cluster: Some((4, 16)),
        maintained_cells: false,
    };
    assert_eq!(clustered.census_zoom(), 6);
    let pyramid = Pyramid::from_census(clustered, &BBox::WORLD, &census);
    let weights = weights_by_tile(&pyramid, 4);
    // The dense rows are one cell at z4 (a z6 tile); the spread ones are 4 z6 tiles under each z4
    // tile of theirs, and 16 cells at z3 (z5 tiles 4..8 × 0..4).
    assert_eq!(
        weights[&tile(4, 0, 0)],
        clustered.tile(4, 64, 1) + model.tile(5, 64, 64) + model.tile(6, 64, 64)
    );
    assert_eq!(weights[&tile(3, 1, 0)], clustered.tile(3, 64, 16));
    // At z0 every row lies in one cell, a tile of zoom 2.
    assert_eq!(weights[&tile(0, 0, 0)], clustered.tile(0, 128, 1));
}

#[test]
fn equal_areas_would_not_balance_skewed_data() {
    // The reason for weighing: the same data cut into equal Hilbert spans is far off balance.
    let points = skewed(200_000);
    let split = 6;
    let rows = counts(&points, split);
    let spans = 16u64;
    let side_tiles = 1u64 << (2 * split);
    let mut loads = vec![0u64; spans as usize];
    for (t, n) in &rows {
        loads[(hilbert_index(*t) * spans / side_tiles) as usize] += n;
    }
    let mean = loads.iter().sum::<u64>() as f64 / spans as f64;
    let heaviest = *loads.iter().max().unwrap() as f64;
    assert!(heaviest > 2.0 * mean, "{loads:?}");
}

#[test]
fn the_cut_is_contiguous_and_covers_the_zoom() {
    let rows = counts(&uniform(5_000), 4);
    let plan = ShardPlan::cut(4, &rows, 5, "d").unwrap();
    assert_eq!(plan.ranges.first().unwrap().start, 0);
    assert_eq!(plan.ranges.last().unwrap().end, 256);
    assert!(plan.ranges.windows(2).all(|w| w[0].end == w[1].start));
    let total: u64 = rows.iter().map(|(_, n)| n).sum();
    assert_eq!(plan.ranges.iter().map(|r| r.weight).sum::<u64>(), total);
    // More shards than weighed tiles: the surplus shards get empty ranges, not an error.
    let few = [(tile(3, 1, 1), 5), (tile(3, 6, 6), 5)];
    let plan = ShardPlan::cut(3, &few, 4, "d").unwrap();
    assert_eq!(plan.shards(), 4);
    assert_eq!(plan.ranges[3].weight, 0);
    assert!(ShardPlan::cut(3, &[(tile(4, 0, 0), 1)], 2, "d").is_err());
}

#[test]
fn a_tile_above_the_split_zoom_goes_with_the_start_of_its_block() {
    for z in 1..=6u8 {
        let side = 1u32 << z;
        for x in 0..side {
            for y in 0..side {
                let child = tile(z, x, y);
                let parent = child.parent().unwrap();
                assert_eq!(hilbert_index(child) >> 2, hilbert_index(parent), "{child}");
            }
        }
    }
    let rows: Vec<(TileCoord, u64)> = (0..16u32).map(|x| (tile(4, x, 0), 10)).collect();
    let mut weights = rows.clone();
    weights.push((tile(0, 0, 0), 40));
    let plan = ShardPlan::cut(4, &weights, 4, "d").unwrap();
    let total: u64 = plan.ranges.iter().map(|r| r.weight).sum();
    assert_eq!(total, 200);
    assert_eq!(plan.top.weight, 40);
    // Whole, the top (priced at 60) would leave a shard above 50: spread, the z0 tile goes with
    // the range holding the start of its block, and every shard weighs 50.
    assert_eq!(plan.top.shard, None);
    assert!(plan.ranges.iter().all(|r| r.weight == 50), "{plan:?}");
    assert_eq!(plan.owner(tile(0, 0, 0)), 0);
    // Every z1 tile renders on the shard that holds the first of its descendants.
    for t in tile(0, 0, 0).children() {
        let first = (0..4u32)
            .flat_map(|x| (0..4u32).map(move |y| tile(2, x, y)))
            .filter(|d| d.parent().unwrap() == t)
            .min_by_key(|d| hilbert_index(*d))
            .unwrap();
        assert_eq!(plan.owner(t), plan.owner(first));
    }
}

#[test]
fn a_whole_top_goes_beside_a_range_left_lighter_or_alone() {
    let weighed = |weights: &[(TileCoord, u64)]| -> Vec<Weighed> {
        weights
            .iter()
            .map(|(tile, weight)| Weighed {
                tile: *tile,
                weight: *weight,
                dearest: *weight,
            })
            .collect()
    };
    let mut weights: Vec<(TileCoord, u64)> = (0..16u32).map(|x| (tile(4, x, 0), 10)).collect();
    weights.push((tile(0, 0, 0), 20));
    // Priced at 30, the top goes with two split-zoom tiles (50), the rest four or five to a shard.
    let cut = super::cut::Cut::new(4, &weighed(&weights), 1, 4, super::cut::TopPlacement::Unit);
    let top = cut.top_shard.expect("whole") as usize;
    assert_eq!(cut.loads[top], 40, "{cut:?}");
    assert_eq!(cut.priced, 50, "{cut:?}");
    assert_eq!(cut.loads.iter().sum::<u64>(), 180);
    weights.push((tile(1, 0, 0), 100));
    // A top of 120 (priced 180) has a shard to itself, and the other three share the 160.
    let cut = super::cut::Cut::new(4, &weighed(&weights), 1, 4, super::cut::TopPlacement::Unit);
    let top = cut.top_shard.expect("whole") as usize;
    assert_eq!(cut.loads[top], 120, "{cut:?}");
    let end = cut.starts.get(top + 1).copied().unwrap_or(256);
    assert_eq!(
        end, cut.starts[top],
        "no split-zoom tile beside the top: {cut:?}"
    );
    assert!(
        cut.loads
            .iter()
            .enumerate()
            .all(|(i, w)| i == top || *w <= 60),
        "{cut:?}"
    );
    assert_eq!(cut.top_weight, 120);
    assert_eq!(cut.top_dearest, 100);
}

/// Every tile of zoom `z`, each weighing `weight` (its own cost, so also its dearest).
fn every_tile(z: u8, weight: u64) -> Vec<Weighed> {
    let side = 1u32 << z;
    (0..side)
        .flat_map(|x| (0..side).map(move |y| (x, y)))
        .map(|(x, y)| Weighed {
            tile: tile(z, x, y),
            weight,
            dearest: weight,
        })
        .collect()
}

#[test]
fn dealt_tiles_lighter_than_half_a_share_are_priced_at_their_estimate() {
    // 16 split-zoom tiles of 15 and four z1 tiles of 40 over 4 shards: a share of 100, each z1
    // tile under half of it. Dealt one to a shard at their estimate, every shard holds 100; at
    // the top's margin (60 each) the cut needs 120 and plans lose to spread for no real reason.
    let weights: Vec<Weighed> = [(2u8, 15u64), (1, 40)]
        .into_iter()
        .flat_map(|(z, weight)| every_tile(z, weight))
        .collect();
    let dealt = super::cut::Cut::new(2, &weights, 1, 4, super::cut::TopPlacement::Dealt);
    assert_eq!(dealt.dealt.len(), 4, "{dealt:?}");
    assert_eq!(dealt.priced, 100, "{dealt:?}");
    assert_eq!(dealt.loads, vec![100; 4], "{dealt:?}");
}

#[test]
fn heavy_top_tiles_are_dealt_by_size_so_no_shard_waits_past_the_dearest_tile() {
    // 64 split-zoom tiles of 10, and a top that reads every row at every zoom: z0 80, z1 4 × 40,
    // z2 16 × 10 (1,040 in all; 16 shards' mean 65, the dearest tile 80). Spread, z0 and the
    // first z1 and z2 tiles start the same block and land on one shard (at least 140).
    let weights: Vec<Weighed> = [(3u8, 10u64), (0, 80), (1, 40), (2, 10)]
        .into_iter()
        .flat_map(|(z, weight)| every_tile(z, weight))
        .collect();
    let spread = super::cut::Cut::new(3, &weights, 1, 16, super::cut::TopPlacement::Spread);
    assert!(spread.loads.iter().max().unwrap() >= &140, "{spread:?}");
    let plan = ShardPlan::cut_weighed(3, &weights, 1, 16, "d").unwrap();
    let mut work = vec![0u64; 16];
    for w in &weights {
        work[plan.owner(w.tile) as usize] += w.weight;
    }
    let heaviest = *work.iter().max().unwrap() as f64;
    let floor = (1040.0f64 / 16.0).max(80.0);
    assert!(
        heaviest <= BALANCE_TARGET * floor,
        "heaviest {heaviest} against the floor {floor}: {work:?} {plan:?}"
    );
    let z0_shard = plan.owner(tile(0, 0, 0));
    assert_eq!(
        work[z0_shard as usize], 80,
        "the z0 tile's shard holds nothing else"
    );
    assert!(plan
        .top
        .dealt
        .iter()
        .any(|d| (d.z, d.shard) == (0, z0_shard)));
    let read = ShardPlan::from_json(&plan.to_json(), "plan.json").unwrap();
    assert_eq!(read, plan, "dealt tiles are stored with the plan");
    check_partition(&plan, ZoomRange::new(0, 5).unwrap());
}

#[test]
fn a_stored_plan_refuses_shards_of_other_plans_and_settings() {
    let plan = ShardPlan::cut(2, &[(tile(2, 0, 0), 3), (tile(2, 3, 3), 3)], 2, "abc").unwrap();
    let read = ShardPlan::from_json(&plan.to_json(), "plan.json").unwrap();
    assert_eq!(read, plan);
    assert!(read.check(ShardSpec::new(1, 2).unwrap(), "abc").is_ok());
    let err = read
        .check(ShardSpec::new(1, 3).unwrap(), "abc")
        .unwrap_err()
        .to_string();
    assert!(err.contains("plan of 2 shards"), "{err}");
    let err = read
        .check(ShardSpec::new(1, 2).unwrap(), "other")
        .unwrap_err()
        .to_string();
    assert!(err.contains("settings digest"), "{err}");
    let mut gap = plan.clone();
    gap.ranges[1].start += 1;
    let err = ShardPlan::from_json(&gap.to_json(), "plan.json")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("plan.json:"), "{err}");
    assert!(ShardPlan::from_json("{}", "plan.json").is_err());
}

/// The weight of each tile at `zoom` and above, as the split at `zoom` weighs them.
fn weights_by_tile(pyramid: &Pyramid, zoom: u8) -> BTreeMap<TileCoord, u64> {
    pyramid
        .weights(zoom)
        .into_iter()
        .map(|w| (w.tile, w.weight))
        .collect()
}
