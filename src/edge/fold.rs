//! Folding dense changes into wildcard paths (`z/x/*`, `z/*`) for CDNs that price or limit purges
//! per path, as CloudFront does.
//!
//! A folder is folded only when the changed tiles are at least `density` of the tiles the tileset's
//! bbox has in it, so a fold never throws much of a warm cache away: sparse data in a wide bbox is
//! purged tile by tile. The folds that save the most paths come first, within a wildcard budget.

use std::collections::BTreeMap;

use crate::tile::BBox;

/// The folder a path stands for as a whole: `""` for `*` (everything: a killed full seed),
/// `VALUE/` for a partition's `VALUE/*` (a killed run of that partition); `None` for one path.
/// Each kind of CDN purges such a folder in its own form (a BAN of the prefix, a wildcard, a
/// prefix purge, or everything where it has no narrower one), never as a literal `*` URL.
pub(crate) fn everything_under(path: &str) -> Option<&str> {
    if path == "*" {
        Some("")
    } else {
        path.strip_suffix('*')
            .filter(|folder| folder.ends_with('/'))
    }
}

/// Where a changed path goes in a purge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Purge {
    /// One path as it is (a tile's `z/x/y.ext`, a document).
    Path(String),
    /// A wildcard over a folder (`PREFIX/z/x/`, `PREFIX/z/`, or the root for everything): every
    /// path that starts with it.
    Folder(String),
}

/// A changed path, read as a tile when it is one: `[PREFIX/]z/x/y.ext`.
pub(super) fn tile_of(path: &str) -> Option<(&str, u8, u32, u32)> {
    let (rest, file) = path.rsplit_once('/')?;
    let (rest, x) = rest.rsplit_once('/').map_or(("", rest), |(p, x)| (p, x));
    let (prefix, z) = rest.rsplit_once('/').map_or(("", rest), |(p, z)| (p, z));
    let y = file.split('.').next()?;
    Some((prefix, z.parse().ok()?, x.parse().ok()?, y.parse().ok()?))
}

/// Changed tile paths by prefix, zoom and column, as folding and pricing weigh their folders.
pub(super) type TileTree<'p> = BTreeMap<&'p str, BTreeMap<u8, BTreeMap<u32, Vec<&'p String>>>>;

/// `paths` that are tiles in a [`TileTree`], and those that are not, in their order.
pub(super) fn tile_tree(paths: &[String]) -> (TileTree<'_>, Vec<&String>) {
    let mut tree = TileTree::new();
    let mut others = Vec::new();
    for path in paths {
        match tile_of(path) {
            Some((prefix, z, x, _)) => tree
                .entry(prefix)
                .or_default()
                .entry(z)
                .or_default()
                .entry(x)
                .or_default()
                .push(path),
            None => others.push(path),
        }
    }
    (tree, others)
}

/// The folder `rest` (`z/`, `z/x/`) under `prefix`, or at the root where `prefix` is empty.
pub(super) fn folder(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_string()
    } else {
        format!("{prefix}/{rest}")
    }
}

/// The purge of `paths` with dense folders folded, at most `wildcards` of them. `*` (everything)
/// purges the root.
pub fn fold(paths: &[String], bbox: BBox, density: f64, wildcards: usize) -> Vec<Purge> {
    if paths.iter().any(|p| p == "*") {
        return vec![Purge::Folder(String::new())];
    }
    // A partition purged whole (`VALUE/*`) is its folder, which covers every path under it.
    let folders: Vec<&str> = paths.iter().filter_map(|p| everything_under(p)).collect();
    if !folders.is_empty() {
        let rest: Vec<String> = paths
            .iter()
            .filter(|path| !folders.iter().any(|folder| path.starts_with(folder)))
            .cloned()
            .collect();
        let mut purges: Vec<Purge> = folders
            .iter()
            .map(|folder| Purge::Folder(folder.to_string()))
            .collect();
        let left = wildcards.saturating_sub(purges.len());
        purges.extend(fold(&rest, bbox, density, left));
        return purges;
    }
    let (tree, others) = tile_tree(paths);
    // Candidate folds: the paths each saves, the wildcard, and the folder (prefix, zoom, column).
    type Candidate<'a> = (usize, Purge, (&'a str, u8, Option<u32>));
    let mut candidates: Vec<Candidate> = Vec::new();
    for (prefix, zooms) in &tree {
        for (z, columns) in zooms {
            let range = bbox.tile_range(*z);
            let rows = u64::from(range.max_y - range.min_y + 1);
            let cols = u64::from(range.max_x - range.min_x + 1);
            let changed: usize = columns.values().map(Vec::len).sum();
            if changed >= 2 && changed as f64 >= density * (rows * cols) as f64 {
                candidates.push((
                    changed - 1,
                    Purge::Folder(folder(prefix, &format!("{z}/"))),
                    (prefix, *z, None),
                ));
            }
            for (x, tiles) in columns {
                if tiles.len() >= 2 && tiles.len() as f64 >= density * rows as f64 {
                    candidates.push((
                        tiles.len() - 1,
                        Purge::Folder(folder(prefix, &format!("{z}/{x}/"))),
                        (prefix, *z, Some(*x)),
                    ));
                }
            }
        }
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut folded_zooms: Vec<(&str, u8)> = Vec::new();
    let mut folded_columns: Vec<(&str, u8, u32)> = Vec::new();
    let mut out: Vec<Purge> = others.into_iter().cloned().map(Purge::Path).collect();
    for (_, purge, (prefix, z, column)) in candidates {
        if folded_zooms.len() + folded_columns.len() >= wildcards {
            break;
        }
        if folded_zooms.contains(&(prefix, z)) {
            continue;
        }
        match column {
            None => {
                // A zoom's fold replaces the folds of its columns, so it takes their wildcards back.
                folded_columns.retain(|(p, cz, _)| !(*p == prefix && *cz == z));
                out.retain(|p| !matches!(p, Purge::Folder(f) if f.starts_with(&folder(prefix, &format!("{z}/")))));
                folded_zooms.push((prefix, z));
            }
            Some(x) => folded_columns.push((prefix, z, x)),
        }
        out.push(purge);
    }
    for (prefix, zooms) in &tree {
        for (z, columns) in zooms {
            if folded_zooms.contains(&(prefix, *z)) {
                continue;
            }
            for (x, tiles) in columns {
                if !folded_columns.contains(&(prefix, *z, *x)) {
                    out.extend(tiles.iter().map(|p| Purge::Path((*p).clone())));
                }
            }
        }
    }
    out.sort();
    out
}

