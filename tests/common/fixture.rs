//! One database test's world: a schema holding a `sites` point table, a temporary directory, and a
//! config file pointing at them. Test modules wrap it with what they add (an S3 server, change
//! capture) and reach its fields through `Deref`.

use std::path::{Path, PathBuf};

use super::pg::{Point, TestSchema};
use super::run::{assert_same_tiles, oar_tiles, read_mbtiles_raw, Run};

/// A schema, a directory and a config for one test.
pub struct Fixture {
    /// The test's schema, with the `sites` table.
    pub schema: TestSchema,
    /// Where outputs and configs go; removed with the fixture.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
}

impl Fixture {
    /// A schema named after `label` holding `points` as `sites`, and a config `config_name` in a new
    /// directory, written from `config_text` (which may create companion schemas).
    pub fn new(
        label: &str,
        points: &[Point],
        config_name: &str,
        config_text: impl FnOnce(&mut TestSchema) -> String,
    ) -> Fixture {
        let mut schema = TestSchema::create(label);
        schema.point_table("sites", points);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join(config_name);
        std::fs::write(&config, config_text(&mut schema)).unwrap();
        Fixture {
            schema,
            dir,
            config,
        }
    }

    /// A path in the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `oar-tiles COMMAND --config CONFIG ARGS…` against the test's database, for tests that
    /// hold several configs beside the fixture's own.
    pub fn run_with(&self, config: &Path, args: &[&str]) -> Run {
        let mut full = vec![args[0], "--config", config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        oar_tiles(Some(&self.schema.url), &full)
    }

    /// `seed --zoom ZOOMS --output OUTPUT EXTRA…` with `config`, which must succeed.
    pub fn seed_with(&self, config: &Path, zooms: &str, output: &Path, extra: &[&str]) -> Run {
        let mut args = vec![
            "seed",
            "--zoom",
            zooms,
            "--output",
            output.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let done = self.run_with(config, &args);
        done.assert_success();
        done
    }

    /// Holds `output` against a full seed of `zooms` with `config` of the rows as they are now,
    /// byte for byte.
    pub fn assert_fresh_with(&self, config: &Path, zooms: &str, output: &Path, what: &str) {
        let reference = self.path("reference.mbtiles");
        let _ = std::fs::remove_file(&reference);
        self.seed_with(config, zooms, &reference, &[]);
        assert_same_tiles(
            &read_mbtiles_raw(&reference),
            &read_mbtiles_raw(output),
            what,
        );
    }

    /// `seed --config CONFIG --zoom ZOOM --output OUTPUT EXTRA…`.
    pub fn seed_args<'a>(
        &'a self,
        output: &'a str,
        zoom: &'a str,
        extra: &[&'a str],
    ) -> Vec<&'a str> {
        seed_args_for(self.config.to_str().unwrap(), output, zoom, extra)
    }
}

/// `seed --config CONFIG --zoom ZOOM --output OUTPUT EXTRA…` with the config named as the run sees
/// it: a container sees the fixture's directory under another path, so the image tests name it
/// relative to their working directory.
pub fn seed_args_for<'a>(
    config: &'a str,
    output: &'a str,
    zoom: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "seed", "--config", config, "--zoom", zoom, "--output", output,
    ];
    args.extend_from_slice(extra);
    args
}

/// Lets a test module's setup type, which wraps a [`Fixture`] in `$field`, be used as the fixture
/// itself (`setup.schema`, `setup.path(..)`).
macro_rules! wraps_fixture {
    ($setup:ty, $field:tt) => {
        impl std::ops::Deref for $setup {
            type Target = $crate::common::fixture::Fixture;
            fn deref(&self) -> &Self::Target {
                &self.$field
            }
        }

        impl std::ops::DerefMut for $setup {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.$field
            }
        }
    };
}
pub(crate) use wraps_fixture;
