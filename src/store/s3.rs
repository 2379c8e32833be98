//! S3 and S3-compatible stores, on the AWS SDK: the client (one HTTPS stack), retries with the
//! crate's policy, and the public address of a bucket's objects.

use std::fs::File;
use std::io::Write;
use std::ops::Range;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, MetadataDirective, ObjectIdentifier};
use aws_sdk_s3::Client;

use super::{
    etag_md5, joined_base, FileUpload, Listed, NewObject, ObjectCopy, ObjectStore, OpenStore, Put,
    Splice, SpliceRule, StoreError,
};
use crate::config::{Bucket, StoreConfig};
use crate::retry::Policy;

mod credentials;
mod multipart;
mod paced;
mod splice;

use credentials::{missing_credentials, RedactSessionTokens, NO_CREDENTIALS};
use paced::paced;

/// What a copy source may hold as it is; every other byte of the key is percent-encoded.
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Keys one DeleteObjects request may name.
const DELETE_BATCH: usize = 1000;

/// Builds an S3 client from the standard AWS chain and the `[store]` settings.
pub async fn client(config: &StoreConfig) -> Client {
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
        // Per attempt: a hung store is asked again by that loop, then the object fails.
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(config.connect_timeout())
                .read_timeout(config.request_timeout())
                .build(),
        )
        .force_path_style(config.force_path_style)
        .interceptor(super::error_body::CapErrorBodies)
        .interceptor(RedactSessionTokens);
    if shared.region().is_none() {
        builder = builder.region(aws_config::Region::new("us-east-1"));
    }
    Client::from_conf(builder.build())
}

/// The HTTP client of every AWS request: hyper with rustls on ring, the build's only TLS stack, with
/// the platform's root certificates. (The SDK's own default would bring a second TLS stack.)
pub fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// The public URL of the objects under `bucket/prefix`: under `public_url` (a CDN in front of the
/// bucket) when configured, else the bucket's own address at the endpoint (path style or virtual
/// host, as the client addresses it) or at AWS in the bucket's region.
pub fn public_base(
    config: &StoreConfig,
    region: Option<&str>,
    bucket: &str,
    prefix: &str,
) -> String {
    let own = match &config.endpoint {
        Some(endpoint) => {
            let endpoint = endpoint.trim_end_matches('/');
            match endpoint.split_once("://") {
                Some((scheme, host)) if !config.force_path_style => {
                    format!("{scheme}://{bucket}.{host}")
                }
                _ => format!("{endpoint}/{bucket}"),
            }
        }
        None => {
            let region = region.unwrap_or("us-east-1");
            format!("https://{bucket}.s3.{region}.amazonaws.com")
        }
    };
    joined_base(config.public_url.as_deref(), own, prefix)
}

/// Runs an S3 request up to `attempts` times, backing off exponentially while the failure is
/// transient (connection, timeout, throttling, 5xx).
pub async fn with_retries<T, E, F, Fut>(
    attempts: u32,
    what: &str,
    request: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let policy = Policy::s3(attempts);
    let run = policy.run(
        || super::credentials().redact(what),
        request,
        is_transient,
        describe,
    );
    tokio::select! {
        result = run => result.map_err(|failed| {
            let message = describe(&failed.error);
            StoreError::new(what, &message, failed.attempts, Box::new(failed.error))
        }),
        signal = crate::error::stop_requested() => Err(super::abandoned(what, signal)),
    }
}

fn is_transient<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: std::error::Error + 'static,
{
    // No retry finds credentials the chain did not: the answer is the same at once.
    if missing_credentials(err) {
        return false;
    }
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

/// One line: the service's code, message and status, or the chain of transport causes; redacted,
/// as each retry logs it.
fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let line = match err {
        _ if missing_credentials(err) => NO_CREDENTIALS.to_string(),
        SdkError::ServiceError(context) => {
            let (status, service) = (context.raw().status().as_u16(), context.err());
            let code = service.code().unwrap_or("error");
            let message = service.message().unwrap_or_default();
            format!("HTTP {status} {code} {message}").trim_end().into()
        }
        _ => super::one_line(err),
    };
    super::credentials().redact(&line)
}

/// A bucket of an S3 or S3-compatible store.
pub struct S3Store {
    client: Client,
    bucket: Bucket,
    attempts: u32,
    public: String,
    /// The pace of this bucket's writes, shared in the process.
    pace: std::sync::Arc<super::pace::Pace>,
}

