//! The build's one HTTP client stack for stores that do not bring the AWS SDK's: hyper 1 with
//! rustls on ring and the platform's root certificates, the same pieces the SDK's client is built
//! from, handed to object_store as its connector so that it brings no reqwest and no second TLS
//! stack.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use object_store::client::{
    HttpClient, HttpConnector as StoreConnector, HttpError, HttpErrorKind, HttpRequest,
    HttpRequestBody, HttpResponse, HttpResponseBody, HttpService,
};
use object_store::ClientOptions;

use super::error_body::{Truncated, ERROR_BODY_CAP};
use super::pace::Pace;

/// The TLS settings of every HTTPS request: rustls on ring, trusting the platform's roots.
pub fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A hyper client over the build's TLS settings, sending bodies of type `B`; plain HTTP too, for
/// emulators on this machine.
pub type HyperClient<B> =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, B>;

type Client = HyperClient<HttpRequestBody>;

/// A client sending bodies of type `B`, for stores that make their own requests; a connection
/// attempt gives up after `connect_timeout`.
pub fn hyper_client<B>(connect_timeout: Duration) -> Result<HyperClient<B>, rustls::Error>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config()?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector))
}

/// Why a request sent with [`send_within`] got no answer.
#[derive(Debug)]
pub enum SendError {
    /// No answer's head within the wait.
    NoAnswerWithin(Duration),
    /// The connection was refused or dropped: the error and its causes on one line.
    Transport(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::NoAnswerWithin(timeout) => write!(
                f,
                "no answer within {} (raise [store] request_timeout if the store is only slow)",
                humantime::format_duration(*timeout)
            ),
            SendError::Transport(line) => f.write_str(line),
        }
    }
}

/// Sends `request` and waits at most `timeout` for the answer's head; a failure says which kind,
/// for the caller to retry.
pub async fn send_within(
    client: &HyperClient<http_body_util::Full<bytes::Bytes>>,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
    timeout: Duration,
) -> Result<hyper::Response<hyper::body::Incoming>, SendError> {
    tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| SendError::NoAnswerWithin(timeout))?
        .map_err(|e| SendError::Transport(super::one_line(&e)))
}

/// object_store's connector: every client it asks for is this hyper client, each attempt bounded
/// by the `[store]` timeouts (a hung store is asked again by object_store's retries), writes at
/// the bucket's pace.
#[derive(Debug, Clone)]
pub struct HyperConnector {
    /// Longest an attempt may take to connect.
    pub connect_timeout: Duration,
    /// Longest an attempt may wait for the answer's status and headers; the body then streams.
    pub request_timeout: Duration,
    /// The pace of the bucket's writes: a write the store refuses as too fast is sent again
    /// here, within the throttle budget, and object_store sees only the answer that ends it.
    pub pace: Option<Arc<Pace>>,
}

impl StoreConnector for HyperConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client =
            hyper_client(self.connect_timeout).map_err(|e| object_store::Error::Generic {
                store: "HTTP",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(HyperService {
            client,
            request_timeout: self.request_timeout,
            pace: self.pace.clone(),
        }))
    }
}

struct HyperService {
    client: Client,
    request_timeout: Duration,
    pace: Option<Arc<Pace>>,
}

/// How a paced write's sending ended other than in an answer to pass on.
enum Sent {
    /// No answer.
    Failed(HttpError),
    /// The store refused it as too fast (`503`, `429`), with its `Retry-After`.
    TooFast(HttpResponse, Option<Duration>),
}

/// The wait an answer's `Retry-After` asks for, when it gives one in seconds.
pub fn retry_after(headers: &hyper::HeaderMap) -> Option<Duration> {
    headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The same request again, for another sending.
fn copy_of(parts: &hyper::http::request::Parts, body: &HttpRequestBody) -> HttpRequest {
    let mut request = HttpRequest::new(body.clone());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

impl std::fmt::Debug for HyperService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HyperService")
    }
}

/// Adds the bearer token `request` carries to the redacted secrets before it is sent: object_store
/// mints Azure's (from a service principal, a managed or a workload identity) and GCS's inside its
/// own credential code, where the tool never sees them otherwise, and a server may echo them.
fn hold_bearer_token(request: &HttpRequest) {
    let bearer = request
        .headers()
        .get_all(hyper::header::AUTHORIZATION)
        .into_iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.trim().split_once(char::is_whitespace))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
    for (_, token) in bearer {
        super::credentials().add(token.trim());
    }
}

#[async_trait]
impl HttpService for HyperService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let reads = [hyper::Method::GET, hyper::Method::HEAD];
        let pace = self.pace.as_deref();
        let Some(pace) = pace.filter(|_| !reads.contains(request.method())) else {
            return self.send(request).await;
        };
        let (parts, body) = request.into_parts();
        let what = format!("{} {}", parts.method, parts.uri.path());
        let once = || async {
            let answer = self
                .send(copy_of(&parts, &body))
                .await
                .map_err(Sent::Failed)?;
            let status = answer.status().as_u16();
            if status != 503 && status != 429 {
                return Ok(answer);
            }
            let retry_after = retry_after(answer.headers());
            Err(Sent::TooFast(answer, retry_after))
        };
        let too_fast = |sent: &Sent| match sent {
            Sent::TooFast(_, retry_after) => Some(*retry_after),
            Sent::Failed(_) => None,
        };
        match pace.run(&what, once, too_fast).await {
            Ok(answer) => Ok(answer),
            Err(refused) => match refused.error {
                Sent::Failed(error) => Err(error),
                // Past the budget: object_store reads the refusal and fails the request with it.
                Sent::TooFast(answer, _) => Ok(answer),
            },
        }
    }
}

impl HyperService {
    /// Sends `request` once.
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        hold_bearer_token(&request);
        let answer = tokio::time::timeout(self.request_timeout, self.client.request(request));
        let answer = tokio::select! {
            answer = answer => answer,
            signal = crate::error::stop_requested() => {
                let abandoned = crate::error::Abandoned { signal };
                return Err(HttpError::new(HttpErrorKind::Unknown, abandoned));
            }
        };
        let answer = answer
            .map_err(|elapsed| HttpError::new(HttpErrorKind::Timeout, elapsed))?
            .map_err(|e| {
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, e)
            })?;
        let (parts, body) = answer.into_parts();
        if parts.status.is_client_error() || parts.status.is_server_error() {
            let body = Truncated::new(body, ERROR_BODY_CAP)
                .map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e));
            return Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)));
        }
        let body = body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e));
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}
