//! `oar-tiles serve` as a real process over real seeded outputs: tiles byte for byte with their
//! headers, 204 for absent tiles, 400 for bad coordinates and for path traversal, TileJSON built
//! from the Host header; and the page in headless Chromium, checked against the database: the
//! clusters on screen and their counts, a click showing a feature's properties, the per-zoom
//! figures and the tiles over the size budget.

use std::collections::BTreeMap;

use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::Locator;
use serde_json::{json, Value};

use crate::common::fixture::{wraps_fixture, Fixture};
use crate::common::pg::{hub_with_scatter, Point};
use crate::common::run::{
    oar_tiles, oar_tiles_with, read_mbtiles_raw, read_tree, single_layer_config,
};
use crate::common::s3::S3Server;
use crate::common::serve::{get, Browser, Served};

/// Every point inside one hub, so one view of the map shows them all.
const HUB: [f64; 4] = [106.55, 10.65, 106.85, 10.95];
const CLUSTER_MAXZOOM: u8 = 10;

struct Setup(Fixture);

wraps_fixture!(Setup, 0);

impl Setup {
    fn new(label: &str, count: i64, s3: Option<&S3Server>) -> Setup {
        let points: Vec<Point> = hub_with_scatter(count, 19, i64::MAX, HUB);
        Setup(Fixture::new(label, &points, "serve.toml", |schema| {
            let config = single_layer_config(
                &schema.name,
                "sites",
                "",
                &format!("cluster_maxzoom = {CLUSTER_MAXZOOM}\ncluster_cell = 512"),
            );
            match s3 {
                Some(server) => format!("{}\n{config}", server.config_table("")),
                None => config,
            }
        }))
    }

    fn seed(&self, output: &str, envs: &[(&str, &str)]) {
        oar_tiles_with(
            Some(&self.schema.url),
            &self.seed_args(output, "0-12", &[]),
            envs,
        )
        .assert_success();
    }
}

fn tile_path(tileset: &str, (z, x, y): (u8, u32, u32)) -> String {
    format!("/{tileset}/{z}/{x}/{y}.pbf")
}

/// The `Cache-Control` of tiles everywhere the tool publishes them: CDNs keep them, browsers
/// revalidate.
const TILE_CACHE_CONTROL: &str = "public, max-age=0, s-maxage=86400";

