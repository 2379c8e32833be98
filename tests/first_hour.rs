//! An operator's first hour: what a cron line prints, what a served tree needs, and the messages
//! that meet a first mistake.

use crate::common::nginx::{nginx_block_of_the_book, Nginx};
use crate::common::reseed::Setup;
use crate::common::run::{oar_tiles, read_tree, single_layer_config};
use crate::common::serve::get;

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
    let forms = oar_tiles::output_forms();
    let forms: Vec<&str> = forms
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

/// A tileset config whose `[database] url` names another server than `DATABASE_URL`, in `dir`.
fn config_in(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("oar.toml");
    let output = dir.join("out.mbtiles");
    let text = single_layer_config("public", "sites", "", "").replace(
        "name = \"sites\"\n\n",
        &format!("name = \"sites\"\noutput = \"{}\"\n\n", output.display()),
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// A connection error made with `DATABASE_URL` says the URL came from there: the config's own
/// `url` was never tried, and an operator reading it would look in vain.
#[test]
fn a_connection_error_says_the_url_came_from_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let args = ["seed", "--config", config.to_str().unwrap()];
    let from_env = oar_tiles(Some("postgresql://nobody@127.0.0.1:1/nowhere"), &args);
    assert_eq!(from_env.code, 1, "{}", from_env.stderr);
    assert!(
        from_env.stderr.contains("nobody@127.0.0.1:1/nowhere")
            && from_env.stderr.contains("came from DATABASE_URL"),
        "{}",
        from_env.stderr
    );
    let from_config = oar_tiles(None, &args);
    assert_eq!(from_config.code, 1, "{}", from_config.stderr);
    assert!(
        !from_config.stderr.contains("DATABASE_URL"),
        "{}",
        from_config.stderr
    );
}

/// A server that asks for a password the URL does not hold: the message says where one goes.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_missing_password_says_where_one_goes() {
    let url = crate::common::env::required_env("OAR_TILES_TEST_DATABASE_URL");
    let (scheme, rest) = url.split_once("://").unwrap();
    let (credentials, server) = rest.split_once('@').unwrap();
    let user = credentials.split(':').next().unwrap();
    let without_password = format!("{scheme}://{user}@{server}");
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let home = dir.path().to_str().unwrap();
    let run = crate::common::run::oar_tiles_with(
        Some(&without_password),
        &["seed", "--config", config.to_str().unwrap()],
        &[("HOME", home), ("PGPASSFILE", "/nonexistent")],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("password missing")
            && run.stderr.contains("PGPASSWORD")
            && run.stderr.contains("~/.pgpass"),
        "{}",
        run.stderr
    );
}

/// A tree seeded without `tiles_url` names relative tile URLs: seed warns and exits 0, and
/// validate says the same as a warning and exits 0 too (it used to fail the tree, exit 1).
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn seed_and_validate_judge_a_tree_without_tiles_url_alike() {
    let setup = Setup::new("relativeurl", "");
    let tree = setup.path("tree");
    let address = format!("dir:{}", tree.display());
    let seeded = setup.seed(std::path::Path::new(&address), &[]);
    assert!(
        seeded.stderr.contains("names relative tile URLs"),
        "{}",
        seeded.stderr
    );
    let validated = oar_tiles(None, &["validate", &address]);
    assert_eq!(
        validated.code, 0,
        "{}\n{}",
        validated.stdout, validated.stderr
    );
    assert!(
        validated.stdout.contains("valid;")
            && validated.stdout.contains("warning: tiles.json `tiles[0]`")
            && validated.stdout.contains("set tiles_url"),
        "{}",
        validated.stdout
    );
}

/// A tree seeded by the tool and served by Debian's nginx with the book's server block, changed
/// only in where it listens and where its root is: tiles come gzipped with their type, a tile
/// that does not exist is an empty 204, `tiles.json` is served, and the tool's own files are not.
#[test]
#[ignore = "needs PostGIS and nginx: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL and OAR_TILES_TEST_NGINX"]
fn the_books_nginx_block_serves_a_seeded_tree() {
    // Nginx::start below needs OAR_TILES_TEST_NGINX; asked first so a missing one fails at once.
    crate::common::env::required_env("OAR_TILES_TEST_NGINX");
    let setup = Setup::new("nginxtree", "");
    let www = setup.path("www");
    let tree = www.join("tiles");
    // The lock lies beside the tree: its parent exists and is writable, as the book says.
    std::fs::create_dir(&www).unwrap();
    setup.seed(
        std::path::Path::new(&format!("dir:{}", tree.display())),
        &[],
    );
    let tile = read_tree(&tree, "pbf")
        .into_keys()
        .find(|(z, _, _)| *z == 3)
        .expect("the seed wrote a z3 tile");

    // What a killed run leaves beside the tree: its lock file (pid and host), a partition's lock.
    std::fs::write(
        www.join("tiles.oar-tiles.lock"),
        "pid 1 on builder since 2026",
    )
    .unwrap();
    std::fs::create_dir(www.join("tiles.oar-tiles-locks")).unwrap();
    std::fs::write(
        www.join("tiles.oar-tiles-locks/BD.lock"),
        "pid 1 on builder",
    )
    .unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let book = nginx_block_of_the_book();
    let block = book
        .replacen("listen 80;", &format!("listen 127.0.0.1:{port};"), 1)
        .replacen("root /var/www;", &format!("root {};", www.display()), 1);
    assert_eq!(block.matches(&format!(":{port};")).count(), 1, "{book}");
    assert!(
        block.contains(&format!("root {};", www.display())),
        "{book}"
    );
    let server = Nginx::start(&setup.path("nginx"), &block, port);
    let log = || server.log();
    let (z, x, y) = tile;
    let get = |path: &str| get(port, path, "tiles.example.org");
    let (found, missing, tilejson, state, locks) = (
        get(&format!("/tiles/{z}/{x}/{y}.pbf")),
        get("/tiles/14/0/0.pbf"),
        get("/tiles/tiles.json"),
        get("/tiles/.oar-tiles-state.json"),
        [
            get("/tiles.oar-tiles.lock"),
            get("/tiles.oar-tiles-locks/BD.lock"),
        ],
    );
    assert_eq!(found.status, 200, "{}", log());
    assert_eq!(found.header("content-encoding"), "gzip");
    assert_eq!(
        found.header("content-type"),
        "application/vnd.mapbox-vector-tile"
    );
    let stored = std::fs::read(tree.join(format!("{}/{}/{}.pbf", tile.0, tile.1, tile.2))).unwrap();
    assert_eq!(
        found.body, stored,
        "the tile's stored (gzipped) bytes, as they are"
    );
    assert_eq!(missing.status, 204, "an empty tile");
    assert!(missing.body.is_empty());
    assert_eq!(tilejson.status, 200);
    assert_eq!(tilejson.json()["tilejson"], "3.0.0");
    assert_eq!(state.status, 404, "the tool's own files are not served");
    for lock in locks {
        assert_eq!(
            lock.status,
            404,
            "nor the locks beside the tree: {}",
            lock.text()
        );
    }
}
