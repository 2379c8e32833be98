//! Purge plans priced against what they evict.
//!
//! A CDN that charges per purged path (CloudFront: $0.005 a path, a wildcard counting one) makes a
//! wildcard cheap to send and dear in what it throws away: every cached tile under it that did not
//! change is fetched again from the origin. For each folder a wildcard could name (the root, a
//! partition's folder, a zoom `z/`, a column `z/x/`) the plan compares
//!
//! - the wildcard: one path, plus the refetch price of the stored tiles under it that did not
//!   change (estimated from the output's [`StoredTiles`]);
//! - the cheapest plan of what it holds: its changed tiles one path each, or narrower wildcards;
//!
//! and keeps the cheaper, bottom-up, within the CDN's wildcard quota (a per-wildcard penalty is
//! raised until the plan fits). A full seed, where every stored tile changed, is one wildcard;
//! a few changed tiles in a large output are their own paths.

use std::collections::BTreeMap;

use super::fold::{everything_under, folder, tile_of, tile_tree, Purge};
use crate::tile::BBox;

/// How many tiles an output stores per zoom: what a wildcard would evict. Recorded by each
/// complete full seed; an output without one is estimated from its bbox, which overestimates,
/// so the plan errs towards exact paths.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredTiles {
    /// Tiles per zoom.
    pub zooms: BTreeMap<u8, u64>,
}

/// What a plan is priced with.
#[derive(Debug, Clone)]
pub struct Pricing {
    /// The CDN's price per purged path or wildcard (0 where purges are free).
    pub path_usd: f64,
    /// The price of refetching one evicted, unchanged tile.
    pub refetch_usd: f64,
    /// Wildcards one purge may hold.
    pub max_wildcards: usize,
    /// The tileset's bbox: a column holds at most its rows.
    pub bbox: BBox,
    /// The output's stored tiles, when known.
    pub stored: Option<StoredTiles>,
    /// The folders the target can purge whole.
    pub forms: Forms,
}

/// The folders a target can purge as one request: what the plan may choose instead of paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forms {
    /// A column `z/x/`.
    pub columns: bool,
    /// A zoom `z/` (a partition's `VALUE/z/` too).
    pub zooms: bool,
    /// A partition's folder `VALUE/`.
    pub prefixes: bool,
    /// The output's root.
    pub root: bool,
}

impl Forms {
    /// Every folder: a wildcard or prefix purge of any path.
    pub const ALL: Forms = Forms {
        columns: true,
        zooms: true,
        prefixes: true,
        root: true,
    };
    /// No folder: exact paths only.
    pub const NONE: Forms = Forms {
        columns: false,
        zooms: false,
        prefixes: false,
        root: false,
    };
    /// Only the root, as purging everything.
    pub const ROOT: Forms = Forms {
        root: true,
        ..Forms::NONE
    };

    /// Whether it has any folder form.
    pub fn any(&self) -> bool {
        self.columns || self.zooms || self.prefixes || self.root
    }
}

/// A chosen plan: what to send, what it costs and what it evicts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Priced {
    /// The purges: exact paths and wildcards.
    pub purges: Vec<Purge>,
    /// Paths sent (a wildcard counts one) times the path price.
    pub price_usd: f64,
    /// Unchanged stored tiles the wildcards evict (an estimate).
    pub evicted: u64,
}

#[cfg(test)]
impl Priced {
    /// Wildcards among the purges.
    pub fn wildcards(&self) -> usize {
        self.purges
            .iter()
            .filter(|p| matches!(p, Purge::Folder(_)))
            .count()
    }
}

/// A partial plan: its cost (price plus evictions plus the wildcard penalty) and its parts.
#[derive(Default)]
struct Part {
    cost: f64,
    purges: Vec<Purge>,
    price: f64,
    evicted: u64,
}

impl Part {
    fn add(&mut self, other: Part) {
        self.cost += other.cost;
        self.price += other.price;
        self.evicted += other.evicted;
        self.purges.extend(other.purges);
    }

    fn paths(paths: Vec<String>, pricing: &Pricing, shadow: f64) -> Part {
        let n = paths.len() as f64;
        Part {
            cost: n * pricing.path_usd * shadow,
            price: n * pricing.path_usd,
            evicted: 0,
            purges: paths.into_iter().map(Purge::Path).collect(),
        }
    }
}

/// The tiles a folder stores, as far as known: `None` when nothing bounds it.
struct Estimate<'a> {
    pricing: &'a Pricing,
}

