//! Debian's Varnish as the CDN in front of a test's S3 server (`scripts/varnish.sh`), on a free
//! loopback port, stopped when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::free_port;
use super::serve::{get, Reply};

/// Variable naming the `varnishd` executable, which `scripts/test.sh` installs.
pub const VARNISHD_ENV: &str = "OAR_TILES_TEST_VARNISHD";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/varnish.sh")
}

/// One varnishd.
pub struct Varnish {
    /// Its port on 127.0.0.1.
    pub port: u16,
    pid: String,
}

impl Varnish {
    /// Starts a cache in front of the S3 server on `s3_port`.
    pub fn start(s3_port: u16) -> Varnish {
        Varnish::launch(s3_port, None, None)
    }

    /// Starts a cache in front of the HTTP origin on `origin_port` that keeps every answer for
    /// `ttl` (`1d`), as a CDN set up for a static origin does.
    pub fn keeping(origin_port: u16, ttl: &str) -> Varnish {
        Varnish::launch(origin_port, Some(ttl), None)
    }

    /// [`Varnish::keeping`], answering every object with `cache_control` (`public,
    /// max-age=86400`), as browsers get it from an origin that sends that header.
    pub fn keeping_with_header(origin_port: u16, ttl: &str, cache_control: &str) -> Varnish {
        Varnish::launch(origin_port, Some(ttl), Some(cache_control))
    }

    /// [`Varnish::keeping`], set up for a versioned changes feed: objects keyed on the path and
    /// the query string (`?v=VERSION`), and the feed's head never kept.
    pub fn keeping_for_versioned_feed(origin_port: u16, ttl: &str) -> Varnish {
        Varnish::launch_with(
            origin_port,
            Some(ttl),
            None,
            &[("VARNISH_KEY_QUERY", "yes"), ("VARNISH_PASS_HEAD", "yes")],
        )
    }

    fn launch(origin_port: u16, ttl: Option<&str>, cache_control: Option<&str>) -> Varnish {
        Varnish::launch_with(origin_port, ttl, cache_control, &[])
    }

    fn launch_with(
        origin_port: u16,
        ttl: Option<&str>,
        cache_control: Option<&str>,
        env: &[(&str, &str)],
    ) -> Varnish {
        match std::env::var(VARNISHD_ENV) {
            Ok(path) if Path::new(&path).exists() => {}
            _ => panic!(
                "{VARNISHD_ENV} is not set: the CDN tests run through scripts/test.sh, which \
                 installs Debian's varnish and sets it"
            ),
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut args = vec![
            "start".to_string(),
            port.to_string(),
            origin_port.to_string(),
        ];
        args.extend(ttl.map(str::to_string));
        args.extend(cache_control.map(str::to_string));
        let output = Command::new(script())
            .args(&args)
            .envs(env.iter().copied())
            .output()
            .expect("run scripts/varnish.sh");
        assert!(
            output.status.success(),
            "varnish start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Varnish {
            port,
            pid: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        }
    }

    /// A counter of the cache's statistics (`MAIN.bans_added`, `MAIN.n_purges`), read with
    /// `varnishstat`.
    pub fn counter(&self, name: &str) -> u64 {
        let work = format!("/tmp/oar-tiles-varnish-{}/n", self.port);
        let output = Command::new("varnishstat")
            .args(["-n", &work, "-1", "-f", name])
            .output()
            .expect("run varnishstat");
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(name)).then(|| fields.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {name} in varnishstat's output: {text}"))
    }

    /// `GET path` through the cache.
    pub fn get_path(&self, path: &str) -> Reply {
        get(self.port, path, &format!("127.0.0.1:{}", self.port))
    }

    /// `GET` of a presigned S3 URL through the cache (the path and query of `presigned`).
    pub fn get(&self, presigned: &str) -> Reply {
        let target = presigned
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .expect("an absolute URL");
        get(self.port, target, &format!("127.0.0.1:{}", self.port))
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["stop", &self.pid]).output();
    }
}

/// A purge gateway in front of a [`Varnish`]: it records every purge a test's CDN target sends
/// and forwards it to the cache, except those whose path holds one of the refused words, which it
/// answers 503, as a CDN failing part way through a purge does.
pub struct Gate {
    /// Its port on 127.0.0.1, where the CDN target sends its purges.
    pub port: u16,
    refused: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _thread: std::thread::JoinHandle<()>,
}

impl Gate {
    /// Starts a gateway forwarding to `cache`.
    pub fn start(cache: &Varnish) -> Gate {
        use axum::http::{Method, StatusCode, Uri};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let cache_port = cache.port;
        let refused: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (words, log) = (refused.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(move |method: Method, uri: Uri| {
                    let (words, log) = (words.clone(), log.clone());
                    async move {
                        let target = uri.to_string();
                        log.lock().unwrap().push(format!("{method} {target}"));
                        if words.lock().unwrap().iter().any(|w| target.contains(w)) {
                            return StatusCode::SERVICE_UNAVAILABLE;
                        }
                        forward(cache_port, method, &target).await
                    }
                });
                axum::serve(listener, app).await.unwrap();
            });
        });
        Gate {
            port,
            refused,
            seen,
            _thread: thread,
        }
    }

    /// Refuses, from now on, every purge whose path holds one of `words` (none: forwards all).
    pub fn refuse(&self, words: &[&str]) {
        *self.refused.lock().unwrap() = words.iter().map(|w| w.to_string()).collect();
    }

    /// Every purge sent so far (`METHOD TARGET`), refused ones included, and forgets them.
    pub fn take_seen(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Sends `method target` to the cache on `port`; its status.
async fn forward(port: u16, method: axum::http::Method, target: &str) -> axum::http::StatusCode {
    use http_body_util::Empty;
    use hyper::body::Bytes;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to varnish");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method.as_str())
        .uri(target)
        .header("host", format!("127.0.0.1:{port}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let status = sender.send_request(request).await.unwrap().status();
    axum::http::StatusCode::from_u16(status.as_u16()).unwrap()
}

/// A static web server for the tree (Python's), the origin Varnish keeps answers of.
pub struct Origin {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Origin {
    /// Serves the files under `root`.
    pub fn start(root: &Path) -> Origin {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        // Dropped (killed and reaped) if it never listens.
        let origin = Origin { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return origin;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the origin never listened on {port}");
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
