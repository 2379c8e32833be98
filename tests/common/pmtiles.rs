//! The PMTiles tests' world: a fixture with change capture in a schema of its own and clusters up to
//! zoom 5, seeded to zoom 10.

use std::path::Path;

use super::fixture::Fixture;
use super::pg::{hub_with_scatter, Point};
use super::run::{oar_tiles, single_layer_config};

/// The PMTiles tests' facilities: a hub in Dhaka, a scatter around it and one in London.
pub fn points() -> Vec<Point> {
    let mut points = hub_with_scatter(400, 31, 3, [90.3, 23.7, 90.5, 23.9]);
    points.push(Point::new(9000, -0.1, 51.5));
    points
}

/// A fixture with change capture in a schema of its own and clusters up to zoom 5.
pub fn setup(label: &str) -> Fixture {
    setup_with(label, "", "")
}

/// [`setup`] with more top-level tables (`[store]`) and tileset keys.
pub fn setup_with(label: &str, tables: &str, tileset: &str) -> Fixture {
    setup_on(label, &points(), tables, tileset)
}

/// [`setup_with`] over `points` of the test's own.
pub fn setup_on(label: &str, points: &[Point], tables: &str, tileset: &str) -> Fixture {
    let setup = Fixture::new(label, points, "pmtiles.toml", |schema| {
        let changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n{tables}\n{}",
            single_layer_config(&schema.name, "sites", tileset, "cluster_maxzoom = 5")
        )
    });
    let config = setup.config.to_str().unwrap();
    oar_tiles(
        Some(&setup.schema.url),
        &["changes", "install", "--config", config],
    )
    .assert_success();
    setup
}

/// A seed of zooms 0-10 into `output` with `extra` arguments, which must succeed.
pub fn seed(setup: &Fixture, output: &Path, extra: &[&str]) {
    let args = setup.seed_args(output.to_str().unwrap(), "0-10", extra);
    oar_tiles(Some(&setup.schema.url), &args).assert_success();
}

/// Facilities spread over a continent, with labels that do not compress, so that the archive is
/// several S3 parts long while a tile holds a hundred of them.
pub fn continent_points() -> Vec<Point> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (1..=24_000)
        .map(|id| {
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let lon = -50.0 + (next() % 100_000) as f64 / 1_000.0;
            let lat = -30.0 + (next() % 60_000) as f64 / 1_000.0;
            let mut point = Point::new(id, lon, lat);
            point.label = (0..12).map(|_| format!("{:016x}", next())).collect();
            point
        })
        .collect()
}
