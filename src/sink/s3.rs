//! S3 (or S3-compatible) output: `{prefix}/{z}/{x}/{y}.ext` objects with the headers a CDN needs, and
//! `tiles.json` beside them.
//!
//! At start the prefix is listed once; the listing's ETags (the MD5 of single-part objects) let a tile
//! whose bytes the object already holds be skipped without a request, which avoids PUT costs and CDN
//! churn. Uploads run concurrently, bounded by a semaphore, each retried with exponential backoff on
//! throttling, 5xx and connection failures; a tile that still fails fails the job, naming the tile.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use md5::{Digest, Md5};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::tilejson::{tilejson, TILEJSON_NAME};
use super::{ChangedList, OutputSettings, Resume, Sink, SinkReport, TilesetMetadata};
use crate::config::S3Config;
use crate::error::{Error, Result};
use crate::retry::Policy;
use crate::state::journal::FileJournal;
use crate::tile::{in_scope, tile_from_key, tile_key, TileCoord};

/// The media type of Mapbox Vector Tiles.
pub const MVT_CONTENT_TYPE: &str = "application/vnd.mapbox-vector-tile";

/// Builds an S3 client from the standard AWS chain and the `[s3]` settings.
pub async fn client(config: &S3Config) -> Client {
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(https_client());
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &config.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared)
        // Our own retry loop decides, so a tile's attempts and backoff are visible and bounded.
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .force_path_style(config.force_path_style);
    if shared.region().is_none() {
        builder = builder.region(aws_config::Region::new("us-east-1"));
    }
    Client::from_conf(builder.build())
}

/// The public URL of the objects under `bucket/prefix`: under `public_url` (a CDN in front of the
/// bucket) when configured, else the bucket's own address at the endpoint (path style or virtual
/// host, as the client addresses it) or at AWS in the bucket's region.
pub fn public_base(config: &S3Config, region: Option<&str>, bucket: &str, prefix: &str) -> String {
    let base = match (&config.public_url, &config.endpoint) {
        (Some(public), _) => public.trim_end_matches('/').to_string(),
        (None, Some(endpoint)) => {
            let endpoint = endpoint.trim_end_matches('/');
            match endpoint.split_once("://") {
                Some((scheme, host)) if !config.force_path_style => {
                    format!("{scheme}://{bucket}.{host}")
                }
                _ => format!("{endpoint}/{bucket}"),
            }
        }
        (None, None) => {
            let region = region.unwrap_or("us-east-1");
            format!("https://{bucket}.s3.{region}.amazonaws.com")
        }
    };
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        base
    } else {
        format!("{base}/{prefix}")
    }
}

/// The HTTP client of every S3 request: hyper with rustls on ring, the build's only TLS stack, with
/// the platform's root certificates. (The SDK's own default would bring a second TLS stack.)
pub fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Runs an S3 request up to `attempts` times, backing off exponentially while the failure is
/// transient (connection, timeout, throttling, 5xx).
pub async fn with_retries<T, E, F, Fut>(attempts: u32, what: &str, request: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    Policy::s3(attempts)
        .run(|| what.to_string(), request, is_transient, describe)
        .await
        .map_err(|failed| {
            format!(
                "{what}: {} (after {} attempt(s))",
                describe(&failed.error),
                failed.attempts
            )
        })
}

fn is_transient<E>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            status == 429 || status >= 500 || status == 408
        }
        _ => false,
    }
}

/// One line: the service's code, message and status, or the chain of transport causes.
fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    if let SdkError::ServiceError(context) = err {
        let status = context.raw().status().as_u16();
        let service = context.err();
        let code = service.code().unwrap_or("error");
        let message = service.message().unwrap_or_default();
        return format!("HTTP {status} {code} {message}")
            .trim_end()
            .to_string();
    }
    let mut parts = vec![err.to_string()];
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ").replace('\n', " ")
}

