//! Purges planned in time and kept when they stop: a full seed behind a free CDN is one or a few
//! requests (a Cloudflare prefix on a recording server answering as the API documents, a BAN of a
//! real Varnish), a target with no coarser form (PURGE) is sent every path exactly once across the
//! runs that drain it, and a purge stopped part way leaves what the target accepted out of the
//! next run's. Rates and timeouts are set low so that a few thousand tiles exceed what the exact
//! paths could do within `purge_timeout`, as 100,000 do at the defaults.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common::edge::{seed_tree, tree_in_config, tree_world};
use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::recorder::{Answer, Recorder};
use crate::common::run::{
    differences, oar_tiles, oar_tiles_with, read_tree, single_layer_config, summary, Run,
};
use crate::common::serve::Served;
use crate::common::varnish::Varnish;

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const PUBLIC: &str = "https://tiles.example.org/v1";

/// A tree of sites scattered over the world, z0-8 (some thousands of tiles), with change capture,
/// purged through `cdn`.
fn scattered_world(label: &str, cdn: &str) -> (Fixture, PathBuf) {
    let sites = hub_with_scatter(2_000, 17, 1, [0.0, 0.0, 0.0, 0.0]);
    let fixture = Fixture::new(label, &sites, "edge.toml", |schema| {
        let changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(&schema.name, "sites", cdn, "")
        )
    });
    let config = fixture.config.to_str().unwrap().to_string();
    oar_tiles(
        Some(&fixture.schema.url),
        &["changes", "install", "--config", &config],
    )
    .assert_success();
    let tree = fixture.path("tree");
    (fixture, tree)
}

fn seed_scattered(fixture: &Fixture, tree: &Path, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let output = format!("dir:{}", tree.display());
    let mut args = fixture.seed_args(&output, "0-8", &[]);
    args.extend_from_slice(extra);
    oar_tiles_with(Some(&fixture.schema.url), &args, env)
}

