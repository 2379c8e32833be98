//! Where an output lives, as its format tells run coordination, and so where the output's lock,
//! outbox and changes feed are: beside a single file or archive object, inside a tree or prefix.
//! A format says only which of these it is; the names of what coordination keeps there are
//! decided here, once.

use std::path::PathBuf;

use super::feed::{self, FeedStore};
use super::outbox::OutboxStore;
use crate::config::{Bucket, StoreConfig};
use crate::error::Result;
use crate::store::key_under;

/// The outbox folder's name beside a single file or archive object (`NAME` + it) and inside a tree.
const OUTBOX_SUFFIX: &str = ".oar-tiles-outbox";

/// The folder beside a tree where its partitions' locks live.
const PARTITION_LOCKS: &str = ".oar-tiles-locks";

/// The outbox folder under a prefix.
const PREFIX_OUTBOX: &str = ".oar-tiles/outbox";

/// The lease under a prefix, beside its outbox.
const PREFIX_LEASE: &str = ".oar-tiles/lock";

/// The lease's suffix beside an archive object.
const LEASE_SUFFIX: &str = ".oar-tiles-lock";

/// Where an output lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// A single local file (MBTiles, PMTiles): its state lives beside it.
    File(PathBuf),
    /// A local tree of tiles: its state lives inside it, its lock beside it.
    Tree(PathBuf),
    /// A prefix of a remote store: its state lives under it, its lock on this machine.
    Prefix {
        /// The store and bucket or container.
        bucket: Bucket,
        /// The prefix, without leading or trailing slash; may be empty.
        prefix: String,
    },
    /// One object of a remote store (a PMTiles archive): its state lives beside it, its lock
    /// on this machine.
    Object {
        /// The store and bucket or container.
        bucket: Bucket,
        /// The object's key.
        key: String,
    },
}

impl Home {
    /// Whether the output lives in a remote store: its lock and working files then live in this
    /// machine's state folder, which the tool creates; a local output's folder must exist.
    pub fn is_remote(&self) -> bool {
        matches!(self, Home::Prefix { .. } | Home::Object { .. })
    }

    /// Whether the output's tiles are files or objects of their own (a tree, a prefix), each
    /// served as soon as it is written: the tiles a stopped run stored stay, and its writer
    /// records a tile in the outbox only once readers are served its new bytes (a tile renamed
    /// into place, an object's PUT done), so a run may purge it at once. A single file or archive
    /// is replaced whole or not at all, and shows its tiles only when it is finished.
    pub fn stores_tile_by_tile(&self) -> bool {
        matches!(self, Home::Tree(_) | Home::Prefix { .. })
    }

    /// The file that locks the output against a second job: beside a local output; in this
    /// machine's state for a remote one, told apart by the store's endpoint or account too.
    pub fn lock_path(&self, store_settings: &StoreConfig) -> PathBuf {
        match self {
            Home::File(path) => super::beside(path, super::lock::SUFFIX),
            // `out/` and `out` are one tree: the lock goes beside its normalised path.
            Home::Tree(root) => {
                super::beside(&root.components().collect::<PathBuf>(), super::lock::SUFFIX)
            }
            Home::Prefix { bucket, prefix } => {
                crate::store::local_file(bucket, store_settings, prefix, "locks", "lock")
            }
            Home::Object { bucket, key } => {
                crate::store::local_file(bucket, store_settings, key, "locks", "lock")
            }
        }
    }

    /// Where a remote output's lease lives in its store (none for a local output, whose lock file
    /// every job writing it sees).
    pub fn lease_key(&self) -> Option<(Bucket, String)> {
        match self {
            Home::File(_) | Home::Tree(_) => None,
            Home::Prefix { bucket, prefix } => {
                Some((bucket.clone(), key_under(prefix, PREFIX_LEASE)))
            }
            Home::Object { bucket, key } => Some((bucket.clone(), format!("{key}{LEASE_SUFFIX}"))),
        }
    }