/// An object's bytes, or `None` when there is no such key; other failures are retried, then reported.
pub async fn get_if_exists(
    client: &Client,
    bucket: &str,
    key: &str,
    attempts: u32,
) -> Result<Option<Vec<u8>>, String> {
    let what = format!("reading s3://{bucket}/{key}");
    let object = with_retries(attempts, &what, || async {
        match client.get_object().bucket(bucket).key(key).send().await {
            Ok(object) => Ok(Some(object)),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(err) => Err(err),
        }
    })
    .await?;
    match object {
        None => Ok(None),
        Some(object) => {
            let bytes = object
                .body
                .collect()
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            Ok(Some(bytes.into_bytes().to_vec()))
        }
    }
}

/// The key of a tile under a prefix.
pub fn tile_object_key(prefix: &str, tile: TileCoord, extension: &str) -> String {
    let path = format!("{}/{}/{}.{extension}", tile.z(), tile.x(), tile.y());
    if prefix.is_empty() {
        path
    } else {
        format!("{prefix}/{path}")
    }
}

/// The tile a key names, if it is a tile key under the prefix.
fn parse_tile_key(prefix: &str, key: &str, extension: &str) -> Option<TileCoord> {
    let rest = if prefix.is_empty() {
        key
    } else {
        key.strip_prefix(prefix)?.strip_prefix('/')?
    };
    let rest = rest.strip_suffix(extension)?.strip_suffix('.')?;
    rest.parse().ok()
}

/// An object's MD5 from its ETag, when the ETag is one (single-part uploads).
fn etag_md5(etag: &str) -> Option<[u8; 16]> {
    let hex_digits = etag.trim_matches('"');
    let mut md5 = [0u8; 16];
    hex::decode_to_slice(hex_digits, &mut md5).ok()?;
    Some(md5)
}

/// Lists the tile objects under a prefix with their MD5s.
pub async fn list_tiles(
    client: &Client,
    bucket: &str,
    prefix: &str,
    extension: &str,
    attempts: u32,
) -> Result<Vec<(TileCoord, Option<[u8; 16]>, i64)>, String> {
    let list_prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let mut tiles = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = with_retries(
            attempts,
            &format!("listing s3://{bucket}/{list_prefix}"),
            || {
                client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&list_prefix)
                    .set_continuation_token(token.clone())
                    .send()
            },
        )
        .await?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            if let Some(tile) = parse_tile_key(prefix, key, extension) {
                tiles.push((
                    tile,
                    object.e_tag().and_then(etag_md5),
                    object.size().unwrap_or(0),
                ));
            }
        }
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
            _ => return Ok(tiles),
        }
    }
}

/// A sink uploading to S3.
pub struct S3Sink {
    client: Client,
    bucket: String,
    prefix: String,
    /// The URL under which readers fetch the prefix's objects, for TileJSON.
    public_base: String,
    settings: OutputSettings,
    attempts: u32,
    changes: ChangedList,
    handle: Handle,
    slots: Arc<Semaphore>,
    uploads: JoinSet<Result<Option<TileCoord>>>,
    /// MD5 of every tile object that existed at start; entries are removed as tiles are produced, so
    /// what remains at the end of a full seed is stale.
    existing: HashMap<u64, (TileCoord, Option<[u8; 16]>)>,
    /// MD5 of every tile the prefix holds once this run is done, saved as the manifest on finish.
    hashes: HashMap<u64, [u8; 16]>,
    /// The manifest the last finished run left (`None`: there is none), until [`Sink::prepare`].
    manifest: Option<HashMap<u64, [u8; 16]>>,
    /// Whether `existing` has been filled, which happens once, before the first tile.
    prepared: bool,
    report: SinkReport,
    state: Option<String>,
    journal: Option<FileJournal>,
    /// Tiles whose upload is in flight, with what the journal records once it has succeeded.
    uploading: HashMap<u64, Option<(TileCoord, [bool; 4])>>,
}

/// A file this machine keeps about an S3 prefix (its lock, a seed's journal), under
/// `$XDG_CACHE_HOME/oar-tiles/KIND/`; prefixes of different stores (endpoints) get different files.
pub fn local_file(
    endpoint: Option<&str>,
    bucket: &str,
    prefix: &str,
    kind: &str,
    extension: &str,
) -> PathBuf {
    let store = endpoint.unwrap_or("aws");
    let digest = Md5::digest(format!("{store} {bucket}/{prefix}").as_bytes());
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("oar-tiles").join(kind).join(format!(
        "s3-{bucket}-{}.{extension}",
        hex::encode(&digest[..8])
    ))
}

