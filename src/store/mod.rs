//! The storage room: remote object stores behind one interface, so formats and run coordination
//! (tiles, documents, outboxes, shard parts, partition indexes, PMTiles archives) never know which
//! store holds them.
//!
//! A store is opened for one bucket (S3, GCS) or container (Azure) from its address
//! ([`crate::config::Bucket`]) with [`open`]; everything above talks to `dyn ObjectStore`. Each
//! request is retried by the store itself, with the attempts of `[store] max_attempts`, and a request
//! that fails for good is a [`StoreError`] naming what it was for and keeping the client's error as
//! its source.
//!
//! Adding a store: a module here implementing [`ObjectStore`] (its `async fn`s, the trait gives
//! the rest) and [`OpenStore`], its entry in [`crate::config::Scheme`]'s table and its line in
//! [`registered`];
//! ARCHITECTURE.md lists every place and what it measured.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::FutureExt;
use md5::{Digest, Md5};

use crate::config::{Bucket, Scheme, StoreConfig};
use crate::redact::Secrets;

pub mod azure;
pub mod document;
pub mod durable;
mod error_body;
pub mod folder;
pub mod gcs;
pub mod http;
pub mod pace;
pub mod s3;

/// Removals in flight at once where a store removes one object per request (Azure, GCS).
const DELETES_IN_FLIGHT: usize = 8;

/// The media type of Mapbox Vector Tiles.
pub const MVT_CONTENT_TYPE: &str = "application/vnd.mapbox-vector-tile";

/// The headers an object is served with.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObjectHeaders<'a> {
    /// `Content-Type`.
    pub content_type: &'a str,
    /// `Cache-Control`.
    pub cache_control: &'a str,
    /// `Content-Encoding` (`gzip` for compressed tiles).
    pub content_encoding: Option<&'a str>,
}

/// An object a listing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its MD5, where the store's listing tells it (an S3 single-part upload's ETag).
    pub md5: Option<[u8; 16]>,
}

/// What a conditional write found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// The object is stored; its new ETag.
    Stored(String),
    /// A write of only a new object found one there, and left it.
    Exists,
}

/// A request to a store that failed for good, after its retries. Its text is redacted of the
/// stores' credentials ([`credentials`]) when it is made: a refusal may echo the request's URL
/// (an Azure SAS `sig=`) or headers (`X-Amz-Security-Token`). The client's error kept as its
/// source is not, which is why the tool shows messages, never the chain.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}{}", attempts_note(*.attempts))]
pub struct StoreError {
    /// What the request was for (`uploading tile 3/1/2 to s3://…`).
    what: String,
    /// One line: the service's code, message and status, or the transport's causes.
    message: String,
    /// Attempts made; 0 when the request itself succeeded and what followed (reading its body, a
    /// local file) failed.
    attempts: u32,
    /// The client's error.
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    /// A failure of `what` said in `message` after `attempts` attempts, `source` underneath;
    /// `what` and `message` redacted.
    pub fn new(
        what: &str,
        message: &str,
        attempts: u32,
        source: Box<dyn std::error::Error + Send + Sync>,
    ) -> StoreError {
        let secrets = credentials();
        StoreError {
            what: secrets.redact(what),
            message: secrets.redact(message),
            attempts,
            source,
        }
    }

    /// A failure on this machine's side of a request (a local file), or a refusal of what a store
    /// answered, with no attempt count.
    pub fn local(what: &str, source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::new(what, &source.to_string(), 0, Box::new(source))
    }

    /// The same failure, said to be for `what` (a tile, a document), which the store's own
    /// description of the request cannot know.
    pub fn about(mut self, what: String) -> StoreError {
        self.what = credentials().redact(&what);
        self
    }
}

/// The environment variables the stores' credentials come from, as the AWS SDK and Azure's tools
/// read them: the secret parts, never the key id or account name.
const CREDENTIAL_VARIABLES: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_TOKEN",
    "AZURE_STORAGE_CLIENT_SECRET",
    "AZURE_CLIENT_SECRET",
    "AZURE_FABRIC_SESSION_TOKEN",
    "AZURE_STORAGE_ENCRYPTION_KEY",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
];

/// `what`, abandoned because `signal` asked the process to stop while it was in flight.
pub(crate) fn abandoned(what: &str, signal: &'static str) -> StoreError {
    let abandoned = crate::error::Abandoned { signal };
    StoreError::new(what, &abandoned.to_string(), 0, Box::new(abandoned))
}

/// The stores' credentials from the environment, in every form a message must not hold them
/// (read once: the process does not change its environment).
pub fn credentials() -> &'static Secrets {
    static CREDENTIALS: OnceLock<Secrets> = OnceLock::new();
    CREDENTIALS.get_or_init(|| Secrets::from_env(CREDENTIAL_VARIABLES))
}

