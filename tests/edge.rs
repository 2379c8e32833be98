//! Freshness at the edge: a real Varnish in front of the S3 test server keeps tiles for a day
//! (max-age=86400), so only the purges `seed` sends after it stores can make a change visible.
//! CloudFront's API is moto's server; Cloudflare's and Fastly's are a local server that records
//! requests, since neither can run here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;

use crate::common::block_on;
use crate::common::cloudfront::{
    cloudfront_client, covered, distribution, invalidations, moto_env, moto_url,
};
use crate::common::edge::{metric, points, seed_tree, tree_world, Watching, ZOOMS};
use crate::common::fixture::Fixture;
use crate::common::recorder::Recorder;
use crate::common::run::{oar_tiles_with, single_layer_config, summary, Run};
use crate::common::s3::S3Server;
use crate::common::varnish::Varnish;

const PREFIX: &str = "tiles";

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
            // A tile listed and then deleted by a run at work is not there any more.
            let object = match client.get_object().bucket(bucket).key(&key).send().await {
                Ok(object) => object,
                Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => continue,
                Err(err) => panic!("{key}: {err:?}"),
            };
            let body = object.body.collect().await.unwrap().into_bytes().to_vec();
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
    // Each changed tile, and `tiles.json`, whose digest changed with them.
    assert_eq!(
        purges["paths"].as_u64().unwrap(),
        changed.len() as u64 + 1,
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

/// `z/x/y.pbf` of every tile that differs between two states of a tree.
fn changed_paths(
    before: &crate::common::run::Tiles,
    after: &crate::common::run::Tiles,
) -> BTreeSet<String> {
    crate::common::run::differences(before, after)
        .into_iter()
        .map(|tile| format!("{tile}.pbf"))
        .collect()
}

#[test]
#[ignore = "needs PostGIS and moto's server: run scripts/test.sh"]
fn cloudfront_gets_folded_invalidations_within_its_limits_and_a_price() {
    let endpoint = moto_url();
    let client = cloudfront_client(&endpoint);
    let id = distribution(&endpoint, &format!("oar-tiles-test-{}", std::process::id()));
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"cloudfront\"\ndistribution_id = \"{id}\"\npath_prefix = \"/v1\""
    );
    let (mut fixture, tree) = tree_world("edge_cloudfront", &cdn);
    let env = moto_env(&endpoint);
    let report = fixture.path("summary.json");
    let report_arg = report.to_str().unwrap().to_string();
    seed_tree(&fixture, &tree, &["--summary-json", &report_arg], &env).assert_success();
    let first = crate::common::run::read_tree(&tree, "pbf");
    let sent = invalidations(&client, &id);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let paths = &sent[0];
    assert!(paths.len() <= 3000);
    let wildcards = paths.iter().filter(|p| p.ends_with('*')).count();
    assert!((1..=15).contains(&wildcards), "dense zooms fold: {paths:?}");
    assert!(
        paths.len() < first.len(),
        "{} paths for {} tiles",
        paths.len(),
        first.len()
    );
    for (z, x, y) in first.keys() {
        let path = format!("/v1/{z}/{x}/{y}.pbf");
        assert!(covered(&path, paths), "{path} is invalidated");
    }
    let purge = &summary(&report)[0]["purges"][0];
    assert_eq!(purge["paths"].as_u64().unwrap(), paths.len() as u64);
    let price = purge["price_usd"].as_f64().unwrap();
    assert!((price - paths.len() as f64 * 0.005).abs() < 1e-9, "{purge}");

    // A few moved facilities: a sparse change is invalidated tile by tile.
    fixture.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.05, 0.02) WHERE site_id % 97 = 1",
    );
    seed_tree(&fixture, &tree, &["--dirty"], &env).assert_success();
    let changed = changed_paths(&first, &crate::common::run::read_tree(&tree, "pbf"));
    let sent = invalidations(&client, &id);
    // The tiles with `tiles.json`, which names the digest the run kept from them.
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(covered("/v1/tiles.json", &sent[1]), "{sent:?}");
    let second: BTreeSet<String> = sent[1]
        .iter()
        .filter(|path| !path.ends_with("tiles.json"))
        .cloned()
        .collect();
    for path in &changed {
        assert!(
            covered(&format!("/v1/{path}"), &sent[1]),
            "/v1/{path} is invalidated"
        );
    }
    assert!(second.len() <= changed.len(), "{second:?}");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn cloudflare_gets_batches_of_at_most_100_urls_with_its_token_and_retries_a_503() {
    let api = Recorder::start(
        r#"{"success": true, "errors": [], "result": {"id": "x"}}"#,
        1,
    );
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"cloudflare\"\nprefixes = false\nzone_id = \"023e105f4ecef8ad9ca31a8372d0c353\"\napi_url = \"http://127.0.0.1:{}/client/v4\"\npublic_url = \"https://tiles.example.org/v1\"\ntoken_env = \"OAR_TEST_CF_TOKEN\"",
        api.port
    );
    let (fixture, tree) = tree_world("edge_cloudflare", &cdn);
    // Without its token the run refuses before writing anything.
    let refused = seed_tree(&fixture, &tree, &[], &[]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("OAR_TEST_CF_TOKEN"),
        "{}",
        refused.stderr
    );
    assert!(!tree.join("0").exists());

    seed_tree(
        &fixture,
        &tree,
        &[],
        &[("OAR_TEST_CF_TOKEN", "secret-token")],
    )
    .assert_success();
    let tiles = crate::common::run::read_tree(&tree, "pbf");
    let calls = api.answered(1);
    let mut urls = BTreeSet::new();
    for call in &calls {
        assert_eq!(call.method, "POST");
        assert_eq!(
            call.target,
            "/client/v4/zones/023e105f4ecef8ad9ca31a8372d0c353/purge_cache"
        );
        assert_eq!(call.header("authorization"), "Bearer secret-token");
        let files = call.json()["files"].as_array().unwrap().clone();
        assert!(
            !files.is_empty() && files.len() <= 100,
            "{} files",
            files.len()
        );
        urls.extend(files.iter().map(|f| f.as_str().unwrap().to_string()));
    }
    // Every tile, and the two documents beside them, new in a first seed.
    let mut expected: BTreeSet<String> = tiles
        .keys()
        .map(|(z, x, y)| format!("https://tiles.example.org/v1/{z}/{x}/{y}.pbf"))
        .collect();
    expected.insert("https://tiles.example.org/v1/tiles.json".into());
    expected.insert("https://tiles.example.org/v1/metadata.json".into());
    assert_eq!(urls, expected);
    assert!(calls.len() >= 2, "more than 100 tiles take several calls");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn fastly_gets_surrogate_keys_in_batches_of_at_most_256_with_its_key() {
    let api = Recorder::start(r#"{"status": "ok"}"#, 0);
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"fastly\"\nservice_id = \"SU1Z0isxPaozGVKXdv0eY\"\napi_url = \"http://127.0.0.1:{}\"\npublic_url = \"https://tiles.example.org\"\nsurrogate_keys = true\ntoken_env = \"OAR_TEST_FASTLY_TOKEN\"",
        api.port
    );
    let (mut fixture, tree) = tree_world("edge_fastly", &cdn);
    seed_tree(
        &fixture,
        &tree,
        &[],
        &[("OAR_TEST_FASTLY_TOKEN", "fastly-secret")],
    )
    .assert_success();
    // A first full seed: every tile the output holds is new, so the output's own key stands for
    // them all.
    let seeded: Vec<String> = api
        .answered(0)
        .iter()
        .map(|call| call.header("surrogate-key").to_string())
        .collect();
    assert_eq!(seeded, ["tiles.example.org/*"], "{seeded:?}");
    api.requests.lock().unwrap().clear();
    let before = crate::common::run::read_tree(&tree, "pbf");
    fixture.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.05, 0.02) WHERE site_id % 2 = 1",
    );
    seed_tree(
        &fixture,
        &tree,
        &["--dirty"],
        &[("OAR_TEST_FASTLY_TOKEN", "fastly-secret")],
    )
    .assert_success();
    let tiles = crate::common::run::read_tree(&tree, "pbf");
    let changed = crate::common::run::differences(&before, &tiles);
    assert!(changed.len() > 256, "{} changed tiles", changed.len());
    let mut keys = BTreeSet::new();
    for call in api.answered(0) {
        assert_eq!(call.method, "POST");
        assert_eq!(call.target, "/service/SU1Z0isxPaozGVKXdv0eY/purge");
        assert_eq!(call.header("fastly-key"), "fastly-secret");
        let batch: Vec<&str> = call.header("surrogate-key").split(' ').collect();
        assert!(batch.len() <= 256);
        keys.extend(batch.into_iter().map(str::to_string));
    }
    // A change is its own tiles' keys, at most 256 a call, whatever folds the plan chose.
    let covered = |tile: &String| {
        let key = format!("tiles.example.org/{tile}.pbf");
        keys.contains(&key)
            || keys
                .iter()
                .filter_map(|k| k.strip_suffix('*'))
                .any(|folder| key.starts_with(folder))
    };
    assert!(changed.iter().all(covered), "{keys:?}");
    assert!(!keys.contains("tiles.example.org/*"), "{keys:?}");
}

