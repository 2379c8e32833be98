//! The changes feed (`[tileset.feed]`) as clients read it, without a browser: a tree behind a real
//! Varnish whose purges fail until the cache comes back (the feed must not list a tile the edge
//! still serves old), its retention, and an MBTiles output under `watch`, whose listener answers
//! the feed's documents and streams its segments as Server-Sent Events.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::run::{
    differences, oar_tiles, oar_tiles_with, read_tree, single_layer_config, Run,
};
use crate::common::s3::S3Server;
use crate::common::segment_tiles;
use crate::common::serve::Served;
use crate::common::varnish::Varnish;
use crate::common::watcher::{Watcher, PACING};

const BBOX: &str = "bbox = [2.2, 48.8, 2.5, 48.95]";

/// A schema of sites with change capture installed, and a config whose tileset has a feed and
/// writes `output`, with `extra` before its layer.
fn fixture(label: &str, output: &str, extra: &str) -> Fixture {
    let points = hub_with_scatter(200, 11, 1000, [2.2, 48.8, 2.5, 48.95]);
    let fixture = Fixture::new(label, &points, "feed.toml", |schema| {
        let changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n{PACING}\n{}",
            single_layer_config(
                &schema.name,
                "sites",
                &format!("maxzoom = 12\n{BBOX}\n{extra}\n\n[tileset.feed]\nretention = 3\n"),
                ""
            )
        )
    });
    let config = fixture.config.to_str().unwrap().to_string();
    oar_tiles(
        Some(&fixture.schema.url),
        &["changes", "install", "--config", &config],
    )
    .assert_success();
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    let output = if output.ends_with(".mbtiles") || output.ends_with(".pmtiles") {
        fixture.path(output).display().to_string()
    } else if output.starts_with("s3://") {
        output.to_string()
    } else {
        format!("dir:{}", fixture.path(output).display())
    };
    let text = text.replacen(
        "name = \"sites\"\n",
        &format!("name = \"sites\"\noutput = \"{output}\"\n"),
        1,
    );
    std::fs::write(&fixture.config, text).unwrap();
    fixture
}

fn seed(fixture: &Fixture, extra: &[&str]) -> Run {
    seed_with(fixture, extra, &[])
}

fn seed_with(fixture: &Fixture, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args = vec!["seed", "--config", fixture.config.to_str().unwrap()];
    args.extend_from_slice(extra);
    oar_tiles_with(Some(&fixture.schema.url), &args, env)
}

fn json_file(path: &std::path::Path) -> Option<Value> {
    let bytes = std::fs::read(path).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap())
}

