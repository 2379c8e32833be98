//! Two machines writing one prefix of a remote store: each run has a lock directory of its own
//! (`XDG_CACHE_HOME`), as two machines do, so only the output's lease in the store keeps them
//! apart. A live lease of another machine makes a run fail naming it; an expired one is taken over;
//! two runs started together on one edit both finish, one after the other, and the prefix then
//! matches the database. Held to GCS (fake-gcs-server) and S3 (s3s-fs).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::fixture::Fixture;
use crate::common::gcs::GcsBucket;
use crate::common::pg::hub_with_scatter;
use crate::common::run::{
    oar_tiles_command, oar_tiles_with, problems, run_from, single_layer_config, Run,
};
use crate::common::runtime;
use crate::common::s3::S3Server;

const PREFIX: &str = "maps/sites";
const ZOOMS: &str = "0-6";
const LEASE: &str = ".oar-tiles/lock";

/// Writes an object as another machine's client would.
type PutObject = Box<dyn Fn(&str, &[u8])>;

/// One store as the test reaches it, beside the tool.
struct Shared {
    address: String,
    env: Vec<(&'static str, String)>,
    put: PutObject,
    names: Box<dyn Fn() -> Vec<String>>,
}

/// A lease another machine holds, ending `expires` seconds after 1970.
fn foreign_lease(expires: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "host": "other-machine",
        "pid": 4242,
        "run": "4242-feed",
        "expires": expires,
    }))
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The tool run on "machine" `cache` (its own cache directory, so its own lock files).
fn on_machine(fixture: &Fixture, shared: &Shared, cache: &str, args: &[&str]) -> Run {
    let cache = fixture.path(cache);
    let mut env: Vec<(&str, &str)> = shared.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("XDG_CACHE_HOME", cache.to_str().unwrap()));
    oar_tiles_with(Some(&fixture.schema.url), args, &env)
}

fn lease_left(shared: &Shared) -> bool {
    (shared.names)().iter().any(|name| name.starts_with(LEASE))
}

fn two_machines_take_turns(fixture: &mut Fixture, shared: &Shared) {
    let config = fixture.config.to_str().unwrap();
    let target = shared.address.as_str();
    on_machine(
        fixture,
        shared,
        "a",
        &["changes", "install", "--config", config],
    )
    .assert_success();
    on_machine(fixture, shared, "a", &fixture.seed_args(target, ZOOMS, &[])).assert_success();
    assert!(
        !lease_left(shared),
        "a run removes its lease: {:?}",
        (shared.names)()
    );

    // Another machine's live lease: a run refuses, naming it.
    let key = format!("{PREFIX}/{LEASE}");
    (shared.put)(&key, &foreign_lease(now() + 600));
    let dirty = fixture.seed_args(target, ZOOMS, &["--dirty"]);
    let refused = on_machine(fixture, shared, "b", &dirty);
    assert_ne!(refused.code, 0, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("pid 4242 on other-machine")
            && refused.stderr.contains("--wait-lock"),
        "{}",
        refused.stderr
    );

    // Its lease expired (the machine died): two machines' runs of one edit, started together,
    // take it over one after the other.
    (shared.put)(&key, &foreign_lease(now() - 1));
    fixture.schema.execute(
        "DELETE FROM {schema}.sites WHERE site_id IN (4, 19);
         UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(-0.05, 51.45), 4326) WHERE site_id = 7;
         INSERT INTO {schema}.sites (site_id, label, kind, score, pt)
           VALUES (7001, 'new', 'knit', 3, ST_SetSRID(ST_MakePoint(0.1, 51.6), 4326));",
    );
    let waiting = fixture.seed_args(target, ZOOMS, &["--dirty", "--wait-lock"]);
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|cache| {
            let cache = fixture.path(cache);
            let mut env: Vec<(&str, &str)> =
                shared.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            env.push(("XDG_CACHE_HOME", cache.to_str().unwrap()));
            oar_tiles_command(Some(&fixture.schema.url), &waiting, &env)
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|child| run_from(child.wait_with_output().unwrap()))
        .collect();
    for run in &runs {
        run.assert_success();
    }
    assert!(
        runs.iter()
            .any(|run| run.stderr.contains("taking over the expired lease")),
        "{}\n{}",
        runs[0].stderr,
        runs[1].stderr
    );
    assert!(!lease_left(shared), "{:?}", (shared.names)());

    let validated = on_machine(
        fixture,
        shared,
        "b",
        &[
            "validate",
            "--json",
            "--config",
            config,
            "--tileset",
            "sites",
            "--against-db",
            "--all",
            target,
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&validated.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", validated.stdout, validated.stderr));
    assert_eq!(problems(&report), [], "{report:#}");
    assert_eq!(validated.code, 0, "{report:#}\n{}", validated.stderr);
}

fn config(server_table: &str) -> impl FnOnce(&mut crate::common::pg::TestSchema) -> String + '_ {
    move |schema| {
        let changes = schema.companion("cdc");
        format!(
            "{server_table}\n[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(&schema.name, "sites", "", "")
        )
    }
}