fn attempts_note(attempts: u32) -> String {
    if attempts == 0 {
        String::new()
    } else {
        format!(" (after {attempts} attempt(s))")
    }
}

/// A bucket or container of a remote object store. Keys are full object keys (`prefix/3/1/2.pbf`);
/// every method retries transient failures itself. Written with `async_trait`, so each store
/// writes plain `async fn`s and callers hold a `dyn ObjectStore`.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// The bucket or container this store was opened for, which messages name.
    fn bucket(&self) -> &Bucket;

    /// Writes `body` as the object `key` with `headers`; with `only_new`, a write that finds an
    /// object there leaves it and answers [`Put::Exists`].
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        headers: ObjectHeaders<'_>,
        only_new: bool,
    ) -> Result<Put, StoreError> {
        let object = NewObject {
            body,
            headers,
            only_new,
        };
        self.write(key, object).await
    }

    /// [`ObjectStore::put`] as each store does it.
    async fn write(&self, key: &str, object: NewObject<'_>) -> Result<Put, StoreError>;

    /// The object's bytes, or `None` when there is no such key. An object of more than `cap`
    /// bytes is an error naming it, and its body is not read: whoever can write the bucket could
    /// leave a giant at a document's key.
    async fn get(&self, key: &str, cap: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// The bytes of `range` of the object.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError>;

    /// The object's ETag, or `None` when there is no such key.
    async fn etag(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Every object whose key starts with `prefix`; with `direct_only`, only those with no further
    /// `/` after it (a folder's own files).
    async fn list(&self, prefix: &str, direct_only: bool) -> Result<Vec<Listed>, StoreError>;

    /// Whether any object's key starts with `prefix` (one short request, however many there are).
    async fn holds_any(&self, prefix: &str) -> Result<bool, StoreError>;

    /// Removes the object; removing one that is not there succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Removes many objects, in as few requests as the store allows. By default one request each,
    /// [`DELETES_IN_FLIGHT`] at once, for stores that have no removal of many in one request.
    async fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        use futures::{StreamExt, TryStreamExt};
        let deletes: Vec<_> = keys.iter().map(|key| self.delete(key)).collect();
        futures::stream::iter(deletes)
            .buffer_unordered(DELETES_IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    /// Copies one object to another key inside the store, if the source is still the one the copy
    /// names; an error when the store cannot (too large, replaced since, not supported), and the
    /// caller writes the bytes itself.
    async fn copy(&self, copy: ObjectCopy<'_>) -> Result<(), StoreError>;

    /// Writes the object into `file` (the caller's open file) as it arrives; returns its ETag.
    async fn download_into(&self, key: &str, file: &mut File) -> Result<String, StoreError>;

    /// Uploads the file at `path` as the object: in one request up to `part_size` bytes, in parts
    /// above it (an unfinished upload is abandoned, never left half visible); returns the ETag.
    async fn upload_file(
        &self,
        key: &str,
        path: &Path,
        headers: ObjectHeaders<'_>,
        part_size: u64,
    ) -> Result<String, StoreError> {
        let what = format!("uploading {} to {}/{key}", path.display(), self.bucket());
        let size = std::fs::metadata(path)
            .map_err(|e| StoreError::local(&what, e))?
            .len();
        if size > part_size {
            let upload = FileUpload {
                key,
                path,
                size,
                headers,
                part_size,
                what: &what,
            };
            return self.upload_parts(&upload).await;
        }
        let body = std::fs::read(path).map_err(|e| StoreError::local(&what, e))?;
        match self.put(key, body, headers, false).await? {
            Put::Stored(etag) => Ok(etag),
            Put::Exists => unreachable!("an unconditional write never finds one there"),
        }
    }

    /// [`ObjectStore::upload_file`] of a file of more than one part: the upload's `part_size`
    /// bytes a part, a few in flight.
    async fn upload_parts(&self, upload: &FileUpload<'_>) -> Result<String, StoreError>;

    /// The URL readers fetch the objects under `prefix` from: `public_url` (a CDN in front of the
    /// store) when configured, else the store's own address for them.
    fn public_base(&self, prefix: &str) -> String;

    /// Whether, and under which rule, this store rebuilds an object from ranges it already holds
    /// ([`ObjectStore::splice`]); `None` for a store (or a stand-in) that cannot, whose callers
    /// upload the object whole.
    fn splice_rule(&self) -> Option<SpliceRule> {
        None
    }

    /// Replaces the object `key` at once by the splice's new bytes followed by the range it keeps
    /// of the object as it is now (all of it, where the rule says the store keeps only whole
    /// objects), if its ETag is still the one the splice names; only the new bytes cross the
    /// network. Returns the new ETag.
    async fn splice(&self, key: &str, splice: Splice<'_>) -> Result<String, StoreError> {
        let _ = splice;
        Err(StoreError::local(
            &format!("rebuilding {}/{key} in place", self.bucket()),
            std::io::Error::other("this store cannot rebuild an object from its ranges"),
        ))
    }
}

/// An object to write ([`ObjectStore::put`]).
#[derive(Debug)]
pub struct NewObject<'a> {
    /// Its bytes.
    pub body: Vec<u8>,
    /// The headers it is served with.
    pub headers: ObjectHeaders<'a>,
    /// Only if no object has the key: a write that finds one leaves it ([`Put::Exists`]).
    pub only_new: bool,
}

/// A local file uploaded in parts ([`ObjectStore::upload_parts`]).
#[derive(Debug, Clone, Copy)]
pub struct FileUpload<'a> {
    /// The object's key.
    pub key: &'a str,
    /// The file.
    pub path: &'a Path,
    /// The file's size in bytes, more than one part.
    pub size: u64,
    /// The headers the object is served with.
    pub headers: ObjectHeaders<'a>,
    /// Bytes a part (the last may be shorter).
    pub part_size: u64,
    /// What errors call the upload.
    pub what: &'a str,
}

/// A copy inside the store ([`ObjectStore::copy`]).
#[derive(Debug, Clone, Copy)]
pub struct ObjectCopy<'a> {
    /// The source's key.
    pub from: &'a str,
    /// The copy's key.
    pub to: &'a str,
    /// The source's ETag the copy expects; another means it was replaced since.
    pub if_etag: &'a str,
    /// The headers the copy is served with.
    pub headers: ObjectHeaders<'a>,
}

/// An object rebuilt in place ([`ObjectStore::splice`]).
#[derive(Debug)]
pub struct Splice<'a> {
    /// The object's ETag the rebuild expects; another means it was replaced since.
    pub if_etag: &'a str,
    /// The bytes sent, which come first: at least the rule's `min_first`, unless they are all of
    /// the object.
    pub new: &'a [u8],
    /// The range of the object as it is that follows them: from 0 to its length where the rule
    /// says the store keeps only whole objects.
    pub kept: Range<u64>,
    /// The headers the rebuilt object is served with.
    pub headers: ObjectHeaders<'a>,
}

/// What a store's in-place rebuild ([`ObjectStore::splice`]) asks of its pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceRule {
    /// The uploaded piece, which comes first, must be at least this many bytes (S3's 5 MiB part
    /// minimum); a shorter one is padded by the caller with bytes it has.
    pub min_first: u64,
    /// The store keeps only the whole object after the new bytes, never a range of it (GCS's
    /// compose concatenates whole objects).
    pub keeps_whole: bool,
}

