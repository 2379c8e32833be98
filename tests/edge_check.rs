//! Freshness measured at the edge: `oar-tiles serve` is the origin of a tree, two real Varnish
//! caches in front of it keep every answer for a day, and each is a purge target whose
//! `public_url` the tool fetches changed tiles through after it purged. One target purges the right
//! paths; the other purges paths under a prefix the cache does not serve them from, so its API
//! calls succeed while its cache keeps serving the old tiles, which only the edge check can see.

use crate::common::edge::{metric, tree_world, Watching};
use crate::common::fixture::Fixture;
use crate::common::run::{oar_tiles_with, read_tree, summary, Run};
use crate::common::serve::Served;
use crate::common::varnish::Varnish;

/// The world: a seeded tree, its origin and two caches, warmed with every tile.
struct Edge {
    fixture: Fixture,
    tree: std::path::PathBuf,
    /// The tileset's name in the origin's URLs.
    name: String,
    /// The origin and both caches, kept running for the test.
    _servers: (Served, Varnish, Varnish),
}

/// The tree's tileset under `watch`'s config: an output of its own, zooms 0-9.
fn edge(label: &str, watch: &str) -> Edge {
    let (fixture, tree) = tree_world(label, "");
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    let text = text
        .replacen(
            "[[tileset]]\nname = \"sites\"\n",
            &format!(
                "[[tileset]]\nname = \"sites\"\noutput = \"dir:{}\"\nmaxzoom = 9\n",
                tree.display()
            ),
            1,
        )
        .replacen("[database]", &format!("{watch}\n[database]"), 1);
    std::fs::write(&fixture.config, &text).unwrap();
    seed(&fixture, &[]).assert_success();

    let origin = Served::start(&[&format!("dir:{}", tree.display())], &[]);
    let index = origin.get("/index.json").json();
    let name = index["tilesets"][0]["name"].as_str().unwrap().to_string();
    let good = Varnish::keeping(origin.port, "1d");
    let missing = Varnish::keeping(origin.port, "1d");
    // The second target's purges name `/elsewhere/…`, which its cache accepts and finds nothing
    // under: the tiles it serves from `/NAME/…` stay as they were.
    let targets = format!(
        "\n[[tileset.cdn]]\nkind = \"http\"\nname = \"good\"\n\
         url = \"http://127.0.0.1:{g}/{name}/{{path}}\"\npublic_url = \"http://127.0.0.1:{g}/{name}\"\n\
         \n[[tileset.cdn]]\nkind = \"http\"\nname = \"missing\"\n\
         url = \"http://127.0.0.1:{m}/elsewhere/{{path}}\"\npublic_url = \"http://127.0.0.1:{m}/{name}\"\n",
        g = good.port,
        m = missing.port,
    );
    std::fs::write(&fixture.config, text + &targets).unwrap();
    for (z, x, y) in read_tree(&tree, "pbf").keys() {
        let path = format!("/{name}/{z}/{x}/{y}.pbf");
        for cache in [&good, &missing] {
            assert_eq!(cache.get_path(&path).status, 200, "{path}");
        }
    }
    Edge {
        fixture,
        tree,
        name,
        _servers: (origin, good, missing),
    }
}

fn seed(fixture: &Fixture, extra: &[&str]) -> Run {
    let mut args = vec!["seed", "--config", fixture.config.to_str().unwrap()];
    args.extend_from_slice(extra);
    oar_tiles_with(Some(&fixture.schema.url), &args, &[])
}

/// Moves every 40th site and deletes one, in one transaction (one watch cycle): tiles change, and
/// some become empty.
fn change(fixture: &mut Fixture) {
    fixture.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.05, 0.02) WHERE site_id % 40 = 3;
         DELETE FROM {schema}.sites WHERE site_id = 7;",
    );
}