impl Estimate<'_> {
    fn zoom(&self, z: u8) -> f64 {
        match &self.pricing.stored {
            Some(stored) => stored.zooms.get(&z).copied().unwrap_or(0) as f64,
            None => self.pricing.bbox.tile_range(z).count() as f64,
        }
    }

    fn column(&self, z: u8) -> f64 {
        let range = self.pricing.bbox.tile_range(z);
        self.zoom(z).min(f64::from(range.max_y - range.min_y + 1))
    }

    /// Every stored tile: known only from a census.
    fn all(&self) -> f64 {
        match &self.pricing.stored {
            // Summed as floats: a census is a note of the outbox, and counts no run wrote (each
            // near u64::MAX) must not overflow.
            Some(stored) => stored.zooms.values().fold(0.0, |all, n| all + *n as f64),
            None => f64::INFINITY,
        }
    }
}

/// The cheaper of a wildcard over a folder holding `changed` changed tiles of `stored`, and the
/// plan of its contents.
#[allow(clippy::too_many_arguments)]
fn cheaper(
    allowed: bool,
    folder: String,
    stored: f64,
    changed: usize,
    inside: Part,
    pricing: &Pricing,
    shadow: f64,
    penalty: f64,
) -> Part {
    let evicted = (stored - changed as f64).max(0.0);
    let wildcard = pricing.path_usd * shadow + penalty + evicted * pricing.refetch_usd;
    // A wildcard must save something: with free paths it would only evict.
    if allowed && changed >= 2 && wildcard < inside.cost && evicted.is_finite() {
        Part {
            cost: wildcard,
            price: pricing.path_usd,
            evicted: evicted as u64,
            purges: vec![Purge::Folder(folder)],
        }
    } else {
        inside
    }
}

/// Plans `paths` (without whole folders) with each path's price scaled by `shadow` and each
/// wildcard costing `penalty` more.
fn plan_tiles(paths: &[String], pricing: &Pricing, shadow: f64, penalty: f64) -> Part {
    let estimate = Estimate { pricing };
    let (tree, others) = tile_tree(paths);
    let others: Vec<String> = others.into_iter().cloned().collect();
    let mut root = Part::paths(others.clone(), pricing, shadow);
    let mut root_changed = others.len();
    for (prefix, zooms) in tree {
        let mut under_prefix = Part::default();
        let mut prefix_changed = 0;
        for (z, columns) in zooms {
            let mut under_zoom = Part::default();
            let mut zoom_changed = 0;
            for (x, tiles) in columns {
                let changed = tiles.len();
                zoom_changed += changed;
                under_zoom.add(cheaper(
                    pricing.forms.columns,
                    folder(prefix, &format!("{z}/{x}/")),
                    estimate.column(z),
                    changed,
                    Part::paths(tiles.into_iter().cloned().collect(), pricing, shadow),
                    pricing,
                    shadow,
                    penalty,
                ));
            }
            prefix_changed += zoom_changed;
            under_prefix.add(cheaper(
                pricing.forms.zooms,
                folder(prefix, &format!("{z}/")),
                estimate.zoom(z),
                zoom_changed,
                under_zoom,
                pricing,
                shadow,
                penalty,
            ));
        }
        root_changed += prefix_changed;
        let part = if prefix.is_empty() {
            under_prefix
        } else {
            // A prefix (a partition's folder) stores what its own output's census says: the
            // census given is the output's own, whose paths all share its prefix.
            cheaper(
                pricing.forms.prefixes,
                format!("{prefix}/"),
                estimate.all(),
                prefix_changed,
                under_prefix,
                pricing,
                shadow,
                penalty,
            )
        };
        root.add(part);
    }
    // The root covers every prefix: its stores are known only for an output without prefixes.
    let single_root = paths
        .iter()
        .filter_map(|p| tile_of(p))
        .all(|(prefix, ..)| prefix.is_empty());
    if single_root {
        let stored = estimate.all() + others.len() as f64;
        root = if all_new(pricing, stored, root_changed) {
            Part {
                purges: vec![Purge::Folder(String::new())],
                ..Part::default()
            }
        } else {
            cheaper(
                pricing.forms.root,
                String::new(),
                stored,
                root_changed,
                root,
                pricing,
                shadow,
                penalty,
            )
        };
    }
    root
}

/// Whether free paths are better purged as the output's root: a wildcard over free paths only
/// evicts, unless the census says every tile the output stores is among the `changed` (a first
/// full seed, where all is new): then one purge stands for them all and evicts nothing, where
/// their exact paths would take one API call per hundred.
fn all_new(pricing: &Pricing, stored: f64, changed: usize) -> bool {
    pricing.path_usd == 0.0
        && pricing.forms.root
        && pricing.stored.is_some()
        && changed >= 2
        && stored <= changed as f64
}

