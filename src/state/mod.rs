//! State: what persists between runs and decides what the next run does. Change capture in PostGIS
//! ([`capture`]), the cluster cells derived from the rows ([`cells`]), the resume journal of an
//! interrupted walk ([`journal`]), and the watermark with its settings digest ([`watermark`],
//! [`digest`]).
//!
//! A job reads state first (an output's watermark, a journal to resume), refreshes the derived state
//! (cluster cells) before rendering, and advances it last, once the tiles it covers are durable.

pub mod capture;
pub mod cells;
pub mod digest;
pub mod journal;
pub mod reseed;
pub mod watermark;

pub use watermark::Watermark;