#[test]
#[ignore = "needs PostGIS, the S3 test server and Varnish: run scripts/test.sh"]
fn watch_purges_each_cycles_changes_so_varnish_serves_them_fresh() {
    let bucket = "edge-watch";
    let s3 = S3Server::start(bucket);
    let varnish = Varnish::start(s3.port);
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"http\"\nname = \"varnish\"\nurl = \"http://127.0.0.1:{}/{bucket}/{PREFIX}/{{path}}\"",
        varnish.port
    );
    let mut fixture = world("edge_watch", &s3, bucket, &cdn);
    run(&fixture, &s3, &["seed", "--zoom", ZOOMS]).assert_success();
    let before = stored_tiles(&s3, bucket);
    let keys: BTreeSet<String> = before.keys().cloned().collect();
    let urls = presigned(&s3, bucket, &keys);
    for url in urls.values() {
        varnish.get(url);
    }
    let mut watching = Watching::start(&fixture, &s3.env());
    watching.wait_until("/health 200", |w| {
        w.listening() && w.get("/health").status == 200
    });

    fixture.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.05, 0.02) WHERE site_id % 40 = 3",
    );
    // Every tile the watcher stores anew comes fresh through the cache, without waiting a day.
    // One statement, one cycle: once it purged, every tile it stored anew comes fresh through the
    // cache, without waiting a day.
    watching.wait_until("a cycle that purged", |w| {
        metric(&w.get("/metrics").text(), "oar_tiles_purge_paths_total") > 0.0
    });
    let now = stored_tiles(&s3, bucket);
    let changed: BTreeSet<String> = now
        .keys()
        .filter(|k| before.get(*k) != now.get(*k))
        .cloned()
        .collect();
    assert!(!changed.is_empty());
    let fresh = presigned(&s3, bucket, &changed);
    for key in &changed {
        assert!(
            varnish.get(&fresh[key]).body == now[key],
            "{key} is stale at the edge"
        );
    }
    let metrics = watching.get("/metrics").text();
    assert_eq!(
        metric(&metrics, "oar_tiles_purge_failures_total"),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "oar_tiles_outbox_entries"),
        0.0,
        "{metrics}"
    );
    assert_eq!(watching.get("/health").status, 200);
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn health_fails_while_changes_wait_for_a_cdn_longer_than_max_outbox_age() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cdn =
        format!("[[tileset.cdn]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{closed}/{{path}}\"");
    let (mut fixture, tree) = tree_world("edge_health", &cdn);
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    let output = format!("output = \"dir:{}\"\n", tree.display());
    let text = text
        .replacen(
            "[[tileset]]\nname = \"sites\"\n",
            &format!("[[tileset]]\nname = \"sites\"\n{output}"),
            1,
        )
        .replacen(
            "[database]",
            "[watch]\nmax_outbox_age = \"2s\"\npoll_interval = \"1s\"\n\n[database]",
            1,
        );
    std::fs::write(&fixture.config, text).unwrap();
    // The first seed's purge fails: its tiles wait in the outbox.
    let first = seed_tree(&fixture, &tree, &[], &[]);
    assert_eq!(first.code, 1, "{}", first.stderr);
    let mut watching = Watching::start(&fixture, &[]);
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = label || '!' WHERE site_id = 5");
    watching.wait_until("/health 503 naming the output", |w| {
        if !w.listening() {
            return false;
        }
        let reply = w.get("/health");
        reply.status == 503 && reply.text().contains("tree (directory)")
    });
    let metrics = watching.get("/metrics").text();
    assert!(
        metric(&metrics, "oar_tiles_outbox_entries") > 0.0,
        "{metrics}"
    );
    watching.wait_until("a failed purge in the watcher", |w| {
        metric(&w.get("/metrics").text(), "oar_tiles_purge_failures_total") > 0.0
    });
    // A target that just failed is held back: the next cycle does not spend its retries on it,
    // and the change waits in the outbox with the others.
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = label || '?' WHERE site_id = 6");
    watching.wait_until("a cycle that deferred to the failed target", |w| {
        metric(&w.get("/metrics").text(), "oar_tiles_purge_deferred_total") > 0.0
    });
    let metrics = watching.get("/metrics").text();
    assert!(
        metric(&metrics, "oar_tiles_outbox_entries") > 0.0,
        "{metrics}"
    );
}
