//! Talking to the store: the client (one HTTPS stack), retries, reads and listings, object keys, and
//! the public address readers fetch the objects from.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;
use md5::{Digest, Md5};
use std::path::PathBuf;

use crate::config::S3Config;
use crate::retry::Policy;
use crate::tile::TileCoord;

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

/// A request to the store that failed for good, after its retries.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}{}", attempts_note(*.attempts))]
pub struct S3Error {
    /// What the request was for (`uploading tile 3/1/2 to s3://…`).
    pub what: String,
    /// One line: the service's code, message and status, or the transport's causes.
    pub message: String,
    /// Attempts made; 0 when the request itself succeeded and reading its body failed.
    pub attempts: u32,
    /// The SDK's error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

fn attempts_note(attempts: u32) -> String {
    if attempts == 0 {
        String::new()
    } else {
        format!(" (after {attempts} attempt(s))")
    }
}

/// Runs an S3 request up to `attempts` times, backing off exponentially while the failure is
/// transient (connection, timeout, throttling, 5xx).
pub async fn with_retries<T, E, F, Fut>(attempts: u32, what: &str, request: F) -> Result<T, S3Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    Policy::s3(attempts)
        .run(|| what.to_string(), request, is_transient, describe)
        .await
        .map_err(|failed| S3Error {
            what: what.to_string(),
            message: describe(&failed.error),
            attempts: failed.attempts,
            source: Box::new(failed.error),
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
) -> Result<Option<Vec<u8>>, S3Error> {
    get_capped_if_exists(client, bucket, key, attempts, u64::MAX).await
}

/// As [`get_if_exists`], for a document (TileJSON, `partitions.json`, a state): an object of more
/// than `cap` bytes is an error naming it, and its body is not read, since whoever can write the
/// bucket could leave a giant at a document's key.
pub async fn get_capped_if_exists(
    client: &Client,
    bucket: &str,
    key: &str,
    attempts: u32,
    cap: u64,
) -> Result<Option<Vec<u8>>, S3Error> {
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
            let size = object.content_length().unwrap_or(0).max(0) as u64;
            if size > cap {
                let message = format!(
                    "the object is {size} bytes, past the {} MiB cap on a document: refused",
                    cap >> 20
                );
                return Err(S3Error {
                    source: Box::new(std::io::Error::other(message.clone())),
                    message,
                    what,
                    attempts: 0,
                });
            }
            let bytes = object.body.collect().await.map_err(|e| S3Error {
                message: e.to_string(),
                what,
                attempts: 0,
                source: Box::new(e),
            })?;
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
) -> Result<Vec<(TileCoord, Option<[u8; 16]>, i64)>, S3Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};

    #[test]
    fn tilejson_points_at_the_bucket_or_the_cdn_in_front_of_it() {
        let aws = S3Config::default();
        let minio = S3Config {
            endpoint: Some("http://127.0.0.1:9000/".into()),
            force_path_style: true,
            ..S3Config::default()
        };
        let r2 = S3Config {
            endpoint: Some("https://acct.r2.cloudflarestorage.com".into()),
            ..S3Config::default()
        };
        let cdn = S3Config {
            public_url: Some("https://cdn.example.org/".into()),
            ..minio.clone()
        };
        let cases = [
            (
                &aws,
                Some("eu-west-1"),
                "facilities/v3",
                "https://tiles.s3.eu-west-1.amazonaws.com/facilities/v3",
            ),
            (&minio, None, "", "http://127.0.0.1:9000/tiles"),
            (
                &r2,
                None,
                "f",
                "https://tiles.acct.r2.cloudflarestorage.com/f",
            ),
            (&cdn, None, "/f/v3/", "https://cdn.example.org/f/v3"),
        ];
        for (config, region, prefix, expected) in cases {
            assert_eq!(public_base(config, region, "tiles", prefix), expected);
        }
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
    fn single_part_etags_are_md5s() {
        let md5 = etag_md5("\"900150983cd24fb0d6963f7d28e17f72\"").unwrap();
        assert_eq!(md5, <[u8; 16]>::from(Md5::digest(b"abc")));
        assert_eq!(etag_md5("\"900150983cd24fb0d6963f7d28e17f72-3\""), None);
    }
}
