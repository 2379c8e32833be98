//! The cut of a split zoom into ranges, with the plan's top placed beside one of them.
//!
//! The split zoom's weighed tiles, in Hilbert order, are cut into contiguous ranges; the tiles
//! above the split zoom (the top) are one more load that goes with exactly one range. The cut
//! minimises the heaviest shard by a binary search on a capacity: at a capacity, greedy packing
//! from the left gives the fewest ranges any prefix needs, greedy packing from the right the
//! fewest any suffix needs, so the top fits if some stretch `a..b` that it can share (its weight
//! and theirs within the capacity) leaves a prefix and a suffix that together need at most the
//! other shards. The stretch may be empty: the top then has a shard to itself. Spread, the top's
//! tiles are weighed with the range holding the start of their blocks instead, and the cut is the
//! same search with nothing to place. Dealt, the top's heaviest tiles are dealt to shards by size
//! first (each to the lightest, dearest first) and the ranges cut around what each shard was
//! dealt; the lighter top tiles are spread.

use super::cost::Weighed;
use super::hilbert_index;
use crate::tile::TileCoord;

/// The factor (numerator, denominator) a whole top, or a dealt tile of half a shard's share or
/// more, is priced at over its estimate. The unclustered z0-z2 tiles of 0.6-1M rows took 1.3-1.6
/// times what costs fitted at load 4-8 gave them (the quiet fit prices them within 10%); what
/// the margin still covers is packing: at 100k rows, 4 unclustered shards with the top whole on one
/// of them (priced at its estimate) ran 1.48 × the mean against 1.18 spread (`scripts/bench.sh
/// --sections shards --shard-rows 100000`), the whole top's shard rendering 3.3 s of top tiles
/// where it was given room for about 2.
const TOP_MARGIN: (u64, u64) = (3, 2);

/// A top tile is dealt by size when it weighs at least this fraction (1 / n) of a shard's mean:
/// lighter ones are grains the ranges balance themselves. Spread, a heavy tile lands with the
/// range holding its block's start, whatever else that range holds: 16 unclustered shards of 1M
/// rows were planned 2.5-10.5% each, the z1-z7 tiles of one block start on one shard.
const DEALT_SHARE: u64 = 8;

/// At most this many top tiles per shard are dealt: each is a line of the stored plan, and one
/// more entry every shard's walk checks.
const DEALT_PER_SHARD: usize = 8;

/// Where the tiles above the split zoom go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TopPlacement {
    /// Whole, beside the range the cut leaves room for.
    Unit,
    /// Each tile with the range holding the start of its block.
    Spread,
    /// The heaviest tiles dealt to shards by size, the rest spread.
    Dealt,
}

/// The top's priced work `pack` at [`TOP_MARGIN`].
fn margined(pack: Pack) -> Pack {
    Pack {
        sum: pack.sum.saturating_mul(TOP_MARGIN.0) / TOP_MARGIN.1,
        ..pack
    }
}

/// Where a tile at or above the split zoom starts on the split zoom's Hilbert curve: its block of
/// descendants is `start..start + 4^(split - z)`, because the curve is hierarchical.
pub(super) fn block_start(tile: TileCoord, split_zoom: u8) -> u64 {
    hilbert_index(tile) << (2 * u32::from(split_zoom - tile.z()))
}

/// What a range of a cut holds so far: summed work, and its dearest tile times the connections.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Pack {
    pub sum: u64,
    pub dearest: u64,
}

impl Pack {
    fn with(self, other: Pack) -> Pack {
        Pack {
            sum: self.sum.saturating_add(other.sum),
            dearest: self.dearest.max(other.dearest),
        }
    }

    fn load(self) -> u64 {
        self.sum.max(self.dearest)
    }

    /// Whether the pack stays within `capacity`, or within its own floor where that is more: a
    /// range may hold up to its dearest tile's floor whatever the capacity (the other connections
    /// render that much while the dear tile runs).
    fn fits(self, capacity: u64) -> bool {
        self.sum <= capacity.max(self.dearest)
    }
}

