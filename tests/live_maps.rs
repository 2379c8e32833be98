//! Live maps, as a person sees them: `oar-tiles serve` is the origin of a tree with a changes feed
//! (`[tileset.feed]`), a real Varnish keeps every answer for a day in front of it (the head of the
//! feed too, so only its purge makes a publication visible), and headless Chromium has the
//! preview page open at zoom 14 on two facilities. One is renamed and the other deleted; after
//! `seed --dirty`, without a reload, the map draws the new name and no longer the deleted one.

use serde_json::{json, Value};

use crate::common::fixture::Fixture;
use crate::common::pg::{hub_with_scatter, Point};
use crate::common::run::{oar_tiles, oar_tiles_with, read_tree, single_layer_config};
use crate::common::serve::{Browser, Served};
use crate::common::varnish::Varnish;

/// Two facilities a few hundred metres apart, in one view at zoom 14, far from the other rows.
const RENAMED: (i64, f64, f64) = (900_001, 13.4050, 52.5200);
const DELETED: (i64, f64, f64) = (900_002, 13.4080, 52.5210);

/// The name the browser reaches the cache by (`Browser` maps `*.test` to loopback).
const PUBLIC_HOST: &str = "live-maps.test";

fn facility((id, lon, lat): (i64, f64, f64), label: &str) -> Point {
    let mut point = Point::new(id, lon, lat);
    point.label = label.to_string();
    point
}

/// A seeded tree with change capture and a feed, its origin, and a cache in front of the origin
/// that the tileset purges.
struct World {
    fixture: Fixture,
    tree: std::path::PathBuf,
    /// The tileset's name in the origin's URLs.
    name: String,
    origin: Served,
    cache: Varnish,
}

fn world(label: &str) -> World {
    let mut points = hub_with_scatter(300, 7, 5, [13.0, 52.3, 13.8, 52.7]);
    points.push(facility(RENAMED, "Spree Knitwear"));
    points.push(facility(DELETED, "Mitte Garments"));
    let fixture = Fixture::new(label, &points, "live.toml", |schema| {
        let changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(
                &schema.name,
                "sites",
                "maxzoom = 14\nbbox = [13.0, 52.3, 13.8, 52.7]\n\n[tileset.feed]\nretention = 50\n",
                ""
            )
        )
    });
    let tree = fixture.path("tree");
    let config = fixture.config.to_str().unwrap().to_string();
    oar_tiles(
        Some(&fixture.schema.url),
        &["changes", "install", "--config", &config],
    )
    .assert_success();
    let output = format!("dir:{}", tree.display());
    oar_tiles_with(
        Some(&fixture.schema.url),
        &["seed", "--config", &config, "--output", &output],
        &[],
    )
    .assert_success();
    // The page is opened through the cache under a public name, which the cache forwards to the
    // origin, so the TileJSON's tile URLs name the cache too.
    let origin = Served::start(&[&output, "--public-host", PUBLIC_HOST], &[]);
    let name = origin.get("/index.json").json()["tilesets"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let cache = Varnish::keeping(origin.port, "1d");
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    let text = text.replacen(
        "\n[[tileset.layer]]",
        &format!(
            "\n[[tileset.cdn]]\nkind = \"http\"\nname = \"varnish\"\nurl = \"http://127.0.0.1:{}/{name}/{{path}}\"\n\n[[tileset.layer]]",
            cache.port
        ),
        1,
    );
    std::fs::write(&fixture.config, text).unwrap();
    World {
        fixture,
        tree,
        name,
        origin,
        cache,
    }
}

impl World {
    fn reseed(&self) {
        let config = self.fixture.config.to_str().unwrap();
        let output = format!("dir:{}", self.tree.display());
        oar_tiles_with(
            Some(&self.fixture.schema.url),
            &["seed", "--config", config, "--output", &output, "--dirty"],
            &[],
        )
        .assert_success();
    }
}