/// Where, under the prefix, the job state (change watermark) is kept.
const STATE_NAME: &str = ".oar-tiles/state.json";

/// Where, under the prefix, the tile hashes are kept for stores whose listings carry no ETag.
const MANIFEST_NAME: &str = ".oar-tiles/tile-hashes";

/// The manifest: for each tile, its packed key and MD5, gzip-compressed.
fn encode_manifest(hashes: &HashMap<u64, [u8; 16]>) -> Vec<u8> {
    let mut entries: Vec<(&u64, &[u8; 16])> = hashes.iter().collect();
    entries.sort_unstable();
    let mut raw = Vec::with_capacity(entries.len() * 24);
    for (key, md5) in entries {
        raw.extend_from_slice(&key.to_le_bytes());
        raw.extend_from_slice(md5);
    }
    crate::encode::gzip(&raw, crate::encode::DEFAULT_LEVEL)
}

fn decode_manifest(bytes: &[u8]) -> HashMap<u64, [u8; 16]> {
    use std::io::Read;
    let mut raw = Vec::new();
    if flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .is_err()
    {
        return HashMap::new();
    }
    raw.chunks_exact(24)
        .map(|entry| {
            let key = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
            let md5: [u8; 16] = entry[8..].try_into().expect("16 bytes");
            (key, md5)
        })
        .collect()
}

fn object_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