/// A finished cut: each shard's first Hilbert index and estimated load, and the top's place.
#[derive(Debug)]
pub(super) struct Cut {
    /// Per shard, the first Hilbert index of its range (the first is 0).
    pub starts: Vec<u64>,
    /// Per shard, its estimated load (the top's included for the shard that renders it).
    pub loads: Vec<u64>,
    /// The heaviest load with a whole top priced at [`TOP_MARGIN`]: what the cuts compare.
    pub priced: u64,
    /// The top's summed work.
    pub top_weight: u64,
    /// The shard that renders the whole top; `None` when spread or dealt.
    pub top_shard: Option<u32>,
    /// The top tiles dealt by size, and the shard each went to.
    pub dealt: Vec<(TileCoord, u32)>,
    /// The top's dearest single tile.
    pub top_dearest: u64,
    /// The dearest single tile of the whole plan.
    pub dearest: u64,
}

impl Cut {
    /// Cuts `weights` (split-zoom tiles, and tiles above the split zoom that make the top) for
    /// `shards` shards of `connections` connections each, the top placed as `placement` says.
    pub fn new(
        split_zoom: u8,
        weights: &[Weighed],
        connections: u32,
        shards: u32,
        placement: TopPlacement,
    ) -> Cut {
        if placement == TopPlacement::Dealt {
            return Self::dealt(split_zoom, weights, connections, shards);
        }
        let spread = placement == TopPlacement::Spread;
        let per_tile = u64::from(connections.max(1));
        let (mut top, mut top_weight) = (Pack::default(), 0u64);
        let (mut top_dearest, mut dearest) = (0u64, 0u64);
        let mut items: Vec<(u64, Pack)> = Vec::new();
        for w in weights {
            let pack = Pack {
                sum: w.weight,
                dearest: w.dearest.saturating_mul(per_tile),
            };
            dearest = dearest.max(w.dearest);
            if w.tile.z() < split_zoom {
                top_weight = top_weight.saturating_add(w.weight);
                top_dearest = top_dearest.max(w.dearest);
            }
            if w.tile.z() < split_zoom && !spread {
                top = top.with(pack);
            } else {
                items.push((block_start(w.tile, split_zoom), pack));
            }
        }
        along_the_curve(&mut items);
        let shards = shards.max(1) as usize;
        // Placed and compared at a margin over its estimate: the low zooms' tiles render slower
        // than the fit prices them (see `TOP_MARGIN`), and a whole top that runs over holds up
        // its shard alone.
        let real_top = top;
        let top = margined(top);
        let total = items
            .iter()
            .fold(top.sum, |sum, (_, pack)| sum.saturating_add(pack.sum));
        let (mut low, mut high) = (0u64, total.max(top.load()));
        while low < high {
            let mid = low + (high - low) / 2;
            if place_top(&items, top, mid, shards).is_some() {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        // At the whole run's work everything fits in one range with the top (a = 0, b = all).
        let (a, b) = place_top(&items, top, low, shards).unwrap_or((0, items.len()));
        let side_tiles = 1u64 << (2 * u32::from(split_zoom));
        let start_of = |i: usize| items.get(i).map_or(side_tiles, |(index, _)| *index);
        // The other shards share what the top leaves them as evenly as they can: where the top
        // alone sets the heaviest load, the rest need not fill up to it.
        let (before, after) = (&items[..a], &items[b..]);
        let others = min_capacity(before, after, shards - 1, low);
        let mut ranges = pack(before, others, usize::MAX);
        let top_shard = ranges.len();
        let shared = items[a..b]
            .iter()
            .fold(real_top, |load, (_, pack)| load.with(*pack));
        let priced = Pack {
            sum: shared.sum - real_top.sum + top.sum,
            ..shared
        };
        ranges.push((start_of(a), shared));
        let rest = shards.saturating_sub(ranges.len()).max(1);
        ranges.extend(pack(after, others, rest));
        let mut starts: Vec<u64> = ranges.iter().map(|(start, _)| *start).collect();
        let mut loads: Vec<u64> = ranges.iter().map(|(_, pack)| pack.load()).collect();
        let priced = loads.iter().copied().max().unwrap_or(0).max(priced.load());
        starts[0] = 0;
        // Shards the data leaves nothing for still get a range (an empty one at the end), so every
        // index of the zoom has a defined, if idle, part.
        while starts.len() < shards {
            starts.push(side_tiles);
            loads.push(0);
        }
        Cut {
            starts,
            loads,
            priced,
            top_weight,
            top_shard: (!spread).then_some(top_shard as u32),
            dealt: Vec::new(),
            top_dearest,
            dearest,
        }
    }

    /// The cut with the top's heaviest tiles dealt by size: each, dearest first, to the shard dealt
    /// least so far (a tile of half a shard's share or more priced at [`TOP_MARGIN`]); the ranges
    /// are then cut, at the least capacity that fits, around what each shard was dealt
    /// ([`cut_around`]).
    fn dealt(split_zoom: u8, weights: &[Weighed], connections: u32, shards: u32) -> Cut {
        let per_tile = u64::from(connections.max(1));
        let shards = shards.max(1) as usize;
        let pack_of = |w: &Weighed| Pack {
            sum: w.weight,
            dearest: w.dearest.saturating_mul(per_tile),
        };
        let total = weights
            .iter()
            .fold(0u64, |sum, w| sum.saturating_add(w.weight));
        let threshold = (total / shards as u64 / DEALT_SHARE).max(1);
        let mut top: Vec<&Weighed> = weights.iter().filter(|w| w.tile.z() < split_zoom).collect();
        top.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.tile.cmp(&b.tile)));
        let heavy: Vec<&Weighed> = top
            .iter()
            .copied()
            .take_while(|w| w.weight >= threshold)
            .take(DEALT_PER_SHARD * shards)
            .collect();
        // A dealt tile's floor is its own time, not its connections' worth: its shard's other
        // connections share the machine with it. Priced at `connections` times the tile, as the
        // ranges' own tiles are, a z0 tile of 16 unclustered shards of 1M rows kept 2 s of other
        // work beside it (8.5 s against 6.5 s seeded alone; 2 cores for PostgreSQL and the tool).
        let lone = |w: &Weighed| Pack {
            sum: w.weight,
            dearest: w.dearest,
        };
        // Only a tile that weighs half a shard's share or more is priced at the top's margin, which
        // leaves its shard little else or nothing: one connection renders it, while a shard's other
        // work spreads over its connections (2 in the sample), so such a tile sets its shard's wall
        // alone. The z0 tile of 16 unclustered shards of 1M rows (0.89 of a share), given 1.1 s of
        // other work beside it, took 6.8 and 7.4 s against 6.4 and 6.7 alone. Lighter ones are
        // priced as estimated, as the spread top's are: at the margin, dealing lost to spread plans
        // that stacked heavy tiles on one shard, and 4 unclustered shards of 1M rows ran 1.15 and
        // 1.17 × the mean against 1.08 and 1.04 dealt at their estimate.
        let half_share = total / shards as u64 / 2;
        let priced_at = |pack: Pack| {
            if pack.dearest >= half_share {
                margined(pack)
            } else {
                pack
            }
        };
        let mut bundles: Vec<(Pack, Vec<TileCoord>)> = vec![(Pack::default(), Vec::new()); shards];
        for w in &heavy {
            let lightest = (0..shards)
                .min_by_key(|i| (priced_at(bundles[*i].0).load(), *i))
                .unwrap_or(0);
            bundles[lightest].0 = bundles[lightest].0.with(lone(w));
            bundles[lightest].1.push(w.tile);
        }
        bundles.sort_by_key(|(pack, _)| std::cmp::Reverse(priced_at(*pack).load()));
        let priced_bundles: Vec<Pack> = bundles.iter().map(|(pack, _)| priced_at(*pack)).collect();
        let dealt_tiles: std::collections::HashSet<TileCoord> =
            heavy.iter().map(|w| w.tile).collect();
        let mut items: Vec<(u64, Pack)> = weights
            .iter()
            .filter(|w| !dealt_tiles.contains(&w.tile))
            .map(|w| (block_start(w.tile, split_zoom), pack_of(w)))
            .collect();
        along_the_curve(&mut items);
        let ranges = least_cut_around(&items, &priced_bundles, shards);
        let side_tiles = 1u64 << (2 * u32::from(split_zoom));
        let start_of = |i: usize| items.get(i).map_or(side_tiles, |(index, _)| *index);
        let ends = ranges
            .iter()
            .skip(1)
            .map(|(first, _)| *first)
            .chain([items.len()]);
        let (mut loads, mut priced) = (Vec::with_capacity(shards), 0u64);
        for ((first, bundle), end) in ranges.iter().zip(ends) {
            let held = items[*first..end]
                .iter()
                .fold(Pack::default(), |load, (_, pack)| load.with(*pack));
            loads.push(held.with(bundles[*bundle].0).load());
            priced = priced.max(held.with(priced_bundles[*bundle]).load());
        }
        let mut starts: Vec<u64> = ranges.iter().map(|(first, _)| start_of(*first)).collect();
        starts[0] = 0;
        let dealt = ranges
            .iter()
            .enumerate()
            .flat_map(|(shard, (_, bundle))| {
                bundles[*bundle]
                    .1
                    .iter()
                    .map(move |tile| (*tile, shard as u32))
            })
            .collect();
        Cut {
            starts,
            loads,
            priced,
            top_weight: top.iter().fold(0u64, |sum, w| sum.saturating_add(w.weight)),
            top_shard: None,
            dealt,
            top_dearest: top.iter().map(|w| w.dearest).max().unwrap_or(0),
            dearest: weights.iter().map(|w| w.dearest).max().unwrap_or(0),
        }
    }
}