/// The labels of the facilities the map draws now.
async fn drawn_labels(browser: &Browser) -> Vec<String> {
    let labels = browser
        .client
        .execute(
            "const map = window.__map;
             const labels = map.queryRenderedFeatures({ layers: window.__drawnLayers })
               .map((f) => f.properties.label).filter((l) => l !== undefined);
             return [...new Set(labels)].sort();",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(labels).unwrap()
}

/// Waits for the page's first idle map, then for the feed's follower to have started.
async fn page_ready(browser: &Browser) {
    browser
        .client
        .execute(
            "window.__readyNow = false; window.__ready.then(() => { window.__readyNow = true; });",
            vec![],
        )
        .await
        .unwrap();
    loop {
        let state = browser
            .client
            .execute(
                "return { error: window.__error || null, ready: window.__readyNow === true, feed: window.__feed || null }",
                vec![],
            )
            .await
            .unwrap();
        assert!(state["error"].is_null(), "the page failed: {state}");
        if state["ready"] == json!(true) && !state["feed"].is_null() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Polls what the map draws until `done` holds, for at most `patience` (a hang's bound, not a
/// timing claim: the feed is polled every second). Returns the last labels and the feed's state.
async fn wait_for_labels(
    browser: &Browser,
    patience: std::time::Duration,
    done: impl Fn(&[String]) -> bool,
) -> (Vec<String>, Value) {
    let start = std::time::Instant::now();
    loop {
        let labels = drawn_labels(browser).await;
        let feed = browser
            .client
            .execute("return window.__feed", vec![])
            .await
            .unwrap();
        if done(&labels) || start.elapsed() > patience {
            return (labels, feed);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[test]
#[ignore = "needs PostGIS, Varnish and Chromium: run scripts/test.sh"]
fn an_open_map_draws_a_renamed_facility_and_drops_a_deleted_one_without_a_reload() {
    let mut world = world("live_maps");
    let stored = read_tree(&world.tree, "pbf");
    assert!(stored.keys().any(|(z, _, _)| *z == 14), "tiles at zoom 14");
    let page = format!(
        "http://{PUBLIC_HOST}:{}/?tileset={}#14.5/{}/{}",
        world.cache.port,
        world.name,
        (RENAMED.2 + DELETED.2) / 2.0,
        (RENAMED.1 + DELETED.1) / 2.0
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let head_sequence = |world: &World| {
        let head = world
            .origin
            .get(&format!("/{}/changes/head.json", world.name))
            .json();
        assert_eq!(head["format"], "oar-tiles-changes", "{head}");
        head["sequence"].as_u64().unwrap()
    };
    let first = head_sequence(&world);
    let browser = runtime.block_on(async {
        let browser = Browser::start(1024, 768).await;
        browser.client.goto(&page).await.unwrap();
        page_ready(&browser).await;
        let before = drawn_labels(&browser).await;
        assert!(
            before.contains(&"Spree Knitwear".to_string())
                && before.contains(&"Mitte Garments".to_string()),
            "both facilities on screen: {before:?}"
        );
        // Marks this document: a reload would lose it.
        browser
            .client
            .execute("window.__sameDocument = true", vec![])
            .await
            .unwrap();
        browser
    });

    world.fixture.schema.execute(&format!(
        "UPDATE {{schema}}.sites SET label = 'Spree Knitwear Cooperative' WHERE site_id = {};
         DELETE FROM {{schema}}.sites WHERE site_id = {};",
        RENAMED.0, DELETED.0
    ));
    world.reseed();
    assert_eq!(head_sequence(&world), first + 1, "one segment published");

    runtime.block_on(async {
        let (after, feed) =
            wait_for_labels(&browser, std::time::Duration::from_secs(60), |labels| {
                labels.contains(&"Spree Knitwear Cooperative".to_string())
                    && !labels.contains(&"Mitte Garments".to_string())
            })
            .await;
        assert!(
            after.contains(&"Spree Knitwear Cooperative".to_string())
                && !after
                    .iter()
                    .any(|l| l == "Mitte Garments" || l == "Spree Knitwear"),
            "the open map still draws {after:?}; its feed: {feed}"
        );
        assert!(
            feed["refreshed"].as_u64().unwrap() > 0
                && feed["reloads"] == json!(0)
                && feed["sequence"] == json!(first + 1),
            "refreshed tile by tile: {feed}"
        );
        let same = browser
            .client
            .execute("return window.__sameDocument === true", vec![])
            .await
            .unwrap();
        assert_eq!(same, json!(true), "the page was not reloaded");
        browser.close().await;
    });
}