/// A plan's purges as the paths each kind of target takes: a folder as `FOLDER*` (everything
/// under it, [`everything_under`]), the root as `*`.
pub(super) fn as_paths(purges: &[Purge]) -> Vec<String> {
    purges
        .iter()
        .map(|purge| match purge {
            Purge::Path(path) => path.clone(),
            Purge::Folder(folder) if folder.is_empty() => "*".to_string(),
            Purge::Folder(folder) => format!("{folder}*"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dense_columns_and_zooms_fold_sparse_ones_do_not() {
        // A bbox of one z2 tile: every zoom's range is small.
        let bbox = BBox::new(0.1, 0.1, 89.0, 66.0).unwrap();
        let mut changed = paths(&["0/0/0.pbf", "tiles.json"]);
        // z3: all four tiles of the bbox's 2x2 range changed: the zoom folds.
        changed.extend(paths(&["3/4/2.pbf", "3/4/3.pbf", "3/5/2.pbf", "3/5/3.pbf"]));
        let folded = fold(&changed, bbox, 0.5, 15);
        assert!(folded.contains(&Purge::Folder("3/".into())), "{folded:?}");
        assert!(folded.contains(&Purge::Path("0/0/0.pbf".into())));
        assert!(folded.contains(&Purge::Path("tiles.json".into())));
        assert_eq!(folded.len(), 3, "{folded:?}");

        // The world bbox at z12: two tiles of one column are sparse there.
        let sparse = paths(&["12/10/20.pbf", "12/10/21.pbf"]);
        assert_eq!(fold(&sparse, BBox::WORLD, 0.5, 15).len(), 2);
        assert_eq!(
            fold(&paths(&["p/1/0/0.pbf", "*"]), bbox, 0.5, 15),
            vec![Purge::Folder(String::new())]
        );
    }

    #[test]
    fn a_partitions_everything_is_its_folder_and_covers_its_paths_only() {
        let bbox = BBox::new(0.1, 0.1, 89.0, 66.0).unwrap();
        let changed = paths(&["CN/*", "CN/3/4/2.pbf", "US/12/10/20.pbf", "partitions.json"]);
        let mut folded = fold(&changed, bbox, 0.5, 15);
        folded.sort();
        assert_eq!(
            folded,
            vec![
                Purge::Path("US/12/10/20.pbf".into()),
                Purge::Path("partitions.json".into()),
                Purge::Folder("CN/".into()),
            ]
        );
        assert_eq!(everything_under("*"), Some(""));
        assert_eq!(everything_under("CN/*"), Some("CN/"));
        assert_eq!(everything_under("CN*"), None);
        assert_eq!(everything_under("CN/1/2/3.pbf"), None);
    }

    #[test]
    fn folds_stay_within_the_wildcard_budget_and_keep_every_path_covered() {
        let bbox = BBox::new(0.1, 0.1, 1.0, 1.0).unwrap();
        // Zooms 10-14 each a dense column under the prefix `v1`.
        let mut changed = Vec::new();
        for z in 10..=14u8 {
            let range = bbox.tile_range(z);
            for y in range.min_y..=range.max_y {
                changed.push(format!("v1/{z}/{}/{y}.pbf", range.min_x));
            }
        }
        let folded = fold(&changed, bbox, 0.5, 2);
        let wildcards = folded
            .iter()
            .filter(|p| matches!(p, Purge::Folder(_)))
            .count();
        assert_eq!(wildcards, 2, "{folded:?}");
        for path in &changed {
            assert!(
                folded.iter().any(|p| match p {
                    Purge::Path(q) => q == path,
                    Purge::Folder(f) => path.starts_with(f.as_str()),
                }),
                "{path} is purged"
            );
        }
        assert!(folded.len() < changed.len());
    }
}
