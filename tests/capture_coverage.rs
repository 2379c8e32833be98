//! The operator's ordinary paths never leave an output silently stale: an output seeded before its
//! table's change capture was installed, two configs capturing one table under schemas of their
//! own, and triggers that are gone.

use std::path::{Path, PathBuf};

use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::run::{single_layer_config, Run};

const ZOOMS: &str = "0-8";

/// A fixture of `sites` with one config per change schema in `schemas` (`a.toml`, `b.toml`, …),
/// none installed.
fn fixture(label: &str, schemas: &[&str]) -> (Fixture, Vec<PathBuf>) {
    let points = hub_with_scatter(120, 7, 4, [106.6, 10.7, 106.8, 10.9]);
    let mut names = Vec::new();
    let fixture = Fixture::new(label, &points, "a.toml", |schema| {
        for suffix in schemas {
            names.push(schema.companion(suffix));
        }
        String::new()
    });
    let configs = names
        .iter()
        .enumerate()
        .map(|(i, changes)| write_config(&fixture, i, changes, "sites", ""))
        .collect();
    (fixture, configs)
}

/// Writes the `i`-th config (`a.toml`, `b.toml`, …): one layer over `table`, logging into the
/// change schema `changes`.
fn write_config(
    fixture: &Fixture,
    i: usize,
    changes: &str,
    table: &str,
    extra_layer: &str,
) -> PathBuf {
    let path = fixture.path(&format!("{}.toml", (b'a' + i as u8) as char));
    let text = format!(
        "[changes]\nschema = \"{changes}\"\n{}",
        single_layer_config(&fixture.schema.name, table, "", extra_layer)
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn run(fixture: &Fixture, config: &Path, args: &[&str]) -> Run {
    fixture.run_with(config, args)
}

fn seed(fixture: &Fixture, config: &Path, output: &Path, extra: &[&str]) -> Run {
    fixture.seed_with(config, ZOOMS, output, extra)
}

/// Holds `output` against a full seed of the rows as they are now, byte for byte.
fn assert_fresh(fixture: &Fixture, config: &Path, output: &Path, what: &str) {
    fixture.assert_fresh_with(config, ZOOMS, output, what)
}

/// Moves site `id` across the world, so tiles at every zoom change.
fn move_site(fixture: &mut Fixture, id: i64, lon: f64, lat: f64) {
    fixture.schema.execute(&format!(
        "UPDATE {{schema}}.sites SET pt = ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326) WHERE site_id = {id}"
    ));
}

/// The README's order: seed, edit, `changes install`, `seed --dirty`. The edit made before the
/// install is in no log; the reseed must see that and render the output whole, once.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn an_output_seeded_before_capture_is_reseeded_whole_once() {
    let (mut fixture, configs) = fixture("seeded_before", &["cdc"]);
    let config = &configs[0];
    let output = fixture.path("sites.mbtiles");
    seed(&fixture, config, &output, &[]);
    move_site(&mut fixture, 3, -70.0, 40.0);
    run(&fixture, config, &["changes", "install"]).assert_success();
    move_site(&mut fixture, 4, 20.0, -30.0);

    let first = seed(&fixture, config, &output, &["--dirty"]);
    assert!(
        first.stderr.contains("seeded before change capture of"),
        "the reseed says why it renders everything: {}",
        first.stderr
    );
    assert_fresh(
        &fixture,
        config,
        &output,
        "the first reseed after the install",
    );

    move_site(&mut fixture, 5, 100.0, 50.0);
    let second = seed(&fixture, config, &output, &["--dirty"]);
    assert!(
        !second.stderr.contains("seeded before change capture"),
        "said once: {}",
        second.stderr
    );
    assert_fresh(&fixture, config, &output, "a later reseed");
}

/// Two configs with schemas of their own on one table (a public tileset and an internal one): each
/// install keeps the other's triggers, each output follows every edit, and uninstalling one leaves
/// the other capturing.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn two_schemas_capture_one_table_independently() {
    let (mut fixture, configs) = fixture("two_schemas", &["public_cdc", "internal_cdc"]);
    let outputs = [fixture.path("a.mbtiles"), fixture.path("b.mbtiles")];
    for (config, output) in configs.iter().zip(&outputs) {
        run(&fixture, config, &["changes", "install"]).assert_success();
        seed(&fixture, config, output, &[]);
    }
    let status = run(&fixture, &configs[0], &["changes", "status"]);
    status.assert_success();
    let [a, b] = [&configs[0], &configs[1]].map(|c| {
        let text = std::fs::read_to_string(c).unwrap();
        text.lines()
            .nth(1)
            .unwrap()
            .split('"')
            .nth(1)
            .unwrap()
            .to_string()
    });
    assert!(
        status.stdout.contains(&a) && status.stdout.contains(&b),
        "status lists both schemas capturing the table: {}",
        status.stdout
    );

    move_site(&mut fixture, 3, -70.0, 40.0);
    for (config, output) in configs.iter().zip(&outputs) {
        seed(&fixture, config, output, &["--dirty"]);
        assert_fresh(&fixture, config, output, "each config's reseed");
    }

    run(&fixture, &configs[1], &["changes", "uninstall"]).assert_success();
    move_site(&mut fixture, 4, 20.0, -30.0);
    let after = seed(&fixture, &configs[0], &outputs[0], &["--dirty"]);
    assert!(
        !after.stderr.contains("reseeding everything"),
        "the other schema's capture is untouched: {}",
        after.stderr
    );
    assert_fresh(
        &fixture,
        &configs[0],
        &outputs[0],
        "the reseed after the other schema's uninstall",
    );
}

