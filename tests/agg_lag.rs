//! A change's purge does not wait for the `agg_tiles_hash`, which reads every stored tile: a
//! `seed --dirty` of an MBTiles file purges first and brings the hash up to date after; `watch`
//! leaves it pending and records it when idle; a tree names the digest it kept from the tiles it
//! changed instead, read from no other tile. Meanwhile the output declares it pending, never wrong, and `validate`
//! says so without failing. The purge target is a server that, when a purge arrives, looks at
//! the output as it is at that moment (and runs `validate` on it) before answering.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};

use crate::common::fixture::Fixture;
use crate::common::pg::{hub_with_scatter, Point};
use crate::common::run::{
    expected_digest, oar_tiles, read_mbtiles_raw, read_metadata, read_tree, read_tree_after_a_kill,
    single_layer_config, Tiles,
};
use crate::common::watcher::{Watcher, PACING};

const ZOOMS: &str = "0-9";

fn points() -> Vec<Point> {
    hub_with_scatter(300, 23, 4, [4.8, 52.3, 5.0, 52.4])
}

/// What the output said about its hash when a purge arrived.
#[derive(Debug, Clone)]
struct AtPurge {
    /// The purge's method and path.
    request: String,
    /// The hash the output declared, if any.
    declared: Option<String>,
    /// The hash its tiles had.
    actual: String,
    /// Whether it declared the hash pending.
    pending: bool,
    /// `validate --json` then: its exit code and report (the first purge only).
    validated: Option<(i32, serde_json::Value)>,
}

/// The hash as martin's SQL computes it, apart from the tool's code.
fn expected_hash(tiles: &Tiles) -> String {
    let mut rows: Vec<(u8, u32, u32, &Vec<u8>)> = tiles
        .iter()
        .map(|((z, x, y), data)| (*z, *x, (1u32 << z) - 1 - y, data))
        .collect();
    rows.sort();
    let mut md5 = Md5::new();
    for (z, x, row, data) in rows {
        md5.update(format!("{z}{x}{row}"));
        md5.update(data);
    }
    hex::encode_upper(md5.finalize())
}

/// An output as the test reads it.
#[derive(Clone)]
enum Output {
    Tree(PathBuf),
    Mbtiles(PathBuf),
}

impl Output {
    fn address(&self) -> String {
        match self {
            Output::Tree(root) => format!("dir:{}", root.display()),
            Output::Mbtiles(path) => path.display().to_string(),
        }
    }

    /// The declared hash, whether it is declared pending, and the tiles' hash; no writer is at
    /// work, so a temporary file in a tree is one left behind.
    fn hash_state(&self) -> (Option<String>, bool, String) {
        self.hash_state_at(true)
    }

    /// [`Output::hash_state`] while a writer is at work: a tree may hold the old files of tiles it
    /// replaced, under temporary names, until the writer's removal thread gets to them.
    fn hash_state_while_writing(&self) -> (Option<String>, bool, String) {
        self.hash_state_at(false)
    }

    fn hash_state_at(&self, writer_done: bool) -> (Option<String>, bool, String) {
        match self {
            Output::Tree(root) => {
                let document: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(root.join("tiles.json")).unwrap())
                        .unwrap();
                (
                    document["agg_tiles_hash"].as_str().map(str::to_string),
                    root.join(".oar-tiles-hash-stale").exists(),
                    expected_hash(&match writer_done {
                        true => read_tree(root, "pbf"),
                        false => read_tree_after_a_kill(root, "pbf").0,
                    }),
                )
            }
            Output::Mbtiles(path) => {
                let metadata = read_metadata(path);
                (
                    metadata.get("agg_tiles_hash").cloned(),
                    metadata.contains_key("oar_tiles_hash_pending"),
                    expected_hash(&read_mbtiles_raw(path)),
                )
            }
        }
    }
}

