//! The reseed tests' world: a fixture under change capture, whose reseeds are held against full
//! seeds of the same data.

use std::path::{Path, PathBuf};

use super::fixture::{wraps_fixture, Fixture};
use super::pg::{hub_with_scatter, Point};
use super::run::{oar_tiles, read_mbtiles_raw, single_layer_config, Run, Tiles};

/// The zooms every seed of these tests covers.
pub const ZOOMS: &str = "0-10";

/// The reseed tests' facilities: a hub in Ho Chi Minh City, a scatter around it, points on tile
/// borders and two sharing coordinates.
fn starting_points() -> Vec<Point> {
    let mut points = hub_with_scatter(150, 21, 3, [106.6, 10.7, 106.8, 10.9]);
    // On tile borders at several zooms, and sharing coordinates.
    points.push(Point::new(151, 0.0, 0.0));
    points.push(Point::new(152, 90.0, 10.0));
    points.push(Point::new(153, points[3].lon, points[3].lat));
    points
}

/// The shared fixture with change capture installed in a schema of its own, and a second config of
/// the same layer that aggregates clusters from rows, for reference seeds.
pub struct Setup {
    base: Fixture,
    /// The same tileset with clusters aggregated from rows, for reference seeds.
    pub from_rows: PathBuf,
    /// The companion schema holding the change log and the cluster cells.
    pub changes_schema: String,
}

wraps_fixture!(Setup, base);

impl Setup {
    /// The shared starting points under change capture, in a layer with `extra_layer`'s settings.
    pub fn new(label: &str, extra_layer: &str) -> Setup {
        let mut changes_schema = String::new();
        let base = Fixture::new(label, &starting_points(), "reseed.toml", |schema| {
            changes_schema = schema.companion("cdc");
            format!(
                "[changes]\nschema = \"{changes_schema}\"\n{}",
                single_layer_config(&schema.name, "sites", "", extra_layer)
            )
        });
        // The same layer, aggregating clusters from rows: its change schema does not exist, so it
        // shares nothing with the cluster cells that reseeds maintain.
        let from_rows = base.path("from-rows.toml");
        let text = std::fs::read_to_string(&base.config).unwrap();
        let absent = format!("{changes_schema}_absent");
        std::fs::write(&from_rows, text.replace(&changes_schema, &absent)).unwrap();
        let setup = Setup {
            base,
            from_rows,
            changes_schema,
        };
        setup.run(&["changes", "install"]).assert_success();
        setup
    }

    /// `args` (a subcommand first) with the fixture's config.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(&self.config, args)
    }

    /// `args` (a subcommand first) with `--config config`.
    pub fn run_with(&self, config: &Path, args: &[&str]) -> Run {
        let mut full = vec![args[0]];
        full.extend_from_slice(&["--config", config.to_str().unwrap()]);
        full.extend_from_slice(&args[1..]);
        oar_tiles(Some(&self.schema.url), &full)
    }

    /// The cluster cell tables in the change schema.
    pub fn cell_tables(&mut self) -> Vec<String> {
        let schema = self.changes_schema.clone();
        self.schema
            .client()
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'cells\\_%'",
                &[&schema],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// A seed of [`ZOOMS`] into `output` with `extra` arguments, which must succeed.
    pub fn seed(&self, output: &Path, extra: &[&str]) -> Run {
        let mut args = vec![
            "seed",
            "--zoom",
            ZOOMS,
            "--output",
            output.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let run = self.run(&args);
        run.assert_success();
        run
    }

    /// A full seed of the current data into a fresh file, clusters aggregated from rows.
    pub fn full(&self, name: &str) -> Tiles {
        let path = self.path(name);
        let _ = std::fs::remove_file(&path);
        let output = path.to_str().unwrap();
        self.run_with(
            &self.from_rows,
            &["seed", "--zoom", ZOOMS, "--output", output],
        )
        .assert_success();
        read_mbtiles_raw(&path)
    }
}
