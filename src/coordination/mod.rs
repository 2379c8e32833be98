//! Run coordination: what lets runs, shards, partitions and the consumers of an output's changes
//! work on it together, whatever its format. Formats (`sink`) build on it; it builds on storage
//! (`store`), and never learns which format or store holds an output.
//!
//! - `home.rs`: where an output lives, as its format says, and so where its lock, outbox and feed
//!   are;
//! - `lock.rs`: one job per output at a time; `lease.rs`: the same across machines for an output
//!   in a remote store;
//! - `outbox.rs` and `changed_list.rs`: what runs changed, kept until every consumer took it, and
//!   the recorder a writer notes each changed tile in;
//! - `feed.rs`: the changes feed open maps follow;
//! - `parts.rs` and `shards.rs`: a shard's part, and where a sharded run keeps its plan and parts;
//! - `partitions.rs`: a partitioned tileset's index;
//! - `metadata.rs`: what a run declares about its tileset, which every output records and a
//!   shard's part carries to `finalize`.

pub mod changed_list;
pub mod feed;
pub mod home;
pub mod lease;
pub mod lock;
pub mod metadata;
pub mod outbox;
pub mod partitions;
pub mod parts;
pub mod shards;

pub use changed_list::ChangedList;
pub use home::Home;
pub use metadata::TilesetMetadata;
pub use parts::PartOf;

use crate::config::{Bucket, StoreConfig};
use crate::error::{Error, Result};
use crate::store::folder::ObjectFolder;

/// The objects under `folder` in the store holding `bucket`, where an outbox, a feed or shard
/// parts live; the error of a store that cannot be opened names the folder.
async fn store_folder(
    store_settings: &StoreConfig,
    bucket: &Bucket,
    folder: &str,
) -> Result<ObjectFolder> {
    let store = crate::store::open(bucket, store_settings)
        .await
        .map_err(|e| Error::output_caused(format!("{bucket}/{folder}"), e))?;
    Ok(ObjectFolder::new(store, folder))
}

/// `NAME.SUFFIX` beside the local file `path`: where a single file's lock, outbox and feed live.
fn beside(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}
