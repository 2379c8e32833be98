//! `watch` and `serve` under more clients than their open-file limit allows, started under a low
//! `ulimit -n`: a crowd that holds idle connections, half-sent requests and event streams, and
//! comes back a second after the server closes one, as browsers do. The database must keep its
//! descriptors (an edit still reaches the output), `/health` must answer, and a half-sent request
//! must be dropped.
//!
//! `OAR_TILES_TEST_CROWD=CLIENTS:LIMIT` sets the watcher's crowd and open-file limit (600:512
//! unless set); run with `--nocapture` to read the change-to-tile latency and how `/health` fared.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::fixture::Fixture;
use crate::common::free_port;
use crate::common::pg::hub_with_scatter;
use crate::common::run::{assert_same_tiles, oar_tiles, read_mbtiles_raw, single_layer_config};
use crate::common::serve::Served;
use crate::common::watcher::{Watcher, PACING, PATIENCE};

const OUTPUT: &str = "crowded.mbtiles";
/// How long a crowd's client waits before it connects again once the server closed on it.
const COMES_BACK_AFTER: Duration = Duration::from_secs(1);
const IDLE: &[u8] = b"";
const HALF_SENT: &[u8] = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n";
const EVENTS: &[u8] =
    b"GET /changes/sites/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n";