#[test]
#[ignore = "needs PostGIS and Varnish: run scripts/test.sh"]
fn the_feed_lists_no_change_before_its_cdn_took_it_and_keeps_only_its_retention() {
    let mut fixture = fixture(
        "live_feed_cdn",
        "tree",
        "tiles_url = \"https://tiles.example.org/sites/{z}/{x}/{y}.pbf\"",
    );
    let tree = fixture.path("tree");
    let feed = tree.join("changes");
    // The cache is down: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = std::fs::read_to_string(&fixture.config).unwrap();
    let target = |port: u16| {
        format!(
            "\n[[tileset.cdn]]\nkind = \"http\"\nname = \"varnish\"\nurl = \"http://127.0.0.1:{port}/sites/{{path}}\"\n"
        )
    };
    std::fs::write(&fixture.config, config.clone() + &target(closed)).unwrap();
    let first = seed(&fixture, &[]);
    assert_eq!(first.code, 1, "the purge failed: {}", first.stderr);
    assert!(
        !feed.join("head.json").exists(),
        "published before the purge"
    );
    let seeded = read_tree(&tree, "pbf");

    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = label || ' (renamed)' WHERE site_id % 7 = 0");
    let second = seed(&fixture, &["--dirty"]);
    assert_eq!(second.code, 1, "the purge failed: {}", second.stderr);
    assert!(
        !feed.join("head.json").exists(),
        "published before the purge"
    );
    let renamed = read_tree(&tree, "pbf");
    let changed = differences(&seeded, &renamed);
    assert!(!changed.is_empty());

    // The cache is back, in front of the tree's origin.
    let origin = Served::start(&[&format!("dir:{}", tree.display())], &[]);
    let cache = Varnish::keeping(origin.port, "1d");
    std::fs::write(&fixture.config, config.clone() + &target(cache.port)).unwrap();
    seed(&fixture, &["--dirty"]).assert_success();
    let head = json_file(&feed.join("head.json")).expect("a head once the cache took the changes");
    assert_eq!(
        (head["sequence"].as_u64(), head["oldest"].as_u64()),
        (Some(1), Some(1)),
        "{head}"
    );
    let listed = segment_tiles(&json_file(&feed.join("1.json")).unwrap());
    // Both runs' tiles: the seed's and the rename's, in one segment.
    assert!(
        changed.is_subset(&listed),
        "{changed:?} not all in {listed:?}"
    );
    assert_eq!(
        listed.len(),
        seeded.len(),
        "the seed's tiles and the rename's"
    );
    // The cache serves the head it will be purged of.
    let cached = cache.get_path("/sites/changes/head.json");
    assert_eq!(cached.json()["sequence"], 1);

    // Four more runs: their segments list exactly what each changed (a run may publish the
    // tiles the cache took while it still renders, then the rest), the head names the latest,
    // the cache was purged of the old head, and only the last three segments stay.
    let mut sequence = 1;
    for round in 0..4 {
        fixture.schema.execute(&format!(
            "UPDATE {{schema}}.sites SET label = label || ' {round}' WHERE site_id = {}",
            10 + round
        ));
        let before = read_tree(&tree, "pbf");
        seed(&fixture, &["--dirty"]).assert_success();
        let after = read_tree(&tree, "pbf");
        let head = json_file(&feed.join("head.json")).unwrap();
        let last = head["sequence"].as_u64().unwrap();
        assert!(
            (sequence + 1..=sequence + 4).contains(&last),
            "a run publishes one to four segments: {head}"
        );
        let listed: BTreeSet<String> = (sequence + 1..=last)
            .flat_map(|n| segment_tiles(&json_file(&feed.join(format!("{n}.json"))).unwrap()))
            .collect();
        assert_eq!(
            listed,
            differences(&before, &after),
            "segments {}..={last} list exactly the tiles the run changed",
            sequence + 1
        );
        assert_eq!(
            cache.get_path("/sites/changes/head.json").json()["sequence"],
            last
        );
        sequence = last;
    }
    let head = json_file(&feed.join("head.json")).unwrap();
    assert_eq!(
        (head["sequence"].as_u64(), head["oldest"].as_u64()),
        (Some(sequence), Some(sequence - 2)),
        "{head}"
    );
    let mut kept: Vec<String> = std::fs::read_dir(&feed)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    let mut expected: Vec<String> = (sequence - 2..=sequence)
        .map(|n| format!("{n}.json"))
        .chain(["head.json".to_string()])
        .collect();
    expected.sort();
    assert_eq!(kept, expected);
    // The feed is no tile: validate finds the tree as it should be.
    oar_tiles(None, &["validate", &format!("dir:{}", tree.display())]).assert_success();
}