/// The cheapest plan of `paths` within the wildcard quota, paths priced at `shadow` times their
/// price (a budget raises it to buy coarser, cheaper plans). `*` and `VALUE/*` are wildcards
/// whatever they cost: they stand for changes no narrower path names.
pub fn plan_with_shadow(paths: &[String], pricing: &Pricing, shadow: f64) -> Priced {
    if paths.iter().any(|p| p == "*") {
        return Priced {
            purges: vec![Purge::Folder(String::new())],
            price_usd: pricing.path_usd,
            evicted: 0,
        };
    }
    let folders: Vec<&str> = paths.iter().filter_map(|p| everything_under(p)).collect();
    let rest: Vec<String> = paths
        .iter()
        .filter(|path| !folders.iter().any(|f| path.starts_with(f)))
        .cloned()
        .collect();
    let quota = pricing.max_wildcards.saturating_sub(folders.len());
    let mut penalty = 0.0;
    let mut part = plan_tiles(&rest, pricing, shadow, penalty);
    let mut step = pricing.path_usd.max(pricing.refetch_usd).max(1e-9);
    let wildcards = |part: &Part| {
        part.purges
            .iter()
            .filter(|p| matches!(p, Purge::Folder(_)))
            .count()
    };
    // Each wildcard costs `penalty` more until the plan fits the quota; an infinite penalty
    // leaves none, which always fits.
    let mut rounds = 0;
    while wildcards(&part) > quota {
        rounds += 1;
        penalty = if rounds > 60 { f64::INFINITY } else { step };
        step *= 2.0;
        part = plan_tiles(&rest, pricing, shadow, penalty);
    }
    let mut purges: Vec<Purge> = folders
        .iter()
        .map(|f| Purge::Folder(f.to_string()))
        .collect();
    purges.extend(part.purges);
    purges.sort();
    Priced {
        price_usd: part.price + folders.len() as f64 * pricing.path_usd,
        evicted: part.evicted,
        purges,
    }
}

/// The cheapest plan of `paths`: price plus refetches, within the wildcard quota.
pub fn plan(paths: &[String], pricing: &Pricing) -> Priced {
    plan_with_shadow(paths, pricing, 1.0)
}

/// The cheapest plan whose price fits `allowance`, paths priced ever dearer (coarser wildcards)
/// until it does; `None` when even the coarsest plan does not fit, and the paths must wait.
pub fn plan_within(paths: &[String], pricing: &Pricing, allowance: f64) -> Option<Priced> {
    plan_until(paths, pricing, |priced| {
        priced.price_usd <= allowance + 1e-12
    })
}

