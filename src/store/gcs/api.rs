//! The requests of Google Cloud Storage's JSON API that the GCS store makes, on this build's HTTP
//! stack ([`super::super::http::hyper_client`]), each retried by the crate's policy.
//!
//! The JSON API rather than the XML API object_store's GCS client speaks: Google's emulators
//! (fake-gcs-server) serve writes, preconditions and resumable uploads only through it, and it
//! carries an object's headers as metadata rather than as request headers an emulator may act on.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION};
use hyper::{Method, Request, Response, StatusCode};
use object_store::gcp::GcpCredentialProvider;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::super::error_body::ERROR_BODY_CAP;
use super::super::http::{hyper_client, retry_after, send_within, HyperClient};
use crate::config::StoreConfig;
use crate::retry::{Failed, Policy};
use crate::store::pace::Pace;

/// What a path segment or query value keeps unencoded: RFC 3986's unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` percent-encoded as one path segment or query value (an object name's `/` included).
pub(super) fn encoded(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// One request, kept whole so that each attempt sends it again.
pub(super) struct Call {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Bytes,
}

impl Call {
    /// A request without a body.
    pub fn new(method: Method, url: String) -> Call {
        Call {
            method,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// The same request with the header `name: value`.
    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Call {
        self.headers.push((name, value.into()));
        self
    }

    /// The same request with `body`.
    pub fn body(mut self, body: impl Into<Bytes>) -> Call {
        self.body = body.into();
        self
    }
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    /// No answer (connection refused or dropped, a timeout).
    #[error("{0}")]
    Transport(String),
    /// An answer other than success; GCS's own message where its body had one.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The answer's status.
        status: StatusCode,
        /// Its message.
        message: String,
        /// Its `Retry-After`, in seconds.
        retry_after: Option<Duration>,
    },
    /// No access token (a credentials file, or the metadata server, failed).
    #[error("getting a Google access token: {0}")]
    Credentials(String),
    /// A signal asked the process to stop while the request was in flight.
    #[error("{0}")]
    Abandoned(#[source] crate::error::Abandoned),
}

impl Failure {
    /// The answer's status, when there was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether GCS refused the request as too fast (`429`, or `503` under load), and the
    /// `Retry-After` it gave.
    fn too_fast(&self) -> Option<Option<Duration>> {
        match self {
            Failure::Status {
                status,
                retry_after,
                ..
            } if *status == StatusCode::TOO_MANY_REQUESTS
                || *status == StatusCode::SERVICE_UNAVAILABLE =>
            {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    fn is_transient(&self) -> bool {
        match self {
            Failure::Transport(_) => true,
            Failure::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            // object_store retried the token request itself.
            Failure::Credentials(_) | Failure::Abandoned(_) => false,
        }
    }
}

/// The JSON API of one GCS endpoint (Google's, or an emulator's).
pub(super) struct Api {
    client: HyperClient<Full<Bytes>>,
    /// `https://storage.googleapis.com`, or the emulator's address, without a trailing `/`.
    pub base: String,
    /// Where tokens come from; `None` for an emulator, which takes requests without one.
    credentials: Option<GcpCredentialProvider>,
    policy: Policy,
    /// The pace of the bucket's writes, when they keep one.
    pace: Option<Arc<Pace>>,
    /// Longest an attempt waits for the answer's status and headers (`[store] request_timeout`).
    request_timeout: Duration,
}

impl Api {
    /// The API at `base`, authorized by `credentials`, each request tried as `settings`'s
    /// `max_attempts`, `connect_timeout` and `request_timeout` say, writes at `pace`.
    pub fn new(
        base: &str,
        credentials: Option<GcpCredentialProvider>,
        settings: &StoreConfig,
        pace: Option<Arc<Pace>>,
    ) -> Result<Api, rustls::Error> {
        Ok(Api {
            client: hyper_client(settings.connect_timeout())?,
            base: base.trim_end_matches('/').to_string(),
            credentials,
            policy: Policy::s3(settings.max_attempts),
            pace,
            request_timeout: settings.request_timeout(),
        })
    }

    /// Sends `call` until it succeeds or fails for good; an answer that is not a success is a
    /// [`Failure::Status`], its body read up to a cap for the message.
    pub async fn send(
        &self,
        what: &str,
        call: &Call,
    ) -> Result<Response<Incoming>, Failed<Failure>> {
        // Each retry's warning is redacted as the final error is (`StoreError::new`): an answer
        // may echo the request's headers, the access token among them.
        let secrets = super::super::credentials();
        let write = call.method != Method::GET && call.method != Method::HEAD;
        let pace = self.pace.as_deref().filter(|_| write);
        let once = || {
            self.policy.run(
                || secrets.redact(what),
                || self.attempt(call),
                |failure| {
                    failure.is_transient() && (pace.is_none() || failure.too_fast().is_none())
                },
                |failure| secrets.redact(&failure.to_string()),
            )
        };
        let run = async {
            let Some(pace) = pace else {
                return once().await;
            };
            pace.run(what, once, |failed| failed.error.too_fast())
                .await
                .map_err(|refused| {
                    let note = refused.note();
                    let mut failed = refused.error;
                    if let Failure::Status { message, .. } = &mut failed.error {
                        message.push_str(&note);
                    }
                    failed
                })
        };
        tokio::select! {
            result = run => result,
            signal = crate::error::stop_requested() => Err(Failed {
                error: Failure::Abandoned(crate::error::Abandoned { signal }),
                attempts: 0,
            }),
        }
    }

    /// [`Api::send`], and the answer's body read whole, refused past `cap` bytes.
    pub async fn fetch(
        &self,
        what: &str,
        call: &Call,
        cap: usize,
    ) -> Result<(Response<()>, Bytes), Failed<Failure>> {
        let answer = self.send(what, call).await?;
        let (parts, body) = answer.into_parts();
        let bytes = read_capped(body, cap)
            .await
            .map_err(|error| Failed { error, attempts: 1 })?;
        Ok((Response::from_parts(parts, ()), bytes))
    }

    async fn attempt(&self, call: &Call) -> Result<Response<Incoming>, Failure> {
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(&call.url);
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        if let Some(bearer) = self.token().await? {
            request = request.header(AUTHORIZATION, bearer);
        }
        let request = request
            .body(Full::new(call.body.clone()))
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let answer = send_within(&self.client, request, self.request_timeout)
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let status = answer.status();
        if status.is_success() || status == StatusCode::PERMANENT_REDIRECT {
            return Ok(answer);
        }
        let retry_after = retry_after(answer.headers());
        let body = read_capped(answer.into_body(), ERROR_BODY_CAP)
            .await
            .unwrap_or_default();
        // Redacted before `message_of` cuts it short: a cut through a secret would leave a part
        // of it that no form of the whole matches.
        let body = super::super::credentials().redact(&String::from_utf8_lossy(&body));
        Err(Failure::Status {
            status,
            message: message_of(body.as_bytes()),
            retry_after,
        })
    }

    /// The `Authorization` header's value, when this API needs one.
    async fn token(&self) -> Result<Option<HeaderValue>, Failure> {
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        let credential = credentials
            .get_credential()
            .await
            .map_err(|e| Failure::Credentials(super::super::one_line(&e)))?;
        if credential.bearer.is_empty() {
            return Ok(None);
        }
        // Minted here (signed from a service account key, or fetched from the metadata server),
        // never in the environment: it joins the redacted secrets before it is first sent.
        super::super::credentials().add(&credential.bearer);
        let mut value = HeaderValue::from_str(&format!("Bearer {}", credential.bearer))
            .map_err(|e| Failure::Credentials(e.to_string()))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// The body, read whole, or a failure past `cap` bytes (whatever the answer's headers claimed).
pub(super) async fn read_capped(body: Incoming, cap: usize) -> Result<Bytes, Failure> {
    Limited::new(body, cap)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| Failure::Transport(format!("reading the answer: {e}")))
}

/// GCS's message from an error answer's JSON (`{"error": {"message": …}}`), else the body's start.
fn message_of(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if let Some(message) = parsed
        .as_ref()
        .and_then(|json| json["error"]["message"].as_str())
    {
        return message.to_string();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(no message)".into();
    }
    text.chars()
        .take(300)
        .collect::<String>()
        .replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_one_encoded_segment() {
        assert_eq!(encoded("v1/3/1/2.pbf"), "v1%2F3%2F1%2F2.pbf");
        assert_eq!(encoded("a b~c"), "a%20b~c");
    }

    #[test]
    fn an_error_answer_says_gcss_message_or_its_start() {
        let json = br#"{"error":{"code":403,"message":"no access to bucket tiles"}}"#;
        assert_eq!(message_of(json), "no access to bucket tiles");
        assert_eq!(message_of(b"<html>\nBad</html>"), "<html> Bad</html>");
        assert_eq!(message_of(b""), "(no message)");
    }
}