/// Triggers dropped behind the tool's back: the reseed refuses, naming the command that fixes it,
/// and after that command it renders the output whole.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn gone_triggers_stop_the_reseed_with_the_fix() {
    let (mut fixture, configs) = fixture("gone_triggers", &["cdc"]);
    let config = &configs[0];
    let output = fixture.path("sites.mbtiles");
    run(&fixture, config, &["changes", "install"]).assert_success();
    seed(&fixture, config, &output, &[]);
    let table = format!("\"{}\".sites", fixture.schema.name);
    let trigger: String = fixture
        .schema
        .client()
        .query_one(
            "SELECT tgname::text FROM pg_trigger WHERE tgrelid = $1::text::regclass AND tgname LIKE 'oar_tiles_capture_update%'",
            &[&table],
        )
        .unwrap()
        .get(0);
    fixture
        .schema
        .execute(&format!("DROP TRIGGER \"{trigger}\" ON {{schema}}.sites"));
    move_site(&mut fixture, 3, -70.0, 40.0);

    let refused = run(
        &fixture,
        config,
        &[
            "seed",
            "--zoom",
            ZOOMS,
            "--output",
            output.to_str().unwrap(),
            "--dirty",
        ],
    );
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("changes install"),
        "{}",
        refused.stderr
    );

    run(&fixture, config, &["changes", "install"]).assert_success();
    seed(&fixture, config, &output, &["--dirty"]);
    assert_fresh(&fixture, config, &output, "the reseed after reinstalling");
}

/// `changes install` before the table exists (a config written before the data is loaded) says the
/// table is missing; it named one of its columns before, which sent operators looking for a column.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn install_on_a_missing_table_names_the_table_not_a_column() {
    let (fixture, configs) = fixture("install_missing", &["cdc"]);
    let config = &configs[0];
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, text.replace(".sites\"", ".not_loaded_yet\"")).unwrap();
    let refused = run(&fixture, config, &["changes", "install"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("not_loaded_yet") && refused.stderr.contains("does not exist"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("has no column"),
        "{}",
        refused.stderr
    );
}

/// Two configs on one database share the default change schema, and both name their tileset and
/// layer `sites`, over two tables. Each keeps its own cluster cell table: the other's run must not
/// drop it as "an earlier config" (which failed a run using it at that moment with "relation …
/// does not exist", and rebuilt the cells from scratch at every run of either).
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn two_configs_with_the_same_names_over_two_tables_keep_their_own_cluster_cells() {
    let points = hub_with_scatter(120, 7, 4, [106.6, 10.7, 106.8, 10.9]);
    let mut changes = String::new();
    let mut fixture = Fixture::new("cells_owner", &points, "a.toml", |schema| {
        changes = schema.companion("cdc");
        String::new()
    });
    fixture.schema.execute(
        "CREATE TABLE {schema}.other_sites AS SELECT * FROM {schema}.sites;
         ALTER TABLE {schema}.other_sites ADD PRIMARY KEY (site_id);
         CREATE INDEX ON {schema}.other_sites USING gist (pt);",
    );
    let configs: Vec<PathBuf> = ["sites", "other_sites"]
        .iter()
        .enumerate()
        .map(|(i, table)| write_config(&fixture, i, &changes, table, "cluster_maxzoom = 5"))
        .collect();
    for config in &configs {
        run(&fixture, config, &["changes", "install"]).assert_success();
    }
    let outputs: Vec<PathBuf> = ["a.mbtiles", "b.mbtiles"]
        .iter()
        .map(|name| fixture.path(name))
        .collect();
    for _ in 0..2 {
        for (config, output) in configs.iter().zip(&outputs) {
            let done = seed(&fixture, config, output, &[]);
            assert!(
                !done.stderr.contains("earlier config"),
                "a run dropped the other config's cluster cells:\n{}",
                done.stderr
            );
        }
    }
    let tables: i64 = fixture
        .schema
        .client()
        .query_one(
            &format!("SELECT count(*) FROM \"{changes}\".cell_state"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 2, "one cluster cell table per config");
}
