//! The edge: purging the caches in front of an output (`[[tileset.cdn]]`) of the paths a run
//! changed, as the output's outbox hands them over.
//!
//! Paths are relative to where the output lives: a tree's root or an S3 prefix (`z/x/y.ext`,
//! `tiles.json`, a partition's `VALUE/z/x/y.ext`), the folder of a single file (its name). `*`
//! stands for everything (a killed full seed). Each target retries its own requests (bounded,
//! with backoff); a target that still fails leaves the paths in the outbox for the next run, and
//! the others are not asked again.
//!
//! A CDN is not trusted: each request has a timeout and each target's purge a budget
//! (`request_timeout`, `purge_timeout`), at most [`client::ANSWER_CAP`] of an answer is read, and
//! no message a target produces holds a secret it sends (an error page may echo the request's
//! headers): answers appear only as a short excerpt (`secrets::excerpt`), and every message is
//! redacted.
//!
//! What differs between kinds of CDN is behind one trait, `cdn::Cdn`, one file per kind in
//! `cdn/` registered in `cdn::KINDS`; a [`PurgeTarget`] (`target.rs`) holds one and adds what
//! every kind shares: planning against prices, budgets and pace, the purge's timeout, and
//! redaction (`purge.rs`).
//!
//! This file is the edge's front door only: it declares the edge's files and names what the
//! rest of the crate takes from them. No file of the edge imports it, so every import inside the
//! edge points down: `target.rs` below the budget, the flights and `purge.rs` that take a target,
//! and what the kinds in `cdn/` share (`report.rs`, `fold.rs`, `pace.rs`) below them.

mod budget;
mod calls;
mod cdn;
mod check;
mod client;
mod error;
mod flight;
mod fold;
mod hold;
mod pace;
mod price;
mod purge;
mod query_key;
mod report;
mod reported;
mod secrets;
mod send;
mod target;

pub use budget::{Budget, BudgetState};
pub use check::{check as check_edge, sample as sample_for_check, EdgeCheck, EdgeProbe};
pub use client::Client;
pub use flight::Flights;
pub(crate) use fold::everything_under;
pub use hold::Holds;
pub use pace::{accepted_cover, covers, Progress};
pub use price::StoredTiles;
pub use query_key::check_keys_on_query;
pub use report::{PurgePlan, PurgeReport};
pub use target::{check, PurgeTarget};
