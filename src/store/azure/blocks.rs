//! A block blob rebuilt in place from the blocks it already holds: the new bytes are staged as
//! blocks of their own (`Put Block`), and `Put Block List` commits the blob again as them
//! followed by every block it has now, on condition (`If-Match`) that its ETag is still the one
//! the caller read, so a reader sees the old blob or the new, and another writer's blob is never
//! built upon. Only the new bytes cross the network; the old blocks stay where they are, all of
//! them, so the splice keeps the whole blob as GCS's compose does.
//!
//! object_store makes none of these requests, so they are made here on the build's hyper stack,
//! signed with Shared Key (the account key, or the emulator's published one) or carrying a SAS
//! token. Other credentials (a service principal, a managed identity, a bearer token) leave the
//! store without a splice, and archives are uploaded whole. Limits kept: 50,000 committed blocks a
//! blob (past them the splice is refused, and the whole upload starts the blob again in few
//! blocks); a blob written by one `Put Blob` has no blocks to keep, and is uploaded whole too.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{HeaderMap, Method, Request, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::AzureStore;
use crate::retry::{Failed, Policy};
use crate::store::http::{hyper_client, send_within, HyperClient};
use crate::store::{ObjectHeaders, Splice, StoreError};

/// The REST API version the requests are signed for (the one object_store speaks).
const API_VERSION: &str = "2023-11-03";

/// Azure's limit on a blob's committed blocks.
const MAX_BLOCKS: usize = 50_000;

/// The largest block sent: the limit of API versions before 2019-12-12, which every emulator takes.
const MAX_BLOCK: usize = 100 * 1024 * 1024;

/// The largest block list read (about 100 bytes a block, 50,000 blocks).
const BLOCK_LIST_CAP: usize = 16 * 1024 * 1024;

/// What a path segment keeps unencoded: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How the requests prove who sends them.
pub(super) enum Signing {
    /// Shared Key: an HMAC-SHA256 of each request under the account's key.
    SharedKey(ring::hmac::Key),
    /// A SAS token's query parameters, appended to each URL.
    Sas(String),
}

/// The block requests of one container.
pub(super) struct Blocks {
    client: HyperClient<Full<Bytes>>,
    /// The container's address, without a trailing `/`.
    container: String,
    account: String,
    signing: Signing,
    policy: Policy,
    request_timeout: Duration,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// No answer (connection refused or dropped, a timeout).
    #[error("{0}")]
    Transport(String),
    /// An answer other than success, with Azure's code and message where its body had them.
    #[error("HTTP {status}: {message}")]
    Status { status: StatusCode, message: String },
}

impl Failure {
    /// The answer's status, when there was one.
    fn status(&self) -> Option<StatusCode> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            Failure::Transport(_) => None,
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
        }
    }
}

