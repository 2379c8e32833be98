//! Every output right whatever the operator types (issue 86): a reseed keeps to the zooms the
//! output was seeded with, a regional seed's bounds hold its edge tiles on every output kind, and
//! one output is one consumer of the change log whatever path its config was given by.

use std::path::Path;
use std::process::Command;

use crate::common::fixture::Fixture;
use crate::common::gcs::GcsBucket;
use crate::common::pg::{hub_with_scatter, Point};
use crate::common::run::{
    oar_tiles_command, oar_tiles_with, read_mbtiles_raw, read_metadata, run_from,
    single_layer_config, Run,
};

/// A fixture of `points` under change capture, with `extra_tileset` in its `[[tileset]]`, its config
/// named `config_name`; returns it and the change schema.
fn captured(
    label: &str,
    points: &[Point],
    config_name: &str,
    extra_tileset: &str,
) -> (Fixture, String) {
    let mut changes = String::new();
    let fixture = Fixture::new(label, points, config_name, |schema| {
        changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(&schema.name, "sites", extra_tileset, "")
        )
    });
    run(&fixture, &["changes", "install"], &[]).assert_success();
    (fixture, changes)
}

/// `oar-tiles COMMAND --config CONFIG ARGS…` against the fixture's database.
fn run(fixture: &Fixture, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut full = vec![args[0], "--config", fixture.config.to_str().unwrap()];
    full.extend_from_slice(&args[1..]);
    oar_tiles_with(Some(&fixture.schema.url), &full, env)
}