/// The batches waiting in a tree's outbox.
fn waiting_batches(tree: &Path) -> Vec<String> {
    match std::fs::read_dir(tree.join(".oar-tiles-outbox")) {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".batch"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_full_seed_behind_cloudflare_free_is_one_prefix_call_and_a_later_change_its_own_urls() {
    let api = Recorder::start(
        r#"{"success": true, "errors": [], "result": {"id": "x"}}"#,
        0,
    );
    // One second: the Free plan's 800 URLs a second send at most 1,600 URLs in it.
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"cloudflare\"\nplan = \"free\"\nprefixes = true\nzone_id = \"{ZONE}\"\n\
         api_url = \"http://127.0.0.1:{}/client/v4\"\npublic_url = \"{PUBLIC}\"\ntoken_env = \"OAR_TEST_CF_TOKEN\"\n\
         request_timeout = \"1s\"\npurge_timeout = \"1s\"",
        api.port
    );
    let (mut fixture, tree) = scattered_world("edge_pace_cloudflare", &cdn);
    let env = [("OAR_TEST_CF_TOKEN", "t")];
    let report = fixture.path("seed.json");
    let report_arg = report.to_str().unwrap().to_string();
    seed_scattered(&fixture, &tree, &["--summary-json", &report_arg], &env).assert_success();
    let before = read_tree(&tree, "pbf");
    assert!(before.len() > 1_600, "{} tiles", before.len());
    let calls = api.answered(0);
    assert!(
        (1..=5).contains(&calls.len()),
        "{} API calls for a full seed",
        calls.len()
    );
    // Every tile under the one prefix of the output.
    let bodies: Vec<serde_json::Value> = calls.iter().map(|c| c.json()).collect();
    assert!(
        bodies
            .iter()
            .any(|b| b["prefixes"] == serde_json::json!(["tiles.example.org/v1/"])),
        "{bodies:?}"
    );
    assert!(
        waiting_batches(&tree).is_empty(),
        "{:?}",
        waiting_batches(&tree)
    );
    let purge = &summary(&report)[0]["purges"][0];
    assert_eq!(purge["failed"], serde_json::Value::Null, "{purge}");

    // One site moves: its own tiles are purged URL by URL.
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET pt = ST_Translate(pt, 3.0, 2.0) WHERE site_id = 42");
    seed_scattered(&fixture, &tree, &["--dirty"], &env).assert_success();
    let changed: BTreeSet<String> = differences(&before, &read_tree(&tree, "pbf"))
        .into_iter()
        .map(|tile| format!("{PUBLIC}/{tile}.pbf"))
        .collect();
    assert!(!changed.is_empty() && changed.len() < 40, "{changed:?}");
    let later = &api.answered(0)[calls.len()..];
    let mut urls = BTreeSet::new();
    for call in later {
        let body = call.json();
        assert!(body.get("prefixes").is_none(), "{body}");
        let files = body["files"].as_array().expect("URL purges").clone();
        urls.extend(files.iter().map(|f| f.as_str().unwrap().to_string()));
    }
    let tiles: BTreeSet<String> = urls.into_iter().filter(|u| u.ends_with(".pbf")).collect();
    assert_eq!(tiles, changed);
    assert!(waiting_batches(&tree).is_empty());
}

/// A tree seeded with no target, served by `oar-tiles serve` behind a Varnish that keeps every
/// tile for a day, warmed with every tile, then given `cdn` (where `{port}` is the cache's and
/// `{name}` the tileset's path on the origin).
fn cached_tree(label: &str, cdn: &str) -> (Fixture, PathBuf, String, Served, Varnish) {
    let (fixture, tree) = tree_world(label, "");
    tree_in_config(&fixture, &tree, "");
    seed(&fixture, &[]).assert_success();
    let origin = Served::start(&[&format!("dir:{}", tree.display())], &[]);
    let name = origin.get("/index.json").json()["tilesets"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let cache = Varnish::keeping(origin.port, "1d");
    for (z, x, y) in read_tree(&tree, "pbf").keys() {
        assert_eq!(
            cache.get_path(&format!("/{name}/{z}/{x}/{y}.pbf")).status,
            200
        );
    }
    let cdn = cdn
        .replace("{port}", &cache.port.to_string())
        .replace("{name}", &name);
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    std::fs::write(&fixture.config, text + &cdn).unwrap();
    (fixture, tree, name, origin, cache)
}

fn seed(fixture: &Fixture, extra: &[&str]) -> Run {
    let mut args = vec!["seed", "--config", fixture.config.to_str().unwrap()];
    args.extend_from_slice(extra);
    oar_tiles_with(Some(&fixture.schema.url), &args, &[])
}

#[test]
#[ignore = "needs PostGIS and Varnish: run scripts/test.sh"]
fn a_full_seed_behind_varnish_with_ban_is_a_few_bans_and_every_tile_comes_fresh() {
    // One connection at 4 requests a second, one second: at most 4 requests fit.
    let cdn = "\n[[tileset.cdn]]\nkind = \"http\"\nname = \"varnish\"\nmethod = \"BAN\"\n\
               url = \"http://127.0.0.1:{port}/{name}/{path}\"\nconcurrency = 1\n\
               rate_per_connection = 4\nrequest_timeout = \"1s\"\npurge_timeout = \"1s\"\n";
    let (mut fixture, tree, name, _origin, cache) = cached_tree("edge_pace_ban", cdn);
    let bans_before = cache.counter("MAIN.bans_added");
    // Every site moves: a full seed changes most tiles.
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.01, 0.005)");
    let before = read_tree(&tree, "pbf");
    let report = fixture.path("seed.json");
    seed(&fixture, &["--summary-json", report.to_str().unwrap()]).assert_success();
    let after = read_tree(&tree, "pbf");
    let changed = differences(&before, &after);
    assert!(changed.len() > 20, "{} tiles changed", changed.len());
    let bans = cache.counter("MAIN.bans_added") - bans_before;
    assert!((1..=5).contains(&bans), "{bans} BANs for a full seed");
    let purge = &summary(&report)[0]["purges"][0];
    assert!(purge["requests"].as_u64().unwrap() <= 5, "{purge}");
    assert_eq!(cache.counter("MAIN.n_purges"), 0, "no PURGE was sent");
    // The cache serves every tile as the tree holds it now.
    for ((z, x, y), bytes) in &after {
        let reply = cache.get_path(&format!("/{name}/{z}/{x}/{y}.pbf"));
        assert!(&reply.body == bytes, "{z}/{x}/{y} is stale at the edge");
    }
    assert!(waiting_batches(&tree).is_empty());
}

/// An `http` target (PURGE, one connection) at `port` under `/t/`.
fn purge_target(port: u16, timeouts: &str) -> String {
    format!(
        "[[tileset.cdn]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/t/{{path}}\"\nconcurrency = 1\n{timeouts}\n"
    )
}

/// Points the config's one CDN target from `from` to `to`.
fn retarget(config: &Path, from: u16, to: u16) {
    let text = std::fs::read_to_string(config).unwrap();
    let from = format!("127.0.0.1:{from}/t/");
    assert!(text.contains(&from));
    std::fs::write(config, text.replace(&from, &format!("127.0.0.1:{to}/t/"))).unwrap();
}

/// The paths a cache was sent, in order: the first `answered`, or all.
fn sent(cache: &Recorder, answered: Option<usize>) -> Vec<String> {
    let requests = cache.requests.lock().unwrap();
    let take = answered.unwrap_or(requests.len()).min(requests.len());
    requests[..take]
        .iter()
        .map(|r| {
            assert_eq!(r.method, "PURGE");
            r.target.trim_start_matches("/t/").to_string()
        })
        .collect()
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_purge_stopped_after_n_of_m_paths_leaves_the_next_run_exactly_the_others() {
    const N: usize = 40;
    let stalling = Recorder::answering(Answer::OkThenNever {
        body: "purged",
        answered: N,
    });
    let timeouts = "request_timeout = \"1s\"\npurge_timeout = \"2s\"";
    let (fixture, tree) = tree_world("edge_pace_stopped", &purge_target(stalling.port, timeouts));
    let first = seed_tree(&fixture, &tree, &[], &[]);
    assert_eq!(first.code, 1, "the purge stalled: {}", first.stderr);
    assert!(first.stderr.contains("purge_timeout"), "{}", first.stderr);
    let accepted: Vec<String> = sent(&stalling, Some(N));
    assert_eq!(accepted.iter().collect::<BTreeSet<_>>().len(), N);

    // The next run, against a cache that answers, sends only what was not accepted.
    let cache = Recorder::start("purged", 0);
    retarget(&fixture.config, stalling.port, cache.port);
    seed_tree(&fixture, &tree, &["--dirty"], &[]).assert_success();
    let rest = sent(&cache, None);
    let rest_set: BTreeSet<&String> = rest.iter().collect();
    assert_eq!(
        rest_set.len(),
        rest.len(),
        "a path was sent twice in one run"
    );
    for path in &accepted {
        assert!(!rest_set.contains(path), "{path} was sent again");
    }
    // Together they are every tile and document the seed wrote, each once.
    let mut all: BTreeSet<String> = read_tree(&tree, "pbf")
        .keys()
        .map(|(z, x, y)| format!("{z}/{x}/{y}.pbf"))
        .collect();
    all.insert("tiles.json".into());
    all.insert("metadata.json".into());
    let union: BTreeSet<String> = accepted.iter().chain(rest.iter()).cloned().collect();
    assert_eq!(union, all);
    assert_eq!(accepted.len() + rest.len(), all.len());
    assert!(waiting_batches(&tree).is_empty());
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_purge_slower_than_its_timeout_but_steady_finishes_and_exits_0() {
    // Each PURGE answered after 30 ms, one at a time: the whole purge takes far longer than
    // purge_timeout, and no request waits that long.
    let cache = Recorder::answering(Answer::Slow {
        body: "purged",
        millis: 30,
    });
    let timeouts = "request_timeout = \"1s\"\npurge_timeout = \"1s\"";
    let (fixture, tree) = tree_world("edge_pace_slow", &purge_target(cache.port, timeouts));
    let report = fixture.path("seed.json");
    let report_arg = report.to_str().unwrap().to_string();
    seed_tree(&fixture, &tree, &["--summary-json", &report_arg], &[]).assert_success();
    let paths = sent(&cache, None);
    let tiles = read_tree(&tree, "pbf").len();
    assert!(paths.len() > 20, "{} paths", paths.len());
    assert_eq!(paths.len(), tiles + 2, "every tile and document, once");
    assert!(waiting_batches(&tree).is_empty());
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn fastly_keys_and_a_zone_that_serves_only_this_output_purge_a_full_seed_in_one_call() {
    // Fastly: 100,000 purges an hour, 1,000 at once; in one second a few thousand keys do not fit.
    let fastly = Recorder::start(r#"{"status": "ok"}"#, 0);
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"fastly\"\nservice_id = \"SU1Z0isxPaozGVKXdv0eY\"\n\
         api_url = \"http://127.0.0.1:{}\"\npublic_url = \"{PUBLIC}\"\nsurrogate_keys = true\n\
         token_env = \"OAR_TEST_FASTLY_TOKEN\"\nrequest_timeout = \"1s\"\npurge_timeout = \"1s\"",
        fastly.port
    );
    let (fixture, tree) = scattered_world("edge_pace_fastly", &cdn);
    seed_scattered(&fixture, &tree, &[], &[("OAR_TEST_FASTLY_TOKEN", "t")]).assert_success();
    assert!(read_tree(&tree, "pbf").len() > 2_000);
    let calls = fastly.answered(0);
    assert_eq!(calls.len(), 1, "{} calls", calls.len());
    assert_eq!(calls[0].target, "/service/SU1Z0isxPaozGVKXdv0eY/purge");
    // The output's own key: its public URL's, which no other output on the service shares.
    assert_eq!(calls[0].header("surrogate-key"), "tiles.example.org/v1/*");
    assert!(waiting_batches(&tree).is_empty());

    // Cloudflare without prefix purges: everything, only because the zone serves only this output.
    let api = Recorder::start(
        r#"{"success": true, "errors": [], "result": {"id": "x"}}"#,
        0,
    );
    let cdn = format!(
        "[[tileset.cdn]]\nkind = \"cloudflare\"\nzone_id = \"{ZONE}\"\nprefixes = false\nonly_this_output = true\n\
         api_url = \"http://127.0.0.1:{}/client/v4\"\npublic_url = \"{PUBLIC}\"\ntoken_env = \"OAR_TEST_CF_TOKEN\"\n\
         request_timeout = \"1s\"\npurge_timeout = \"1s\"",
        api.port
    );
    let (fixture, tree) = scattered_world("edge_pace_zone", &cdn);
    seed_scattered(&fixture, &tree, &[], &[("OAR_TEST_CF_TOKEN", "t")]).assert_success();
    let calls = api.answered(0);
    assert_eq!(calls.len(), 1, "{} calls", calls.len());
    assert_eq!(
        calls[0].json(),
        serde_json::json!({ "purge_everything": true })
    );
    assert!(waiting_batches(&tree).is_empty());
}
