//! Dirty subtrees: whole parts of the pyramid a run walks instead of listing their tiles, so a
//! change that touches millions of tiles costs memory for its subtrees' roots, not for each tile.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::TileCoord;

/// A set of subtrees, each named by its root: a tile and every tile below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subtrees {
    roots: Arc<BTreeSet<TileCoord>>,
    /// The zooms of the roots, so a lookup climbs to each of them only.
    zooms: Vec<u8>,
}

impl Subtrees {
    /// The subtrees below `roots`.
    pub fn new(roots: impl IntoIterator<Item = TileCoord>) -> Subtrees {
        let roots: BTreeSet<TileCoord> = roots.into_iter().collect();
        let zooms: BTreeSet<u8> = roots.iter().map(TileCoord::z).collect();
        Subtrees {
            roots: Arc::new(roots),
            zooms: zooms.into_iter().collect(),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// How many subtrees there are.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// The zoom of the highest roots.
    pub fn top_zoom(&self) -> Option<u8> {
        self.zooms.first().copied()
    }

    /// The roots, lowest zoom first.
    pub fn roots(&self) -> impl Iterator<Item = TileCoord> + '_ {
        let mut roots: Vec<TileCoord> = self.roots.iter().copied().collect();
        roots.sort_by_key(|t| (t.z(), super::morton(t.x(), t.y())));
        roots.into_iter()
    }

    /// The subtrees in parts of at most `roots` roots each, in the order a walk takes them
    /// (lowest zoom first, neighbours together): walked one part after another, a walk's queue
    /// holds one part's frontier, not that of every subtree at once.
    pub fn parts(&self, roots: usize) -> Vec<Subtrees> {
        let ordered: Vec<TileCoord> = self.roots().collect();
        ordered
            .chunks(roots.max(1))
            .map(|part| Subtrees::new(part.iter().copied()))
            .collect()
    }

    /// Whether `tile` is a root or lies below one.
    pub fn contains(&self, tile: TileCoord) -> bool {
        self.zooms
            .iter()
            .take_while(|z| **z <= tile.z())
            .any(|z| self.roots.contains(&ancestor_at(tile, *z)))
    }

    /// Whether some subtree holds tiles of column `x` at zoom `z`.
    pub fn meets_column(&self, z: u8, x: u32) -> bool {
        self.zooms
            .iter()
            .take_while(|root_z| **root_z <= z)
            .any(|root_z| {
                let root_x = x >> (z - root_z);
                self.roots
                    .range(first_of_column(*root_z, root_x)..)
                    .next()
                    .is_some_and(|root| root.z() == *root_z && root.x() == root_x)
            })
    }
}

/// The tile at zoom `z` (at most `tile`'s) whose subtree holds `tile`.
fn ancestor_at(tile: TileCoord, z: u8) -> TileCoord {
    let depth = tile.z() - z;
    TileCoord::new(z, tile.x() >> depth, tile.y() >> depth)
        .expect("an ancestor of a valid tile is valid")
}

/// The first tile of column `x` at zoom `z` in [`TileCoord`]'s order.
fn first_of_column(z: u8, x: u32) -> TileCoord {
    TileCoord::new(z, x, 0).expect("a column of a valid tile is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(z: u8, x: u32, y: u32) -> TileCoord {
        TileCoord::new(z, x, y).unwrap()
    }

    #[test]
    fn a_subtree_holds_its_root_and_every_tile_below_it_and_nothing_else() {
        let subtrees = Subtrees::new([tile(3, 2, 5), tile(5, 0, 0)]);
        assert!(subtrees.contains(tile(3, 2, 5)));
        assert!(subtrees.contains(tile(4, 5, 11)));
        assert!(subtrees.contains(tile(14, (2 << 11) + 7, (5 << 11) + 2047)));
        assert!(!subtrees.contains(tile(2, 1, 2)), "above the root");
        assert!(!subtrees.contains(tile(4, 6, 11)), "beside it");
        assert!(subtrees.contains(tile(7, 3, 1)));
        assert!(!subtrees.contains(tile(4, 0, 0)));
        assert!(subtrees.meets_column(4, 5));
        assert!(subtrees.meets_column(4, 4));
        assert!(!subtrees.meets_column(4, 6));
        assert!(!subtrees.meets_column(2, 1));
        assert!(subtrees.meets_column(9, 15));
        assert!(!subtrees.meets_column(9, 16));
        let parts = subtrees.parts(1);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].contains(tile(3, 2, 5)) && !parts[0].contains(tile(5, 0, 0)));
        assert!(parts[1].contains(tile(5, 0, 0)));
        assert_eq!(subtrees.parts(5), vec![subtrees.clone()]);
    }
}
