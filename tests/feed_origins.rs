//! The changes feed across origins: a tree's `changes/` served by nginx with the user guide's
//! server block, followed by `oar-tiles-live.js` in headless Chromium from a page on another
//! origin (a second nginx port). The module reads the head and segments there, and when the head
//! cannot be read (a 404, an answer that is not JSON, a folder served without
//! `Access-Control-Allow-Origin`) its state says why, visible to the page.

use serde_json::{json, Value};

use crate::common::free_port;
use crate::common::nginx::{book_block_at, Nginx};
use crate::common::serve::{get, Browser};

/// A page with a stand-in for a MapLibre map (what the module calls on it, recorded), following
/// the feed named by its `?feed=` with the module beside it.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<script type="module">
import { followChanges } from "./oar-tiles-live.js";
window.__refreshed = [];
window.__errors = [];
const map = {
  getSource: () => ({ tiles: ["http://tiles.invalid/tiles/{z}/{x}/{y}.pbf"] }),
  setTransformRequest: () => {},
  on: () => {},
  off: () => {},
  refreshTiles: (id, tiles) => {
    window.__refreshed.push(...(tiles || []).map((t) => `${t.z}/${t.x}/${t.y}`));
  },
  style: { tileManagers: { tiles: { _outOfViewCache: { filter: () => {} } } } },
};
window.__feed = followChanges(map, {
  feed: new URLSearchParams(location.search).get("feed"),
  interval: 200,
  onError: (message) => window.__errors.push(message),
});
</script>
"#;

fn head(sequence: u64) -> String {
    json!({"format": "oar-tiles-changes", "version": 1, "sequence": sequence, "oldest": 1,
           "published": 0.0})
    .to_string()
}

fn segment(sequence: u64, tiles: &[&str]) -> String {
    json!({"format": "oar-tiles-changes", "version": 1, "sequence": sequence, "published": 0.0,
           "reload": false, "tiles": tiles})
    .to_string()
}

/// Polls `script`'s value in the page until `done` holds, for at most 20 s (a hang's bound).
/// Publishes `contents` as `path` the way the tool does, by a rename: nginx never serves a head
/// half written (an empty answer would be "not JSON" to the module for one poll).
fn publish(path: &std::path::Path, contents: &str) {
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// Waits for `script` to return what `done` accepts. The bound is a guard against a module that
/// never gets there, not a measure: the suite runs this beside other tests on 2 cores.
async fn wait_for(browser: &Browser, what: &str, script: &str, done: impl Fn(&Value) -> bool) {
    let start = std::time::Instant::now();
    loop {
        let value = browser.client.execute(script, vec![]).await.unwrap();
        if done(&value) {
            return;
        }
        let state = browser
            .client
            .execute("return window.__feed || null", vec![])
            .await
            .unwrap();
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "waited 60 s for {what}: {value}; the follower: {state}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn error_says(words: &'static [&'static str]) -> impl Fn(&Value) -> bool {
    move |error| {
        error
            .as_str()
            .is_some_and(|e| words.iter().all(|w| e.contains(w)))
    }
}

#[test]
#[ignore = "needs nginx and Chromium: run scripts/test.sh, which sets OAR_TILES_TEST_NGINX"]
fn a_page_on_another_origin_follows_the_feed_and_is_told_why_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    let changes = www.join("tiles/changes");
    std::fs::create_dir_all(&changes).unwrap();
    std::fs::write(changes.join("head.json"), head(1)).unwrap();
    // A feed folder the block has no location for: served plainly, without CORS.
    std::fs::create_dir_all(www.join("elsewhere/changes")).unwrap();
    std::fs::write(www.join("elsewhere/changes/head.json"), head(1)).unwrap();
    let pages = dir.path().join("pages");
    std::fs::create_dir_all(&pages).unwrap();
    std::fs::write(pages.join("index.html"), PAGE).unwrap();
    let module = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/serve/live.js");
    std::fs::copy(module, pages.join("oar-tiles-live.js")).unwrap();

    let (tiles_port, page_port) = (free_port(), free_port());
    let servers = format!(
        "{}\nserver {{\n    listen 127.0.0.1:{page_port};\n    root {};\n    types {{ text/html html; text/javascript js; }}\n}}\n",
        book_block_at(tiles_port, &www),
        pages.display()
    );
    let nginx = Nginx::start(&dir.path().join("nginx"), &servers, tiles_port);

    // What the block sends: CORS on both documents, the head briefly kept, segments for ever.
    publish(&changes.join("2.json"), &segment(2, &["3/4/2"]));
    let answer = get(tiles_port, "/tiles/changes/head.json", "tiles.example.org");
    assert_eq!(answer.status, 200, "{}", nginx.log());
    assert_eq!(answer.header("access-control-allow-origin"), "*");
    assert_eq!(answer.header("cache-control"), "public, max-age=1");
    assert_eq!(answer.header("content-type"), "application/json");
    let answer = get(tiles_port, "/tiles/changes/2.json", "tiles.example.org");
    assert_eq!(answer.header("access-control-allow-origin"), "*");
    assert_eq!(
        answer.header("cache-control"),
        "public, max-age=31536000, immutable"
    );

    let feed = format!("http://127.0.0.1:{tiles_port}/tiles/changes");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let browser = Browser::start(800, 600).await;
        let page = format!("http://127.0.0.1:{page_port}/index.html?feed=");
        browser.client.goto(&format!("{page}{feed}")).await.unwrap();
        let state = "return window.__feed ? window.__feed.sequence : null";
        wait_for(&browser, "the head, across origins", state, |s| {
            *s == json!(1)
        })
        .await;

        // A segment published: read across origins too, its tile refreshed.
        publish(&changes.join("head.json"), &head(2));
        let refreshed = "return window.__refreshed";
        wait_for(&browser, "the segment's tile", refreshed, |r| {
            *r == json!(["3/4/2"])
        })
        .await;
        let error = "return window.__feed.error";
        assert_eq!(
            browser.client.execute(error, vec![]).await.unwrap(),
            Value::Null
        );

        // The head gone: a 404, said so (the block sends CORS on errors too, or the page could
        // not even see the status).
        std::fs::remove_file(changes.join("head.json")).unwrap();
        wait_for(
            &browser,
            "the 404",
            error,
            error_says(&["head.json", "404"]),
        )
        .await;
        // A head that is not JSON.
        publish(&changes.join("head.json"), "<html>moved</html>");
        wait_for(&browser, "the bad answer", error, error_says(&["not JSON"])).await;
        let told = "return window.__errors.length";
        wait_for(&browser, "onError", told, |n| n.as_u64() >= Some(2)).await;

        // A feed served without CORS: the browser hides why; the module names the likely cause.
        let elsewhere = format!("http://127.0.0.1:{tiles_port}/elsewhere/changes");
        browser
            .client
            .goto(&format!("{page}{elsewhere}"))
            .await
            .unwrap();
        let cors = &["elsewhere/changes/head.json", "Access-Control-Allow-Origin"];
        wait_for(&browser, "the CORS refusal", error, error_says(cors)).await;
        browser.close().await;
    });
    drop(nginx);
}
