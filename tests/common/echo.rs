//! A local HTTP server that refuses every request with one status (4xx, 5xx, 429), its body an
//! object store's XML error whose one-line message echoes the request: each header's value alone
//! (as an error page quoting a value without its name does), then its URL, then each header as
//! `name: value`. It also serves the metadata server's access token (GCE's
//! `/computeMetadata/v1/instance/service-accounts/default/token`) and Microsoft's identity platform's
//! (`/TENANT/oauth2/v2.0/token`, for an Azure service principal), so the tool mints a token the
//! test chose and can look for.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// Where Microsoft's identity platform hands out a service principal's token, after the tenant.
const OAUTH_TOKEN_PATH: &str = "/oauth2/v2.0/token";

/// Where a metadata server hands out the default service account's access token.
const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// A request's headers, names lower-case.
pub type Headers = Vec<(String, String)>;

/// The server: its port, and the headers of each request it refused.
pub struct Echo {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The headers of every refused request (names lower-case), in arrival order.
    pub refused: Arc<Mutex<Vec<Headers>>>,
    _thread: std::thread::JoinHandle<()>,
}

impl Echo {
    /// Starts a server refusing every request with `status`, and handing out `token` as the
    /// metadata server's access token.
    pub fn refusing(status: u16, token: &'static str) -> Echo {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let refused: Arc<Mutex<Vec<Headers>>> = Arc::default();
        let shared = refused.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(
                    move |method: Method, uri: Uri, headers: HeaderMap| {
                        let shared = shared.clone();
                        async move {
                            if uri.path() == TOKEN_PATH || uri.path().ends_with(OAUTH_TOKEN_PATH) {
                                return minted(token);
                            }
                            let headers: Vec<(String, String)> = headers
                                .iter()
                                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").into()))
                                .collect();
                            shared.lock().unwrap().push(headers.clone());
                            echoed(status, &method, &uri, &headers)
                        }
                    },
                );
                axum::serve(listener, app).await.unwrap();
            });
        });
        Echo {
            port,
            refused,
            _thread: thread,
        }
    }

    /// The value of header `name` in the first refused request, or "".
    pub fn first(&self, name: &str) -> String {
        let refused = self.refused.lock().unwrap();
        let first = refused.first().map(Vec::as_slice).unwrap_or_default();
        first
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(String::new, |(_, v)| v.clone())
    }
}

/// The metadata server's answer: `token`, valid for an hour.
fn minted(token: &str) -> Response {
    let body = serde_json::json!({
        "access_token": token,
        "expires_in": 3600,
        "token_type": "Bearer",
    });
    (StatusCode::OK, body.to_string()).into_response()
}

/// `status`, with a one-line XML error echoing the request.
fn echoed(status: u16, method: &Method, uri: &Uri, headers: &[(String, String)]) -> Response {
    let values: Vec<&str> = headers.iter().map(|(_, v)| v.as_str()).collect();
    let named: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
    let said = format!(
        "refused {} | {method} {uri} | {}",
        values.join(" "),
        named.join("; ")
    );
    let escaped = said
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let error = format!("<Error><Code>Refused</Code><Message>{escaped}</Message></Error>");
    // CloudFront's API (its paths start with its version's date) wraps its errors; S3 does not.
    let error = if uri.path().starts_with("/20") {
        format!("<ErrorResponse>{error}</ErrorResponse>")
    } else {
        error
    };
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>{error}");
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", "application/xml".parse().unwrap());
    if status == 429 {
        headers.insert("retry-after", "0".parse().unwrap());
    }
    response
}