/// The store of each scheme: the one place that names every store's client.
fn registered(scheme: Scheme) -> Registered {
    match scheme {
        Scheme::S3 => Registered::of::<s3::S3Store>(),
        Scheme::Azure => Registered::of::<azure::AzureStore>(),
        Scheme::Gcs => Registered::of::<gcs::GcsStore>(),
    }
}

/// What each store's client gives the registry besides its [`ObjectStore`] requests.
#[async_trait]
pub trait OpenStore: ObjectStore + Sized + 'static {
    /// Opens `bucket` with the `[store]` table's settings (attempts, the CDN in front, and the
    /// store's own keys) and the credentials the store's users keep in the environment.
    async fn open(bucket: &Bucket, settings: &StoreConfig) -> Result<Self, StoreError>;

    /// What tells this store apart from another of its kind holding a bucket of the same name
    /// (an endpoint, an account, an emulator), for the files this machine keeps about it.
    fn identity(settings: &StoreConfig) -> String;
}

/// A registered store's [`OpenStore`] functions, without its type.
struct Registered {
    open: for<'a> fn(&'a Bucket, &'a StoreConfig) -> BoxFuture<'a, Opened>,
    identity: fn(&StoreConfig) -> String,
}

/// What opening a store gives.
type Opened = Result<Arc<dyn ObjectStore>, StoreError>;

impl Registered {
    fn of<S: OpenStore>() -> Registered {
        Registered {
            open: open_as::<S>,
            identity: S::identity,
        }
    }
}

fn open_as<'a, S: OpenStore>(
    bucket: &'a Bucket,
    settings: &'a StoreConfig,
) -> BoxFuture<'a, Opened> {
    async move {
        let store: Arc<dyn ObjectStore> = Arc::new(S::open(bucket, settings).await?);
        Ok(store)
    }
    .boxed()
}

/// Opens the store holding `bucket`, with the `[store]` table's settings and the credentials each
/// store's users keep in the environment.
pub fn open<'a>(bucket: &'a Bucket, settings: &'a StoreConfig) -> BoxFuture<'a, Opened> {
    (registered(bucket.scheme).open)(bucket, settings)
}