/// `validate --json OUTPUT`: its exit code and report.
fn validate(url: &str, output: &Output) -> (i32, serde_json::Value, String) {
    let run = oar_tiles(Some(url), &["validate", "--json", &output.address()]);
    let report = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "validate printed no JSON ({e})\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        )
    });
    (run.code, report, run.stderr)
}

/// A purge target that records, for each purge, the output's hash as it stands when the purge
/// arrives; the purge is answered only after, so the run is held at that point.
struct PurgeWitness {
    port: u16,
    seen: Arc<Mutex<Vec<AtPurge>>>,
    /// Purges are looked at only once armed (a full seed's are answered at once).
    armed: Arc<AtomicBool>,
    _thread: std::thread::JoinHandle<()>,
}

impl PurgeWitness {
    fn start(output: Output, url: String) -> PurgeWitness {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<AtPurge>>> = Arc::default();
        let armed: Arc<AtomicBool> = Arc::default();
        let (shared, watching) = (seen.clone(), armed.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(
                    move |method: axum::http::Method, uri: axum::http::Uri| {
                        let (shared, output, url) = (shared.clone(), output.clone(), url.clone());
                        let watching = watching.load(Ordering::SeqCst);
                        async move {
                            if !watching {
                                return "purged";
                            }
                            // One purge at a time, each looked at whole.
                            let mut all = shared.lock().unwrap();
                            let (declared, pending, actual) = output.hash_state_while_writing();
                            let validated = all.is_empty().then(|| {
                                let (code, report, _) = validate(&url, &output);
                                (code, report)
                            });
                            all.push(AtPurge {
                                request: format!("{method} {uri}"),
                                declared,
                                actual,
                                pending,
                                validated,
                            });
                            "purged"
                        }
                    },
                );
                axum::serve(listener, app).await.unwrap();
            });
        });
        PurgeWitness {
            port,
            seen,
            armed,
            _thread: thread,
        }
    }

    /// Looks at every purge from now on.
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn seen(&self) -> Vec<AtPurge> {
        self.seen.lock().unwrap().clone()
    }
}

/// A fixture under change capture writing `output` (named in its directory), seeded in full and
/// purged through a [`PurgeWitness`].
fn world(label: &str, output: fn(&Path) -> Output) -> (Fixture, Output, PurgeWitness) {
    let fixture = Fixture::new(label, &points(), "lag.toml", |_| String::new());
    let out = output(fixture.dir.path());
    let witness = PurgeWitness::start(out.clone(), fixture.schema.url.clone());
    let tileset = format!(
        "output = \"{}\"\nmaxzoom = 9\ntiles_url = \"https://tiles.example.org/{{z}}/{{x}}/{{y}}.pbf\"\n[[tileset.cdn]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/{{path}}\"",
        out.address(),
        witness.port
    );
    let mut schema = fixture.schema;
    let changes = schema.companion("cdc");
    let text = format!(
        "[changes]\nschema = \"{changes}\"\n{PACING}{}",
        single_layer_config(&schema.name, "sites", &tileset, "")
    );
    let fixture = Fixture { schema, ..fixture };
    std::fs::write(&fixture.config, text).unwrap();
    let config = fixture.config.to_str().unwrap().to_string();
    oar_tiles(
        Some(&fixture.schema.url),
        &["changes", "install", "--config", &config],
    )
    .assert_success();
    oar_tiles(
        Some(&fixture.schema.url),
        &["seed", "--config", &config, "--zoom", ZOOMS],
    )
    .assert_success();
    (fixture, out, witness)
}

/// Every purge of the change arrived while the output declared its hash pending and named no
/// hash its tiles do not have; `validate` then passed, saying the hash was pending.
#[track_caller]
fn assert_purged_before_the_hash(seen: &[AtPurge]) {
    assert!(!seen.is_empty(), "the change was purged");
    for purge in seen.iter().filter(|p| !announces_the_hash(p)) {
        assert!(
            purge.pending && purge.declared.as_ref() != Some(&purge.actual),
            "{} arrived after the hash was brought up to date: {purge:#?}",
            purge.request
        );
        if let Some(declared) = &purge.declared {
            panic!(
                "{} arrived while the output named {declared}, not its tiles' hash {}",
                purge.request, purge.actual
            );
        }
    }
}

