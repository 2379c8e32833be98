//! Google Cloud Storage buckets (`gs://BUCKET/…`), through GCS's JSON API ([`api`]) on this build's
//! HTTP stack.
//!
//! Credentials are found as Google's own libraries find them, by object_store's GCS credential
//! providers: a service account file (`GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_SERVICE_ACCOUNT_KEY`) or
//! `GOOGLE_APPLICATION_CREDENTIALS` (a service account's or `gcloud auth application-default
//! login`'s file, by default `~/.config/gcloud/application_default_credentials.json`), else the
//! metadata server of the machine (GCE, GKE, Cloud Run). `GOOGLE_BASE_URL` (object_store's
//! setting) sends the authorized requests to another endpoint. With `STORAGE_EMULATOR_HOST` set,
//! as for Google's libraries, requests go to that emulator without credentials.

mod api;
mod compose;
mod objects;

use base64::Engine as _;
use hyper::header::{CONTENT_TYPE, LOCATION};
use hyper::Method;
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};

use self::api::{encoded, Api, Call, Failure};
use super::{joined_base, Listed, ObjectHeaders, OpenStore, StoreError};
use crate::config::{Bucket, Scheme, StoreConfig};
use crate::retry::Failed;

/// Google's endpoint for the JSON API and for public reads.
const GOOGLE: &str = "https://storage.googleapis.com";

/// A resumable upload's chunks are multiples of this, the last excepted (GCS's rule).
const CHUNK_QUANTUM: u64 = 256 * 1024;

/// The most of a JSON answer (an object's metadata, a page of a listing) read.
const JSON_CAP: usize = 16 * 1024 * 1024;

/// Objects a page of a listing holds at most: GCS's own default and ceiling, asked for outright
/// because a server that ignores `fields` and pages only when asked (fake-gcs-server answered a
/// prefix of 94,611 objects as one page of whole object resources, past [`JSON_CAP`]) would
/// otherwise fail any listing of a large output.
const LIST_PAGE: u32 = 1000;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// The emulator's address from `STORAGE_EMULATOR_HOST`, which Google's libraries take with or
/// without a scheme.
fn emulator() -> Option<String> {
    env("STORAGE_EMULATOR_HOST").map(|host| {
        let host = host.trim_end_matches('/');
        if host.contains("://") {
            host.to_string()
        } else {
            format!("http://{host}")
        }
    })
}

/// A bucket of Google Cloud Storage.
pub struct GcsStore {
    api: Api,
    bucket: Bucket,
    public: String,
}

#[async_trait::async_trait]
impl OpenStore for GcsStore {
    /// Opens `bucket` with the environment's credentials, or on the emulator
    /// `STORAGE_EMULATOR_HOST` names; `[store] max_attempts` bounds each request's attempts and
    /// `[store] public_url` names a CDN in front.
    async fn open(bucket: &Bucket, settings: &StoreConfig) -> Result<GcsStore, StoreError> {
        let what = format!("opening {bucket}");
        let (base, credentials) = match emulator() {
            Some(url) => (url, None),
            None => {
                let mut builder = GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&bucket.name)
                    .with_http_connector(super::http::HyperConnector {
                        connect_timeout: settings.connect_timeout(),
                        request_timeout: settings.request_timeout(),
                        // Only the credentials' requests go through object_store's client.
                        pace: None,
                    });
                if let Some(file) = env("GOOGLE_APPLICATION_CREDENTIALS") {
                    builder = builder.with_application_credentials(file);
                }
                let base = builder
                    .get_config_value(&GoogleConfigKey::BaseUrl)
                    .map_or_else(
                        || GOOGLE.to_string(),
                        |url| url.trim_end_matches('/').into(),
                    );
                let client = builder.build().map_err(|e| {
                    StoreError::local(
                        &format!("{what} (GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT in the environment)"),
                        e,
                    )
                })?;
                (base, Some(client.credentials().clone()))
            }
        };
        let pace = super::shared_pace(bucket, settings);
        let api = Api::new(&base, credentials, settings, Some(pace))
            .map_err(|e| StoreError::local(&what, e))?;
        let own = format!("{base}/{}", bucket.name);
        Ok(GcsStore {
            api,
            bucket: bucket.clone(),
            public: joined_base(settings.public_url.as_deref(), own, ""),
        })
    }

    /// The endpoint (Google's, or the emulator's) that tells this machine's files about one bucket
    /// apart from an emulator's bucket of the same name.
    fn identity(_: &StoreConfig) -> String {
        emulator().unwrap_or_else(|| "gcs".into())
    }
}

impl GcsStore {
    /// The bucket `name` of the emulator at `url`, whatever the environment says: for tests, which
    /// cannot change their process's environment safely.
    pub fn on_emulator(url: &str, name: &str) -> Result<GcsStore, StoreError> {
        let bucket = Bucket {
            scheme: Scheme::Gcs,
            name: name.to_string(),
        };
        let settings = StoreConfig {
            max_attempts: 3,
            ..StoreConfig::default()
        };
        let api = Api::new(url, None, &settings, None)
            .map_err(|e| StoreError::local(&format!("opening {bucket} at {url}"), e))?;
        Ok(GcsStore {
            public: format!("{}/{name}", api.base),
            api,
            bucket,
        })
    }

    fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.bucket)
    }

    /// The JSON API's address of the object `key` (`""`: of the bucket's objects).
    fn object(&self, key: &str) -> String {
        let objects = format!(
            "{}/storage/v1/b/{}/o",
            self.api.base,
            encoded(&self.bucket.name)
        );
        if key.is_empty() {
            objects
        } else {
            format!("{objects}/{}", encoded(key))
        }
    }

    /// The address uploads of this bucket start at.
    fn uploads(&self) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o",
            self.api.base,
            encoded(&self.bucket.name)
        )
    }

    fn failed(&self, what: &str, failed: Failed<Failure>) -> StoreError {
        StoreError::new(
            what,
            &failed.error.to_string(),
            failed.attempts,
            Box::new(failed.error),
        )
    }

    /// The object's bytes as stored: `Accept-Encoding: gzip`, or GCS would undo a gzip
    /// `Content-Encoding` (decompressive transcoding) and ignore a range.
    fn media(&self, key: &str) -> Call {
        Call::new(Method::GET, format!("{}?alt=media", self.object(key)))
            .header(hyper::header::ACCEPT_ENCODING, "gzip")
    }

    /// The JSON answer to `call`.
    async fn json(&self, what: &str, call: &Call) -> Result<serde_json::Value, StoreError> {
        let (_, body) = self
            .api
            .fetch(what, call, JSON_CAP)
            .await
            .map_err(|e| self.failed(what, e))?;
        json_of(what, &body)
    }

    /// One page of the listing under `prefix`; the next page's token.
    async fn list_page(
        &self,
        prefix: &str,
        direct_only: bool,
        page: Option<&str>,
        out: &mut Vec<Listed>,
    ) -> Result<Option<String>, StoreError> {
        let what = format!("listing {}", self.url(prefix));
        let mut url = format!(
            "{}?prefix={}&maxResults={LIST_PAGE}&fields=items(name,size,md5Hash),nextPageToken",
            self.object(""),
            encoded(prefix)
        );
        if direct_only {
            url.push_str("&delimiter=%2F");
        }
        if let Some(token) = page {
            url.push_str(&format!("&pageToken={}", encoded(token)));
        }
        let json = self.json(&what, &Call::new(Method::GET, url)).await?;
        for item in json["items"].as_array().into_iter().flatten() {
            let key = item["name"].as_str().unwrap_or_default().to_string();
            let size = item["size"].as_str().and_then(|s| s.parse().ok());
            let md5 = item["md5Hash"].as_str().and_then(md5_of);
            out.push(Listed {
                key,
                size: size.unwrap_or(0),
                md5,
            });
        }
        Ok(json["nextPageToken"].as_str().map(str::to_string))
    }

    /// Starts a resumable upload with the object's headers; its session's address.
    async fn start_upload(
        &self,
        key: &str,
        headers: ObjectHeaders<'_>,
        what: &str,
    ) -> Result<String, StoreError> {
        let call = Call::new(
            Method::POST,
            format!(
                "{}?uploadType=resumable&name={}",
                self.uploads(),
                encoded(key)
            ),
        )
        .header(CONTENT_TYPE, "application/json; charset=UTF-8")
        .body(metadata(key, headers).to_string());
        let answer = self
            .api
            .send(what, &call)
            .await
            .map_err(|e| self.failed(what, e))?;
        answer
            .headers()
            .get(LOCATION)
            .and_then(|location| location.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                StoreError::local(
                    what,
                    std::io::Error::other("GCS answered a resumable upload without its Location"),
                )
            })
    }
}

/// An object's metadata as the JSON API takes it: its name and headers.
fn metadata(key: &str, headers: ObjectHeaders<'_>) -> serde_json::Value {
    let mut json = serde_json::json!({ "name": key });
    let mut set = |field: &str, value: &str| {
        if !value.is_empty() {
            json[field] = value.into();
        }
    };
    set("contentType", headers.content_type);
    set("cacheControl", headers.cache_control);
    set(
        "contentEncoding",
        headers.content_encoding.unwrap_or_default(),
    );
    json
}

/// The MD5 of a listing's `md5Hash` (base64); composite objects have none.
fn md5_of(text: &str) -> Option<[u8; 16]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    bytes.try_into().ok()
}

/// An answer's JSON; `what` names the request in the error when it is not JSON.
fn json_of(what: &str, body: &[u8]) -> Result<serde_json::Value, StoreError> {
    serde_json::from_slice(body).map_err(|e| StoreError::local(&format!("{what}: GCS's answer"), e))
}

/// The object's generation, which this store gives as its ETag: it changes with every write.
fn generation(json: &serde_json::Value) -> String {
    json["generation"].as_str().unwrap_or_default().to_string()
}

/// A multipart/related body: the metadata's JSON, then the bytes.
fn multipart(metadata: &serde_json::Value, content_type: &str, body: &[u8]) -> (String, Vec<u8>) {
    // A boundary the bytes do not hold, as multipart requires.
    let boundary = (0u32..)
        .map(|n| format!("oar-tiles-object-{n:08x}"))
        .find(|candidate| {
            !body
                .windows(candidate.len())
                .any(|window| window == candidate.as_bytes())
        })
        .unwrap_or_default();
    let mut out = format!(
        "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n\
         --{boundary}\r\nContent-Type: {}\r\n\r\n",
        if content_type.is_empty() {
            "application/octet-stream"
        } else {
            content_type
        }
    )
    .into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/related; boundary={boundary}"), out)
}
