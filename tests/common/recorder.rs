//! A local HTTP server that records every request and answers as a CDN's purge API documents, for
//! the APIs that cannot run here (Cloudflare, Fastly). The first `failures` requests get 503, so
//! the client's retries are exercised.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// The server: its port and what it received.
pub struct Recorder {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Requests in arrival order (the 503 answered ones included).
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    _thread: std::thread::JoinHandle<()>,
}

impl Recorder {
    /// Starts a server answering `answer` (a JSON body) with 200, after `failures` 503s.
    pub fn start(answer: &'static str, failures: usize) -> Recorder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let shared = requests.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(
                    move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                        let shared = shared.clone();
                        async move {
                            let mut all = shared.lock().unwrap();
                            all.push(Recorded {
                                method: method.to_string(),
                                target: uri.to_string(),
                                headers: headers
                                    .iter()
                                    .map(|(n, v)| {
                                        (n.to_string(), v.to_str().unwrap_or("").to_string())
                                    })
                                    .collect(),
                                body: body.to_vec(),
                            });
                            if all.len() <= failures {
                                (StatusCode::SERVICE_UNAVAILABLE, "try again".to_string())
                            } else {
                                (StatusCode::OK, answer.to_string())
                            }
                        }
                    },
                );
                axum::serve(listener, app).await.unwrap();
            });
        });
        Recorder {
            port,
            requests,
            _thread: thread,
        }
    }

    /// The requests answered with 200.
    pub fn answered(&self, failures: usize) -> Vec<Recorded> {
        self.requests.lock().unwrap()[failures..].to_vec()
    }
}
