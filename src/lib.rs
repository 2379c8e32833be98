//! oar-tiles: pregenerates static vector tiles of the Open Apparel Registry from PostGIS and keeps them
//! fresh. The pipeline is config → plan → render → encode → sink → state; [`seed`] wires it, and
//! ARCHITECTURE.md draws it.

pub mod config;
pub mod db;
pub mod encode;
pub mod error;
pub mod inspect;
pub mod job;
pub mod metrics;
pub mod partition;
pub mod plan;
pub mod render;
pub mod report;
pub mod retry;
pub mod schedule;
pub mod seed;
pub mod serve;
pub mod sink;
pub mod state;
pub mod tile;
pub mod watch;

pub use error::{Error, ExitCode, Result};

#[cfg(test)]
mod architecture;