#[async_trait]
impl OpenStore for S3Store {
    /// Connects to `bucket` with the `[store]` settings and the standard AWS credential chain.
    async fn open(bucket: &Bucket, settings: &StoreConfig) -> Result<S3Store, StoreError> {
        let client = client(settings).await;
        let region = client.config().region().map(|r| r.to_string());
        Ok(S3Store {
            public: public_base(settings, region.as_deref(), &bucket.name, ""),
            client,
            bucket: bucket.clone(),
            attempts: settings.max_attempts,
            pace: super::shared_pace(bucket, settings),
        })
    }

    /// The endpoint (`[store] endpoint`), or AWS's.
    fn identity(settings: &StoreConfig) -> String {
        settings.endpoint.clone().unwrap_or_else(|| "aws".into())
    }
}

impl S3Store {
    /// A store on a client made elsewhere (a test's, with credentials of its own).
    pub fn with_client(client: Client, bucket: &str, settings: &StoreConfig) -> S3Store {
        let region = client.config().region().map(|r| r.to_string());
        let bucket = Bucket {
            scheme: crate::config::Scheme::S3,
            name: bucket.to_string(),
        };
        S3Store {
            public: public_base(settings, region.as_deref(), &bucket.name, ""),
            client,
            pace: super::shared_pace(&bucket, settings),
            bucket,
            attempts: settings.max_attempts,
        }
    }

    fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.bucket)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    async fn write(&self, key: &str, object: NewObject<'_>) -> Result<Put, StoreError> {
        let what = format!("uploading {}", self.url(key));
        let (body, headers, only_new) = (object.body, object.headers, object.only_new);
        let (client, bucket) = (&self.client, &self.bucket.name);
        paced(&self.pace, self.attempts, &what, || async {
            let mut request = client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from(body.clone()))
                .set_content_encoding(headers.content_encoding.map(str::to_string));
            if !headers.content_type.is_empty() {
                request = request.content_type(headers.content_type);
            }
            if !headers.cache_control.is_empty() {
                request = request.cache_control(headers.cache_control);
            }
            if only_new {
                request = request.if_none_match("*");
            }
            match request.send().await {
                Ok(put) => Ok(Put::Stored(put.e_tag().unwrap_or_default().to_string())),
                Err(err)
                    if only_new
                        && err
                            .raw_response()
                            .is_some_and(|r| r.status().as_u16() == 412) =>
                {
                    Ok(Put::Exists)
                }
                Err(err) => Err(err),
            }
        })
        .await
    }

    async fn get(&self, key: &str, cap: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let what = format!("reading {}", self.url(key));
        let (client, bucket) = (&self.client, &self.bucket.name);
        let object = with_retries(self.attempts, &what, || async {
            match client.get_object().bucket(bucket).key(key).send().await {
                Ok(object) => Ok(Some(object)),
                Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
                Err(err) => Err(err),
            }
        })
        .await?;
        let Some(object) = object else {
            return Ok(None);
        };
        let size = object.content_length().unwrap_or(0).max(0) as u64;
        if size > cap {
            return Err(StoreError::local(&what, too_large(size, cap)));
        }
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| StoreError::local(&what, e))?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        let what = format!("reading bytes {range:?} of {}", self.url(key));
        let (client, bucket) = (&self.client, &self.bucket.name);
        let header = format!("bytes={}-{}", range.start, range.end.saturating_sub(1));
        let object = with_retries(self.attempts, &what, || {
            client
                .get_object()
                .bucket(bucket)
                .key(key)
                .range(&header)
                .send()
        })
        .await?;
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| StoreError::local(&what, e))?;
        Ok(bytes.into_bytes().to_vec())
    }

    async fn etag(&self, key: &str) -> Result<Option<String>, StoreError> {
        let what = format!("looking up {}", self.url(key));
        let (client, bucket) = (&self.client, &self.bucket.name);
        with_retries(self.attempts, &what, || async {
            match client.head_object().bucket(bucket).key(key).send().await {
                Ok(head) => Ok(Some(head.e_tag().unwrap_or_default().to_string())),
                Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
                Err(err) => Err(err),
            }
        })
        .await
    }

    async fn list(&self, prefix: &str, direct_only: bool) -> Result<Vec<Listed>, StoreError> {
        let what = format!("listing {}", self.url(prefix));
        let (client, bucket) = (&self.client, &self.bucket.name);
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = with_retries(self.attempts, &what, || {
                client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(prefix)
                    .set_delimiter(direct_only.then(|| "/".to_string()))
                    .set_continuation_token(token.clone())
                    .send()
            })
            .await?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                listed.push(Listed {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    md5: object.e_tag().and_then(etag_md5),
                });
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => return Ok(listed),
            }
        }
    }

    async fn holds_any(&self, prefix: &str) -> Result<bool, StoreError> {
        let what = format!("listing {}", self.url(prefix));
        let (client, bucket) = (&self.client, &self.bucket.name);
        let page = with_retries(self.attempts, &what, || {
            client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .max_keys(1)
                .send()
        })
        .await?;
        Ok(!page.contents().is_empty())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let what = format!("removing {}", self.url(key));
        let (client, bucket) = (&self.client, &self.bucket.name);
        paced(&self.pace, self.attempts, &what, || {
            client.delete_object().bucket(bucket).key(key).send()
        })
        .await
        .map(|_| ())
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        let (client, bucket) = (&self.client, &self.bucket.name);
        for batch in keys.chunks(DELETE_BATCH) {
            let objects: Vec<ObjectIdentifier> = batch
                .iter()
                .filter_map(|key| ObjectIdentifier::builder().key(key).build().ok())
                .collect();
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .expect("objects are set");
            let what = format!("deleting {} object(s) from {}", batch.len(), self.bucket);
            let output = paced(&self.pace, self.attempts, &what, || {
                client
                    .delete_objects()
                    .bucket(bucket)
                    .delete(delete.clone())
                    .send()
            })
            .await?;
            if let Some(failed) = output.errors().first() {
                let message = format!(
                    "cannot delete {}: {}",
                    failed.key().unwrap_or("?"),
                    failed.message().unwrap_or("unknown error")
                );
                return Err(StoreError::local(&what, std::io::Error::other(message)));
            }
        }
        Ok(())
    }

    async fn copy(&self, copy: ObjectCopy<'_>) -> Result<(), StoreError> {
        let ObjectCopy {
            from,
            to,
            if_etag,
            headers,
        } = copy;
        let (client, bucket) = (&self.client, &self.bucket.name);
        let source = format!(
            "{bucket}/{}",
            percent_encoding::utf8_percent_encode(from, COPY_SOURCE)
        );
        let what = format!("copying {} to {}", self.url(from), self.url(to));
        with_retries(self.attempts, &what, || {
            client
                .copy_object()
                .bucket(bucket)
                .key(to)
                .copy_source(&source)
                .copy_source_if_match(if_etag)
                .metadata_directive(MetadataDirective::Replace)
                .content_type(headers.content_type)
                .cache_control(headers.cache_control)
                .send()
        })
        .await
        .map(|_| ())
    }

    async fn download_into(&self, key: &str, file: &mut File) -> Result<String, StoreError> {
        let what = format!("downloading {}", self.url(key));
        let (client, bucket) = (&self.client, &self.bucket.name);
        let object = with_retries(self.attempts, &what, || {
            client.get_object().bucket(bucket).key(key).send()
        })
        .await?;
        let etag = object.e_tag().unwrap_or_default().to_string();
        let mut body = object.body;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StoreError::local(&what, e))?
        {
            file.write_all(&chunk)
                .map_err(|e| StoreError::local(&what, e))?;
        }
        file.flush().map_err(|e| StoreError::local(&what, e))?;
        Ok(etag)
    }

    async fn upload_parts(&self, upload: &FileUpload<'_>) -> Result<String, StoreError> {
        self.multipart(upload).await
    }

    fn public_base(&self, prefix: &str) -> String {
        super::under(&self.public, prefix)
    }

    fn splice_rule(&self) -> Option<SpliceRule> {
        Some(SpliceRule {
            min_first: splice::MIN_PART,
            keeps_whole: false,
        })
    }

    async fn splice(&self, key: &str, splice: Splice<'_>) -> Result<String, StoreError> {
        self.splice_parts(key, splice).await
    }
}

/// The refusal of a document past its cap.
pub(super) fn too_large(size: u64, cap: u64) -> std::io::Error {
    std::io::Error::other(format!(
        "the object is {size} bytes, past the {} MiB cap on a document: refused",
        cap >> 20
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilejson_points_at_the_bucket_or_the_cdn_in_front_of_it() {
        let aws = StoreConfig::default();
        let minio = StoreConfig {
            endpoint: Some("http://127.0.0.1:9000/".into()),
            force_path_style: true,
            ..StoreConfig::default()
        };
        let r2 = StoreConfig {
            endpoint: Some("https://acct.r2.cloudflarestorage.com".into()),
            ..StoreConfig::default()
        };
        let cdn = StoreConfig {
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
}
