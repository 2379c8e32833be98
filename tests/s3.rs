//! The S3 output against a real S3-compatible server process on loopback: keys, bodies and headers,
//! unchanged tiles not uploaded again, emptied tiles deleted, uploads that survive a server restart,
//! and a failed upload that fails the job naming its tile. What every remote store does alike (a
//! dirty reseed, PMTiles archives, shards, partitions) is held to S3 and Azure in `remote_stores.rs`.

use std::time::{Duration, Instant};

use crate::common::fixture::{wraps_fixture, Fixture};
use crate::common::pg::{hub_with_scatter, Point};
use crate::common::run::{
    assert_same_tiles, differences, lines, oar_tiles_command, oar_tiles_with, read_mbtiles_raw,
    run_from, send_signal, single_layer_config, Tiles,
};
use crate::common::runtime;
use crate::common::s3::S3Server;

const BUCKET: &str = "tiles";
const PREFIX: &str = "facilities/v1";

fn points(count: i64) -> Vec<Point> {
    hub_with_scatter(count, 5, 5, [72.9, 33.5, 73.3, 33.8])
}

/// Every tile object under the prefix with its body.
fn read_bucket(server: &S3Server) -> Tiles {
    let client = server.client();
    runtime().block_on(async {
        let mut tiles = Tiles::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(format!("{PREFIX}/"))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for object in page.unwrap().contents() {
                let key = object.key().unwrap();
                let Some(path) = key
                    .strip_prefix(&format!("{PREFIX}/"))
                    .and_then(|k| k.strip_suffix(".pbf"))
                else {
                    continue;
                };
                let parts: Vec<u32> = path.split('/').map(|p| p.parse().unwrap()).collect();
                let body = client
                    .get_object()
                    .bucket(BUCKET)
                    .key(key)
                    .send()
                    .await
                    .unwrap();
                let bytes = body.body.collect().await.unwrap().into_bytes().to_vec();
                tiles.insert((parts[0] as u8, parts[1], parts[2]), bytes);
            }
        }
        tiles
    })
}

/// The shared fixture with an S3 server of its own.
struct Setup {
    base: Fixture,
    server: S3Server,
}

wraps_fixture!(Setup, base);

impl Setup {
    fn new(label: &str, count: i64, s3_extra: &str) -> Setup {
        let server = S3Server::start(BUCKET);
        let base = Fixture::new(label, &points(count), "s3.toml", |schema| {
            let tileset = "cache_control = \"public, max-age=60\"";
            format!(
                "{}\n{}",
                server.config_table(s3_extra),
                single_layer_config(&schema.name, "sites", tileset, "")
            )
        });
        Setup { base, server }
    }

