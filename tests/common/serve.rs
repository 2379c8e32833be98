//! `oar-tiles serve` as a real process on a free loopback port, an HTTP/1 client that sends request
//! targets exactly as written (so `..` reaches the server unnormalized), and headless Chromium
//! driven through chromedriver (WebDriver).
//!
//! The browser comes from `scripts/test.sh`, which installs Debian's `chromium` and
//! `chromium-driver` and exports their paths; a browser test run without them fails, saying how to
//! run it.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::http::{HeaderMap, Request};

use super::run::{oar_tiles_command, wrapped_command};

/// A running `oar-tiles serve`, killed when dropped.
pub struct Served {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stdout: Arc<Mutex<String>>,
}

impl Served {
    /// Starts `oar-tiles serve ARGS --listen 127.0.0.1:0` and waits for the URL it prints.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Served {
        Self::start_wrapped(&[], args, envs)
    }

    /// As [`Served::start`], started by `wrapper` (such as `sh -c SCRIPT` ending in
    /// `exec "$0" "$@"`; none when empty).
    pub fn start_wrapped(wrapper: &[&str], args: &[&str], envs: &[(&str, &str)]) -> Served {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--listen", "127.0.0.1:0"]);
        let mut command = if wrapper.is_empty() {
            oar_tiles_command(None, &all, envs)
        } else {
            wrapped_command(wrapper, None, &all, envs)
        };
        let mut child = command.spawn().expect("start oar-tiles serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // The URL is the last line of the start-up message.
        let mut printed = String::new();
        let base = loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let mut stderr = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .ok();
                panic!(
                    "oar-tiles serve did not print its URL; stdout: {printed:?}; stderr: {stderr}"
                );
            }
            printed.push_str(&line);
            if let Some(url) = line.trim().strip_prefix("serving at ") {
                break url.trim_end_matches('/').to_string();
            }
        };
        let port = base.rsplit(':').next().unwrap().parse().unwrap();
        // Keep draining both pipes: a server whose pipe is full or closed would block or fail.
        let text = Arc::new(Mutex::new(printed));
        let sink = text.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Served {
            child,
            port,
            base,
            stdout: text,
        }
    }

    /// What the server printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn terminate(mut self) -> i32 {
        super::run::send_signal(&self.child, libc::SIGTERM);
        self.child.wait().unwrap().code().unwrap_or(-1)
    }

    /// `GET target` with `Host: 127.0.0.1:PORT`.
    pub fn get(&self, target: &str) -> Reply {
        get(self.port, target, &format!("127.0.0.1:{}", self.port))
    }

    /// [`Served::get`] with more request headers.
    pub fn get_with(&self, target: &str, headers: &[(&str, &str)]) -> Reply {
        get_with(
            self.port,
            target,
            &format!("127.0.0.1:{}", self.port),
            headers,
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes as sent (not decompressed).
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// `GET target` on `127.0.0.1:port` with the given `Host` header, the target sent verbatim.
pub fn get(port: u16, target: &str, host: &str) -> Reply {
    get_with(port, target, host, &[])
}

/// [`get`] with more request headers (`If-None-Match`, say).
pub fn get_with(port: u16, target: &str, host: &str, headers: &[(&str, &str)]) -> Reply {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to oar-tiles serve");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let mut request = Request::get(target).header("host", host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::<Bytes>::new()).unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: body.to_vec(),
        }
    })
}

/// Variable naming the chromedriver executable.
pub const CHROMEDRIVER_ENV: &str = "OAR_TILES_TEST_CHROMEDRIVER";
/// Variable naming the Chromium executable.
pub const CHROMIUM_ENV: &str = "OAR_TILES_TEST_CHROMIUM";

fn required(variable: &str) -> String {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{variable} is not set: browser tests run through scripts/test.sh, which installs \
             Debian's chromium and chromium-driver and sets it"
        ),
    }
}

/// chromedriver on a free port with one headless Chromium session; both end when dropped.
pub struct Browser {
    driver: Child,
    /// The WebDriver session.
    pub client: fantoccini::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a session of a fresh headless Chromium, `width`×`height` pixels.
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromedriver = required(CHROMEDRIVER_ENV);
        let chromium = required(CHROMIUM_ENV);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {chromedriver}: {e}"));
        // Ready when it accepts connections; a driver that died says so instead of hanging.
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = driver.try_wait().unwrap() {
                panic!("{chromedriver} exited with {status} before listening");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        // As root Chromium needs --no-sandbox; this machine has no network, so every background
        // fetch Chromium would start is switched off; WebGL runs on SwiftShader, the CPU renderer.
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--use-angle=swiftshader".into(),
            "--enable-unsafe-swiftshader".into(),
            "--ignore-gpu-blocklist".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-quic".into(),
            "--disable-extensions".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            // Pages a test opens through a cache under a public name (`*.test`, which no real
            // resolver answers) reach this machine.
            "--host-resolver-rules=MAP *.test 127.0.0.1".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = fantoccini::ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("a Chromium session through {chromedriver}: {e}"));
        Browser {
            driver,
            client,
            _profile: profile,
        }
    }

    /// Ends the session, then the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
