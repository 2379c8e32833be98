//! Production PostgreSQL: TLS with libpq's sslmodes against real certificates, libpq's environment
//! and password file, PgBouncer in transaction pooling mode, and a hot standby. The servers come
//! from `scripts/pg-test-servers.sh` (run by `scripts/test.sh`): TLS on the test cluster with a
//! throw-away CA, PgBouncer on loopback (a server without TLS, too), and a standby made with
//! `pg_basebackup -R`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::common::env::required_env;
use crate::common::fixture::Fixture;
use crate::common::pg::{hub_with_scatter, test_url, wait_for_replay, Point};
use crate::common::run::{
    assert_same_tiles, journaled_tiles, oar_tiles_command, oar_tiles_with, read_mbtiles_raw,
    run_from, send_signal, single_layer_config, wait_for_progress, Run,
};

/// Directory of the test CA's files (`ca.crt`, `client.crt`, …).
fn tls_dir() -> PathBuf {
    PathBuf::from(required_env("OAR_TILES_TEST_TLS_DIR"))
}

fn cert(name: &str) -> String {
    tls_dir().join(name).display().to_string()
}

/// Port and database of the test cluster, which also speaks TLS.
fn server() -> (u16, String) {
    let config = postgres::Config::from_str(&test_url()).unwrap();
    (
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_dbname().unwrap().to_string(),
    )
}

/// A URL for `user` (whose password is its name) at `host` of the test cluster, with `query`.
fn url_for(user: &str, host: &str, query: &str) -> String {
    let (port, db) = server();
    format!("postgresql://{user}:{user}@{host}:{port}/{db}?{query}")
}

fn points() -> Vec<Point> {
    hub_with_scatter(300, 13, 3, [-74.1, 40.6, -73.8, 40.9])
}

/// A fixture whose config is completed by `database` lines in `[database]`.
fn fixture(label: &str, database: &str, extra_layer: &str) -> Fixture {
    Fixture::new(label, &points(), "prod.toml", |schema| {
        single_layer_config(&schema.name, "sites", "", extra_layer).replace(
            "pool_size = 2",
            &format!("pool_size = 2\nmax_attempts = 2\n{database}"),
        )
    })
}

/// Seeds zooms `zoom` of the fixture into `output` through `url` with `envs` and an empty HOME
/// (so no `~/.postgresql` or `~/.pgpass` of the machine takes part).
fn seed(
    setup: &Fixture,
    url: Option<&str>,
    output: &str,
    zoom: &str,
    envs: &[(&str, &str)],
) -> Run {
    let home = setup.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut all = vec![("HOME", home.to_str().unwrap())];
    all.extend_from_slice(envs);
    oar_tiles_with(url, &setup.seed_args(output, zoom, &[]), &all)
}

#[track_caller]
fn assert_fails(run: &Run, code: i32, needle: &str, case: &str) {
    assert_eq!(run.code, code, "{case}: {}", run.stderr);
    assert!(
        run.stderr.contains(needle),
        "{case}: expected `{needle}` in: {}",
        run.stderr
    );
    let errors = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .count();
    assert_eq!(errors, 1, "{case}: one error line, got: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{case}: {}", run.stderr);
}

