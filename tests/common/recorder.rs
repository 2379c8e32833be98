//! A local HTTP server that records every request and answers as a CDN's purge API documents, for
//! the APIs that cannot run here (Cloudflare, Fastly). The first `failures` requests get 503, so
//! the client's retries are exercised. It can also answer as a hostile or broken CDN does
//! ([`Answer`]): a chosen status echoing the request's headers, a huge body, or nothing at all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::api_limits::{ApiLimits, Limiter};

/// How a recorder answers each request.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// 200 with this body, after `failures` 503s.
    Ok {
        /// The body (JSON for the APIs).
        body: &'static str,
        /// Requests answered 503 first.
        failures: usize,
    },
    /// This status, with a one-line JSON body echoing every request header, as some servers' error
    /// pages and debugging proxies do.
    EchoHeaders(u16),
    /// This status, with an object store's XML error (`<Error><Code>AccessDenied</Code>…`) whose
    /// message echoes the request's target (its query: an Azure SAS) and headers, each header
    /// value also percent-encoded and in base64, as a debugging proxy in front of a bucket might.
    EchoAsStore(u16),
    /// This status, with a one-line body quoting the request's `Authorization` value in other
    /// forms: its last word (the token without its scheme word), percent-encoded, in base64.
    EchoAuthorization(u16),
    /// This status, with a body of this many bytes, streamed (the server never holds it).
    Huge(u16, u64),
    /// Takes the request and never answers.
    Never,
    /// 200 with this body to the first `answered` requests, then never answers: a cache that
    /// stops answering part way through a purge.
    OkThenNever {
        /// The body.
        body: &'static str,
        /// Requests answered before it goes silent.
        answered: usize,
    },
    /// 200 with this body, each after `millis` milliseconds: a slow but steady cache.
    Slow {
        /// The body.
        body: &'static str,
        /// The delay of each answer.
        millis: u64,
    },
}

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
    /// Body bytes handed to the connection so far, over all answers.
    pub sent: Arc<AtomicU64>,
    /// The API's account limits it enforces, and what they refused (none: it takes any call).
    pub limiter: Option<Arc<Mutex<Limiter>>>,
    _thread: std::thread::JoinHandle<()>,
}

impl Recorder {
    /// Starts a server answering `answer` (a JSON body) with 200, after `failures` 503s.
    pub fn start(answer: &'static str, failures: usize) -> Recorder {
        Recorder::answering(Answer::Ok {
            body: answer,
            failures,
        })
    }

    /// Starts a server answering every request as `answer` says.
    pub fn answering(answer: Answer) -> Recorder {
        Recorder::answering_on(0, answer)
    }

    /// Starts a server answering `answer` (a JSON body) with 200 on `port`, where a config
    /// already sends its purges (0: any free port).
    pub fn start_on(port: u16, answer: &'static str) -> Recorder {
        Recorder::answering_on(
            port,
            Answer::Ok {
                body: answer,
                failures: 0,
            },
        )
    }

    /// Starts a server answering `answer` (a JSON body) with 200 to each call `limits` admits,
    /// and 429 with `Retry-After` to the others, as Cloudflare's and Fastly's APIs do.
    pub fn limited(answer: &'static str, limits: ApiLimits) -> Recorder {
        let limiter = Arc::new(Mutex::new(Limiter::new(limits)));
        Recorder::serving(
            0,
            Answer::Ok {
                body: answer,
                failures: 0,
            },
            Some(limiter),
        )
    }

    fn answering_on(port: u16, answer: Answer) -> Recorder {
        Recorder::serving(port, answer, None)
    }

    fn serving(port: u16, answer: Answer, limiter: Option<Arc<Mutex<Limiter>>>) -> Recorder {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let sent: Arc<AtomicU64> = Arc::default();
        let shared = requests.clone();
        let counted = sent.clone();
        let limits = limiter.clone();
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
                        let counted = counted.clone();
                        let limits = limits.clone();
                        async move {
                            let refused = limits.as_ref().and_then(|limiter| {
                                limiter.lock().unwrap().admit(&uri.to_string(), &body).err()
                            });
                            let echoed: serde_json::Map<String, serde_json::Value> = headers
                                .iter()
                                .map(|(n, v)| {
                                    (n.to_string(), v.to_str().unwrap_or("").to_string().into())
                                })
                                .collect();
                            let count = {
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
                                all.len()
                            };
                            let target = uri.to_string();
                            let mut response = match refused {
                                Some(seconds) => too_many(seconds),
                                None => respond(answer, count, echoed, counted, target).await,
                            };
                            if let Some(limiter) = limits {
                                let window = limiter.lock().unwrap().headers();
                                for (name, value) in window {
                                    response.headers_mut().insert(name, value.parse().unwrap());
                                }
                            }
                            response
                        }
                    },
                );
                axum::serve(listener, app).await.unwrap();
            });
        });
        Recorder {
            port,
            requests,
            sent,
            limiter,
            _thread: thread,
        }
    }

    /// The requests answered with 200.
    pub fn answered(&self, failures: usize) -> Vec<Recorded> {
        self.requests.lock().unwrap()[failures..].to_vec()
    }

    /// The paths every request so far named under `prefix` (a purge URL's `/t/`), each once; a
    /// request for `prefix` itself (a BAN of the root) is the empty path.
    pub fn paths_under(&self, prefix: &str) -> std::collections::BTreeSet<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.target.trim_start_matches(prefix).to_string())
            .collect()
    }
}

