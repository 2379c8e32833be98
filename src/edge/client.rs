//! The one HTTP client of purge requests: hyper 1 with rustls on ring and the platform's roots, as
//! the AWS SDK's client is built, so the build carries one TLS stack and one HTTP client.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::error::RequestError;
use super::reported::{reported, Reported};
use crate::error::{Error, Result};

/// Longest an edge check's fetch may take.
const GET_TIMEOUT: Duration = Duration::from_secs(30);

/// The most of a purge answer's body that is read: enough for any API's JSON verdict, and a
/// hostile or broken CDN's gigabyte costs no more (the rest is never read; the connection is
/// dropped).
pub const ANSWER_CAP: usize = 64 * 1024;

/// A client for purge requests over HTTP and HTTPS.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<HttpConnector>,
        Full<Bytes>,
    >,
}

/// A response: its status and body.
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body's first [`ANSWER_CAP`] bytes, as text (APIs answer JSON). It may echo what was
    /// sent, secrets included: messages take only `edge::excerpt` of it.
    pub body: String,
    /// How long the answer asks to wait before the next request (`Retry-After` in seconds, as
    /// Cloudflare and Fastly send it with a 429); `None` without one, or in another form.
    pub retry_after: Option<Duration>,
    /// The calls its user has left and when the window resets, where the API says so
    /// (Cloudflare's `Ratelimit`, Fastly's `Fastly-RateLimit-*`).
    pub reported: Option<Reported>,
}

impl Client {
    /// A client trusting the platform's root certificates.
    pub fn new() -> Result<Client> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::setting("TLS", format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .build(connector),
        })
    }

    /// Sends one request and reads at most [`ANSWER_CAP`] bytes of the answer, all within
    /// `timeout`; `Err` is a transport failure or no answer in time.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> std::result::Result<Answer, RequestError> {
        let exchange = async {
            let response = self.request(method, url, headers, body).await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let reported = reported(
                response
                    .headers()
                    .iter()
                    .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
            );
            let mut incoming = response.into_body();
            let mut kept = Vec::new();
            while kept.len() < ANSWER_CAP {
                match incoming.frame().await {
                    None => break,
                    Some(Err(e)) => return Err(RequestError::Reading(e)),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            let room = ANSWER_CAP - kept.len();
                            kept.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                }
            }
            Ok(Answer {
                status,
                retry_after,
                reported,
                body: String::from_utf8_lossy(&kept).into_owned(),
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(RequestError::Timeout(timeout)))
    }

    /// `GET url`: the status and the body's bytes as they came (a gzip body stays gzip), reading
    /// at most `cap` bytes of it: a longer answer is [`RequestError::TooLong`], so a CDN answering
    /// a gigabyte costs `cap`, not the gigabyte.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(String, String)],
        cap: usize,
    ) -> std::result::Result<(u16, Bytes), RequestError> {
        let exchange = async {
            let response = self.request("GET", url, headers, Vec::new()).await?;
            let status = response.status().as_u16();
            let mut incoming = response.into_body();
            let mut kept = Vec::new();
            while let Some(frame) = incoming.frame().await {
                if let Ok(data) = frame.map_err(RequestError::Reading)?.into_data() {
                    if kept.len() + data.len() > cap {
                        return Err(RequestError::TooLong(cap));
                    }
                    kept.extend_from_slice(&data);
                }
            }
            Ok((status, Bytes::from(kept)))
        };
        tokio::time::timeout(GET_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(RequestError::FetchTimeout(GET_TIMEOUT)))
    }

    /// `GET url`: the answer's headers, its body read and dropped.
    pub async fn head_of(&self, url: &str) -> std::result::Result<hyper::HeaderMap, RequestError> {
        let exchange = async {
            let response = self.request("GET", url, &[], Vec::new()).await?;
            let headers = response.headers().clone();
            let mut incoming = response.into_body();
            while let Some(frame) = incoming.frame().await {
                frame.map_err(RequestError::Reading)?;
            }
            Ok(headers)
        };
        tokio::time::timeout(GET_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(RequestError::FetchTimeout(GET_TIMEOUT)))
    }

    /// Sends a request and waits for the answer's head; its body is left to the caller.
    async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> std::result::Result<hyper::Response<hyper::body::Incoming>, RequestError> {
        let method = hyper::Method::from_bytes(method.as_bytes())?;
        let mut request = hyper::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|source| RequestError::Unsendable {
                url: url.to_string(),
                source,
            })?;
        self.inner
            .request(request)
            .await
            .map_err(RequestError::Transport)
    }
}
