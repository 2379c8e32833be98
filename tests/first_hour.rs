//! An operator's first hour: what a cron line prints, what a served tree needs, and the messages
//! that meet a first mistake.

use crate::common::reseed::Setup;
use crate::common::run::{oar_tiles, single_layer_config};

/// Cron mails whatever a job prints, so `-q seed --dirty` with nothing to do prints nothing on
/// stdout; once a row changed, the same line prints the summary.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_quiet_reseed_with_nothing_to_do_prints_nothing() {
    let mut setup = Setup::new("quietcron", "");
    let output = setup.path("quiet.mbtiles");
    setup.seed(&output, &[]);

    let idle = setup.seed(&output, &["-q", "--dirty"]);
    assert_eq!(idle.stdout, "", "stderr:\n{}", idle.stderr);
    let again = setup.seed(&output, &["-q", "--dirty"]);
    assert_eq!(again.stdout, "", "stderr:\n{}", again.stderr);

    setup
        .schema
        .execute("UPDATE {schema}.sites SET label = 'renamed' WHERE site_id = 3");
    let changed = setup.seed(&output, &["-q", "--dirty"]);
    assert!(
        changed.stdout.contains("changed"),
        "a reseed that changed tiles says so:\n{}",
        changed.stdout
    );
}

/// Every command that takes an output lists every form the address parser takes, from its own
/// list (`az://` was missing from all of them).
#[test]
fn every_output_argument_lists_every_output_form() {
    let forms: Vec<&str> = oar_tiles::OUTPUT_FORMS
        .split(", ")
        .flat_map(|part| part.split(" or "))
        .collect();
    assert!(forms.len() >= 8, "{forms:?}");
    for command in ["seed", "serve", "validate", "inspect", "shard-plan"] {
        let help = oar_tiles(None, &[command, "--help"]);
        help.assert_success();
        let words: Vec<&str> = help.stdout.split_whitespace().collect();
        let text = words.join(" ");
        for form in &forms {
            assert!(
                text.contains(form),
                "`{command} --help` lacks {form}:\n{text}"
            );
        }
    }
}

/// `shard-plan` takes only the options that decide a plan, so its help lists nothing it would
/// ignore, and a seed-only flag is refused rather than silently dropped.
#[test]
fn shard_plan_lists_and_takes_only_its_own_options() {
    let help = oar_tiles(None, &["shard-plan", "--help"]);
    help.assert_success();
    for own in [
        "--tileset",
        "--zoom",
        "--bbox",
        "--output",
        "--shards",
        "--dry-run",
    ] {
        assert!(help.stdout.contains(own), "{own}:\n{}", help.stdout);
    }
    for seed_only in [
        "--dirty",
        "--tiles-from",
        "--keep-going",
        "--changed-list",
        "--partition",
        "--max-duration",
        "--check-edge",
        "--verify-sample",
        "--summary-json",
        "--shard ",
    ] {
        assert!(
            !help.stdout.contains(seed_only),
            "{seed_only}:\n{}",
            help.stdout
        );
    }
    let refused = oar_tiles(None, &["shard-plan", "--shards", "2", "--dirty"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
}

/// A port in use is one error with one exit code, whichever command meets it: `watch` exited 2
/// (a configuration error) and `serve` 1.
#[test]
fn a_port_in_use_fails_serve_and_watch_with_the_same_code_and_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let config = dir.path().join("oar.toml");
    let text = single_layer_config("public", "sites", "", "").replace(
        "name = \"sites\"\n\n",
        &format!(
            "name = \"sites\"\noutput = \"{}/\"\ntiles_url = \"https://tiles.example/{{z}}/{{x}}/{{y}}.pbf\"\n\n",
            tree.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let tree_arg = format!("{}/", tree.display());
    let config_arg = config.to_str().unwrap();
    let serve = oar_tiles(None, &["serve", "--listen", &address, &tree_arg]);
    let watch = oar_tiles(
        None,
        &["watch", "--config", config_arg, "--listen", &address],
    );
    for (command, run) in [("serve", &serve), ("watch", &watch)] {
        assert_eq!(run.code, 1, "{command}: {}", run.stderr);
        let expected = format!("cannot listen on {address}");
        assert!(run.stderr.contains(&expected), "{command}: {}", run.stderr);
        assert!(
            run.stderr.contains("choose another with --listen"),
            "{command}: {}",
            run.stderr
        );
    }
}