/// A rate limit's refusal, as Cloudflare words it.
fn too_many(seconds: u64) -> Response {
    let body = r#"{"success": false, "errors": [{"code": 10000, "message": "Rate limited. Please wait and consider throttling your request speed"}]}"#;
    let mut response = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
    response
        .headers_mut()
        .insert("retry-after", seconds.to_string().parse().unwrap());
    response
}

/// The answer to the `count`th request.
async fn respond(
    answer: Answer,
    count: usize,
    echoed: serde_json::Map<String, serde_json::Value>,
    sent: Arc<AtomicU64>,
    target: String,
) -> Response {
    let status = |code: u16| StatusCode::from_u16(code).unwrap();
    match answer {
        Answer::Ok { failures, .. } if count <= failures => {
            (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
        }
        Answer::Ok { body, .. } => (StatusCode::OK, body).into_response(),
        Answer::EchoHeaders(code) => {
            let body = serde_json::json!({ "error": "refused", "headers": echoed }).to_string();
            sent.fetch_add(body.len() as u64, Ordering::SeqCst);
            (status(code), body).into_response()
        }
        Answer::EchoAsStore(code) => {
            use base64::Engine as _;
            let values: Vec<&str> = echoed.values().filter_map(|v| v.as_str()).collect();
            let headers: Vec<String> = echoed
                .iter()
                .map(|(name, value)| format!("{name}: {}", value.as_str().unwrap_or_default()))
                .collect();
            let encoded: Vec<String> = values
                .iter()
                .map(|v| {
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                        .to_string()
                })
                .collect();
            let base64: Vec<String> = values
                .iter()
                .map(|v| base64::engine::general_purpose::STANDARD.encode(v))
                .collect();
            let said = format!(
                "refused {target} with {}; values encoded {}; in base64 {}",
                headers.join("; "),
                encoded.join(" "),
                base64.join(" ")
            );
            let escaped = said
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
                 <Message>{escaped}</Message></Error>"
            );
            sent.fetch_add(body.len() as u64, Ordering::SeqCst);
            let mut response = (status(code), body).into_response();
            response
                .headers_mut()
                .insert("content-type", "application/xml".parse().unwrap());
            response
        }
        Answer::EchoAuthorization(code) => {
            use base64::Engine as _;
            let value = echoed
                .get("authorization")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let word = value.split_whitespace().last().unwrap_or_default();
            let encoded =
                percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC);
            let base64 = base64::engine::general_purpose::STANDARD.encode(value);
            let body = format!("denied {word} ({encoded}, {base64})");
            sent.fetch_add(body.len() as u64, Ordering::SeqCst);
            (status(code), body).into_response()
        }
        Answer::Huge(code, bytes) => {
            const CHUNK: u64 = 64 * 1024;
            let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
            let stream = futures::stream::unfold(0u64, move |done| {
                let (chunk, sent) = (chunk.clone(), sent.clone());
                async move {
                    if done >= bytes {
                        return None;
                    }
                    let take = CHUNK.min(bytes - done);
                    sent.fetch_add(take, Ordering::SeqCst);
                    Some((
                        Ok::<_, std::io::Error>(chunk.slice(..take as usize)),
                        done + take,
                    ))
                }
            });
            let mut response = Response::new(Body::from_stream(stream));
            *response.status_mut() = status(code);
            response
                .headers_mut()
                .insert("content-length", bytes.to_string().parse().unwrap());
            response
        }
        Answer::Never => std::future::pending().await,
        Answer::OkThenNever { body, answered } if count <= answered => {
            (StatusCode::OK, body).into_response()
        }
        Answer::OkThenNever { .. } => std::future::pending().await,
        Answer::Slow { body, millis } => {
            tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
            (StatusCode::OK, body).into_response()
        }
    }
}