#[test]
#[ignore = "needs PostGIS and Varnish: run scripts/test.sh"]
fn seed_check_edge_finds_purged_tiles_fresh_and_sees_a_purge_that_missed_the_cache() {
    let mut world = edge("edge_check_seed", "");
    let before = read_tree(&world.tree, "pbf");
    change(&mut world.fixture);
    let summary_path = world.fixture.path("summary.json");
    let run = seed(
        &world.fixture,
        &[
            "--dirty",
            "--check-edge",
            "6",
            "--check-edge-within",
            "3s",
            "--summary-json",
            summary_path.to_str().unwrap(),
        ],
    );
    run.assert_success();
    let after = read_tree(&world.tree, "pbf");
    assert_ne!(after, before, "the change moved no tile");
    // The second cache still serves the old bytes of every tile the reseed changed.
    for (key, old) in &before {
        if after.get(key) != Some(old) {
            let (z, x, y) = key;
            let path = format!("/{}/{z}/{x}/{y}.pbf", world.name);
            assert_eq!(&world._servers.2.get_path(&path).body, old, "{path}");
        }
    }
    let summary = summary(&summary_path);
    let checks = summary[0]["edge"].as_array().unwrap();
    let check = |target: &str| {
        checks
            .iter()
            .find(|c| c["target"] == target)
            .unwrap_or_else(|| panic!("no edge check of `{target}`: {summary}"))
            .clone()
    };
    let good = check("good");
    assert_eq!(good["sampled"], 6, "{good}");
    assert_eq!(good["unconfirmed"], 0, "{good}");
    assert!(good["seconds_after_purge"].is_f64(), "{good}");
    // Its purge reached the API and missed the cache: every sample is still the old tile.
    let missing = check("missing");
    assert_eq!(missing["sampled"], 6, "{missing}");
    assert_eq!(missing["unconfirmed"], 6, "{missing}");
    assert!(missing["seconds_after_purge"].is_null(), "{missing}");
    assert!(missing["stale_answers"].as_u64().unwrap() >= 6, "{missing}");
    assert!(
        run.stderr.contains("still differ") || run.stdout.contains("still differ"),
        "the summary does not say the edge is stale:\n{}\n{}",
        run.stdout,
        run.stderr
    );
}

#[test]
#[ignore = "needs PostGIS and Varnish: run scripts/test.sh"]
fn watch_measures_commit_to_edge_latency_per_change_and_counts_stale_answers() {
    let mut world = edge(
        "edge_check_watch",
        "[watch]\ncheck_edge = 4\ncheck_edge_within = \"2s\"\npoll_interval = \"1s\"\n",
    );
    let mut watching = Watching::start(&world.fixture, &[]);
    watching.wait_until("/health 200", |w| {
        w.listening() && w.get("/health").status == 200
    });
    change(&mut world.fixture);
    let sum = |text: &str, prefix: &str, target: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(&format!("target=\"{target}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // Every change the cycle applied is measured once per target whose samples all turned fresh.
    watching.wait_until("the edge checks of the cycle", |w| {
        let text = w.get("/metrics").text();
        let applied = metric(&text, "oar_tiles_change_to_tile_seconds_count");
        applied > 0.0
            && sum(&text, "oar_tiles_change_to_edge_seconds_count", "good") == applied
            && sum(&text, "oar_tiles_edge_unconfirmed_total", "missing") > 0.0
    });
    let text = watching.get("/metrics").text();
    let applied = metric(&text, "oar_tiles_change_to_tile_seconds_count");
    let lines = |prefix: &str, target: &str| sum(&text, prefix, target);
    assert_eq!(
        lines("oar_tiles_change_to_edge_seconds_count", "good"),
        applied,
        "{text}"
    );
    assert_eq!(
        lines("oar_tiles_edge_unconfirmed_total", "good"),
        0.0,
        "{text}"
    );
    assert_eq!(
        lines("oar_tiles_change_to_edge_seconds_count", "missing"),
        0.0,
        "{text}"
    );
    assert_eq!(
        lines("oar_tiles_edge_unconfirmed_total", "missing"),
        4.0,
        "{text}"
    );
    assert!(
        lines("oar_tiles_edge_stale_answers_total", "missing") >= 4.0,
        "{text}"
    );
    assert!(
        lines("oar_tiles_edge_requests_total", "good") >= 4.0,
        "{text}"
    );
}
