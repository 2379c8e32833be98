//! Freshness at the edge: a real Varnish in front of the S3 test server keeps tiles for a day
//! (max-age=86400), so only the purges `seed` sends after it stores can make a change visible.
//! CloudFront's API is moto's server; Cloudflare's and Fastly's are a local server that records
//! requests, since neither can run here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;

use crate::common::fixture::Fixture;
use crate::common::pg::{hub_with_scatter, Point};
use crate::common::run::{oar_tiles_with, single_layer_config, Run};
use crate::common::s3::S3Server;
use crate::common::varnish::Varnish;

const ZOOMS: &str = "0-9";
const PREFIX: &str = "tiles";

fn points() -> Vec<Point> {
    hub_with_scatter(400, 31, 3, [2.2, 48.8, 2.5, 48.95])
}

/// A fixture whose tileset goes to `s3://BUCKET/tiles`, cached for a day, purged through `cdn`.
fn world(label: &str, s3: &S3Server, bucket: &str, cdn: &str) -> Fixture {
    let fixture = Fixture::new(label, &points(), "edge.toml", |schema| {
        let changes = schema.companion("cdc");
        let tileset = format!(
            "output = \"s3://{bucket}/{PREFIX}\"\ncache_control = \"public, max-age=86400\"\n{cdn}"
        );
        format!(
            "[changes]\nschema = \"{changes}\"\n{}\n{}",
            s3.config_table(""),
            single_layer_config(&schema.name, "sites", &tileset, "")
        )
    });
    run(&fixture, s3, &["changes", "install"]).assert_success();
    fixture
}

fn run(fixture: &Fixture, s3: &S3Server, args: &[&str]) -> Run {
    let mut full = vec![args[0], "--config", fixture.config.to_str().unwrap()];
    full.extend_from_slice(&args[1..]);
    oar_tiles_with(Some(&fixture.schema.url), &full, &s3.env())
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Every tile object under the prefix with its bytes.
fn stored_tiles(s3: &S3Server, bucket: &str) -> BTreeMap<String, Vec<u8>> {
    let client = s3.client();
    block_on(async {
        let mut tiles = BTreeMap::new();
        let listed = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(format!("{PREFIX}/"))
            .send()
            .await
            .unwrap();
        for object in listed.contents() {
            let key = object.key().unwrap().to_string();
            if !key.ends_with(".pbf") {
                continue;
            }
            let body = client
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes()
                .to_vec();
            tiles.insert(key, body);
        }
        tiles
    })
}

fn presigned(s3: &S3Server, bucket: &str, keys: &BTreeSet<String>) -> BTreeMap<String, String> {
    let client = s3.client();
    block_on(async {
        let mut urls = BTreeMap::new();
        for key in keys {
            let request = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .presigned(PresigningConfig::expires_in(Duration::from_secs(3600)).unwrap())
                .await
                .unwrap();
            urls.insert(key.clone(), request.uri().to_string());
        }
        urls
    })
}

fn summary(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
#[ignore = "needs PostGIS, the S3 test server and Varnish: run scripts/test.sh"]
fn after_a_dirty_reseed_varnish_serves_each_changed_tile_fresh_and_the_rest_from_cache() {
    let bucket = "edge-varnish";
    let s3 = S3Server::start(bucket);
    let varnish = Varnish::start(s3.port);
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"http\"\nname = \"varnish\"\nurl = \"http://127.0.0.1:{}/{bucket}/{PREFIX}/{{path}}\"",
        varnish.port
    );
    let mut fixture = world("edge_varnish", &s3, bucket, &cdn);
    run(&fixture, &s3, &["seed", "--zoom", ZOOMS]).assert_success();
    let before = stored_tiles(&s3, bucket);
    assert!(before.len() > 50, "{} tiles", before.len());

    // The edge warms up: each tile once from S3, then from the cache.
    let keys: BTreeSet<String> = before.keys().cloned().collect();
    let urls = presigned(&s3, bucket, &keys);
    for (key, url) in &urls {
        let first = varnish.get(url);
        assert_eq!(first.status, 200, "{key}: {}", first.text());
        let second = varnish.get(url);
        assert_eq!(second.header("x-cache"), "HIT", "{key}");
        assert!(
            second.body == before[key],
            "{key}: the cache holds the stored bytes"
        );
    }

    // Some facilities move, one goes: a few tiles change, one may empty.
    fixture.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.05, 0.02) WHERE site_id % 40 = 1;
         DELETE FROM {schema}.sites WHERE site_id = 7;",
    );
    let report = fixture.path("summary.json");
    run(
        &fixture,
        &s3,
        &[
            "seed",
            "--zoom",
            ZOOMS,
            "--dirty",
            "--summary-json",
            report.to_str().unwrap(),
        ],
    )
    .assert_success();
    let after = stored_tiles(&s3, bucket);
    let changed: BTreeSet<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|key| before.get(*key) != after.get(*key))
        .collect();
    assert!(!changed.is_empty(), "the moves changed tiles");
    let purges = &summary(&report)[0]["purges"][0];
    assert_eq!(purges["target"], "varnish");
    assert!(purges["failed"].is_null(), "{purges}");
    assert_eq!(
        purges["paths"].as_u64().unwrap(),
        changed.len() as u64,
        "{purges}"
    );

    let all: BTreeSet<String> = before.keys().chain(after.keys()).cloned().collect();
    let urls = presigned(&s3, bucket, &all);
    let mut hits = 0;
    for (key, url) in &urls {
        let reply = varnish.get(url);
        match after.get(key) {
            Some(bytes) => assert!(
                &reply.body == bytes,
                "{key} is stale at the edge ({}, {} bytes; {} stored)",
                reply.header("x-cache"),
                reply.body.len(),
                bytes.len()
            ),
            None => assert_ne!(reply.status, 200, "{key} was deleted: {}", reply.text()),
        }
        if !changed.contains(key) {
            assert_eq!(reply.header("x-cache"), "HIT", "{key} stays cached");
            hits += 1;
        }
    }
    assert!(hits > 0);
}