/// The ranges of a cut around `bundles` at the least capacity that fits every item (a binary
/// search over [`cut_around`]), in `shards` ranges.
fn least_cut_around(items: &[(u64, Pack)], bundles: &[Pack], shards: usize) -> Vec<(usize, usize)> {
    let everything = items.iter().fold(
        bundles.iter().fold(0u64, |s, p| s.saturating_add(p.sum)),
        |s, (_, p)| s.saturating_add(p.sum),
    );
    let (mut low, mut high) = (0u64, everything);
    while low < high {
        let mid = low + (high - low) / 2;
        if cut_around(items, bundles, mid).is_some() {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    // At the whole run's work everything fits in one range.
    cut_around(items, bundles, low).unwrap_or_else(|| {
        std::iter::once((0, 0))
            .chain((1..shards).map(|b| (items.len(), b)))
            .collect()
    })
}

/// The ranges of a cut around dealt bundles at `capacity`: per range, the index of its first item
/// in `items` and the bundle (an index into `bundles`) its shard holds; `None` when the items do
/// not fit. Each range opens with the heaviest bundle left that its first item fits beside, so a
/// lump of the curve goes where there is room for it rather than leaving shards empty; bundles
/// no item fits beside end the cut as ranges of their own. A bundle over the capacity alone is
/// its shard's load whatever the cut, so it takes no items but does not fail the cut.
fn cut_around(
    items: &[(u64, Pack)],
    bundles: &[Pack],
    capacity: u64,
) -> Option<Vec<(usize, usize)>> {
    // Heaviest first, so the first that fits is the heaviest that fits.
    let mut left: Vec<usize> = (0..bundles.len()).collect();
    let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(bundles.len());
    let mut open: Option<Pack> = None;
    for (k, (_, pack)) in items.iter().enumerate() {
        if let Some(joined) = open.map(|load| load.with(*pack)) {
            if joined.fits(capacity) {
                open = Some(joined);
                continue;
            }
        }
        let place = left
            .iter()
            .position(|b| bundles[*b].with(*pack).fits(capacity))?;
        let bundle = left.remove(place);
        ranges.push((k, bundle));
        open = Some(bundles[bundle].with(*pack));
    }
    for bundle in left {
        ranges.push((items.len(), bundle));
    }
    Some(ranges)
}

/// Sorts items by Hilbert index and merges those of one index: a top tile spread with the
/// range holding its block's start goes wherever that split-zoom tile goes.
fn along_the_curve(items: &mut Vec<(u64, Pack)>) {
    items.sort_unstable_by_key(|(index, _)| *index);
    items.dedup_by(|next, kept| {
        let same = next.0 == kept.0;
        if same {
            kept.1 = kept.1.with(next.1);
        }
        same
    });
}

/// Where the top goes at `capacity`: the stretch `a..b` of items it shares a shard with, such that
/// the items before need at most as many ranges as the items after leave of `shards - 1`; `None`
/// when no stretch does.
fn place_top(
    items: &[(u64, Pack)],
    top: Pack,
    capacity: u64,
    shards: usize,
) -> Option<(usize, usize)> {
    if !top.fits(capacity) {
        return None;
    }
    let n = items.len();
    let before = greedy_counts(items.iter().map(|(_, pack)| *pack), capacity);
    let mut after = greedy_counts(items.iter().rev().map(|(_, pack)| *pack), capacity);
    after.reverse();
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0u64);
    for (_, pack) in items {
        prefix.push(prefix.last().copied().unwrap_or(0).saturating_add(pack.sum));
    }
    // The top's own floor, not its stretch's items', bounds the stretch: that keeps the widest
    // stretch growing with `a`, so one pass finds it.
    let room = capacity.max(top.dearest);
    let mut b = 0;
    for a in 0..=n {
        b = b.max(a);
        while b < n && top.sum.saturating_add(prefix[b + 1] - prefix[a]) <= room {
            b += 1;
        }
        if before[a] + 1 + after[b] <= shards {
            return Some((a, b));
        }
    }
    None
}

/// The least capacity at which `before` and `after`, packed apart, fill at most `ranges` ranges
/// (at most `high`, at which they do).
fn min_capacity(before: &[(u64, Pack)], after: &[(u64, Pack)], ranges: usize, high: u64) -> u64 {
    let count = |items: &[(u64, Pack)], capacity| {
        let counts = greedy_counts(items.iter().map(|(_, pack)| *pack), capacity);
        counts.last().copied().unwrap_or(0)
    };
    let (mut low, mut high) = (0u64, high);
    while low < high {
        let mid = low + (high - low) / 2;
        if count(before, mid) + count(after, mid) <= ranges {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    low
}

/// For each prefix of `packs` (lengths 0..=n), how many ranges greedy packing at `capacity` fills;
/// greedy is optimal for contiguous packing, so this is the fewest.
fn greedy_counts(packs: impl Iterator<Item = Pack>, capacity: u64) -> Vec<usize> {
    let mut counts = vec![0usize];
    let mut open: Option<Pack> = None;
    let mut count = 0usize;
    for pack in packs {
        open = match open.map(|load| load.with(pack)) {
            Some(next) if next.fits(capacity) => Some(next),
            _ => {
                count += 1;
                Some(pack)
            }
        };
        counts.push(count);
    }
    counts
}

/// Greedy left-to-right packing into ranges whose summed work stays within `capacity`, or within
/// the range's floor where that is more (at most `limit` ranges, the last taking the rest): each
/// range's first Hilbert index and load.
fn pack(items: &[(u64, Pack)], capacity: u64, limit: usize) -> Vec<(u64, Pack)> {
    let mut ranges: Vec<(u64, Pack)> = Vec::new();
    for (index, pack) in items {
        let full = ranges.len() >= limit;
        match ranges.last_mut() {
            Some((_, load)) if full || load.with(*pack).fits(capacity) => {
                *load = load.with(*pack);
            }
            _ => ranges.push((*index, *pack)),
        }
    }
    ranges
}
