//! Configs that share one change schema (its default is one per database) never decide each
//! other's capture: the UPDATE trigger compares what every one of them renders, an install that
//! compares more reseeds older outputs whole once, and runs of configs naming their tilesets and
//! layers alike over one table keep each other's cluster cells.

use std::path::{Path, PathBuf};

use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::run::{oar_tiles, Run};

const ZOOMS: &str = "0-8";

/// A fixture of `sites` and its change schema, shared by the configs the test writes.
fn fixture(label: &str) -> (Fixture, String) {
    let points = hub_with_scatter(120, 11, 4, [106.6, 10.7, 106.8, 10.9]);
    let mut changes = String::new();
    let fixture = Fixture::new(label, &points, "unused.toml", |schema| {
        changes = schema.companion("cdc");
        String::new()
    });
    (fixture, changes)
}

/// Writes `name`: the tileset `sites` with the layer `sites` over the fixture's `sites`, rendering
/// `attributes` (a TOML array), logging into the change schema `changes`.
fn config(fixture: &Fixture, changes: &str, name: &str, attributes: &str, layer: &str) -> PathBuf {
    let path = fixture.path(name);
    let text = format!(
        r#"[changes]
schema = "{changes}"

[database]
url = "postgresql://unused@127.0.0.1:1/unused"
pool_size = 2

[[tileset]]
name = "sites"

[[tileset.layer]]
name = "sites"
table = "{}.sites"
geometry_column = "pt"
id_column = "site_id"
attributes = {attributes}
{layer}
"#,
        fixture.schema.name
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

/// Gives the sites `ids` a new `kind`, one statement each, as an editor would.
fn edit_kinds(fixture: &mut Fixture, ids: impl IntoIterator<Item = i64>, kind: &str) {
    for id in ids {
        fixture.schema.execute(&format!(
            "UPDATE {{schema}}.sites SET kind = '{kind}_{id}' WHERE site_id = {id}"
        ));
    }
}

/// Issue 84's case: b renders `kind`, a does not; b is installed, then a. Every `kind` edit is
/// still logged for b, whose reseed writes them all, and `changes status` shows the column kept.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_later_install_keeps_the_columns_another_config_renders() {
    let (mut fixture, changes) = fixture("shared_keeps");
    let b = config(&fixture, &changes, "b.toml", r#"["label", "kind"]"#, "");
    let a = config(&fixture, &changes, "a.toml", r#"["label"]"#, "");
    run(&fixture, &b, &["changes", "install"]).assert_success();
    run(&fixture, &a, &["changes", "install"]).assert_success();
    let output = fixture.path("b.mbtiles");
    seed(&fixture, &b, &output, &[]);

    let status = run(&fixture, &a, &["changes", "status"]);
    status.assert_success();
    assert!(
        status
            .stdout
            .contains("compared on UPDATE: kind, label, pt, site_id"),
        "a's status shows b's column compared too: {}",
        status.stdout
    );

    edit_kinds(&mut fixture, [4, 8, 12, 16, 20], "edited");
    let reseed = seed(&fixture, &b, &output, &["--dirty"]);
    assert!(
        !reseed.stderr.contains("seeded before change capture"),
        "a's install compared nothing new, so b's output is not reseeded whole: {}",
        reseed.stderr
    );
    assert_fresh(
        &fixture,
        &b,
        &output,
        "b's reseed after a was installed last",
    );
}

/// An install that compares a column no earlier install did: edits of it made before are in no
/// log, so an output seeded before is reseeded whole once, then from the log again.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn an_install_that_compares_more_reseeds_older_outputs_whole_once() {
    let (mut fixture, changes) = fixture("shared_widens");
    let a = config(&fixture, &changes, "a.toml", r#"["label"]"#, "");
    let b = config(&fixture, &changes, "b.toml", r#"["label", "kind"]"#, "");
    run(&fixture, &a, &["changes", "install"]).assert_success();
    let output = fixture.path("b.mbtiles");
    seed(&fixture, &b, &output, &[]);
    edit_kinds(&mut fixture, [4, 8, 12], "unlogged");
    run(&fixture, &b, &["changes", "install"]).assert_success();

    let first = seed(&fixture, &b, &output, &["--dirty"]);
    assert!(
        first.stderr.contains("seeded before change capture of"),
        "the reseed says why it renders everything: {}",
        first.stderr
    );
    assert_fresh(&fixture, &b, &output, "the first reseed after b's install");

    edit_kinds(&mut fixture, [16, 20], "logged");
    let second = seed(&fixture, &b, &output, &["--dirty"]);
    assert!(
        !second.stderr.contains("seeded before change capture"),
        "once: {}",
        second.stderr
    );
    assert_fresh(&fixture, &b, &output, "a later reseed");
}

/// Two configs of one table naming their tileset and layer alike but rendering other attributes,
/// clustered: their runs at the same time all succeed, each output right, since neither drops the
/// cluster cell table the other reads.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn same_named_configs_run_at_once_without_dropping_each_others_cells() {
    let (mut fixture, changes) = fixture("shared_cells");
    let cluster = "cluster_maxzoom = 6\ncluster_cell = 512";
    let configs = [
        config(&fixture, &changes, "a.toml", r#"["label"]"#, cluster),
        config(
            &fixture,
            &changes,
            "b.toml",
            r#"["label", "kind"]"#,
            cluster,
        ),
    ];
    for config in &configs {
        run(&fixture, config, &["changes", "install"]).assert_success();
    }
    let outputs: Vec<Vec<PathBuf>> = (0..2)
        .map(|c| {
            (0..3)
                .map(|i| fixture.path(&format!("{c}_{i}.mbtiles")))
                .collect()
        })
        .collect();
    for round in 0..3 {
        edit_kinds(&mut fixture, [4 + round, 40 + round], "round");
        let url = fixture.schema.url.as_str();
        let dirty: &[&str] = if round == 0 { &[] } else { &["--dirty"] };
        let runs: Vec<Run> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6)
                .map(|n| (&configs[n % 2], &outputs[n % 2][n / 2]))
                .map(|(config, output)| {
                    scope.spawn(move || {
                        let mut args = vec!["seed", "--config", config.to_str().unwrap()];
                        args.extend(["--zoom", ZOOMS, "--output", output.to_str().unwrap()]);
                        args.extend_from_slice(dirty);
                        oar_tiles(Some(url), &args)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (n, done) in runs.iter().enumerate() {
            assert_eq!(
                done.code, 0,
                "round {round}, run {n} failed: {}",
                done.stderr
            );
        }
    }
    for (config, outputs) in configs.iter().zip(&outputs) {
        for output in outputs {
            assert_fresh(&fixture, config, output, "a run among the other config's");
        }
    }
}