#[test]
#[ignore = "needs PostGIS with TLS: run scripts/test.sh, which sets OAR_TILES_TEST_TLS_DIR"]
fn every_sslmode_against_the_right_and_the_wrong_certificate() {
    let setup = fixture("sslmodes", "", "");
    let (ca, other) = (cert("ca.crt"), cert("other-ca.crt"));
    let out = format!("dir:{}", setup.path("out").display());
    // `oar_tiles_tls` may only connect over TLS (pg_hba: hostnossl … reject).
    let tls = |host: &str, query: &str| url_for("oar_tiles_tls", host, query);
    let good = [
        (
            "verify-full, right name",
            tls(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
        ),
        (
            "verify-ca, another name",
            tls("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
        ),
        (
            "require, no root certificate",
            tls("127.0.0.1", "sslmode=require"),
        ),
        ("prefer (the default), TLS offered", tls("127.0.0.1", "")),
        (
            "allow, plain refused so TLS",
            tls("127.0.0.1", "sslmode=allow"),
        ),
    ];
    for (case, url) in &good {
        seed(&setup, Some(url), &out, "0-2", &[]).assert_success();
        assert!(setup.path("out/0/0/0.pbf").exists(), "{case}");
    }
    let bad = [
        (
            "verify-full, wrong name",
            tls(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            1,
            "certificate verify failed for 127.0.0.1:",
        ),
        (
            "verify-full, unknown CA",
            tls(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={other}"),
            ),
            1,
            "unknown issuer",
        ),
        (
            "verify-ca, unknown CA",
            tls(
                "localhost",
                &format!("sslmode=verify-ca&sslrootcert={other}"),
            ),
            1,
            "certificate verify failed for localhost:",
        ),
        // As libpq: with a root certificate at hand, require checks the chain too.
        (
            "require with a root certificate",
            tls("localhost", &format!("sslmode=require&sslrootcert={other}")),
            1,
            "unknown issuer",
        ),
        (
            "disable, TLS required by the server",
            tls("127.0.0.1", "sslmode=disable"),
            1,
            "no encryption",
        ),
        (
            "verify-full without any root",
            tls("localhost", "sslmode=verify-full"),
            2,
            "needs a root certificate",
        ),
        (
            "root certificate file missing",
            tls(
                "localhost",
                "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
            ),
            2,
            "cannot read certificate file /nonexistent/ca.pem",
        ),
    ];
    for (case, url, code, needle) in &bad {
        assert_fails(
            &seed(&setup, Some(url), &out, "0-2", &[]),
            *code,
            needle,
            case,
        );
    }
}

#[test]
#[ignore = "needs PostGIS with TLS: run scripts/test.sh, which sets OAR_TILES_TEST_TLS_DIR"]
fn client_certificates_are_presented_and_checked() {
    let setup = fixture("clientcert", "", "");
    let out = format!("dir:{}", setup.path("out").display());
    let ca = cert("ca.crt");
    let with = |user: &str, cert_name: &str| {
        url_for(
            user,
            "localhost",
            &format!(
                "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
                cert(&format!("{cert_name}.crt")),
                cert(&format!("{cert_name}.key"))
            ),
        )
    };
    // Certificate authentication: the certificate alone, its CN naming the role.
    seed(
        &setup,
        Some(&with("oar_tiles_cert", "client")),
        &out,
        "0-2",
        &[],
    )
    .assert_success();
    // A password and a certificate (clientcert=verify-full).
    seed(
        &setup,
        Some(&with("oar_tiles_clientcert", "clientcert")),
        &out,
        "0-2",
        &[],
    )
    .assert_success();
    let without = url_for(
        "oar_tiles_cert",
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    assert_fails(
        &seed(&setup, Some(&without), &out, "0-2", &[]),
        1,
        "certificate",
        "no client certificate",
    );
    assert_fails(
        &seed(
            &setup,
            Some(&with("oar_tiles_cert", "client-wrong")),
            &out,
            "0-2",
            &[],
        ),
        1,
        "localhost:",
        "a client certificate of another CA",
    );
    // A key others may read is refused before connecting, as libpq refuses it.
    let open_key = setup.path("open.key");
    std::fs::copy(cert("client.key"), &open_key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url =
        with("oar_tiles_cert", "client").replace(&cert("client.key"), open_key.to_str().unwrap());
    assert_fails(
        &seed(&setup, Some(&url), &out, "0-2", &[]),
        2,
        "group or world access",
        "open key",
    );
}

#[test]
#[ignore = "needs PgBouncer: run scripts/test.sh, which sets OAR_TILES_TEST_PGBOUNCER_URL"]
fn a_server_without_tls_is_refused_only_when_tls_is_required() {
    let setup = fixture("notls", "pool_mode = \"transaction\"", "");
    let out = format!("dir:{}", setup.path("out").display());
    let bouncer = required_env("OAR_TILES_TEST_PGBOUNCER_URL");
    let with = |query: &str| format!("{bouncer}?{query}");
    seed(&setup, Some(&with("sslmode=prefer")), &out, "0-2", &[]).assert_success();
    seed(&setup, Some(&with("sslmode=allow")), &out, "0-2", &[]).assert_success();
    for mode in ["require", "verify-ca", "verify-full"] {
        let url = with(&format!("sslmode={mode}&sslrootcert={}", cert("ca.crt")));
        let run = seed(&setup, Some(&url), &out, "0-2", &[]);
        assert_fails(
            &run,
            1,
            &format!("does not support TLS, and sslmode={mode} requires it"),
            mode,
        );
    }
}

#[test]
#[ignore = "needs PostGIS with TLS: run scripts/test.sh, which sets OAR_TILES_TEST_TLS_DIR"]
fn libpq_environment_and_password_file_fill_in_what_the_config_leaves_out() {
    // No URL in the config and no DATABASE_URL: PG* variables and the password file say it all.
    let setup = Fixture::new("pgenv", &points(), "prod.toml", |schema| {
        single_layer_config(&schema.name, "sites", "", "")
            .replace("url = \"postgresql://unused@127.0.0.1:1/unused\"\n", "")
    });
    let (port, db) = server();
    let pgpass = setup.path("pgpass");
    std::fs::write(
        &pgpass,
        format!("localhost:{port}:{db}:oar_tiles_tls:oar_tiles_tls\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = port.to_string();
    let ca = cert("ca.crt");
    let envs = [
        ("PGHOST", "localhost"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "oar_tiles_tls"),
        ("PGDATABASE", db.as_str()),
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", ca.as_str()),
        ("PGPASSFILE", pgpass.to_str().unwrap()),
    ];
    let out = format!("dir:{}", setup.path("out").display());
    seed(&setup, None, &out, "0-2", &envs).assert_success();
    // The password file is ignored when others may read it (libpq's rule), and the server says no.
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = seed(&setup, None, &out, "0-2", &envs);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("group or world access"),
        "{}",
        run.stderr
    );
    // A Unix socket as the host.
    let socket = format!(
        "host=/var/run/postgresql port={port} dbname={db} user=oar_tiles password=oar_tiles"
    );
    seed(&setup, Some(&socket), &out, "0-2", &[]).assert_success();
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn the_job_names_itself_in_pg_stat_activity() {
    let mut setup = fixture("appname", "", "");
    // The run's first statement on the table waits behind this lock, so its session can be found
    // as the one this lock blocks (other tests' runs are named oar-tiles too).
    let mut locker = postgres::Client::connect(&setup.schema.url, postgres::NoTls).unwrap();
    let locker_pid: i32 = locker
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let mut lock = locker.transaction().unwrap();
    let table = format!("\"{}\".sites", setup.schema.name);
    lock.batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .unwrap();
    let out = setup.path("out.mbtiles").display().to_string();
    let args = setup.seed_args(&out, "0-3", &[]);
    let mut child = oar_tiles_command(Some(&setup.schema.url), &args, &[])
        .spawn()
        .unwrap();
    let started = Instant::now();
    let names: Vec<String> = loop {
        let rows = setup
            .schema
            .client()
            .query(
                "SELECT application_name FROM pg_stat_activity
                 WHERE $1 = ANY (pg_blocking_pids(pid))",
                &[&locker_pid],
            )
            .unwrap();
        if !rows.is_empty() {
            break rows.iter().map(|r| r.get(0)).collect();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it queried the table"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run never queried the table"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    lock.rollback().unwrap();
    let run = run_from(child.wait_with_output().unwrap());
    run.assert_success();
    assert_eq!(
        names,
        ["oar-tiles"],
        "the waiting session's application_name"
    );
}

#[test]
#[ignore = "needs PostGIS with TLS: run scripts/test.sh, which sets OAR_TILES_TEST_TLS_DIR"]
fn passwords_never_appear_in_logs_errors_or_summaries() {
    let mut setup = fixture("secrets", "", "");
    let role = format!("{}_pw", setup.schema.name);
    let password = "Sekr1t-Passw0rd-7f3a";
    setup.schema.execute(&format!(
        "CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'"
    ));
    let (port, db) = server();
    let base = format!("postgresql://{role}:{password}@localhost:{port}/{db}");
    let summary = setup.path("summary.json");
    let cases = [
        format!("{base}?sslmode=verify-full&sslrootcert={}", cert("ca.crt")),
        format!(
            "{base}?sslmode=verify-full&sslrootcert={}",
            cert("other-ca.crt")
        ),
        format!("{base}?sslmode=verify-full"),
        format!("postgresql://{role}:{password}@localhost:1/{db}"),
        format!("postgresql://{role}:{password}@localhost:{port}/{db}?sslmode=sure"),
        format!("host=localhost port={port} user={role} password={password} dbname={db} oops"),
    ];
    let out = setup.path("out.mbtiles").display().to_string();
    for url in &cases {
        let args = setup.seed_args(&out, "0-2", &["--summary-json", summary.to_str().unwrap()]);
        let home = setup.path("home");
        std::fs::create_dir_all(&home).unwrap();
        let envs = [
            ("HOME", home.to_str().unwrap()),
            ("RUST_LOG", "oar_tiles=debug"),
        ];
        let run = oar_tiles_with(Some(url), &args, &envs);
        let written = std::fs::read_to_string(&summary).unwrap_or_default();
        for text in [&run.stdout, &run.stderr, &written] {
            assert!(
                !text.contains(password),
                "the password leaked for {url}: {text}"
            );
        }
    }
    setup.schema.execute(&format!("DROP ROLE {role}"));
}

/// A direct seed of the fixture's config (the reference).
fn direct_seed(setup: &Fixture, config: &Path, name: &str, zoom: &str) -> PathBuf {
    let output = setup.path(name);
    let mut args = setup.seed_args(output.to_str().unwrap(), zoom, &[]);
    args[2] = config.to_str().unwrap();
    oar_tiles_with(Some(&setup.schema.url), &args, &[]).assert_success();
    output
}

/// Seeds zooms 0-9 (with `extra`) into `output` through `url`, then checks that a direct seed with
/// `direct` (the same config, no pooler) gives the same tiles.
fn seed_through_matches_direct(
    setup: &Fixture,
    url: &str,
    direct: &Path,
    output: &Path,
    extra: &str,
    what: &str,
) {
    let mut args = setup.seed_args(output.to_str().unwrap(), "0-9", &[]);
    args.extend(Some(extra).filter(|e| !e.is_empty()));
    oar_tiles_with(Some(url), &args, &[]).assert_success();
    let reference = direct_seed(
        setup,
        direct,
        &format!("direct-{}.mbtiles", extra.len()),
        "0-9",
    );
    assert_same_tiles(
        &read_mbtiles_raw(&reference),
        &read_mbtiles_raw(output),
        what,
    );
}

#[test]
#[ignore = "needs PgBouncer: run scripts/test.sh, which sets OAR_TILES_TEST_PGBOUNCER_URL"]
fn seeds_and_reseeds_through_pgbouncer_without_prepared_statements_equal_direct_runs() {
    seeds_and_reseeds_through("OAR_TILES_TEST_PGBOUNCER_URL");
}

#[test]
#[ignore = "needs PgBouncer: run scripts/test.sh, which sets OAR_TILES_TEST_PGBOUNCER_PREPARED_URL"]
fn seeds_and_reseeds_through_pgbouncer_keeping_prepared_statements_equal_direct_runs() {
    seeds_and_reseeds_through("OAR_TILES_TEST_PGBOUNCER_PREPARED_URL");
}

/// Change capture, a seed, a reseed after changes and a `--keep-going` run with a timed-out tile,
/// all through the transaction pooler at `$url_env`, each compared with a direct run.
fn seeds_and_reseeds_through(url_env: &str) {
    let bouncer = required_env(url_env);
    let mut changes = String::new();
    let mut setup = Fixture::new("bouncer", &points(), "prod.toml", |schema| {
        changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(&schema.name, "sites", "", "cluster_maxzoom = 6").replace(
                "pool_size = 2",
                "pool_size = 3\npool_mode = \"transaction\""
            )
        )
    });
    let direct = setup.path("direct.toml");
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(&direct, text.replace("pool_mode = \"transaction\"\n", "")).unwrap();
    // Change capture, cluster cells (refreshed under an advisory transaction lock) and the
    // consumer records all go through the pooler.
    let config = setup.config.to_str().unwrap();
    oar_tiles_with(
        Some(&bouncer),
        &["changes", "install", "--config", config],
        &[],
    )
    .assert_success();
    let pooled = setup.path("pooled.mbtiles");
    seed_through_matches_direct(
        &setup,
        &bouncer,
        &direct,
        &pooled,
        "",
        "seed through PgBouncer",
    );

    setup.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(-73.95, 40.75), 4326) WHERE site_id % 7 = 0;
         DELETE FROM {schema}.sites WHERE site_id % 11 = 0;
         INSERT INTO {schema}.sites (site_id, label, pt) VALUES (9001, 'new', ST_SetSRID(ST_MakePoint(2.35, 48.85), 4326));",
    );
    seed_through_matches_direct(
        &setup,
        &bouncer,
        &direct,
        &pooled,
        "--dirty",
        "reseed through PgBouncer",
    );

    // A session setting (statement_timeout) still holds per transaction: a slow tile times out,
    // --keep-going names it, and the rest is written.
    let slow = setup.path("slow.toml");
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace(
            "pool_mode = \"transaction\"",
            "pool_mode = \"transaction\"\nstatement_timeout = \"1s\"\nmax_attempts = 2",
        )
        .replace(
            "cluster_maxzoom = 6",
            "filter = \"(site_id <> 9001 OR pg_sleep(2) IS NOT NULL)\"",
        );
    std::fs::write(&slow, text).unwrap();
    let failed = setup.path("failed.txt");
    let kept = setup.path("kept.mbtiles");
    let run = oar_tiles_with(
        Some(&bouncer),
        &[
            "seed",
            "--config",
            slow.to_str().unwrap(),
            "--zoom",
            "3-5",
            "--output",
            kept.to_str().unwrap(),
            "--keep-going",
            failed.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("statement timeout"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(&failed).unwrap().trim(),
        "3/4/2",
        "the tile of 9001 at zoom 3"
    );
    assert!(read_mbtiles_raw(&kept).keys().any(|(z, _, _)| *z == 5));
}

#[test]
#[ignore = "needs PgBouncer: run scripts/test.sh, which sets OAR_TILES_TEST_PGBOUNCER_URL"]
fn an_interrupted_seed_through_pgbouncer_is_resumed_to_the_same_tiles() {
    let bouncer = required_env("OAR_TILES_TEST_PGBOUNCER_URL");
    let mut setup = fixture(
        "bouncerint",
        "pool_mode = \"transaction\"",
        "filter = \"site_id % 10 <> 0 OR pg_sleep(0.0005) IS NOT NULL\"",
    );
    setup.schema.execute("INSERT INTO {schema}.sites (site_id, label, pt)
        SELECT 10000 + g, 'extra', ST_SetSRID(ST_MakePoint(-74 + g * 0.0001, 40.7 + (g % 37) * 0.001), 4326)
        FROM generate_series(1, 3000) g; ANALYZE {schema}.sites;");
    let output = setup.path("out.mbtiles");
    let args = setup.seed_args(output.to_str().unwrap(), "0-12", &[]);
    let mut child = oar_tiles_command(Some(&bouncer), &args, &[])
        .spawn()
        .unwrap();
    wait_for_progress(&mut child, &output);
    send_signal(&child, libc::SIGINT);
    let stopped = run_from(child.wait_with_output().unwrap());
    assert_eq!(stopped.code, 130, "{}", stopped.stderr);
    assert!(journaled_tiles(&output) > 0);
    oar_tiles_with(Some(&bouncer), &args, &[]).assert_success();
    let direct = setup.path("direct.toml");
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(&direct, text.replace("pool_mode = \"transaction\"\n", "")).unwrap();
    let reference = direct_seed(&setup, &direct, "direct.mbtiles", "0-12");
    assert_same_tiles(
        &read_mbtiles_raw(&reference),
        &read_mbtiles_raw(&output),
        "resumed through PgBouncer",
    );
}

#[test]
#[ignore = "needs PgBouncer: run scripts/test.sh, which sets OAR_TILES_TEST_PGBOUNCER_URL"]
fn session_settings_through_a_transaction_pooler_get_a_hint() {
    let bouncer = required_env("OAR_TILES_TEST_PGBOUNCER_URL");
    let setup = fixture("bouncerhint", "", "");
    let out = format!("dir:{}", setup.path("out").display());
    let run = seed(&setup, Some(&bouncer), &out, "0-2", &[]);
    assert_fails(
        &run,
        1,
        "pool_mode = \"transaction\"",
        "session mode through PgBouncer",
    );
}

/// Waits until the standby has replayed everything the primary has written so far.
#[test]
#[ignore = "needs a standby: run scripts/test.sh, which sets OAR_TILES_TEST_STANDBY_URL"]
fn a_hot_standby_seeds_and_reseeds_like_the_primary_without_writing() {
    let standby = required_env("OAR_TILES_TEST_STANDBY_URL");
    let mut changes = String::new();
    let mut setup = Fixture::new("standby", &points(), "prod.toml", |schema| {
        changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(&schema.name, "sites", "", "cluster_maxzoom = 6")
        )
    });
    let config = setup.config.to_str().unwrap().to_string();
    oar_tiles_with(
        Some(&setup.schema.url),
        &["changes", "install", "--config", &config],
        &[],
    )
    .assert_success();
    wait_for_replay(&mut setup.schema, &standby);
    let replica = setup.path("replica.mbtiles");
    // Primary first in the host list: target_session_attrs picks the standby, as libpq does.
    let (port, db) = server();
    let standby_port = postgres::Config::from_str(&standby).unwrap().get_ports()[0];
    let either = format!(
        "postgresql://oar_tiles:oar_tiles@127.0.0.1:{port},127.0.0.1:{standby_port}/{db}?target_session_attrs=read-only"
    );
    let run = oar_tiles_with(
        Some(&either),
        &setup.seed_args(replica.to_str().unwrap(), "0-9", &[]),
        &[],
    );
    run.assert_success();
    assert!(run.stderr.contains("read-only standby"), "{}", run.stderr);
    let primary = direct_seed(&setup, &setup.config, "primary.mbtiles", "0-9");
    assert_same_tiles(
        &read_mbtiles_raw(&primary),
        &read_mbtiles_raw(&replica),
        "seed from the standby",
    );

    setup.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(-73.9, 40.8), 4326) WHERE site_id % 5 = 0;
         INSERT INTO {schema}.sites (site_id, label, pt) VALUES (9002, 'new', ST_SetSRID(ST_MakePoint(13.4, 52.5), 4326));",
    );
    wait_for_replay(&mut setup.schema, &standby);
    let run = oar_tiles_with(
        Some(&standby),
        &setup.seed_args(replica.to_str().unwrap(), "0-9", &["--dirty"]),
        &[],
    );
    run.assert_success();
    let primary = direct_seed(&setup, &setup.config, "primary-after.mbtiles", "0-9");
    assert_same_tiles(
        &read_mbtiles_raw(&primary),
        &read_mbtiles_raw(&replica),
        "reseed from the standby",
    );
}