/// What tells this store apart from others holding a bucket of the same name: the S3 endpoint, the
/// Azure account, or the GCS emulator.
pub fn identity(bucket: &Bucket, settings: &StoreConfig) -> String {
    (registered(bucket.scheme).identity)(settings)
}

/// The pace of `bucket`'s writes in this process ([`pace`]), with the `[store]` table's bounds.
fn shared_pace(bucket: &Bucket, settings: &StoreConfig) -> Arc<pace::Pace> {
    let key = format!(
        "{:?} {} {bucket}",
        bucket.scheme,
        identity(bucket, settings)
    );
    pace::shared(
        &key,
        &bucket.to_string(),
        settings.max_concurrent_uploads,
        settings.throttle_budget(),
    )
}

/// What the store's refusals as too fast did to the writes of `bucket` in this process so far;
/// `None` when it refused none.
pub fn throttled(bucket: &Bucket, settings: &StoreConfig) -> Option<pace::Throttled> {
    shared_pace(bucket, settings).throttled()
}

/// The refusal of a store that does not copy inside itself (`why`), after which the caller
/// uploads the bytes itself.
fn no_copy(bucket: &Bucket, from: &str, to: &str, why: &str) -> StoreError {
    StoreError::local(
        &format!("copying {bucket}/{from} to {bucket}/{to}"),
        std::io::Error::other(why.to_string()),
    )
}

/// The next `length` bytes of `file`, a part of an upload `what` names.
fn read_part(file: &mut File, length: u64, what: &str) -> Result<Vec<u8>, StoreError> {
    use std::io::Read;
    let mut bytes = vec![0; usize::try_from(length).unwrap_or(usize::MAX)];
    file.read_exact(&mut bytes)
        .map_err(|e| StoreError::local(what, e))?;
    Ok(bytes)
}

/// Writes a download's `chunks` into `file` as they arrive (`fail` says a chunk's error), then
/// flushes it.
async fn write_chunks<S, E>(
    mut chunks: S,
    file: &mut File,
    what: &str,
    fail: impl Fn(E) -> StoreError,
) -> Result<(), StoreError>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    use futures::TryStreamExt;
    use std::io::Write;
    while let Some(chunk) = chunks.try_next().await.map_err(&fail)? {
        file.write_all(&chunk)
            .map_err(|e| StoreError::local(what, e))?;
    }
    file.flush().map_err(|e| StoreError::local(what, e))
}

/// The key of `name` under `prefix` (`""`: the bucket's root).
pub fn key_under(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// A file this machine keeps about a prefix of a store (its lock, a seed's journal), under
/// `$XDG_CACHE_HOME/oar-tiles/KIND/`; prefixes of different stores get different files.
pub fn local_file(
    bucket: &Bucket,
    settings: &StoreConfig,
    prefix: &str,
    kind: &str,
    extension: &str,
) -> PathBuf {
    let store = identity(bucket, settings);
    let name = &bucket.name;
    let described = if bucket.scheme.facts().names_scheme_in_local_files {
        format!("{:?} {store} {name}/{prefix}", bucket.scheme)
    } else {
        format!("{store} {name}/{prefix}")
    };
    let digest = Md5::digest(described.as_bytes());
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("oar-tiles").join(kind).join(format!(
        "{}-{name}-{}.{extension}",
        bucket.scheme.short_name(),
        hex::encode(&digest[..8])
    ))
}

/// An object's MD5 from its ETag, when the ETag is one (an S3 single-part upload).
pub fn etag_md5(etag: &str) -> Option<[u8; 16]> {
    let hex_digits = etag.trim_matches('"');
    let mut md5 = [0u8; 16];
    hex::decode_to_slice(hex_digits, &mut md5).ok()?;
    Some(md5)
}

/// `base` (a store's public address) with `prefix` joined to it.
fn under(base: &str, prefix: &str) -> String {
    joined_base(None, base.to_string(), prefix)
}

/// An error and its causes on one line, each said once.
fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ").replace('\n', " ")
}

/// The `public_url` base with `prefix` joined to it, or `own` (the store's address) without one.
fn joined_base(public_url: Option<&str>, own: String, prefix: &str) -> String {
    let base = match public_url {
        Some(public) => public.trim_end_matches('/').to_string(),
        None => own,
    };
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        base
    } else {
        format!("{base}/{prefix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_part_etags_are_md5s() {
        let md5 = etag_md5("\"900150983cd24fb0d6963f7d28e17f72\"").unwrap();
        assert_eq!(md5, <[u8; 16]>::from(Md5::digest(b"abc")));
        assert_eq!(etag_md5("\"900150983cd24fb0d6963f7d28e17f72-3\""), None);
    }
}