fn points() -> Vec<crate::common::pg::Point> {
    hub_with_scatter(250, 5, 5, [-0.3, 51.3, 0.2, 51.7])
}

#[test]
#[ignore = "needs PostGIS and fake-gcs-server: run scripts/test.sh"]
fn two_machines_on_one_gcs_prefix_take_turns_by_its_lease() {
    let bucket = std::rc::Rc::new(GcsBucket::create("two-machines"));
    let mut fixture = Fixture::new("two_machines_gcs", &points(), "gcs.toml", config(""));
    let (put, names) = (bucket.clone(), bucket.clone());
    let shared = Shared {
        address: bucket.address(PREFIX),
        env: vec![("STORAGE_EMULATOR_HOST", bucket.url.clone())],
        put: Box::new(move |key, data| put.put(key, data)),
        names: Box::new(move || {
            names
                .read_prefix(PREFIX)
                .into_iter()
                .map(|blob| blob.name)
                .collect()
        }),
    };
    two_machines_take_turns(&mut fixture, &shared);
}

/// Writes `body` at `key` of the bucket `tiles` as another machine's client would.
fn put_s3(server: &S3Server, key: &str, body: &[u8]) {
    let client = server.client();
    runtime().block_on(async {
        client
            .put_object()
            .bucket("tiles")
            .key(key)
            .body(body.to_vec().into())
            .send()
            .await
            .unwrap();
    });
}

#[test]
#[ignore = "needs PostGIS and s3s-fs: run scripts/test.sh"]
fn two_machines_on_one_s3_prefix_take_turns_by_its_lease() {
    let server = std::rc::Rc::new(S3Server::start("tiles"));
    let table = server.config_table("");
    let mut fixture = Fixture::new("two_machines_s3", &points(), "s3.toml", config(&table));
    let (put, names) = (server.clone(), server.clone());
    let shared = Shared {
        address: format!("s3://tiles/{PREFIX}"),
        env: server
            .env()
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect(),
        put: Box::new(move |key, data| put_s3(&put, key, data)),
        names: Box::new(move || {
            names
                .read_blobs("tiles", PREFIX)
                .into_iter()
                .map(|blob| blob.name)
                .collect()
        }),
    };
    two_machines_take_turns(&mut fixture, &shared);
}