impl S3Sink {
    /// Connects, and reads the job state and tile manifest the last finished run left.
    pub async fn create(
        bucket: &str,
        prefix: &str,
        config: &S3Config,
        settings: &OutputSettings,
        changes: ChangedList,
        journal: Option<&str>,
    ) -> Result<Self> {
        let client = client(config).await;
        let target = format!("s3://{bucket}/{prefix}");
        // Reading the state proves early that the bucket exists and the credentials work; what the
        // prefix holds is only learnt in `prepare`, once it is known how much of it the run needs.
        let attempts = config.max_attempts;
        let state = get_if_exists(&client, bucket, &object_key(prefix, STATE_NAME), attempts)
            .await
            .map_err(|e| Error::output(&target, e))?
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let manifest = get_if_exists(
            &client,
            bucket,
            &object_key(prefix, MANIFEST_NAME),
            attempts,
        )
        .await
        .map_err(|e| Error::output(&target, e))?
        .map(|bytes| decode_manifest(&bytes));
        let region = client.config().region().map(|r| r.to_string());
        let public_base = public_base(config, region.as_deref(), bucket, prefix);
        Ok(Self {
            client,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            public_base,
            settings: settings.clone(),
            attempts: config.max_attempts,
            changes,
            handle: Handle::current(),
            slots: Arc::new(Semaphore::new(config.max_concurrent_uploads)),
            uploads: JoinSet::new(),
            existing: HashMap::new(),
            hashes: HashMap::new(),
            manifest,
            prepared: false,
            report: SinkReport::default(),
            state,
            journal: match journal {
                Some(fingerprint) => {
                    let path = local_file(
                        config.endpoint.as_deref(),
                        bucket,
                        prefix,
                        "journals",
                        "sqlite",
                    );
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)
                            .map_err(|e| Error::output(&path, format!("cannot create it: {e}")))?;
                    }
                    Some(FileJournal::open(&path, fingerprint)?)
                }
                None => None,
            },
            uploading: HashMap::new(),
        })
    }

    /// Uploads a document (not a tile) under the prefix.
    fn put(&self, name: &str, body: Vec<u8>, content_type: &str) -> Result<()> {
        let key = object_key(&self.prefix, name);
        let (client, bucket) = (&self.client, &self.bucket);
        self.handle
            .block_on(with_retries(
                self.attempts,
                &format!("uploading {key}"),
                || {
                    client
                        .put_object()
                        .bucket(bucket)
                        .key(&key)
                        .body(ByteStream::from(body.clone()))
                        .content_type(content_type)
                        .cache_control(&self.settings.cache_control)
                        .send()
                },
            ))
            .map(|_| ())
            .map_err(|e| Error::output(self.target(), e))
    }

    fn target(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn reap(
        &mut self,
        outcome: std::result::Result<Result<Option<TileCoord>>, tokio::task::JoinError>,
    ) -> Result<()> {
        match outcome {
            Ok(Ok(Some(tile))) => {
                self.report.changed += 1;
                self.changes.record(tile);
                // Only now is the tile stored, so only now may the journal say so.
                if let (Some(Some((tile, children))), Some(journal)) = (
                    self.uploading.remove(&tile_key(tile)),
                    self.journal.as_mut(),
                ) {
                    journal.record(tile, children, true)?;
                }
                Ok(())
            }
            Ok(Ok(None)) => Ok(()),
            Ok(Err(err)) => Err(err),
            Err(err) => Err(Error::output(
                self.target(),
                format!("an upload task failed: {err}"),
            )),
        }
    }

    /// Collects finished uploads without waiting; the first failure stops the job.
    fn reap_finished(&mut self) -> Result<()> {
        while let Some(outcome) = self.uploads.try_join_next() {
            self.reap(outcome)?;
        }
        Ok(())
    }

    fn wait_all(&mut self) -> Result<()> {
        while let Some(outcome) = self.handle.clone().block_on(self.uploads.join_next()) {
            self.reap(outcome)?;
        }
        Ok(())
    }

    fn sweep(&mut self, metadata: &TilesetMetadata) -> Result<()> {
        let stale: Vec<TileCoord> = self
            .existing
            .values()
            .map(|(tile, _)| *tile)
            .filter(|tile| in_scope(*tile, metadata.zooms, &metadata.bounds))
            .collect();
        for batch in stale.chunks(1000) {
            let objects: Vec<ObjectIdentifier> = batch
                .iter()
                .map(|tile| {
                    ObjectIdentifier::builder()
                        .key(tile_object_key(
                            &self.prefix,
                            *tile,
                            &self.settings.tile_extension,
                        ))
                        .build()
                        .expect("a key is set")
                })
                .collect();
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .expect("objects are set");
            let (client, bucket) = (&self.client, &self.bucket);
            let result =
                self.handle
                    .block_on(with_retries(self.attempts, "deleting stale tiles", || {
                        client
                            .delete_objects()
                            .bucket(bucket)
                            .delete(delete.clone())
                            .send()
                    }));
            let output = result.map_err(|e| Error::output(self.target(), e))?;
            if let Some(failed) = output.errors().first() {
                return Err(Error::output(
                    self.target(),
                    format!(
                        "cannot delete {}: {}",
                        failed.key().unwrap_or("?"),
                        failed.message().unwrap_or("unknown error")
                    ),
                ));
            }
            for tile in batch {
                self.hashes.remove(&tile_key(*tile));
                self.report.deleted += 1;
                self.changes.record(*tile);
            }
        }
        Ok(())
    }
}

impl Sink for S3Sink {
    fn write_tile(&mut self, tile: TileCoord, data: &[u8]) -> Result<()> {
        self.prepare(None)?;
        self.reap_finished()?;
        let md5: [u8; 16] = Md5::digest(data).into();
        self.hashes.insert(tile_key(tile), md5);
        if let Some((_, known)) = self.existing.remove(&tile_key(tile)) {
            if known == Some(md5) {
                self.report.unchanged += 1;
                return Ok(());
            }
        }
        self.uploading.insert(tile_key(tile), None);
        let permit = self
            .handle
            .block_on(self.slots.clone().acquire_owned())
            .expect("the semaphore is never closed");
        let client = self.client.clone();
        let bucket = self.bucket.clone();
        let key = tile_object_key(&self.prefix, tile, &self.settings.tile_extension);
        let encoding = self.settings.compress.then_some("gzip");
        let cache_control = self.settings.cache_control.clone();
        let attempts = self.attempts;
        let body = data.to_vec();
        let target = self.target();
        self.uploads.spawn_on(
            async move {
                let _permit = permit;
                with_retries(
                    attempts,
                    &format!("uploading tile {tile} to s3://{bucket}/{key}"),
                    || {
                        client
                            .put_object()
                            .bucket(&bucket)
                            .key(&key)
                            .body(ByteStream::from(body.clone()))
                            .content_type(MVT_CONTENT_TYPE)
                            .set_content_encoding(encoding.map(str::to_string))
                            .cache_control(&cache_control)
                            .send()
                    },
                )
                .await
                .map_err(|e| Error::output(&target, e))?;
                Ok(Some(tile))
            },
            &self.handle,
        );
        Ok(())
    }

