//! Plan: which tiles a run visits. A full seed walks the pruned pyramid ([`walk`]); a reseed renders
//! the tiles its changes touch ([`dirty`]); `--tiles-from` renders a list read by [`crate::job`].
//! [`shard`] splits one seed into shards balanced by data.

pub mod dirty;
pub mod shard;
pub mod walk;

pub use dirty::{dirty_work, ChangedBox, DrawnChange, Moved, Shape, SourceBox, ZoomWay};
pub use walk::{Mode, PyramidWalk, EAGER_TILES};

use crate::tile::{Subtrees, TileCoord};

/// The tiles a run renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// The pruned pyramid walk; afterwards tiles it did not produce are swept.
    Pyramid,
    /// Exactly these tiles, lowest zoom first: written when they hold something, deleted when they
    /// do not.
    Tiles(Vec<TileCoord>),
    /// These tiles, as [`Work::Tiles`], and every tile of these subtrees the pruned walk reaches
    /// from their roots; afterwards the subtrees' tiles the walk did not produce are swept.
    Subtrees {
        /// The tiles listed (none inside a subtree).
        tiles: Vec<TileCoord>,
        /// The subtrees walked.
        subtrees: Subtrees,
    },
}
