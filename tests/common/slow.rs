//! Work slow enough to be interrupted: rows that cost the server time to render, so a seed is
//! still walking when a test signals, kills or fills the disk under it, on any machine.

use super::fixture::Fixture;
use super::pg::{hub_with_scatter, Point};
use super::run::single_layer_config;

/// A layer filter that makes every tenth row cost the server about a millisecond, so a seed runs
/// long enough to be interrupted mid-walk on any machine, however fast its rendering.
pub const SLOW_ROWS: &str = "filter = \"site_id % 10 <> 0 OR pg_sleep(0.0005) IS NOT NULL\"";

/// `count` facilities around London, for a layer with [`SLOW_ROWS`].
pub fn many_points(count: i64) -> Vec<Point> {
    hub_with_scatter(count, 77, 4, [-0.3, 51.3, 0.3, 51.7])
}

/// A fixture whose rows are slow to render, so a shard is still walking when a test kills it.
pub fn slow_fixture(label: &str) -> Fixture {
    let points = hub_with_scatter(3_000, 31, 4, [-0.3, 51.3, 0.3, 51.7]);
    Fixture::new(label, &points, "oar.toml", |schema| {
        single_layer_config(&schema.name, "sites", "", SLOW_ROWS)
    })
}