/// A purge of `tiles.json` once it names its tiles' hash: the refreshed hash is news, purged once
/// after the tiles.
fn announces_the_hash(purge: &AtPurge) -> bool {
    purge.request.ends_with("tiles.json") && purge.declared.as_ref() == Some(&purge.actual)
}

/// What `validate` said at the first purge looked at.
#[track_caller]
fn validated_at_purge(seen: &[AtPurge]) -> (i32, serde_json::Value) {
    seen.iter()
        .find_map(|p| p.validated.clone())
        .expect("validate ran at the first purge")
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_dirty_reseed_into_a_tree_names_its_digest_with_the_tiles_and_reads_no_other_tile() {
    let (mut fixture, output, witness) =
        world("agg_lag_tree", |dir| Output::Tree(dir.join("tree")));
    let (declared, pending, actual) = output.hash_state();
    assert_eq!(
        (declared.as_deref(), pending),
        (Some(actual.as_str()), false)
    );

    witness.arm();
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = 'renamed' WHERE site_id = 7");
    let config = fixture.config.to_str().unwrap().to_string();
    let run = oar_tiles(
        Some(&fixture.schema.url),
        &["seed", "--config", &config, "--zoom", ZOOMS, "--dirty"],
    );
    run.assert_success();
    let seen = witness.seen();
    assert!(!seen.is_empty(), "the change was purged");
    // No purge waits for a hash read from every tile: `tiles.json`, naming the digest the run
    // kept from the tiles it changed, goes out once with them, and never names a stale hash.
    for purge in &seen {
        assert!(
            purge.declared.is_none(),
            "{} arrived while the tree named a hash: {seen:#?}",
            purge.request
        );
    }
    assert_eq!(
        seen.iter()
            .filter(|p| p.request.ends_with("tiles.json"))
            .count(),
        1,
        "{seen:#?}"
    );
    let (code, report) = validated_at_purge(&seen);
    assert_eq!(code, 0, "the digest named is the tiles': {report}");
    assert!(
        !run.stderr.contains("read from every tile"),
        "{}",
        run.stderr
    );

    let Output::Tree(root) = &output else {
        unreachable!()
    };
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("tiles.json")).unwrap()).unwrap();
    assert_eq!(
        document["oar_tiles_digest"].as_str(),
        Some(expected_digest(&read_tree(root, "pbf")).as_str()),
        "{document}"
    );
    let (code, report, stderr) = validate(&fixture.schema.url, &output);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["outputs"][0]["hash_pending"], false, "{report}");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn watch_purges_an_mbtiles_change_first_and_records_the_hash_once_idle() {
    let (mut fixture, output, witness) = world("agg_lag_watch", |dir| {
        Output::Mbtiles(dir.join("lag.mbtiles"))
    });
    let mut watcher = Watcher::start(&fixture);
    watcher.wait_until("/health 200", |w| w.health() == Some(200));

    witness.arm();
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = 'watched' WHERE site_id = 11");
    watcher.wait_until("the change's purge", |_| !witness.seen().is_empty());
    watcher.wait_until("the hash recorded when idle", |_| {
        let (declared, pending, actual) = output.hash_state();
        !pending && declared.as_deref() == Some(actual.as_str())
    });
    let seen = witness.seen();
    assert_purged_before_the_hash(&seen);
    let (code, report) = validated_at_purge(&seen);
    assert_eq!(code, 0, "a pending hash is no problem: {report}");
    assert_eq!(report["outputs"][0]["hash_pending"], true, "{report}");
    assert!(
        watcher.log().contains("read from every tile while idle"),
        "{}",
        watcher.log()
    );

    // Idle now: the file names its tiles' hash, and nothing says it is pending.
    let (code, report, stderr) = validate(&fixture.schema.url, &output);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["outputs"][0]["hash_pending"], false, "{report}");
}
