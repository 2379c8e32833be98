//! `oar-tiles watch` as a real process for the tests: started on a fixture's config with its
//! listener on a free port, read over HTTP (`/metrics` parsed strictly, `/health`, any path),
//! waited on within a patience, stopped by a signal.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::fixture::Fixture;
use super::free_port;
use super::run::{oar_tiles_command, run_from, send_signal, wrapped_command, Run};

/// Short pacing, so a test spends its time on changes rather than on waiting.
pub(crate) const PACING: &str =
    "[watch]\ndebounce = \"300ms\"\nmax_delay = \"2s\"\npoll_interval = \"3s\"\n";
/// Longest any wait for the watcher may take before the test gives up.
pub(crate) const PATIENCE: Duration = Duration::from_secs(180);

/// A running `oar-tiles watch`, killed if the test ends without stopping it.
pub(crate) struct Watcher {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Watcher {
    /// Starts a watcher of the fixture's config against its schema's server.
    pub(crate) fn start(setup: &Fixture) -> Watcher {
        Self::start_on(setup, &setup.schema.url)
    }

    /// Starts a watcher whose `DATABASE_URL` is `url`.
    pub(crate) fn start_on(setup: &Fixture, url: &str) -> Watcher {
        Self::start_listening(setup, url, free_port())
    }

    /// Starts a watcher whose `DATABASE_URL` is `url` with its listener on `port` (one a test
    /// named to another process before the watcher started).
    pub(crate) fn start_listening(setup: &Fixture, url: &str, port: u16) -> Watcher {
        Self::start_wrapped(setup, url, port, &[])
    }

    /// As [`Watcher::start_listening`], started by `wrapper` (such as `sh -c SCRIPT` ending in
    /// `exec "$0" "$@"`; none when empty): see [`wrapped_command`].
    pub(crate) fn start_wrapped(
        setup: &Fixture,
        url: &str,
        port: u16,
        wrapper: &[&str],
    ) -> Watcher {
        let listen = format!("127.0.0.1:{port}");
        let log = setup.path(&format!("watch-{port}.log"));
        let args = [
            "watch",
            "--config",
            setup.config.to_str().unwrap(),
            "--listen",
            &listen,
        ];
        // Logs go to a file: a pipe nobody reads could fill and stall the watcher.
        let mut command = if wrapper.is_empty() {
            oar_tiles_command(Some(url), &args, &[])
        } else {
            wrapped_command(wrapper, Some(url), &args, &[])
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Watcher {
            child: Some(child),
            port,
            log,
        }
    }

    /// The port its listener is on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` over HTTP/1.1: the status code and the body; `None` while nothing listens.
    pub(crate) fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{head}"
        );
        Some((status, body.to_string()))
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics").expect("/metrics answers");
        assert_eq!(status, 200, "{body}");
        parse_prometheus(&body)
    }

    pub(crate) fn health(&self) -> Option<u16> {
        self.get("/health").map(|(status, _)| status)
    }

    /// Polls until `done` holds, failing with the watcher's log after [`PATIENCE`].
    pub(crate) fn wait_until(&mut self, what: &str, mut done: impl FnMut(&Watcher) -> bool) {
        let started = Instant::now();
        while !done(self) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the watcher exited ({status}) waiting for {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < PATIENCE,
                "waited {PATIENCE:?} for {what}; the watcher's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the watcher has applied `count` changes in all and nothing is pending.
    pub(crate) fn wait_for_applied(&mut self, count: f64) {
        self.wait_until(&format!("{count} applied changes"), |w| {
            let metrics = w.metrics();
            metrics.sum("oar_tiles_changes_applied_total") >= count
                && metrics.sum("oar_tiles_pending_changes") == 0.0
        });
    }

    /// Sends `signal` and waits for the process to end.
    pub(crate) fn stop(&mut self, signal: libc::c_int) -> Run {
        let child = self.child.take().unwrap();
        send_signal(&child, signal);
        let mut run = run_from(child.wait_with_output().unwrap());
        run.stderr = std::fs::read_to_string(&self.log).unwrap_or_default();
        run
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Samples of a Prometheus text exposition, keyed by `name{labels}` as written.
pub(crate) struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    /// The sum of every sample of the series `name`, whatever its labels.
    pub(crate) fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(key, _)| key.split('{').next() == Some(name))
            .map(|(_, value)| value)
            .sum()
    }

    /// The samples of `name` whose labels contain `label` (such as `le="+Inf"`).
    pub(crate) fn with(&self, name: &str, label: &str) -> f64 {
        self.0
            .iter()
            .filter(|(key, _)| key.split('{').next() == Some(name) && key.contains(label))
            .map(|(_, value)| value)
            .sum()
    }
}

/// Parses the Prometheus text format (version 0.0.4) strictly: every line is a `# HELP`, a
/// `# TYPE` or a sample `name{label="value",…} number` whose family was typed before it.
pub(crate) fn parse_prometheus(text: &str) -> Metrics {
    let valid_name = |name: &str| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(valid_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(valid_name(rest.split(' ').next().unwrap()), "{line}");
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "{line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("labels in braces: {line}"));
            for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                let (key, quoted) = pair.split_once('=').expect("label=value");
                assert!(valid_name(key) && quoted.starts_with('"'), "{line}");
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE before {line}");
        samples.insert(series.to_string(), value);
    }
    Metrics(samples)
}