#[test]
#[ignore = "needs PostGIS, the S3 test server and Varnish: run scripts/test.sh"]
fn a_purge_target_that_is_down_keeps_the_changes_until_it_is_back() {
    let bucket = "edge-down";
    let s3 = S3Server::start(bucket);
    let varnish = Varnish::start(s3.port);
    // A port nothing listens on, then the cache's: the config's URL is the target.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cdn_at = |port: u16| {
        format!(
            "[[tileset.cdn]]\nkind = \"http\"\nname = \"varnish\"\nurl = \"http://127.0.0.1:{port}/{bucket}/{PREFIX}/{{path}}\""
        )
    };
    let mut fixture = world("edge_down", &s3, bucket, &cdn_at(closed));
    let config = std::fs::read_to_string(&fixture.config).unwrap();
    let report = fixture.path("summary.json");
    let seed = |fixture: &Fixture| {
        run(
            fixture,
            &s3,
            &[
                "seed",
                "--zoom",
                ZOOMS,
                "--dirty",
                "--summary-json",
                report.to_str().unwrap(),
            ],
        )
    };
    let first = run(&fixture, &s3, &["seed", "--zoom", ZOOMS]);
    assert_eq!(first.code, 1, "{}", first.stderr);
    assert!(
        first.stderr.contains("cdn `varnish`") && first.stderr.contains("outbox"),
        "{}",
        first.stderr
    );
    fixture.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.05, 0.02) WHERE site_id % 40 = 1",
    );
    let second = seed(&fixture);
    assert_eq!(second.code, 1, "{}", second.stderr);
    let waiting = summary(&report)[0]["outbox"]["entries"].as_u64().unwrap();
    assert!(waiting > 0, "the changes wait in the outbox");

    // The cache is back (the config now names it): everything that waited is purged once.
    std::fs::write(
        &fixture.config,
        config.replace(&format!(":{closed}/"), &format!(":{}/", varnish.port)),
    )
    .unwrap();
    seed(&fixture).assert_success();
    let json = summary(&report);
    let purged = json[0]["purges"][0]["paths"].as_u64().unwrap();
    // Lines of both runs, each path purged once.
    assert!(purged > 0 && purged <= waiting, "{json}");
    assert_eq!(json[0]["outbox"]["entries"].as_u64().unwrap(), 0, "{json}");
    seed(&fixture).assert_success();
    assert_eq!(
        summary(&report)[0]["purges"][0]["paths"].as_u64().unwrap(),
        0
    );
}