/// One request, kept whole so that each attempt signs and sends it again.
struct Call<'a> {
    method: Method,
    key: &'a str,
    query: Vec<(&'static str, String)>,
    /// Lowercase names.
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl Blocks {
    /// The block requests of the container at `container` of `account`, signed as `signing` says,
    /// each tried `attempts` times.
    pub(super) fn new(
        container: &str,
        account: &str,
        signing: Signing,
        attempts: u32,
        timeouts: (Duration, Duration),
    ) -> Result<Blocks, rustls::Error> {
        Ok(Blocks {
            client: hyper_client(timeouts.0)?,
            container: container.trim_end_matches('/').to_string(),
            account: account.to_string(),
            signing,
            policy: Policy::s3(attempts),
            request_timeout: timeouts.1,
        })
    }

    /// Sends `call` until it succeeds or fails for good; the answer's headers and body.
    async fn send(&self, what: &str, call: &Call<'_>) -> Result<(HeaderMap, Bytes), StoreError> {
        self.try_send(what, call)
            .await
            .map_err(|failed| failed_for(what, failed))
    }

    /// [`Blocks::send`], its last failure kept for the caller to read.
    async fn try_send(
        &self,
        what: &str,
        call: &Call<'_>,
    ) -> Result<(HeaderMap, Bytes), Failed<Failure>> {
        let secrets = crate::store::credentials();
        self.policy
            .run(
                || secrets.redact(what),
                || self.attempt(call),
                Failure::is_transient,
                |failure| secrets.redact(&failure.to_string()),
            )
            .await
    }

    async fn attempt(&self, call: &Call<'_>) -> Result<(HeaderMap, Bytes), Failure> {
        let path = format!("{}/{}", self.container, encoded_path(call.key));
        let mut query: Vec<String> = call
            .query
            .iter()
            .map(|(name, value)| format!("{name}={}", utf8_percent_encode(value, SEGMENT)))
            .collect();
        let mut headers = call.headers.clone();
        headers.push(("x-ms-date", httpdate::fmt_http_date(SystemTime::now())));
        headers.push(("x-ms-version", API_VERSION.to_string()));
        headers.push(("content-length", call.body.len().to_string()));
        let mut authorization = None;
        match &self.signing {
            Signing::Sas(token) => query.push(token.clone()),
            Signing::SharedKey(key) => {
                let url_path = url_path_of(&path);
                let text = string_to_sign(&call.method, &headers, &self.account, url_path, call);
                let signature = ring::hmac::sign(key, text.as_bytes());
                let encoded = BASE64.encode(signature.as_ref());
                authorization = Some(format!("SharedKey {}:{encoded}", self.account));
            }
        }
        let url = format!("{path}?{}", query.join("&"));
        let mut request = Request::builder().method(call.method.clone()).uri(url);
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        if let Some(authorization) = authorization {
            request = request.header(hyper::header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Full::new(call.body.clone()))
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let answer = send_within(&self.client, request, self.request_timeout)
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let (parts, body) = answer.into_parts();
        let cap = if parts.status.is_success() {
            BLOCK_LIST_CAP
        } else {
            crate::store::error_body::ERROR_BODY_CAP
        };
        let body = Limited::new(body, cap)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(|e| Failure::Transport(format!("reading the answer: {e}")));
        if parts.status.is_success() {
            return Ok((parts.headers, body?));
        }
        let body =
            crate::store::credentials().redact(&String::from_utf8_lossy(&body.unwrap_or_default()));
        Err(Failure::Status {
            status: parts.status,
            message: message_of(&body),
        })
    }
}

/// `key` percent-encoded segment by segment, its `/`s kept.
fn encoded_path(key: &str) -> String {
    key.split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The path of `url` (`http://host:port/account/container/blob` → `/account/container/blob`).
fn url_path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme
        .find('/')
        .map_or("/", |slash| &after_scheme[slash..])
}

/// What Shared Key signs of a request, as Azure's "Authorize with Shared Key" lays it out: the
/// standard headers one a line (a zero length as empty), the `x-ms-` headers sorted, then the
/// account, the path and the query parameters sorted.
fn string_to_sign(
    method: &Method,
    headers: &[(&'static str, String)],
    account: &str,
    path: &str,
    call: &Call<'_>,
) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(have, _)| *have == name)
            .map_or("", |(_, value)| value.as_str())
    };
    let length = match header("content-length") {
        "0" => "",
        length => length,
    };
    let standard = [
        header("content-encoding"),
        header("content-language"),
        length,
        header("content-md5"),
        header("content-type"),
        header("date"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    ];
    let mut text = format!("{method}\n{}\n", standard.join("\n"));
    let mut own: Vec<_> = headers
        .iter()
        .filter(|(name, _)| name.starts_with("x-ms-"))
        .collect();
    own.sort();
    for (name, value) in own {
        text.push_str(&format!("{name}:{}\n", value.trim()));
    }
    text.push_str(&format!("/{account}{path}"));
    let mut query = call.query.clone();
    query.sort();
    for (name, value) in query {
        text.push_str(&format!("\n{name}:{value}"));
    }
    text
}

/// Azure's code and message from an error answer's XML, else the body's start.
fn message_of(body: &str) -> String {
    let code = element(body, "Code");
    let message = element(body, "Message").and_then(|text| text.lines().next());
    match (code, message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ if body.trim().is_empty() => "(no message)".into(),
        _ => body.trim().chars().take(300).collect::<String>(),
    }
}

/// The text of the first `<name>` element of `xml`.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..start + end])
}

/// A committed block: its ID as sent (base64) and its size.
#[derive(Debug, PartialEq, Eq)]
struct Block {
    id: String,
    size: u64,
}

/// The committed blocks of a `Get Block List` answer, in order.
fn committed_blocks(xml: &str) -> Option<Vec<Block>> {
    let Some(list) = element(xml, "CommittedBlocks") else {
        return Some(Vec::new());
    };
    let mut blocks = Vec::new();
    for piece in list.split("<Block>").skip(1) {
        let id = element(piece, "Name")?.to_string();
        let size = element(piece, "Size")?.parse().ok()?;
        blocks.push(Block { id, size });
    }
    Some(blocks)
}

/// `count` block IDs (base64) of the same length as `old`'s, none of them one of `old`'s: hex
/// digits of the time, the process and a counter, cut or padded to the old IDs' width.
fn new_block_ids(old: &[Block], count: usize) -> Option<Vec<String>> {
    let taken: HashSet<Vec<u8>> = old
        .iter()
        .map(|block| BASE64.decode(&block.id))
        .collect::<Result<_, _>>()
        .ok()?;
    let width = taken.iter().next()?.len();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let mut next = nanos ^ (u128::from(std::process::id()) << 96);
    let mut ids = Vec::with_capacity(count);
    let mut tries = 0;
    while ids.len() < count {
        tries += 1;
        if tries > count + old.len() + 1_000 {
            return None;
        }
        let hex = format!("{next:032x}");
        next = next.wrapping_add(1);
        let id = if width <= hex.len() {
            hex[hex.len() - width..].to_string()
        } else {
            format!("{hex:0>width$}")
        };
        if !taken.contains(id.as_bytes()) {
            ids.push(BASE64.encode(id));
        }
    }
    Some(ids)
}

/// The `Put Block List` body: `new` as staged, then `old` as committed.
fn block_list(new: &[String], old: &[Block]) -> String {
    let mut xml = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
    for id in new {
        xml.push_str(&format!("<Uncommitted>{id}</Uncommitted>"));
    }
    for block in old {
        xml.push_str(&format!("<Committed>{}</Committed>", block.id));
    }
    xml.push_str("</BlockList>");
    xml
}

/// A splice refused before the blob was changed, saying `why`.
fn refused(what: &str, why: String) -> StoreError {
    StoreError::local(what, std::io::Error::other(why))
}

/// An ETag without its quotes, which some answers give and others do not.
fn bare(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// The headers a committed blob is served with: `Put Block List` sets them, and clears any not sent.
fn blob_headers(headers: ObjectHeaders<'_>) -> Vec<(&'static str, String)> {
    let mut set = vec![("x-ms-blob-content-type", headers.content_type.to_string())];
    if !headers.cache_control.is_empty() {
        set.push(("x-ms-blob-cache-control", headers.cache_control.to_string()));
    }
    if let Some(encoding) = headers.content_encoding {
        set.push(("x-ms-blob-content-encoding", encoding.to_string()));
    }
    set
}

impl AzureStore {
    /// [`crate::store::ObjectStore::splice`] on Azure: the splice must keep the whole blob.
    pub(super) async fn splice_blocks(
        &self,
        key: &str,
        splice: Splice<'_>,
    ) -> Result<String, StoreError> {
        let what = format!("rebuilding {} in place", self.url(key));
        let Some(blocks) = &self.blocks else {
            let why = "only a blob reached with an account key or a SAS token is rebuilt in place";
            return Err(refused(&what, why.into()));
        };
        let old = blocks.committed(key, splice.if_etag, &what).await?;
        let size: u64 = old.iter().map(|block| block.size).sum();
        if splice.kept.start != 0 || splice.kept.end != size {
            let why = format!(
                "Azure keeps only the whole blob of {size} bytes after the new ones, not bytes {:?}",
                splice.kept
            );
            return Err(refused(&what, why));
        }
        let pieces: Vec<&[u8]> = splice.new.chunks(MAX_BLOCK).collect();
        if old.len() + pieces.len() > MAX_BLOCKS {
            let why = format!(
                "the blob has {} committed blocks, and Azure keeps at most {MAX_BLOCKS}: a whole \
                 upload starts it again",
                old.len()
            );
            return Err(refused(&what, why));
        }
        let Some(ids) = new_block_ids(&old, pieces.len()) else {
            let why = "its block IDs leave no room for new ones of the same length".to_string();
            return Err(refused(&what, why));
        };
        for (id, piece) in ids.iter().zip(pieces) {
            let call = Call {
                method: Method::PUT,
                key,
                query: vec![("comp", "block".into()), ("blockid", id.clone())],
                headers: Vec::new(),
                body: Bytes::copy_from_slice(piece),
            };
            blocks.send(&what, &call).await?;
        }
        let mut headers = blob_headers(splice.headers);
        headers.push(("if-match", splice.if_etag.to_string()));
        let call = Call {
            method: Method::PUT,
            key,
            query: vec![("comp", "blocklist".into())],
            headers,
            body: Bytes::from(block_list(&ids, &old)),
        };
        match blocks.try_send(&what, &call).await {
            Ok((answer, _)) => Ok(etag_of(&answer)),
            Err(failed) if failed.error.status() == Some(StatusCode::PRECONDITION_FAILED) => {
                let why = format!(
                    "the blob's ETag is no longer {} as this run read it: another writer \
                     replaced it since",
                    splice.if_etag
                );
                Err(refused(&what, why))
            }
            Err(failed) => Err(failed_for(&what, failed)),
        }
    }
}

/// A request for `what` that failed for good.
fn failed_for(what: &str, Failed { error, attempts }: Failed<Failure>) -> StoreError {
    StoreError::new(what, &error.to_string(), attempts, Box::new(error))
}

/// The answer's `ETag`.
fn etag_of(headers: &HeaderMap) -> String {
    headers
        .get(hyper::header::ETAG)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

impl Blocks {
    /// The blob's committed blocks, if its ETag is still `if_etag` and it has any.
    async fn committed(
        &self,
        key: &str,
        if_etag: &str,
        what: &str,
    ) -> Result<Vec<Block>, StoreError> {
        let call = Call {
            method: Method::GET,
            key,
            query: vec![
                ("comp", "blocklist".into()),
                ("blocklisttype", "committed".into()),
            ],
            headers: Vec::new(),
            body: Bytes::new(),
        };
        let (answer, body) = self.send(what, &call).await?;
        let etag = etag_of(&answer);
        let old = committed_blocks(&String::from_utf8_lossy(&body))
            .ok_or_else(|| refused(what, "Azure's block list could not be read".to_string()))?;
        if old.is_empty() {
            let why = "the blob was written in one request and has no blocks to keep".to_string();
            return Err(refused(what, why));
        }
        if bare(&etag) != bare(if_etag) {
            let why = format!(
                "the blob's ETag is {etag}, not {if_etag} as this run read it: another writer \
                 replaced it since"
            );
            return Err(refused(what, why));
        }
        Ok(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_list_is_read_in_order_and_an_empty_one_is_empty() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><BlockList><CommittedBlocks><Block><Name>QUFB</Name><Size>5</Size></Block><Block><Name>QkJC</Name><Size>7</Size></Block></CommittedBlocks></BlockList>"#;
        let blocks = committed_blocks(xml).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!((blocks[0].id.as_str(), blocks[1].size), ("QUFB", 7));
        let empty = r#"<BlockList><CommittedBlocks /></BlockList>"#;
        assert_eq!(committed_blocks(empty).unwrap(), []);
    }

    #[test]
    fn new_block_ids_have_the_old_ones_length_and_are_none_of_them() {
        let old = [Block {
            id: BASE64.encode("0123456789abcdef0123456789abcdef"),
            size: 1,
        }];
        let ids = new_block_ids(&old, 3).unwrap();
        assert_eq!(ids.len(), 3);
        assert!(ids.iter().all(|id| id.len() == old[0].id.len()));
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 3);
        let short = [Block {
            id: BASE64.encode("0001"),
            size: 1,
        }];
        let ids = new_block_ids(&short, 2).unwrap();
        assert!(ids.iter().all(|id| BASE64.decode(id).unwrap().len() == 4));
    }

    #[test]
    fn shared_key_signs_the_standard_headers_then_the_own_ones_and_the_resource() {
        let call = Call {
            method: Method::PUT,
            key: "maps/a.pmtiles",
            query: vec![("comp", "block".into()), ("blockid", "QQ==".into())],
            headers: Vec::new(),
            body: Bytes::new(),
        };
        let headers = vec![
            ("x-ms-version", API_VERSION.to_string()),
            ("x-ms-date", "Sat, 28 Nov 2026 21:00:00 GMT".to_string()),
            ("content-length", "0".to_string()),
            ("if-match", "\"0x1\"".to_string()),
        ];
        let path = url_path_of("http://127.0.0.1:10000/dev/tiles/maps/a.pmtiles");
        let text = string_to_sign(&Method::PUT, &headers, "dev", path, &call);
        assert_eq!(
            text,
            "PUT\n\n\n\n\n\n\n\n\"0x1\"\n\n\n\nx-ms-date:Sat, 28 Nov 2026 21:00:00 GMT\n\
             x-ms-version:2023-11-03\n/dev/dev/tiles/maps/a.pmtiles\nblockid:QQ==\ncomp:block"
        );
    }

    #[test]
    fn an_error_answer_says_azures_code_and_message() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>ConditionNotMet</Code><Message>The condition specified was not met.\nRequestId:1</Message></Error>";
        assert_eq!(
            message_of(xml),
            "ConditionNotMet: The condition specified was not met."
        );
        assert_eq!(message_of(""), "(no message)");
    }
}