    /// Where the lock of partition `segment` lives when it must not be where the partition's
    /// own output puts it: a tree's partitions are folders inside the tileset's tree, so their
    /// locks go into a folder beside that tree (`TREE.oar-tiles-locks/SEGMENT.lock`).
    pub fn partition_lock_path(&self, segment: &str) -> Option<PathBuf> {
        match self {
            Home::Tree(root) => Some(
                super::beside(&root.components().collect::<PathBuf>(), PARTITION_LOCKS)
                    .join(format!("{segment}.lock")),
            ),
            Home::File(_) | Home::Prefix { .. } | Home::Object { .. } => None,
        }
    }

    /// Where the output keeps its outbox of changes for CDNs and `--changed-list`.
    pub async fn outbox(&self, store_settings: &StoreConfig) -> Result<OutboxStore> {
        let (bucket, folder) = match self {
            Home::File(path) => return Ok(OutboxStore::Folder(super::beside(path, OUTBOX_SUFFIX))),
            Home::Tree(root) => return Ok(OutboxStore::Folder(root.join(OUTBOX_SUFFIX))),
            Home::Prefix { bucket, prefix } => (bucket, key_under(prefix, PREFIX_OUTBOX)),
            Home::Object { bucket, key } => (bucket, format!("{key}{OUTBOX_SUFFIX}")),
        };
        Ok(OutboxStore::Objects {
            folder: super::store_folder(store_settings, bucket, &folder).await?,
            local: crate::store::local_file(bucket, store_settings, &folder, "outbox", "d"),
        })
    }

    /// Where the output publishes its changes feed (`[tileset.feed]`): inside a tree or prefix,
    /// where its CDN serves it with the tiles, or beside a single file or archive.
    pub async fn feed(&self, store_settings: &StoreConfig) -> Result<FeedStore> {
        let (bucket, folder) = match self {
            Home::File(path) => return Ok(FeedStore::Folder(super::beside(path, feed::SUFFIX))),
            Home::Tree(root) => return Ok(FeedStore::Folder(root.join(feed::FOLDER))),
            Home::Prefix { bucket, prefix } => (bucket, key_under(prefix, feed::FOLDER)),
            Home::Object { bucket, key } => (bucket, format!("{key}{}", feed::SUFFIX)),
        };
        Ok(FeedStore::Objects(
            super::store_folder(store_settings, bucket, &folder).await?,
        ))
    }

    /// Removes the outbox beside a single local file that is gone; the outbox of a tree or
    /// prefix goes with it.
    pub fn remove_outbox(&self) -> Result<()> {
        match self {
            Home::File(path) => {
                let folder = super::beside(path, OUTBOX_SUFFIX);
                crate::store::durable::remove_if_there(&folder, std::fs::remove_dir_all(&folder))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scheme;
    use std::path::Path;

    #[test]
    fn state_lives_beside_a_file_and_inside_a_tree_or_prefix() {
        let store_settings = StoreConfig::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let file = Home::File("/data/out.mbtiles".into());
        assert_eq!(
            file.lock_path(&store_settings),
            Path::new("/data/out.mbtiles.oar-tiles.lock")
        );
        assert_eq!(
            runtime
                .block_on(file.outbox(&store_settings))
                .unwrap()
                .describe(),
            "/data/out.mbtiles.oar-tiles-outbox"
        );
        let tree = Home::Tree("/data/tiles/".into());
        assert_eq!(
            tree.lock_path(&store_settings),
            Path::new("/data/tiles.oar-tiles.lock")
        );
        assert_eq!(
            runtime
                .block_on(tree.outbox(&store_settings))
                .unwrap()
                .describe(),
            "/data/tiles/.oar-tiles-outbox"
        );
        assert!(!file.is_remote() && !tree.is_remote());
        assert!(!file.stores_tile_by_tile() && tree.stores_tile_by_tile());
        let prefix = Home::Prefix {
            bucket: Bucket {
                scheme: Scheme::S3,
                name: "maps".into(),
            },
            prefix: "tiles".into(),
        };
        assert!(prefix.is_remote());
    }
}