/// The first plan `fits` accepts as paths grow ever dearer (coarser wildcards): a budget's
/// allowance, or the time a target's pace leaves; `None` when even the coarsest does not fit.
pub fn plan_until(
    paths: &[String],
    pricing: &Pricing,
    fits: impl Fn(&Priced) -> bool,
) -> Option<Priced> {
    let mut shadow = 1.0;
    let mut last_sent = usize::MAX;
    loop {
        let priced = plan_with_shadow(paths, pricing, shadow);
        if fits(&priced) {
            return Some(priced);
        }
        // Dearer paths stopped buying a coarser plan: this is the coarsest there is.
        if priced.purges.len() >= last_sent && shadow > 1e6 {
            return None;
        }
        last_sent = last_sent.min(priced.purges.len());
        shadow *= 4.0;
        if shadow > 1e12 {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloudfront(stored: Option<StoredTiles>) -> Pricing {
        Pricing {
            path_usd: 0.005,
            refetch_usd: crate::config::cdn::DEFAULT_REFETCH_PRICE,
            max_wildcards: 15,
            bbox: BBox::WORLD,
            stored,
            forms: Forms::ALL,
        }
    }

    fn census(zooms: &[(u8, u64)]) -> StoredTiles {
        StoredTiles {
            zooms: zooms.iter().copied().collect(),
        }
    }

    /// Every tile of zooms 0-6 (5,461 tiles) and the TileJSON.
    fn full_seed() -> Vec<String> {
        let mut paths = vec!["tiles.json".to_string()];
        for z in 0..=6u8 {
            for x in 0..(1u32 << z) {
                for y in 0..(1u32 << z) {
                    paths.push(format!("{z}/{x}/{y}.pbf"));
                }
            }
        }
        paths
    }

    #[test]
    fn a_full_seed_into_an_output_whose_every_tile_changed_is_one_wildcard() {
        let paths = full_seed();
        let stored = census(&(0..=6u8).map(|z| (z, 1u64 << (2 * z))).collect::<Vec<_>>());
        let priced = plan(&paths, &cloudfront(Some(stored)));
        assert_eq!(priced.purges, vec![Purge::Folder(String::new())]);
        assert!((priced.price_usd - 0.005).abs() < 1e-12);
        assert_eq!(priced.evicted, 0);
    }

    #[test]
    fn a_few_changes_in_a_large_output_are_their_own_paths() {
        // 200k tiles at z14: a wildcard there would evict ~$0.2 of refetches for 3 changes.
        let stored = census(&[(13, 60_000), (14, 200_000)]);
        let paths: Vec<String> = ["14/100/200.pbf", "14/100/201.pbf", "13/50/100.pbf"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let priced = plan(&paths, &cloudfront(Some(stored)));
        assert_eq!(priced.wildcards(), 0, "{:?}", priced.purges);
        assert_eq!(priced.purges.len(), 3);
    }

    #[test]
    fn a_census_of_counts_no_run_writes_prices_without_overflow() {
        let stored = census(&[(0, u64::MAX), (13, u64::MAX), (14, i64::MAX as u64)]);
        let paths: Vec<String> = ["14/100/200.pbf", "tiles.json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let priced = plan(&paths, &cloudfront(Some(stored)));
        assert_eq!(priced.purges.len(), 2, "{:?}", priced.purges);
        assert!(priced.price_usd.is_finite());
    }

    #[test]
    fn without_a_census_the_bbox_bounds_the_eviction_and_dense_low_zooms_still_fold() {
        // z2 has 16 tiles in the world bbox: 12 of them changed, a wildcard beats 12 paths.
        let mut paths: Vec<String> = (0..12)
            .map(|i| format!("2/{}/{}.pbf", i % 4, i / 4))
            .collect();
        paths.push("12/1000/2000.pbf".into());
        let priced = plan(&paths, &cloudfront(None));
        assert!(
            priced.purges.contains(&Purge::Folder("2/".into())),
            "{priced:?}"
        );
        assert!(priced
            .purges
            .contains(&Purge::Path("12/1000/2000.pbf".into())));
    }

    #[test]
    fn the_quota_caps_wildcards_and_every_path_stays_covered() {
        let paths = full_seed();
        let stored = census(&(0..=6u8).map(|z| (z, 1u64 << (2 * z))).collect::<Vec<_>>());
        // Stored tiles outside these paths (another 10,000 at z7) make the root dear.
        let mut zooms = stored.zooms.clone();
        zooms.insert(7, 10_000_000);
        let pricing = Pricing {
            max_wildcards: 3,
            ..cloudfront(Some(StoredTiles { zooms }))
        };
        let priced = plan(&paths, &pricing);
        assert!(priced.wildcards() <= 3, "{:?}", priced.wildcards());
        for path in &paths {
            assert!(
                priced.purges.iter().any(|p| match p {
                    Purge::Path(q) => q == path,
                    Purge::Folder(f) => path.starts_with(f.as_str()),
                }),
                "{path} is purged"
            );
        }
    }

    #[test]
    fn a_tight_allowance_buys_a_coarser_plan_or_waits() {
        let stored = census(&[(10, 5_000), (14, 500_000)]);
        let paths: Vec<String> = (0..40)
            .map(|i| format!("14/{}/{}.pbf", 1000 + i, 2000 + i))
            .collect();
        let pricing = cloudfront(Some(stored));
        let free = plan(&paths, &pricing);
        assert_eq!(free.wildcards(), 0);
        assert!((free.price_usd - 0.2).abs() < 1e-9);
        let tight = plan_within(&paths, &pricing, 0.01).expect("a coarser plan fits");
        assert!(tight.price_usd <= 0.01, "{tight:?}");
        assert!(plan_within(&paths, &pricing, 0.001).is_none());
    }

    #[test]
    fn free_paths_are_folded_only_where_nothing_unchanged_is_evicted() {
        let paths = full_seed();
        let free = |zooms: &[(u8, u64)]| Pricing {
            path_usd: 0.0,
            ..cloudfront(Some(census(zooms)))
        };
        // A first full seed: the output stores nothing but the changed tiles.
        let all_new: Vec<(u8, u64)> = (0..=6u8).map(|z| (z, 1u64 << (2 * z))).collect();
        let priced = plan(&paths, &free(&all_new));
        assert_eq!(priced.purges, vec![Purge::Folder(String::new())]);
        assert_eq!(priced.evicted, 0);
        // One tile more stored than changed: the root would evict it, so every path goes as it is.
        let mut one_more = all_new.clone();
        one_more[6].1 += 1;
        let priced = plan(&paths, &free(&one_more));
        assert_eq!(priced.wildcards(), 0);
        assert_eq!(priced.purges.len(), paths.len());
        // Without a census nothing says the output holds no other tile.
        let priced = plan(
            &paths,
            &Pricing {
                stored: None,
                ..free(&all_new)
            },
        );
        assert_eq!(priced.wildcards(), 0);
    }
}