/// Reads a Server-Sent Events stream until an event of `kind` with `id` arrived; returns its data.
fn next_event(stream: &mut std::net::TcpStream, seen: &mut String, kind: &str, id: u64) -> String {
    let started = Instant::now();
    let wanted = format!("event: {kind}\n");
    loop {
        if let Some(at) = seen.find(&wanted) {
            let rest = &seen[at..];
            if let Some(end) = rest.find("\n\n") {
                let event = rest[..end].to_string();
                *seen = rest[end + 2..].to_string();
                if event.contains(&format!("\nid: {id}\n"))
                    || event.ends_with(&format!("\nid: {id}"))
                {
                    let data = event
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .unwrap_or_default();
                    return data.to_string();
                }
                continue;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no `{kind}` event {id} came; the stream so far: {seen:?}"
        );
        let mut buffer = [0u8; 4096];
        match stream.read(&mut buffer) {
            Ok(0) => panic!("the event stream ended; so far: {seen:?}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("reading the event stream: {e}"),
        }
    }
}

fn open_events(port: u16, last_event_id: Option<u64>) -> std::net::TcpStream {
    open_events_of(port, "sites", last_event_id)
}

/// `GET /changes/{tileset_and_query}/events` as an `EventSource` sends it.
fn open_events_of(
    port: u16,
    tileset_and_query: &str,
    last_event_id: Option<u64>,
) -> std::net::TcpStream {
    let (tileset, query) = tileset_and_query
        .split_once('?')
        .map_or((tileset_and_query, String::new()), |(t, q)| {
            (t, format!("?{q}"))
        });
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    write!(
        stream,
        "GET /changes/{tileset}/events{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{resume}\r\n"
    )
    .unwrap();
    stream
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn watch_answers_an_mbtiles_outputs_feed_and_streams_its_segments_as_server_sent_events() {
    let mut fixture = fixture("live_feed_watch", "out.mbtiles", "");
    // No CDN: the full seed's tiles are published at once.
    seed(&fixture, &[]).assert_success();
    let feed = fixture.path("out.mbtiles.changes");
    let head = json_file(&feed.join("head.json")).expect("the seed's segment");
    assert_eq!(head["sequence"], 1);

    let mut watcher = Watcher::start(&fixture);
    watcher.wait_until("the listener", |w| w.health().is_some());
    let (status, body) = watcher.get("/changes/sites/head.json").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["sequence"], 1);
    let mut stream = open_events(watcher.port(), None);
    let mut seen = String::new();
    let head = next_event(&mut stream, &mut seen, "head", 1);
    assert_eq!(serde_json::from_str::<Value>(&head).unwrap()["sequence"], 1);

    let before = crate::common::run::read_mbtiles_raw(&fixture.path("out.mbtiles"));
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = 'Rue de Rivoli Atelier' WHERE site_id = 5");
    let data = next_event(&mut stream, &mut seen, "segment", 2);
    let segment: Value = serde_json::from_str(&data).unwrap();
    let after = crate::common::run::read_mbtiles_raw(&fixture.path("out.mbtiles"));
    assert_eq!(
        segment_tiles(&segment),
        differences(&before, &after),
        "{segment}"
    );
    let (status, body) = watcher.get("/changes/sites/2.json").unwrap();
    assert_eq!((status, body.as_str()), (200, data.as_str()));

    // A client that reconnects after segment 1 gets segment 2 at once.
    let mut again = open_events(watcher.port(), Some(1));
    let mut seen_again = String::new();
    assert_eq!(next_event(&mut again, &mut seen_again, "segment", 2), data);
    let (status, body) = watcher.get("/changes/nope/head.json").unwrap();
    assert_eq!(status, 404, "{body}");
    watcher.stop(libc::SIGTERM);
}

/// The status line and headers of what the server answered on `stream` so far.
fn answer_head(stream: &mut std::net::TcpStream) -> String {
    let started = Instant::now();
    let mut seen = String::new();
    while !seen.contains("\r\n\r\n") {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no answer; so far: {seen:?}"
        );
        let mut buffer = [0u8; 4096];
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    seen
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn event_streams_past_max_event_clients_are_refused_and_a_seat_frees_when_a_client_leaves() {
    let fixture = fixture("live_feed_cap", "out.mbtiles", "");
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    std::fs::write(
        &fixture.config,
        text.replacen("[watch]\n", "[watch]\nmax_event_clients = 2\n", 1),
    )
    .unwrap();
    seed(&fixture, &[]).assert_success();
    let mut watcher = Watcher::start(&fixture);
    watcher.wait_until("the listener", |w| w.health().is_some());
    let mut first = open_events(watcher.port(), None);
    let mut second = open_events(watcher.port(), None);
    for stream in [&mut first, &mut second] {
        let mut seen = String::new();
        next_event(stream, &mut seen, "head", 1);
    }
    let mut third = open_events(watcher.port(), None);
    let refused = answer_head(&mut third);
    assert!(
        refused.starts_with("HTTP/1.1 503") && refused.to_lowercase().contains("retry-after: 10"),
        "{refused}"
    );
    // A refused client does not keep its connection, and with it a file descriptor.
    assert!(
        refused.to_lowercase().contains("connection: close"),
        "{refused}"
    );
    third
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut rest = Vec::new();
    third
        .read_to_end(&mut rest)
        .expect("the server closes a refused stream's connection");
    // The documents and the health check are no event streams: they are still answered.
    assert_eq!(watcher.get("/changes/sites/head.json").unwrap().0, 200);
    assert!(watcher.health().is_some());
    drop(first);
    // The server notices the client left at the latest at its next keep-alive (15 s).
    let started = Instant::now();
    loop {
        let mut again = open_events(watcher.port(), None);
        let answer = answer_head(&mut again);
        if answer.starts_with("HTTP/1.1 200") {
            let mut seen = answer[answer.find("\r\n\r\n").unwrap() + 4..].to_string();
            next_event(&mut again, &mut seen, "head", 1);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no seat freed after a client left: {answer}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    watcher.stop(libc::SIGTERM);
}

#[test]
#[ignore = "needs PostGIS and the S3 test server: run scripts/test.sh"]
fn an_s3_prefixs_feed_is_served_with_cdn_headers_and_a_pmtiles_files_by_serve() {
    let server = S3Server::start("feed");
    let mut fixture = fixture("live_feed_s3", "s3://feed/tiles", "");
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    std::fs::write(&fixture.config, server.config_table("") + &text).unwrap();
    let env = server.env();
    seed_with(&fixture, &[], &env).assert_success();
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = 'Canal Saint-Martin Looms' WHERE site_id = 3");
    seed_with(&fixture, &["--dirty"], &env).assert_success();
    let client = server.client();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (key, cache_control) in [
            ("tiles/changes/head.json", "public, max-age=1"),
            (
                "tiles/changes/2.json",
                "public, max-age=31536000, immutable",
            ),
        ] {
            let head = client
                .head_object()
                .bucket("feed")
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{key}: {e:?}"));
            assert_eq!(head.cache_control(), Some(cache_control), "{key}");
            assert_eq!(head.content_type(), Some("application/json"), "{key}");
        }
    });
    let config = fixture.config.to_str().unwrap().to_string();
    let origin = Served::start(&["s3://feed/tiles", "--config", &config], &env);
    let name = origin.get("/index.json").json()["tilesets"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let head = origin.get(&format!("/{name}/changes/head.json"));
    assert_eq!(head.status, 200);
    // The seed's segment, then the dirty run's (one or more: an S3 prefix serves a tile once
    // uploaded, so the run may list its first tiles while it renders the others).
    assert!(
        head.json()["sequence"].as_u64() >= Some(2),
        "{}",
        String::from_utf8_lossy(&head.body)
    );
    assert_eq!(
        origin.get(&format!("/{name}/changes/2.json")).json()["sequence"],
        2
    );
    assert_eq!(
        origin
            .get(&format!("/{name}/changes/..%2fhead.json"))
            .status,
        400
    );
    assert_eq!(
        origin.get(&format!("/{name}/changes/tiles.json")).status,
        404
    );
    drop(origin);

    // A PMTiles file's feed lies beside it, and serve answers it the same way.
    let pmtiles = fixture.path("out.pmtiles");
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    std::fs::write(
        &fixture.config,
        text.replace("s3://feed/tiles", pmtiles.to_str().unwrap()),
    )
    .unwrap();
    seed_with(&fixture, &[], &env).assert_success();
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = 'Belleville Weavers' WHERE site_id = 3");
    let before = crate::common::pmtiles_reader::read_archive(&pmtiles).tiles;
    seed_with(&fixture, &["--dirty"], &env).assert_success();
    let after = crate::common::pmtiles_reader::read_archive(&pmtiles).tiles;
    let changed: BTreeSet<String> = before
        .keys()
        .chain(after.keys())
        .filter(|key| before.get(key) != after.get(key))
        .map(|(z, x, y)| format!("{z}/{x}/{y}"))
        .collect();
    assert!(!changed.is_empty());
    let origin = Served::start(&[pmtiles.to_str().unwrap()], &[]);
    let name = origin.get("/index.json").json()["tilesets"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let head = origin.get(&format!("/{name}/changes/head.json")).json();
    let segment = origin
        .get(&format!("/{name}/changes/{}.json", head["sequence"]))
        .json();
    assert_eq!(segment_tiles(&segment), changed, "{segment}");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn watch_streams_a_partitions_own_feed() {
    let mut fixture = fixture(
        "live_feed_parts",
        "parts.mbtiles",
        "partition_by = \"kind\"",
    );
    seed(&fixture, &[]).assert_success();
    let mut watcher = Watcher::start(&fixture);
    watcher.wait_until("the listener", |w| w.health().is_some());
    let (status, body) = watcher.get("/changes/sites/head.json").unwrap();
    assert_eq!(
        status, 400,
        "a partitioned tileset's feed needs a partition: {body}"
    );
    let (status, woven) = watcher
        .get("/changes/sites/head.json?partition=woven")
        .unwrap();
    assert_eq!(status, 200, "{woven}");
    let woven: Value = serde_json::from_str(&woven).unwrap();
    let (status, knit) = watcher
        .get("/changes/sites/head.json?partition=knit")
        .unwrap();
    assert_eq!(status, 200, "{knit}");
    let knit: Value = serde_json::from_str(&knit).unwrap();

    let mut stream = open_events_of(watcher.port(), "sites?partition=knit", None);
    let mut seen = String::new();
    let sequence = knit["sequence"].as_u64().unwrap();
    next_event(&mut stream, &mut seen, "head", sequence);
    // Site 4 is `knit` (4 % 3 != 0, 4 % 2 == 0): only that partition's feed moves.
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = 'Knit only' WHERE site_id = 4");
    let data = next_event(&mut stream, &mut seen, "segment", sequence + 1);
    assert!(!segment_tiles(&serde_json::from_str(&data).unwrap()).is_empty());
    let (_, after) = watcher
        .get("/changes/sites/head.json?partition=woven")
        .unwrap();
    let after: Value = serde_json::from_str(&after).unwrap();
    assert_eq!(
        after["sequence"], woven["sequence"],
        "the woven feed did not move"
    );
    watcher.stop(libc::SIGTERM);
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_runs_purge_count_holds_the_feeds_head_with_the_tiles() {
    let mut fixture = fixture("live_feed_count", "tree", "");
    let cache = crate::common::recorder::Recorder::start("{}", 0);
    let config = std::fs::read_to_string(&fixture.config).unwrap();
    std::fs::write(
        &fixture.config,
        config
            + &format!(
                "\n[[tileset.cdn]]\nkind = \"http\"\nname = \"cache\"\nurl = \"http://127.0.0.1:{}/{{path}}\"\n",
                cache.port
            ),
    )
    .unwrap();
    seed(&fixture, &[]).assert_success();
    cache.requests.lock().unwrap().clear();
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = label || ' (renamed)' WHERE site_id % 7 = 0");
    let report = fixture.path("summary.json");
    seed(
        &fixture,
        &["--dirty", "--summary-json", report.to_str().unwrap()],
    )
    .assert_success();
    let sent: Vec<String> = cache
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert!(
        sent.iter().any(|path| path.ends_with("changes/head.json")),
        "the feed's head is purged: {sent:?}"
    );
    let purges = &crate::common::run::summary(&report)[0]["purges"][0];
    assert_eq!(
        (purges["requests"].as_u64(), purges["paths"].as_u64()),
        (Some(sent.len() as u64), Some(sent.len() as u64)),
        "the summary counts every purge the cache took, the head's too: {purges} for {sent:?}"
    );
}