/// `validate` of `output`, asserted to pass.
fn assert_validates(fixture: &Fixture, output: &str, env: &[(&str, &str)], what: &str) {
    let run = run(fixture, &["validate", "--tileset", "sites", output], env);
    assert_eq!(
        run.code, 0,
        "{what}: validate found problems\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS"]
fn a_reseed_renders_only_the_zooms_the_output_was_seeded_with() {
    let points = hub_with_scatter(80, 86, 5, [3.1, 50.5, 3.4, 50.8]);
    let (mut fixture, _) = captured("zooms_held", &points, "a.toml", "minzoom = 0\nmaxzoom = 12");
    let output = fixture.path("out.mbtiles");
    let output = output.to_str().unwrap();
    run(
        &fixture,
        &["seed", "--zoom", "0-9", "--output", output],
        &[],
    )
    .assert_success();
    assert_validates(&fixture, output, &[], "the seed of zooms 0-9");
    let before = read_metadata(Path::new(output));

    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = 'renamed' WHERE site_id = 1");
    let reseed = run(&fixture, &["seed", "--dirty", "--output", output], &[]);
    reseed.assert_success();

    let deepest = read_mbtiles_raw(Path::new(output))
        .keys()
        .map(|t| t.0)
        .max();
    assert_eq!(
        deepest,
        Some(9),
        "the reseed added zooms the output never had"
    );
    let after = read_metadata(Path::new(output));
    for key in ["bounds", "minzoom", "maxzoom"] {
        assert_eq!(after[key], before[key], "{key} changed by a reseed");
    }
    assert_validates(&fixture, output, &[], "the reseed");
    assert!(
        reseed.stderr.contains("--zoom 10-12"),
        "the reseed does not say how to add zooms 10-12:\n{}",
        reseed.stderr
    );
}

/// Points inside a regional bbox, and beyond its west and east edges inside the edge tiles of
/// zooms 10 and 11 but outside those of zoom 12, so only shallower tiles hold them.
fn regional_points() -> Vec<Point> {
    let mut points = hub_with_scatter(40, 11, 1000, [11.05, 46.05, 11.2, 46.2]);
    points.push(Point::new(900, 9.88, 46.1));
    points.push(Point::new(901, 12.09, 46.1));
    points
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS and fake-gcs-server (OAR_TILES_TEST_GCS)"]
fn a_regional_seed_validates_on_every_output_kind() {
    let bbox = "bbox = [10.0, 45.0, 12.0, 47.0]\nminzoom = 0\nmaxzoom = 12";
    let (fixture, _) = captured("regional", &regional_points(), "a.toml", bbox);
    let bucket = GcsBucket::create("regional");
    let mbtiles = fixture.path("out.mbtiles");
    let tree = format!("{}/", fixture.path("tree").display());
    let pmtiles = fixture.path("out.pmtiles");
    let outputs = [
        mbtiles.to_str().unwrap().to_string(),
        tree,
        pmtiles.to_str().unwrap().to_string(),
        bucket.address("regional"),
    ];
    for output in &outputs {
        let env = bucket.env();
        run(&fixture, &["seed", "--output", output], &env).assert_success();
        assert_validates(&fixture, output, &env, output);
    }
}

/// `oar-tiles ARGS` run from `folder`.
fn run_in(fixture: &Fixture, folder: &Path, args: &[&str]) -> Run {
    let mut command: Command = oar_tiles_command(Some(&fixture.schema.url), args, &[]);
    run_from(command.current_dir(folder).output().expect("run oar-tiles"))
}

fn consumers(fixture: &mut Fixture, changes: &str) -> Vec<String> {
    fixture
        .schema
        .client()
        .query(
            &format!("SELECT output FROM \"{changes}\".consumers ORDER BY output"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS"]
fn one_output_is_one_consumer_whatever_its_config_is_named_by() {
    let points = hub_with_scatter(40, 5, 4, [3.1, 50.5, 3.4, 50.8]);
    let tileset = "output = \"out.mbtiles\"\nminzoom = 0\nmaxzoom = 6";
    let (mut fixture, changes) = captured("one_consumer", &points, "a.toml", tileset);
    let folder = fixture.dir.path().to_path_buf();
    let parent = folder.parent().unwrap().to_path_buf();
    let folder_name = folder.file_name().unwrap().to_str().unwrap().to_string();
    let by_parent = format!("{folder_name}/a.toml");
    let absolute = fixture.config.to_str().unwrap().to_string();
    let canonical = std::fs::canonicalize(&folder).unwrap().join("out.mbtiles");
    let rename = |fixture: &mut Fixture, round: u32| {
        fixture.schema.execute(&format!(
            "UPDATE {{schema}}.sites SET label = 'renamed {round}' WHERE site_id = 1"
        ));
    };

    run_in(&fixture, &folder, &["seed", "-c", "a.toml"]).assert_success();
    // Rows an earlier version named by the output as typed, and one of an output long gone.
    fixture.schema.execute(&format!(
        "INSERT INTO \"{changes}\".consumers (output, snapshot) VALUES
           ('out.mbtiles (MBTiles)', pg_current_snapshot()),
           ('{folder_name}/out.mbtiles (MBTiles)', pg_current_snapshot())
           ON CONFLICT (output) DO NOTHING;
         INSERT INTO \"{changes}\".consumers (output, snapshot, updated_at)
           VALUES ('/gone/old.mbtiles', pg_current_snapshot(), now() - interval '8 days')"
    ));
    rename(&mut fixture, 1);
    run_in(&fixture, &parent, &["seed", "-c", &by_parent, "--dirty"]).assert_success();
    rename(&mut fixture, 2);
    run_in(
        &fixture,
        Path::new("/"),
        &["seed", "-c", &absolute, "--dirty"],
    )
    .assert_success();
    assert_eq!(
        consumers(&mut fixture, &changes),
        vec![
            "/gone/old.mbtiles".to_string(),
            canonical.display().to_string()
        ]
    );

    let status = run_in(
        &fixture,
        Path::new("/"),
        &["changes", "-c", &absolute, "status"],
    );
    status.assert_success();
    assert!(
        status.stdout.contains("STALE")
            && status
                .stdout
                .contains("oar-tiles changes forget '/gone/old.mbtiles'")
            && status.stdout.matches("STALE").count() == 1,
        "{}",
        status.stdout
    );
    run_in(
        &fixture,
        &parent,
        &["changes", "-c", &by_parent, "forget", "/gone/old.mbtiles"],
    )
    .assert_success();
    rename(&mut fixture, 3);
    run_in(&fixture, &folder, &["seed", "-c", "a.toml", "--dirty"]).assert_success();
    assert_eq!(
        consumers(&mut fixture, &changes),
        vec![canonical.display().to_string()]
    );
    let logged: i64 = fixture
        .schema
        .client()
        .query_one(
            &format!("SELECT count(*) FROM \"{changes}\".change_log"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        logged, 0,
        "the change log is not pruned once its one consumer read it"
    );
}