/// The checks every output kind must pass, against the tiles it is known to hold.
fn check_tiles(served: &Served, tileset: &str, stored: &BTreeMap<(u8, u32, u32), Vec<u8>>) {
    use md5::{Digest, Md5};
    for (&key, bytes) in stored {
        let reply = served.get(&tile_path(tileset, key));
        assert_eq!(reply.status, 200, "{tileset} {key:?}: {}", reply.text());
        assert_eq!(&reply.body, bytes, "{tileset} {key:?}: the stored bytes");
        assert_eq!(
            reply.header("content-type"),
            "application/vnd.mapbox-vector-tile"
        );
        assert_eq!(reply.header("content-encoding"), "gzip", "{key:?}");
        assert_eq!(reply.header("cache-control"), TILE_CACHE_CONTROL, "{key:?}");
        let etag = format!("\"{}\"", hex::encode(Md5::digest(bytes)));
        assert_eq!(
            reply.header("etag"),
            etag,
            "{key:?}: the MD5 of the stored bytes"
        );
        // A browser revalidating its copy: 304 with no body while the bytes are the same.
        let again = served.get_with(&tile_path(tileset, key), &[("if-none-match", &etag)]);
        assert_eq!(again.status, 304, "{key:?}: {}", again.text());
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), etag);
        assert_eq!(again.header("cache-control"), TILE_CACHE_CONTROL);
        let other = served.get_with(
            &tile_path(tileset, key),
            &[("if-none-match", "\"0123456789abcdef0123456789abcdef\"")],
        );
        assert_eq!((other.status, &other.body), (200, bytes), "{key:?}");
    }
    // A valid tile the output does not hold: the far corner of the world at the highest zoom.
    let missing = (12, 0, 0);
    assert!(!stored.contains_key(&missing));
    let reply = served.get(&tile_path(tileset, missing));
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("cache-control"), TILE_CACHE_CONTROL);
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn serve_answers_only_its_own_address_localhost_and_public_hosts() {
    let setup = Setup::new("servehost", 40, None);
    let mbtiles = setup.path("out.mbtiles");
    let mbtiles = mbtiles.to_str().unwrap();
    setup.seed(mbtiles, &[]);
    let served = Served::start(
        &[
            mbtiles,
            "--public-host",
            "tiles.example.test",
            "--public-host",
            "proxy.example.test:8443",
        ],
        &[],
    );
    let port = served.port;
    let answered = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        "tiles.example.test".into(),
        "tiles.example.test:9000".into(),
        "proxy.example.test:8443".into(),
    ];
    for host in &answered {
        for target in ["/", "/index.json", "/sites/tiles.json", "/sites/0/0/0.pbf"] {
            let reply = get(port, target, host);
            assert!(
                reply.status == 200,
                "{target} with Host {host}: {} {}",
                reply.status,
                reply.text()
            );
        }
    }
    let tilejson = get(port, "/sites/tiles.json", "proxy.example.test:8443").json();
    assert_eq!(
        tilejson["tiles"],
        json!(["http://proxy.example.test:8443/sites/{z}/{x}/{y}.pbf"])
    );
    // A page that rebinds its own name to this address, or reaches it by another name or port.
    for host in [
        format!("rebind.attacker.example:{port}"),
        "rebind.attacker.example".into(),
        format!("127.0.0.1.nip.io:{port}"),
        format!("127.0.0.2:{port}"),
        "127.0.0.1".into(),
        "localhost".into(),
        format!("proxy.example.test:{port}"),
    ] {
        for target in ["/", "/index.json", "/sites/tiles.json", "/sites/0/0/0.pbf"] {
            let reply = get(port, target, &host);
            assert!(
                reply.status == 421 && reply.text().contains("--public-host"),
                "{target} with Host {host} must be refused: {} {}",
                reply.status,
                reply.text()
            );
            assert!(
                !reply.text().contains(mbtiles),
                "no local path in a refusal: {}",
                reply.text()
            );
        }
    }
    let help = oar_tiles(None, &["serve", "--help"]);
    help.assert_success();
    assert!(
        help.stdout.contains("--public-host <NAME>"),
        "--help names the flag: {}",
        help.stdout
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn serve_answers_tiles_tilejson_and_refusals_for_mbtiles_and_directory_outputs() {
    let setup = Setup::new("servehttp", 300, None);
    let mbtiles = setup.path("out.mbtiles");
    let tree = setup.path("tree");
    let (mbtiles, tree) = (mbtiles.to_str().unwrap(), format!("dir:{}", tree.display()));
    setup.seed(mbtiles, &[]);
    setup.seed(&tree, &[]);
    let stored = read_mbtiles_raw(std::path::Path::new(mbtiles));
    assert!(stored.len() > 20, "the fixture holds tiles at every zoom");

    let served = Served::start(
        &[mbtiles, &tree, "--public-host", "tiles.example.test:8443"],
        &[],
    );
    assert!(
        served.stdout().contains("/sites/ ← ") && served.stdout().contains("/sites-2/ ← "),
        "both outputs are named, the second after the first: {}",
        served.stdout()
    );
    // The directory tiles are the MBTiles tiles: the same rows give the same bytes.
    check_tiles(&served, "sites", &stored);
    check_tiles(&served, "sites-2", &stored);

    // Bad coordinates, then path traversal (raw, percent-encoded, backslashed), all refused.
    for bad in [
        "/sites/12/4096/0.pbf",
        "/sites/25/0/0.pbf",
        "/sites/a/0/0.pbf",
        "/sites/3/-1/0.pbf",
        "/sites/3/0/0.png",
        "/sites/3/0/.pbf",
        "/../../../../etc/passwd",
        "/sites/../../../../etc/passwd",
        "/sites/0/0/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/assets/..%2F..%2F..%2FCargo.toml",
        "/sites-2/%2e%2e/%2e%2e/tiles.json",
        "/sites/0/..\\..\\Cargo.toml/0.pbf",
    ] {
        let reply = served.get(bad);
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text());
        let traversal = bad.to_lowercase().contains("..") || bad.contains("%2e");
        assert_eq!(
            reply.text().contains("path traversal refused"),
            traversal,
            "{bad}: {}",
            reply.text()
        );
    }
    assert_eq!(served.get("/nowhere/0/0/0.pbf").status, 404);
    assert_eq!(served.get("/sites/0/0").status, 404);

    // TileJSON: absolute tile URLs under the host the client reached the server by.
    let reply = get(served.port, "/sites/tiles.json", "tiles.example.test:8443");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "application/json");
    let tilejson = reply.json();
    assert_eq!(
        tilejson["tiles"],
        json!(["http://tiles.example.test:8443/sites/{z}/{x}/{y}.pbf"])
    );
    assert_eq!(tilejson["vector_layers"][0]["id"], "sites");
    assert_eq!(
        (tilejson["minzoom"].clone(), tilejson["maxzoom"].clone()),
        (json!(0), json!(12))
    );
    let directory = served.get("/sites-2/tiles.json").json();
    assert_eq!(
        directory["tiles"],
        json!([format!("{}/sites-2/{{z}}/{{x}}/{{y}}.pbf", served.base)]),
        "the directory's own tiles.json names relative URLs; the served one names the server's"
    );
    let url = directory["tiles"][0]
        .as_str()
        .unwrap()
        .replace("{z}/{x}/{y}", "0/0/0");
    let reply = served.get(url.strip_prefix(&served.base).unwrap());
    assert_eq!(
        reply.body,
        stored[&(0, 0, 0)],
        "the URL TileJSON names serves the tile"
    );
    for host in ["not a host", "user@tiles.example.test"] {
        assert_eq!(
            get(served.port, "/sites/tiles.json", host).status,
            400,
            "a Host header that names no plain host[:port] is refused: {host}"
        );
    }

    // The per-zoom figures are inspect's.
    let stats = served.get("/sites/stats.json").json();
    let inspected = oar_tiles(None, &["inspect", mbtiles, "--json"]);
    inspected.assert_success();
    let inspected: Value = serde_json::from_str(&inspected.stdout).unwrap();
    assert_eq!(stats["inventory"]["zooms"], inspected["zooms"]);
    assert_eq!(stats["inventory"]["tiles"], json!(stored.len()));

    let page = served.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert!(page.text().contains("/assets/maplibre-gl.js"));
    let script = served.get("/assets/maplibre-gl.js");
    assert_eq!(script.status, 200);
    assert_eq!(
        script.body,
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/serve/assets/maplibre-gl.js"
        ))
        .unwrap()
    );
    assert_eq!(served.get("/assets/maplibre-gl-LICENSE.txt").status, 200);
    // The changes feed's follower, the ES module the page imports.
    assert!(page.text().contains("from \"/assets/oar-tiles-live.js\""));
    let module = served.get("/assets/oar-tiles-live.js");
    assert_eq!(
        (module.status, module.header("content-type")),
        (200, "text/javascript; charset=utf-8")
    );
    assert_eq!(
        module.body,
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/src/serve/live.js")).unwrap()
    );
    assert!(module.text().contains("export function followChanges("));
    assert_eq!(served.get("/assets/nothing.js").status, 404);

    // Serving never writes: the file is as the seed left it.
    assert_eq!(read_mbtiles_raw(std::path::Path::new(mbtiles)), stored);
    assert_eq!(served.terminate(), 0, "SIGTERM ends serve cleanly");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn the_per_zoom_figures_follow_a_run_that_changed_the_output_while_served() {
    let setup = Setup::new("servestats", 300, None);
    let tree = setup.path("tree");
    let output = format!("dir:{}", tree.display());
    let seed = |zooms: &str| {
        oar_tiles(
            Some(&setup.schema.url),
            &setup.seed_args(&output, zooms, &[]),
        )
        .assert_success();
    };
    seed("0-6");
    let served = Served::start(&[&output], &[]);
    let first = served.get("/sites/stats.json");
    assert_eq!(
        first.header("cache-control"),
        "no-cache",
        "the figures change with the output: no cache keeps them"
    );
    let tiles = |reply: &Value| reply["inventory"]["tiles"].as_u64().unwrap();
    let before = tiles(&first.json());
    assert_eq!(before, read_tree(&tree, "pbf").len() as u64);
    // Read once more while nothing changed: the same figures.
    assert_eq!(tiles(&served.get("/sites/stats.json").json()), before);

    seed("0-12");
    let stored = read_tree(&tree, "pbf").len() as u64;
    assert!(stored > before, "the deeper seed added tiles");
    let after = served.get("/sites/stats.json").json();
    assert_eq!(
        tiles(&after),
        stored,
        "stats.json after the output grew from {before} to {stored} tiles: {after}"
    );
    assert_eq!(served.terminate(), 0);
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_pmtiles_archive_and_its_tilejson_follow_a_run_that_replaced_the_file_while_served() {
    let setup = Setup::new("servepmnew", 300, None);
    let archive = setup.path("out.pmtiles");
    let output = archive.to_str().unwrap().to_string();
    let seed = |zooms: &str| {
        oar_tiles(
            Some(&setup.schema.url),
            &setup.seed_args(&output, zooms, &[]),
        )
        .assert_success();
    };
    seed("0-6");
    let served = Served::start(&[&output], &[]);
    let maxzoom = |served: &Served| served.get("/sites/tiles.json").json()["maxzoom"].clone();
    assert_eq!(maxzoom(&served), json!(6));
    assert_eq!(served.get("/sites/9/0/0.pbf").status, 204, "no zoom 9 yet");
    // The run writes a new archive and renames it over the one `serve` opened.
    seed("0-9");
    let stored = crate::common::pmtiles_reader::read_archive(&archive).tiles;
    let (&(z, x, y), bytes) = stored
        .iter()
        .find(|((z, _, _), _)| *z == 9)
        .expect("the deeper seed stored zoom 9");
    let reply = served.get(&format!("/sites/{z}/{x}/{y}.pbf"));
    assert_eq!(
        reply.status, 200,
        "{z}/{x}/{y} after the archive was replaced"
    );
    assert_eq!(
        maxzoom(&served),
        json!(9),
        "tiles.json after the archive was replaced"
    );
    let figures = served.get("/sites/stats.json").json();
    assert_eq!(
        figures["inventory"]["tiles"],
        json!(stored.len()),
        "{figures}"
    );
    assert!(!bytes.is_empty());
    assert_eq!(served.terminate(), 0);
}

#[test]
#[ignore = "needs PostGIS and the S3 test server: run scripts/test.sh"]
fn serve_reads_pmtiles_and_s3_outputs_byte_for_byte() {
    let server = S3Server::start("tiles");
    let setup = Setup::new("serveremote", 200, Some(&server));
    let env = server.env();
    let mbtiles = setup.path("out.mbtiles");
    let pmtiles = setup.path("out.pmtiles");
    setup.seed(mbtiles.to_str().unwrap(), &env);
    setup.seed(pmtiles.to_str().unwrap(), &env);
    setup.seed("s3://tiles/sites/v1", &env);
    let stored = read_mbtiles_raw(&mbtiles);

    let served = Served::start(
        &[
            pmtiles.to_str().unwrap(),
            "s3://tiles/sites/v1",
            "--config",
            setup.config.to_str().unwrap(),
        ],
        &env,
    );
    check_tiles(&served, "sites", &stored);
    check_tiles(&served, "sites-2", &stored);
    for tileset in ["sites", "sites-2"] {
        let stats = served.get(&format!("/{tileset}/stats.json")).json();
        assert_eq!(
            stats["inventory"]["tiles"],
            json!(stored.len()),
            "{tileset}"
        );
        let tilejson = served.get(&format!("/{tileset}/tiles.json")).json();
        assert_eq!(tilejson["vector_layers"][0]["id"], "sites", "{tileset}");
    }
}

/// The clusters the page must show at zoom `z`: the occupied cells of the 512-unit grid aligned to
/// the zoom's tiles, counted by PostGIS, and the rows in them.
fn expected_clusters(setup: &mut Setup, z: u8) -> (i64, i64) {
    let half = 20_037_508.342_789_244_f64;
    let cell = 2.0 * half / ((1u64 << z) * (4096 / 512)) as f64;
    let sql = format!(
        "WITH m AS (SELECT ST_X(ST_Transform(pt, 3857)) AS x, ST_Y(ST_Transform(pt, 3857)) AS y
                      FROM \"{}\".sites)
         SELECT count(DISTINCT (floor((x + {half:?}) / {cell:?}), floor(({half:?} - y) / {cell:?}))),
                count(*)
           FROM m",
        setup.schema.name
    );
    let row = setup.schema.client().query_one(&sql, &[]).unwrap();
    (row.get(0), row.get(1))
}

/// Waits until the map has drawn everything it asked for (MapLibre's `idle`), polling a flag the
/// page's hook sets, so no time limit applies.
async fn map_idle(browser: &Browser) {
    browser
        .client
        .execute(
            "window.__idleNow = false;
             window.__ready.then(() => window.__whenIdle()).then(() => { window.__idleNow = true; });",
            vec![],
        )
        .await
        .unwrap();
    loop {
        let error = browser
            .client
            .execute("return window.__error || null", vec![])
            .await
            .unwrap();
        assert!(error.is_null(), "the page failed: {error}");
        let done = browser
            .client
            .execute("return window.__idleNow === true", vec![])
            .await
            .unwrap();
        if done == json!(true) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn click(browser: &Browser, x: f64, y: f64) {
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveTo {
            duration: None,
            x: x.round(),
            y: y.round(),
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    browser.client.perform_actions(mouse).await.unwrap();
}

/// Where a rendered feature of `layer` is on the page (viewport pixels), and its properties: the
/// one with the largest `order_by` property.
async fn feature_on_screen(browser: &Browser, layer: &str, order_by: &str) -> (f64, f64, Value) {
    let found = browser
        .client
        .execute(
            "const [layer, key] = arguments;
             const map = window.__map;
             const features = map.queryRenderedFeatures({ layers: [layer] });
             features.sort((a, b) => Number(b.properties[key]) - Number(a.properties[key]));
             const feature = features[0];
             const box = map.getContainer().getBoundingClientRect();
             const point = map.project(feature.geometry.coordinates);
             return [box.left + point.x, box.top + point.y, feature.properties, feature.id ?? null];",
            vec![json!(layer), json!(order_by)],
        )
        .await
        .unwrap();
    let mut properties = found[2].clone();
    properties["__id"] = found[3].clone();
    (
        found[0].as_f64().unwrap(),
        found[1].as_f64().unwrap(),
        properties,
    )
}

async fn text_of(browser: &Browser, id: &str) -> String {
    browser
        .client
        .find(Locator::Id(id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[test]
#[ignore = "needs PostGIS and Chromium: run scripts/test.sh, which installs chromium and chromium-driver"]
fn the_page_shows_the_clusters_in_view_their_properties_and_the_tile_figures() {
    let mut setup = Setup::new("servebrowser", 300, None);
    let mbtiles = setup.path("out.mbtiles");
    setup.seed(mbtiles.to_str().unwrap(), &[]);
    let stored = read_mbtiles_raw(&mbtiles);
    let view_zoom = 8;
    let (clusters, rows) = expected_clusters(&mut setup, view_zoom);
    assert!(clusters > 3, "the view shows several clusters, not one");
    // A budget some tiles exceed, so the page has some to mark.
    let budget = 1500;
    let over: Vec<String> = stored
        .iter()
        .filter(|(_, bytes)| bytes.len() > budget)
        .map(|((z, x, y), _)| format!("{z}/{x}/{y}"))
        .collect();
    assert!(!over.is_empty() && over.len() < stored.len());
    let served = Served::start(
        &[
            mbtiles.to_str().unwrap(),
            "--size-budget",
            &budget.to_string(),
        ],
        &[],
    );

    let clicked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let browser = Browser::start(1280, 800).await;
            let center_lon = (HUB[0] + HUB[2]) / 2.0;
            let center_lat = (HUB[1] + HUB[3]) / 2.0;
            browser
                .client
                .goto(&format!(
                    "{}/#{view_zoom}/{center_lat}/{center_lon}",
                    served.base
                ))
                .await
                .unwrap();
            map_idle(&browser).await;

            // Every cluster of the view is drawn once (a cluster in a tile's buffer is drawn by
            // both tiles: the same cell, the same properties), and the counts add up to the rows.
            let seen = browser
                .client
                .execute(
                    "const map = window.__map;
                     const cells = new Map();
                     for (const f of map.queryRenderedFeatures({ layers: window.__clusterLayers })) {
                       cells.set(JSON.stringify(f.properties), Number(f.properties.count));
                     }
                     return { zoom: map.getZoom(), clusters: cells.size,
                              rows: [...cells.values()].reduce((a, b) => a + b, 0),
                              labelled: [...cells.values()].filter((n) => n > 1).length,
                              labels: document.querySelectorAll('.cluster-label').length };",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(seen["zoom"].as_f64(), Some(f64::from(view_zoom)));
            assert_eq!(seen["clusters"], json!(clusters), "clusters on screen: {seen}");
            assert_eq!(seen["rows"], json!(rows), "rows under the clusters: {seen}");
            assert_eq!(
                seen["labels"], seen["labelled"],
                "every cluster of more than one is labelled with its count: {seen}"
            );

            // A real click on the biggest cluster shows its properties beside the map.
            let (x, y, properties) = feature_on_screen(&browser, "sites/clusters", "count").await;
            click(&browser, x, y).await;
            let shown = text_of(&browser, "props").await;
            assert!(
                shown.contains(&format!("count\t{}", properties["count"]))
                    || shown.contains(&format!("count {}", properties["count"])),
                "the clicked cluster's count: {shown}"
            );
            assert!(shown.contains("extent_west"), "{shown}");

            // The per-zoom figures and the tiles over budget.
            let stats = text_of(&browser, "stats").await;
            let at_view = stored.keys().filter(|(z, _, _)| *z == view_zoom).count();
            assert!(
                stats.contains(&format!("\n{view_zoom} {at_view} "))
                    || stats.contains(&format!("\n{view_zoom}\t{at_view}\t")),
                "zoom {view_zoom} holds {at_view} tiles: {stats}"
            );
            let listed = text_of(&browser, "over").await;
            assert!(listed.starts_with(&format!("{} tile(s) over", over.len())), "{listed}");
            for tile in &over {
                assert!(listed.contains(tile.as_str()), "{tile} is listed: {listed}");
            }
            let marked_rows = browser
                .client
                .find_all(Locator::Css("#stats tr.over"))
                .await
                .unwrap()
                .len();
            let zooms_over: std::collections::BTreeSet<&str> =
                over.iter().map(|t| t.split('/').next().unwrap()).collect();
            assert_eq!(marked_rows, zooms_over.len(), "zooms with tiles over budget are marked");

            // A listed tile's link takes the map there, outlined in red.
            let largest = browser
                .client
                .find(Locator::Css("#over a.tile"))
                .await
                .unwrap();
            let tile = largest.text().await.unwrap();
            largest.click().await.unwrap();
            map_idle(&browser).await;
            let outlined = browser
                .client
                .execute(
                    "return window.__map.queryRenderedFeatures({ layers: ['over-budget/fill'] })
                         .map((f) => f.properties.tile);",
                    vec![],
                )
                .await
                .unwrap();
            assert!(
                outlined.as_array().unwrap().contains(&json!(tile)),
                "{tile} is outlined on the map: {outlined}"
            );
            browser
                .client
                .execute(
                    "window.__map.jumpTo({ zoom: arguments[0], center: arguments[1] });",
                    vec![json!(view_zoom), json!([center_lon, center_lat])],
                )
                .await
                .unwrap();
            map_idle(&browser).await;

            // The tile-boundary toggle, then the picture a person looks at.
            browser
                .client
                .find(Locator::Id("boundaries"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            let shown = browser
                .client
                .execute("return window.__map.showTileBoundaries", vec![])
                .await
                .unwrap();
            assert_eq!(shown, json!(true));
            map_idle(&browser).await;
            let png = browser.client.screenshot().await.unwrap();
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/serve-screenshot.png");
            std::fs::write(path, &png).unwrap();

            // Above the clustered zooms each facility is its own feature: a click shows its row.
            browser
                .client
                .execute(
                    "window.__map.jumpTo({ zoom: arguments[0] });",
                    vec![json!(CLUSTER_MAXZOOM + 2)],
                )
                .await
                .unwrap();
            map_idle(&browser).await;
            let (x, y, properties) = feature_on_screen(&browser, "sites/points", "score").await;
            click(&browser, x, y).await;
            let shown = text_of(&browser, "props").await;
            let label = properties["label"].as_str().unwrap();
            assert!(shown.contains(label), "{label} in {shown}");
            assert!(
                shown.contains(&format!("feature id {}", properties["__id"])),
                "{shown}"
            );
            let id = properties["__id"].as_i64().unwrap();
            browser.close().await;
            (id, label.to_string())
        });
    let sql = format!(
        "SELECT label FROM \"{}\".sites WHERE site_id = $1",
        setup.schema.name
    );
    let row = setup
        .schema
        .client()
        .query_one(&sql, &[&clicked.0])
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        clicked.1,
        "the properties shown are the row's"
    );
}