/// Clients that hold connections to `port` and say nothing more than their `requests` (one per
/// client, in turn), each connecting again [`COMES_BACK_AFTER`] the server closed its connection.
struct Crowd {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Crowd {
    fn start(port: u16, clients: usize, requests: &'static [&'static [u8]]) -> Crowd {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (stopped, opens, closes) = (stop.clone(), opened.clone(), closed.clone());
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let thread = std::thread::spawn(move || {
            let mut slots: Vec<(Option<TcpStream>, Option<Instant>)> =
                (0..clients).map(|_| (None, None)).collect();
            while !stopped.load(Ordering::Relaxed) {
                for (i, (stream, left)) in slots.iter_mut().enumerate() {
                    if let Some(open) = stream {
                        if !still_open(open) {
                            *stream = None;
                            *left = Some(Instant::now());
                            closes.fetch_add(1, Ordering::Relaxed);
                        }
                    } else if left.is_none_or(|left| left.elapsed() >= COMES_BACK_AFTER) {
                        *left = Some(Instant::now());
                        let Ok(mut open) =
                            TcpStream::connect_timeout(&address, Duration::from_millis(500))
                        else {
                            continue;
                        };
                        if open.write_all(requests[i % requests.len()]).is_ok()
                            && open.set_nonblocking(true).is_ok()
                        {
                            *stream = Some(open);
                            opens.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Crowd {
            stop,
            opened,
            closed,
            thread: Some(thread),
        }
    }

    /// Waits until every client connected once.
    fn wait_until_all_came(&self, clients: usize) {
        let started = Instant::now();
        while self.opened.load(Ordering::Relaxed) < clients {
            assert!(started.elapsed() < PATIENCE, "the crowd could not connect");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Connections opened and closed by the server so far.
    fn counts(&self) -> (usize, usize) {
        (
            self.opened.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether the server kept `stream` open (what it sent is read and dropped).
fn still_open(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// `GET path` on a new connection until the server answers it: the status, the answer's head, and
/// how many connections it took.
fn get_until_answered(port: u16, path: &str) -> (u16, String, usize) {
    let started = Instant::now();
    for attempt in 1.. {
        assert!(started.elapsed() < PATIENCE, "no answer to {path}");
        let answer = TcpStream::connect(("127.0.0.1", port))
            .ok()
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
                write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
                let mut seen = Vec::new();
                let mut buffer = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buffer).ok().filter(|n| *n > 0)?;
                    seen.extend_from_slice(&buffer[..n]);
                }
                Some(String::from_utf8_lossy(&seen).into_owned())
            });
        if let Some(head) = answer {
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
            return (status.unwrap_or(0), head, attempt);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unreachable!()
}

/// `sh -c` starting the program after it with at most `limit` open files.
fn with_open_file_limit(limit: usize) -> [String; 3] {
    [
        "sh".into(),
        "-c".into(),
        format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
    ]
}

/// A schema with `sites` and change capture, and a config whose tileset writes [`OUTPUT`] with a
/// changes feed, seeded in full.
fn watched(label: &str) -> Fixture {
    let points = hub_with_scatter(200, 11, 1000, [2.2, 48.8, 2.5, 48.95]);
    let fixture = Fixture::new(label, &points, "crowd.toml", |schema| {
        let changes = schema.companion("cdc");
        let tileset = format!("maxzoom = 12\noutput = \"{OUTPUT}\"\n\n[tileset.feed]\n");
        format!(
            "[changes]\nschema = \"{changes}\"\n{PACING}\n{}",
            single_layer_config(&schema.name, "sites", &tileset, "")
        )
    });
    let config = fixture.config.to_str().unwrap().to_string();
    let url = Some(fixture.schema.url.as_str());
    oar_tiles(url, &["changes", "install", "--config", &config]).assert_success();
    oar_tiles(url, &["seed", "--config", &config]).assert_success();
    fixture
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_watcher_past_its_open_file_limit_keeps_its_database_and_answers_health() {
    let (clients, limit) = std::env::var("OAR_TILES_TEST_CROWD")
        .ok()
        .and_then(|v| {
            let (c, l) = v.split_once(':')?;
            Some((c.parse().ok()?, l.parse().ok()?))
        })
        .unwrap_or((600, 512));
    let mut fixture = watched("listen_watch");
    let wrapper = with_open_file_limit(limit);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let port = free_port();
    let mut watcher = Watcher::start_wrapped(&fixture, &fixture.schema.url, port, &wrapper);
    watcher.wait_until("/health 200 before the crowd", |w| w.health() == Some(200));
    let crowd = Crowd::start(port, clients, &[IDLE, HALF_SENT, EVENTS]);
    crowd.wait_until_all_came(clients);

    let output = fixture.path(OUTPUT);
    let before = read_mbtiles_raw(&output);
    fixture
        .schema
        .execute("UPDATE {schema}.sites SET label = 'Crowded Looms' WHERE site_id = 3");
    let edited = Instant::now();
    watcher.wait_until("the edit in the output while the crowd stays", |_| {
        read_mbtiles_raw(&output) != before
    });
    let latency = edited.elapsed();
    let asked = Instant::now();
    let (status, head, attempts) = get_until_answered(port, "/health");
    let (opened, closed) = crowd.counts();
    eprintln!(
        "{clients} clients at ulimit -n {limit}: the edit reached the output {:.2} s after its \
         commit; /health answered {status} after {:.2} s and {attempts} connection(s); the crowd \
         opened {opened} connections, the server closed {closed}",
        latency.as_secs_f64(),
        asked.elapsed().as_secs_f64()
    );
    assert_eq!(status, 200, "{head}");
    drop(crowd);

    let full = fixture.path("full.mbtiles");
    let config = fixture.config.to_str().unwrap().to_string();
    let args = [
        "seed",
        "--config",
        &config,
        "--output",
        full.to_str().unwrap(),
    ];
    oar_tiles(Some(&fixture.schema.url), &args).assert_success();
    assert_same_tiles(
        &read_mbtiles_raw(&full),
        &read_mbtiles_raw(&output),
        "the watched output after the crowd",
    );
    let run = watcher.stop(libc::SIGTERM);
    assert!(
        run.stderr.contains("came past the cap"),
        "the crowd never reached the cap:\n{}",
        run.stderr
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn serve_past_its_open_file_limit_answers_tiles_and_drops_half_sent_requests() {
    let fixture = watched("listen_serve");
    let output = fixture.path(OUTPUT);
    let wrapper = with_open_file_limit(256);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let served = Served::start_wrapped(&wrapper, &[output.to_str().unwrap()], &[]);
    let crowd = Crowd::start(served.port, 400, &[IDLE, HALF_SENT]);
    crowd.wait_until_all_came(400);
    let (status, head, _) = get_until_answered(served.port, "/sites/0/0/0.pbf");
    assert_eq!(status, 200, "{head}");
    drop(crowd);

    // A request that never ends its head is dropped, however long the client waits.
    let mut half = TcpStream::connect(("127.0.0.1", served.port)).unwrap();
    half.write_all(HALF_SENT).unwrap();
    half.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut rest = Vec::new();
    let ended = half.read_to_end(&mut rest);
    assert!(
        !matches!(&ended, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            || e.kind() == std::io::ErrorKind::TimedOut),
        "a half-sent request kept its connection for {PATIENCE:?}: {ended:?}"
    );
    assert_eq!(served.terminate(), 0);
}