    fn delete_tile(&mut self, tile: TileCoord) -> Result<()> {
        self.prepare(None)?;
        self.reap_finished()?;
        let existed = self.existing.remove(&tile_key(tile)).is_some();
        self.hashes.remove(&tile_key(tile));
        let key = tile_object_key(&self.prefix, tile, &self.settings.tile_extension);
        let (client, bucket) = (&self.client, &self.bucket);
        self.handle
            .block_on(with_retries(
                self.attempts,
                &format!("deleting tile {tile}"),
                || client.delete_object().bucket(bucket).key(&key).send(),
            ))
            .map_err(|e| Error::output(self.target(), e))?;
        if existed {
            self.report.deleted += 1;
            self.changes.record(tile);
        }
        Ok(())
    }

    fn state(&self) -> Option<String> {
        self.state.clone()
    }

    fn finish(
        mut self: Box<Self>,
        metadata: &TilesetMetadata,
        sweep: bool,
        state: Option<&str>,
    ) -> Result<SinkReport> {
        // A sink never prepared knows nothing of the prefix yet: listing keeps the sweep right.
        self.prepare(None)?;
        self.wait_all()?;
        if sweep {
            self.sweep(metadata)?;
        }
        let document =
            serde_json::to_vec_pretty(&tilejson(metadata, &self.settings, Some(&self.public_base)))
                .expect("JSON serializes");
        self.put(TILEJSON_NAME, document, "application/json")?;
        let manifest = encode_manifest(&self.hashes);
        self.put(MANIFEST_NAME, manifest, "application/octet-stream")?;
        if let Some(state) = state {
            self.put(STATE_NAME, state.as_bytes().to_vec(), "application/json")?;
        }
        if let Some(journal) = self.journal.take() {
            journal.remove();
        }
        Ok(self.report)
    }

    fn abort(mut self: Box<Self>) {
        // Each object is replaced atomically by S3; stop what is in flight and leave the rest as it is.
        self.uploads.abort_all();
        while let Some(outcome) = self.handle.clone().block_on(self.uploads.join_next()) {
            // Uploads that completed before the abort are still journaled.
            let _ = self.reap(outcome);
        }
        if let Some(journal) = self.journal.as_mut() {
            let _ = journal.commit();
        }
    }

    /// A run over a known list of tiles trusts the manifest the last finished run left for what the
    /// prefix holds, instead of listing every object (a request per thousand tiles, on every cron
    /// run); a walk of the pyramid, or a prefix without a manifest, is listed in full. The manifest
    /// is removed before anything is uploaded, so a run that dies midway cannot leave hashes that no
    /// longer match the objects.
    fn prepare(&mut self, planned: Option<usize>) -> Result<()> {
        if self.prepared {
            return Ok(());
        }
        let manifest = self.manifest.take();
        self.existing = match (&manifest, planned) {
            (Some(manifest), Some(_)) => manifest
                .iter()
                .filter_map(|(key, md5)| Some((*key, (tile_from_key(*key)?, Some(*md5)))))
                .collect(),
            _ => {
                let listed = self
                    .handle
                    .block_on(list_tiles(
                        &self.client,
                        &self.bucket,
                        &self.prefix,
                        &self.settings.tile_extension,
                        self.attempts,
                    ))
                    .map_err(|e| Error::output(self.target(), e))?;
                // Stores whose listings carry no ETag (some S3-compatible ones) fall back on the
                // manifest's hashes.
                listed
                    .into_iter()
                    .map(|(tile, etag, _)| {
                        let key = tile_key(tile);
                        let known = manifest.as_ref().and_then(|m| m.get(&key).copied());
                        (key, (tile, etag.or(known)))
                    })
                    .collect()
            }
        };
        self.hashes = self
            .existing
            .iter()
            .filter_map(|(key, (_, md5))| md5.map(|md5| (*key, md5)))
            .collect();
        if manifest.is_some() {
            let key = object_key(&self.prefix, MANIFEST_NAME);
            let (client, bucket) = (&self.client, &self.bucket);
            self.handle
                .block_on(with_retries(
                    self.attempts,
                    "removing the old tile manifest",
                    || client.delete_object().bucket(bucket).key(&key).send(),
                ))
                .map_err(|e| Error::output(self.target(), e))?;
        }
        self.prepared = true;
        Ok(())
    }

