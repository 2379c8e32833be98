//! A world with change capture under a schema of the test's own: a `sites` table, a config of one
//! clustered layer over it, and runs of the binary against both, for tests that break capture
//! the ways operators do (triggers disabled, dropped, records deleted) and hold the outputs to a
//! fresh seed.

use std::path::{Path, PathBuf};

use super::fixture::Fixture;
use super::pg::hub_with_scatter;
use super::run::{assert_same_tiles, oar_tiles, read_mbtiles_raw, single_layer_config, Run};

/// The zooms every seed of this world renders: clustered up to 5, rows beyond.
pub const ZOOMS: &str = "0-7";

/// The test's schema, its change schema and a config of one layer clustered up to zoom 5.
pub struct CaptureWorld {
    pub fixture: Fixture,
    /// The change schema's name.
    pub changes: String,
}

impl CaptureWorld {
    /// A schema named after `label` with 120 `sites`, and a config logging into a change schema
    /// of its own; capture not installed.
    pub fn new(label: &str) -> CaptureWorld {
        let points = hub_with_scatter(120, 11, 4, [106.6, 10.7, 106.8, 10.9]);
        let mut changes = String::new();
        let fixture = Fixture::new(label, &points, "capture.toml", |schema| {
            changes = schema.companion("cdc");
            format!(
                "[changes]\nschema = \"{changes}\"\n{}",
                single_layer_config(
                    &schema.name,
                    "sites",
                    "",
                    "cluster_maxzoom = 5\ncluster_cell = 256"
                )
            )
        });
        CaptureWorld { fixture, changes }
    }

    /// Runs `oar-tiles COMMAND --config CONFIG ARGS…`.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut full = vec![args[0], "--config", self.fixture.config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        oar_tiles(Some(&self.fixture.schema.url), &full)
    }

    /// A path in the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.fixture.path(name)
    }

    /// `seed` of `ZOOMS` into `output` with `extra` flags, which must succeed.
    pub fn seed(&self, output: &Path, extra: &[&str]) -> Run {
        let mut args = vec![
            "seed",
            "--zoom",
            ZOOMS,
            "--output",
            output.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let done = self.run(&args);
        done.assert_success();
        done
    }

    /// Runs SQL with `{schema}` and `{changes}` replaced by the quoted schema names.
    pub fn execute(&mut self, sql: &str) {
        let sql = sql.replace("{changes}", &format!("\"{}\"", self.changes));
        self.fixture.schema.execute(&sql);
    }

    /// Moves site `id` across the world, so tiles at every zoom change.
    pub fn move_site(&mut self, id: i64, lon: f64, lat: f64) {
        self.execute(&format!(
            "UPDATE {{schema}}.sites SET pt = ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326) \
             WHERE site_id = {id}"
        ));
    }

    /// The name of this world's capture trigger of `event` (`insert`, `update`, `delete`,
    /// `truncate`) on `sites`.
    pub fn trigger(&mut self, event: &str) -> String {
        let table = format!("\"{}\".sites", self.fixture.schema.name);
        let row = self
            .fixture
            .schema
            .client()
            .query_one(
                "SELECT tgname::text FROM pg_trigger
                 WHERE tgrelid = $1::text::regclass AND tgname LIKE 'oar_tiles_capture_' || $2 || '%'",
                &[&table, &event],
            )
            .unwrap();
        row.get(0)
    }

    /// Holds `output` against a full seed of the rows as they are now, its cluster cells summed
    /// from the rows, byte for byte.
    pub fn assert_fresh(&self, output: &Path, what: &str) {
        let reference = self.path("reference.mbtiles");
        let _ = std::fs::remove_file(&reference);
        self.seed(&reference, &["--rebuild-cells"]);
        assert_same_tiles(
            &read_mbtiles_raw(&reference),
            &read_mbtiles_raw(output),
            what,
        );
    }
}
