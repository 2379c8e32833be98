//! Delivery: handing what an output changed to the consumers of its outbox. The outbox itself, a
//! durable list of batches of changed lines per output, is `coordination`'s; the CDNs and how
//! each is purged are `edge`'s. This room holds what sits between them, the order in which a
//! run's changes reach the edge and the maps:
//!
//! - a run's outbox (`outbox.rs`, [`RunOutbox`]): what the run may change, recorded before it
//!   changes anything; its tiles purged as the sink stores them, where the output serves them at
//!   once (`outbox/early.rs`); at its end, its batch committed and every pending batch handed to
//!   the command's `--changed-list`, each CDN target (`outbox/deliver.rs`) and the changes feed,
//!   with what a target accepted journaled as it accepts it (`outbox/journal.rs`), so a killed
//!   run resends only what was in flight; `seed --dirty --dry-run`'s read-only plans
//!   ([`purge_plans`]);
//! - the changes feed's publication (`feed.rs`): a batch is listed only once every CDN took it,
//!   so a map told that a tile changed is served its new bytes;
//! - a partitioned tileset's own outbox (`partition.rs`): the purges its partitions' runs could
//!   not deliver, its index and its vanished partitions' feeds, purged by every run of the tileset.
//!
//! It sits above `edge` and `sink` (it opens outputs' homes and purges through their targets),
//! and below `seed` and `partition`, which call it at the end of each run; `watch` records a
//! refreshed `tiles.json` through it ([`record_new_hash`]). Callers use only what this file
//! re-exports.

mod feed;
mod outbox;
mod partition;

pub use outbox::{purge_plans, record_new_hash, Delivered, RunOutbox};
pub use partition::{deliver_handed_over, purge_index, purge_vanished_feeds};