    fn args<'a>(&'a self, output: &'a str, zoom: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        self.seed_args(output, zoom, extra)
    }

    fn seed(&self, output: &str, zoom: &str, extra: &[&str]) -> crate::common::run::Run {
        let run = oar_tiles_with(
            Some(&self.schema.url),
            &self.args(output, zoom, extra),
            &self.server.env(),
        );
        run.assert_success();
        run
    }

    fn reference(&self, name: &str, zoom: &str) -> Tiles {
        let path = self.dir.path().join(name);
        self.seed(path.to_str().unwrap(), zoom, &[]);
        read_mbtiles_raw(&path)
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn s3_output_holds_the_tiles_with_cdn_headers_and_uploads_only_what_changed() {
    let mut setup = Setup::new("s3", 300, "");
    let target = format!("s3://{BUCKET}/{PREFIX}");
    let reference = setup.reference("before.mbtiles", "0-8");
    setup.seed(&target, "0-8", &[]);
    assert_same_tiles(
        &read_bucket(&setup.server),
        &reference,
        "S3 holds exactly the MBTiles tiles",
    );

    let client = setup.server.client();
    runtime().block_on(async {
        let (z, x, y) = reference.keys().last().unwrap();
        let head = client
            .head_object()
            .bucket(BUCKET)
            .key(format!("{PREFIX}/{z}/{x}/{y}.pbf"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.content_type(),
            Some("application/vnd.mapbox-vector-tile")
        );
        assert_eq!(head.content_encoding(), Some("gzip"));
        assert_eq!(head.cache_control(), Some("public, max-age=60"));
        let tilejson = client
            .get_object()
            .bucket(BUCKET)
            .key(format!("{PREFIX}/tiles.json"))
            .send()
            .await
            .unwrap();
        let tilejson: serde_json::Value =
            serde_json::from_slice(&tilejson.body.collect().await.unwrap().into_bytes()).unwrap();
        assert_eq!(tilejson["tilejson"], "3.0.0");
        assert_eq!(tilejson["vector_layers"][0]["id"], "sites");
        assert_eq!(
            tilejson["tiles"][0],
            format!(
                "{}/{BUCKET}/{PREFIX}/{{z}}/{{x}}/{{y}}.pbf",
                setup.server.endpoint()
            ),
            "an absolute tile URL at the bucket's path-style address"
        );
    });

    // The same data again: nothing is uploaded, nothing listed as changed.
    let unchanged = setup.dir.path().join("unchanged.txt");
    let summary = setup.dir.path().join("summary.json");
    setup.seed(
        &target,
        "0-8",
        &[
            "--changed-list",
            unchanged.to_str().unwrap(),
            "--summary-json",
            summary.to_str().unwrap(),
        ],
    );
    assert!(lines(&unchanged).is_empty());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(
        json[0]["stored"]["unchanged"].as_u64().unwrap(),
        reference.len() as u64
    );
    assert_eq!(json[0]["stored"]["changed"].as_u64().unwrap(), 0);

    // Scattered facilities gone, one moved: emptied tiles are deleted, the list names every change.
    setup.schema.execute(
        "DELETE FROM {schema}.sites WHERE site_id % 5 = 0;
         UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(-46.6, -23.5), 4326) WHERE site_id = 1;",
    );
    let after = setup.reference("after.mbtiles", "0-8");
    let changed = setup.dir.path().join("changed.txt");
    setup.seed(
        &target,
        "0-8",
        &["--changed-list", changed.to_str().unwrap()],
    );
    assert_same_tiles(
        &read_bucket(&setup.server),
        &after,
        "S3 holds exactly the new tiles",
    );
    // The scattered facilities gone, the tiles cover less: tiles.json declares smaller bounds.
    let mut expected = differences(&reference, &after);
    expected.insert("tiles.json".to_string());
    assert_eq!(lines(&changed), expected);

    let inspect = oar_tiles_with(
        None,
        &[
            "inspect",
            &target,
            "--config",
            setup.config.to_str().unwrap(),
            "--json",
        ],
        &setup.server.env(),
    );
    inspect.assert_success();
    let inventory: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(inventory["tiles"].as_u64().unwrap(), after.len() as u64);
    assert_eq!(inventory["metadata"]["name"], "sites");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn uploads_survive_the_server_being_killed_and_restarted_mid_job() {
    let mut setup = Setup::new(
        "s3restart",
        1500,
        "max_concurrent_uploads = 4\nmax_attempts = 10",
    );
    let target = format!("s3://{BUCKET}/{PREFIX}");
    let reference = setup.reference("reference.mbtiles", "0-11");
    let mut child = oar_tiles_command(
        Some(&setup.schema.url),
        &setup.args(&target, "0-11", &[]),
        &setup.server.env(),
    )
    .spawn()
    .unwrap();
    let started = Instant::now();
    while setup.server.stored_files(BUCKET, PREFIX) < 50 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no uploads arrived"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before the server could be stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    setup.server.kill();
    std::thread::sleep(Duration::from_millis(1500));
    setup.server.restart(&[]);
    let run = run_from(child.wait_with_output().unwrap());
    run.assert_success();
    assert!(
        run.stderr.contains("retrying"),
        "the outage was noticed: {}",
        run.stderr
    );
    assert_same_tiles(
        &read_bucket(&setup.server),
        &reference,
        "every tile arrived intact",
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn an_upload_that_keeps_failing_fails_the_job_and_names_the_tile() {
    let setup = Setup::new("s3fail", 50, "max_attempts = 2");
    // s3s-fs keeps objects as files: a directory where a tile's file belongs makes that PUT fail.
    std::fs::create_dir_all(
        setup
            .server
            .data
            .join(BUCKET)
            .join(PREFIX)
            .join("0/0/0.pbf/blocker"),
    )
    .unwrap();
    let target = format!("s3://{BUCKET}/{PREFIX}");
    let run = oar_tiles_with(
        Some(&setup.schema.url),
        &setup.args(&target, "0-3", &[]),
        &setup.server.env(),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("uploading tile 0/0/0"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"));

    let missing_bucket = oar_tiles_with(
        Some(&setup.schema.url),
        &setup.args("s3://no-such-bucket/x", "0-1", &[]),
        &setup.server.env(),
    );
    assert_eq!(missing_bucket.code, 1, "{}", missing_bucket.stderr);
    assert!(
        missing_bucket.stderr.contains("s3://no-such-bucket/x"),
        "{}",
        missing_bucket.stderr
    );
    assert!(!missing_bucket
        .stderr
        .contains(crate::common::s3::SECRET_KEY));
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_stopped_s3_seed_resumes_from_its_journal_and_ends_like_a_clean_run() {
    let setup = Setup::new("s3resume", 1500, "max_concurrent_uploads = 2");
    let target = format!("s3://{BUCKET}/{PREFIX}");
    let reference = setup.reference("reference.mbtiles", "0-11");
    let cache = tempfile::tempdir().unwrap();
    let mut env = setup.server.env();
    env.push(("XDG_CACHE_HOME", cache.path().to_str().unwrap()));
    let args = setup.args(&target, "0-11", &[]);
    let mut child = oar_tiles_command(Some(&setup.schema.url), &args, &env)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while setup.server.stored_files(BUCKET, PREFIX) < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no uploads arrived"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before it could be stopped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    send_signal(&child, libc::SIGTERM);
    let stopped = run_from(child.wait_with_output().unwrap());
    assert_eq!(stopped.code, 143, "{}", stopped.stderr);

    let resumed = oar_tiles_with(Some(&setup.schema.url), &args, &env);
    resumed.assert_success();
    assert!(resumed.stderr.contains("resuming:"), "{}", resumed.stderr);
    assert_same_tiles(
        &read_bucket(&setup.server),
        &reference,
        "the resumed seed holds exactly the clean run's tiles",
    );
    let journals = std::fs::read_dir(cache.path().join("oar-tiles/journals"))
        .unwrap()
        .count();
    assert_eq!(journals, 0, "a finished seed removes its journal");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn an_unreadable_tile_manifest_is_listed_around_so_a_tile_lists_deletions_are_counted_and_listed() {
    let mut setup = Setup::new("s3manifest", 300, "");
    let target = format!("s3://{BUCKET}/{PREFIX}");
    let before = setup.reference("before.mbtiles", "0-8");
    setup.seed(&target, "0-8", &[]);
    let client = setup.server.client();
    runtime().block_on(async {
        client
            .put_object()
            .bucket(BUCKET)
            .key(format!("{PREFIX}/.oar-tiles/tile-hashes"))
            .body(b"not a manifest".to_vec().into())
            .send()
            .await
            .unwrap();
    });

    setup
        .schema
        .execute("DELETE FROM {schema}.sites WHERE site_id % 5 = 0");
    let after = setup.reference("after.mbtiles", "0-8");
    let emptied: Vec<String> = before
        .keys()
        .filter(|key| !after.contains_key(key))
        .map(|(z, x, y)| format!("{z}/{x}/{y}"))
        .collect();
    assert!(!emptied.is_empty(), "the deletion empties some tiles");
    let touched = differences(&before, &after);
    let list = setup.path("tiles.txt");
    std::fs::write(
        &list,
        touched.iter().cloned().collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let changed = setup.path("changed.txt");
    let summary = setup.path("summary.json");
    let run = setup.seed(
        &target,
        "0-8",
        &[
            "--tiles-from",
            list.to_str().unwrap(),
            "--changed-list",
            changed.to_str().unwrap(),
            "--summary-json",
            summary.to_str().unwrap(),
        ],
    );
    assert_same_tiles(
        &read_bucket(&setup.server),
        &after,
        "the emptied tiles are gone",
    );
    // The tiles cover less with the scattered facilities gone: tiles.json declares it.
    let mut expected = touched.clone();
    expected.insert("tiles.json".to_string());
    assert_eq!(lines(&changed), expected);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(
        json[0]["stored"]["deleted"].as_u64(),
        Some(emptied.len() as u64),
        "{json}"
    );
    assert!(run.stderr.contains("cannot be read"), "{}", run.stderr);
}