    fn begin_journal(&mut self, watermark: Option<&str>) -> Result<Option<Resume>> {
        let Some(journal) = self.journal.as_mut() else {
            return Ok(None);
        };
        let (resume, written) = journal.begin(watermark)?;
        for tile in written {
            // Stored by the interrupted run: not stale, whatever the listing said.
            self.existing.remove(&tile_key(tile));
        }
        Ok(Some(resume))
    }

    fn journal(&mut self, tile: TileCoord, children: [bool; 4], written: bool) -> Result<()> {
        if let Some(pending) = self.uploading.get_mut(&tile_key(tile)) {
            *pending = Some((tile, children));
            return Ok(());
        }
        match self.journal.as_mut() {
            Some(journal) => journal.record(tile, children, written),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilejson_points_at_the_bucket_or_the_cdn_in_front_of_it() {
        let aws = S3Config::default();
        assert_eq!(
            public_base(&aws, Some("eu-west-1"), "tiles", "facilities/v3"),
            "https://tiles.s3.eu-west-1.amazonaws.com/facilities/v3"
        );
        let minio = S3Config {
            endpoint: Some("http://127.0.0.1:9000/".into()),
            force_path_style: true,
            ..S3Config::default()
        };
        assert_eq!(
            public_base(&minio, None, "tiles", ""),
            "http://127.0.0.1:9000/tiles"
        );
        let r2 = S3Config {
            endpoint: Some("https://acct.r2.cloudflarestorage.com".into()),
            ..S3Config::default()
        };
        assert_eq!(
            public_base(&r2, None, "tiles", "f"),
            "https://tiles.acct.r2.cloudflarestorage.com/f"
        );
        let cdn = S3Config {
            public_url: Some("https://cdn.example.org/".into()),
            ..minio
        };
        assert_eq!(
            public_base(&cdn, None, "tiles", "/f/v3/"),
            "https://cdn.example.org/f/v3"
        );
    }

    #[test]
    fn tile_keys_round_trip_under_a_prefix() {
        let tile = TileCoord::new(14, 13105, 7032).unwrap();
        assert_eq!(
            tile_object_key("tiles/v1", tile, "pbf"),
            "tiles/v1/14/13105/7032.pbf"
        );
        assert_eq!(tile_object_key("", tile, "pbf"), "14/13105/7032.pbf");
        assert_eq!(
            parse_tile_key("tiles/v1", "tiles/v1/14/13105/7032.pbf", "pbf"),
            Some(tile)
        );
        assert_eq!(parse_tile_key("", "14/13105/7032.pbf", "pbf"), Some(tile));
        assert_eq!(
            parse_tile_key("tiles/v1", "tiles/v1/tiles.json", "pbf"),
            None
        );
        assert_eq!(parse_tile_key("tiles", "tiles2/1/0/0.pbf", "pbf"), None);
    }

    #[test]
    fn the_manifest_round_trips() {
        let hashes: HashMap<u64, [u8; 16]> =
            [(1, [7; 16]), (u64::MAX, [0; 16])].into_iter().collect();
        assert_eq!(decode_manifest(&encode_manifest(&hashes)), hashes);
        assert!(decode_manifest(b"not gzip").is_empty());
    }

    #[test]
    fn single_part_etags_are_md5s() {
        let md5 = etag_md5("\"900150983cd24fb0d6963f7d28e17f72\"").unwrap();
        assert_eq!(md5, <[u8; 16]>::from(Md5::digest(b"abc")));
        assert_eq!(etag_md5("\"900150983cd24fb0d6963f7d28e17f72-3\""), None);
    }
}