#[test]
#[ignore = "needs PostGIS and s3s-fs: run scripts/test.sh"]
fn a_takeover_marker_left_by_a_run_killed_on_this_machine_does_not_hold_the_next_run_back() {
    let server = S3Server::start("tiles");
    let table = server.config_table("");
    let mut fixture = Fixture::new("two_machines_marker", &points(), "s3.toml", config(&table));
    let target = format!("s3://tiles/{PREFIX}");
    let cache = fixture.path("a");
    let mut env = server.env();
    env.push(("XDG_CACHE_HOME", cache.to_str().unwrap()));
    let config = fixture.config.to_str().unwrap().to_string();
    oar_tiles_with(
        Some(&fixture.schema.url),
        &["changes", "install", "--config", &config],
        &env,
    )
    .assert_success();
    oar_tiles_with(
        Some(&fixture.schema.url),
        &fixture.seed_args(&target, ZOOMS, &[]),
        &env,
    )
    .assert_success();
    let put = |key: &str, body: &[u8]| put_s3(&server, key, body);
    let key = format!("{PREFIX}/{LEASE}");

    // A run waiting for another machine's lease holds this machine's lock: killed there, it leaves
    // the lock's file naming it.
    put(&key, &foreign_lease(now() + 600));
    let waiting = fixture.seed_args(&target, ZOOMS, &["--dirty", "--wait-lock"]);
    let mut child = oar_tiles_command(Some(&fixture.schema.url), &waiting, &env)
        .spawn()
        .unwrap();
    let locks = cache.join("oar-tiles").join("locks");
    let started = std::time::Instant::now();
    let lock_file = loop {
        let named = std::fs::read_dir(&locks).ok().and_then(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(", runs ")))
        });
        if let Some(path) = named {
            break path;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "no lock file in {locks:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    crate::common::run::send_signal(&child, libc::SIGKILL);
    child.wait().unwrap();

    // Two more runs of this machine were killed: the first held the lease, the second while it
    // took it over, after its marker and before the lease was its own.
    let held = "4242-dead1";
    let lease = serde_json::json!({"host": "this-machine", "pid": 4242, "run": held, "expires": now() + 600});
    put(&key, &serde_json::to_vec(&lease).unwrap());
    let marker = format!("{key}.taken-over.{held}-{}", lease["expires"]);
    put(&marker, b"4243-dead2");
    let line = std::fs::read_to_string(&lock_file).unwrap();
    std::fs::write(&lock_file, format!("{} {held} 4243-dead2", line.trim_end())).unwrap();

    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = 'renamed' WHERE site_id = 7");
    let run = oar_tiles_with(
        Some(&fixture.schema.url),
        &fixture.seed_args(&target, ZOOMS, &["--dirty"]),
        &env,
    );
    run.assert_success();
    assert!(
        run.stderr.contains("left by a run killed on this machine"),
        "{}",
        run.stderr
    );
}

#[test]
#[ignore = "needs PostGIS and s3s-fs: run scripts/test.sh"]
fn a_takeover_marker_left_by_a_run_killed_on_another_machine_holds_runs_back_one_term_at_most() {
    let server = S3Server::start("tiles");
    let table = server.config_table("");
    let mut fixture = Fixture::new(
        "two_machines_far_marker",
        &points(),
        "s3.toml",
        config(&table),
    );
    let target = format!("s3://tiles/{PREFIX}");
    let cache = fixture.path("a");
    let mut env = server.env();
    env.push(("XDG_CACHE_HOME", cache.to_str().unwrap()));
    let config = fixture.config.to_str().unwrap().to_string();
    let url = fixture.schema.url.clone();
    let run = |args: &[&str]| oar_tiles_with(Some(&url), args, &env);
    run(&["changes", "install", "--config", &config]).assert_success();
    run(&fixture.seed_args(&target, ZOOMS, &[])).assert_success();
    let key = format!("{PREFIX}/{LEASE}");
    // Another machine's run began taking over another machine's expired lease, and was killed
    // after its marker: this machine's lock file names neither.
    let plant = |expires: u64| {
        put_s3(&server, &key, &foreign_lease(expires));
        let marker = format!("{key}.taken-over.4242-feed-{expires}");
        put_s3(&server, &marker, b"5151-gone");
        marker
    };

    // Expired less than a term (3 minutes) ago, the takeover may still be under way: the run
    // refuses, naming the marker and how to clear it.
    let marker = plant(now() - 10);
    let refused = run(&fixture.seed_args(&target, ZOOMS, &["--dirty"]));
    assert_ne!(refused.code, 0, "{}", refused.stderr);
    for said in [marker.as_str(), "run 5151-gone", "remove that object"] {
        assert!(refused.stderr.contains(said), "{said}: {}", refused.stderr);
    }

    // Expired a further full term ago, its taker is taken for dead: the marker is removed and the
    // lease taken over.
    let stale = plant(now() - 200);
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = 'renamed' WHERE site_id = 7");
    let taken = run(&fixture.seed_args(&target, ZOOMS, &["--dirty"]));
    taken.assert_success();
    assert!(
        taken.stderr.contains("left by run 5151-gone") && taken.stderr.contains("taking over"),
        "{}",
        taken.stderr
    );
    let left: Vec<String> = server
        .read_blobs("tiles", PREFIX)
        .into_iter()
        .map(|blob| blob.name)
        .filter(|name| *name == LEASE || stale.ends_with(name.as_str()))
        .collect();
    assert!(
        left.is_empty(),
        "the lease and its marker are gone: {left:?}"
    );
}
