//! Azure Blob Storage containers (`az://CONTAINER/…`), on Apache Arrow's object_store client with
//! this build's HTTP stack ([`super::http::HyperConnector`]).
//!
//! Credentials come from the environment as Azure's own tools read them:
//! `AZURE_STORAGE_ACCOUNT_NAME` with `AZURE_STORAGE_ACCOUNT_KEY` or `AZURE_STORAGE_SAS_TOKEN`, a
//! service principal or managed identity (`AZURE_CLIENT_ID`, …), or
//! `AZURE_STORAGE_USE_EMULATOR=true` for Azurite (at `AZURITE_BLOB_STORAGE_URL`, by default
//! `http://127.0.0.1:10000`). `AZURE_STORAGE_ENDPOINT` names another endpoint.

use std::fs::File;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStore as _, ObjectStoreExt as _,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};

use super::http::HyperConnector;
use super::{
    joined_base, FileUpload, Listed, NewObject, ObjectCopy, ObjectHeaders, ObjectStore, OpenStore,
    Put, Splice, SpliceRule, StoreError,
};
use crate::config::{Bucket, StoreConfig};

mod blocks;

/// The account Azurite serves, when no other is named.
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";

/// Azurite's published development key, the same in every installation.
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Parts of one block upload in flight at once; with the part size, this bounds the memory.
const PARTS_IN_FLIGHT: usize = 4;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn uses_emulator() -> bool {
    env("AZURE_STORAGE_USE_EMULATOR").is_some_and(|value| {
        matches!(
            value.to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

fn emulator_url() -> String {
    env("AZURITE_BLOB_STORAGE_URL").unwrap_or_else(|| "http://127.0.0.1:10000".into())
}

fn account() -> String {
    env("AZURE_STORAGE_ACCOUNT_NAME").unwrap_or_else(|| {
        if uses_emulator() {
            EMULATOR_ACCOUNT.into()
        } else {
            String::new()
        }
    })
}

/// The container's own address, where readers fetch its blobs without a CDN in front.
fn own_address(bucket: &Bucket) -> String {
    match env("AZURE_STORAGE_ENDPOINT") {
        Some(endpoint) => format!("{}/{}", endpoint.trim_end_matches('/'), bucket.name),
        None if uses_emulator() => format!(
            "{}/{}/{}",
            emulator_url().trim_end_matches('/'),
            account(),
            bucket.name
        ),
        None => format!(
            "https://{}.blob.core.windows.net/{}",
            account(),
            bucket.name
        ),
    }
}

/// The first of `names` set in the environment.
fn first_env(names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| env(name))
}

/// How the block requests object_store cannot make ([`blocks`]) are signed, from the credential
/// object_store itself takes from the environment (in its order): the account key or a SAS
/// token; `None` for the others (a bearer token, a service principal, a managed identity).
fn signing_from_env() -> Option<blocks::Signing> {
    let key = first_env(&[
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_MASTER_KEY",
    ]);
    let sas = first_env(&["AZURE_STORAGE_SAS_KEY", "AZURE_STORAGE_SAS_TOKEN"]);
    let bearer = env("AZURE_STORAGE_TOKEN");
    let principal = first_env(&["AZURE_CLIENT_ID", "AZURE_STORAGE_CLIENT_ID"]).is_some()
        && first_env(&["AZURE_TENANT_ID", "AZURE_STORAGE_TENANT_ID"]).is_some()
        && first_env(&[
            "AZURE_CLIENT_SECRET",
            "AZURE_STORAGE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
        ])
        .is_some();
    let shared_key = |key: &str| {
        let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key).ok()?;
        Some(blocks::Signing::SharedKey(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &key,
        )))
    };
    let sas_token = |token: String| blocks::Signing::Sas(token.trim_start_matches('?').to_string());
    if uses_emulator() {
        return match (key, bearer, sas) {
            (Some(key), _, _) => shared_key(&key),
            (None, Some(_), _) => None,
            (None, None, Some(token)) => Some(sas_token(token)),
            (None, None, None) => shared_key(EMULATOR_KEY),
        };
    }
    match (bearer, key, principal, sas) {
        (Some(_), _, _, _) => None,
        (None, Some(key), _, _) => shared_key(&key),
        (None, None, false, Some(token)) => Some(sas_token(token)),
        _ => None,
    }
}

/// A container of an Azure Blob Storage account.
pub struct AzureStore {
    inner: MicrosoftAzure,
    bucket: Bucket,
    public: String,
    /// The requests that rebuild a blob in place; `None` where the credential cannot sign them.
    blocks: Option<blocks::Blocks>,
}

#[async_trait]
impl OpenStore for AzureStore {
    /// Opens `bucket` (a container) with the environment's credentials; `[store] max_attempts`
    /// bounds each request's attempts and `[store] public_url` names a CDN in front.
    async fn open(bucket: &Bucket, settings: &StoreConfig) -> Result<AzureStore, StoreError> {
        let retry = RetryConfig {
            max_retries: settings.max_attempts.saturating_sub(1) as usize,
            retry_timeout: Duration::from_secs(180),
            ..RetryConfig::default()
        };
        let inner = MicrosoftAzureBuilder::from_env()
            .with_container_name(&bucket.name)
            .with_http_connector(HyperConnector {
                connect_timeout: settings.connect_timeout(),
                request_timeout: settings.request_timeout(),
                pace: Some(super::shared_pace(bucket, settings)),
            })
            .with_retry(retry)
            .build()
            .map_err(|e| {
                StoreError::local(
                    &format!("opening {bucket} (AZURE_STORAGE_* in the environment)"),
                    e,
                )
            })?;
        let public = joined_base(settings.public_url.as_deref(), own_address(bucket), "");
        let blocks = match signing_from_env() {
            Some(signing) => Some(
                blocks::Blocks::new(
                    &own_address(bucket),
                    &account(),
                    signing,
                    settings.max_attempts,
                    (settings.connect_timeout(), settings.request_timeout()),
                )
                .map_err(|e| StoreError::local(&format!("opening {bucket}"), e))?,
            ),
            None => None,
        };
        Ok(AzureStore {
            inner,
            bucket: bucket.clone(),
            public,
            blocks,
        })
    }

    /// The account (and for the emulator its address) that tells this machine's files about one
    /// container apart from another account's container of the same name.
    fn identity(_: &StoreConfig) -> String {
        if uses_emulator() {
            format!("{} at {}", account(), emulator_url())
        } else {
            account()
        }
    }
}

impl AzureStore {
    /// The container `name` of the Azurite at `url` with its development account, whatever the
    /// environment says: for tests, which cannot change their process's environment safely.
    pub fn on_azurite(url: &str, name: &str) -> Result<AzureStore, StoreError> {
        let bucket = Bucket {
            scheme: crate::config::Scheme::Azure,
            name: name.to_string(),
        };
        let what = format!("opening {bucket} on Azurite at {url}");
        let inner = MicrosoftAzureBuilder::new()
            .with_account(EMULATOR_ACCOUNT)
            .with_access_key(EMULATOR_KEY)
            .with_endpoint(format!("{}/{EMULATOR_ACCOUNT}", url.trim_end_matches('/')))
            .with_allow_http(true)
            .with_container_name(name)
            .with_http_connector(HyperConnector {
                connect_timeout: StoreConfig::default().connect_timeout(),
                request_timeout: StoreConfig::default().request_timeout(),
                pace: None,
            })
            .build()
            .map_err(|e| StoreError::local(&what, e))?;
        let container = format!("{}/{EMULATOR_ACCOUNT}/{name}", url.trim_end_matches('/'));
        let defaults = StoreConfig::default();
        let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, EMULATOR_KEY)
            .map_err(|e| StoreError::local(&what, e))?;
        let blocks = blocks::Blocks::new(
            &container,
            EMULATOR_ACCOUNT,
            blocks::Signing::SharedKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key)),
            defaults.max_attempts,
            (defaults.connect_timeout(), defaults.request_timeout()),
        )
        .map_err(|e| StoreError::local(&what, e))?;
        Ok(AzureStore {
            inner,
            public: container,
            bucket,
            blocks: Some(blocks),
        })
    }

    fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.bucket)
    }

    fn failed(&self, what: impl Into<String>, error: object_store::Error) -> StoreError {
        // object_store retries inside and says so in its message.
        StoreError::new(&what.into(), &super::one_line(&error), 0, Box::new(error))
    }
}

fn path(key: &str) -> ObjectPath {
    ObjectPath::from(key)
}

fn attributes(headers: ObjectHeaders<'_>) -> Attributes {
    let mut attributes = Attributes::new();
    let mut set = |attribute, value: &str| {
        if !value.is_empty() {
            attributes.insert(attribute, AttributeValue::from(value.to_string()));
        }
    };
    set(Attribute::ContentType, headers.content_type);
    set(Attribute::CacheControl, headers.cache_control);
    set(
        Attribute::ContentEncoding,
        headers.content_encoding.unwrap_or_default(),
    );
    attributes
}

#[async_trait]
impl ObjectStore for AzureStore {
    fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    async fn write(&self, key: &str, object: NewObject<'_>) -> Result<Put, StoreError> {
        let (body, headers, only_new) = (object.body, object.headers, object.only_new);
        let options = PutOptions {
            mode: if only_new {
                PutMode::Create
            } else {
                PutMode::Overwrite
            },
            attributes: attributes(headers),
            ..PutOptions::default()
        };
        match self
            .inner
            .put_opts(&path(key), PutPayload::from(body), options)
            .await
        {
            Ok(put) => Ok(Put::Stored(put.e_tag.unwrap_or_default())),
            Err(object_store::Error::AlreadyExists { .. }) if only_new => Ok(Put::Exists),
            Err(e) => Err(self.failed(format!("uploading {}", self.url(key)), e)),
        }
    }

    async fn get(&self, key: &str, cap: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let what = format!("reading {}", self.url(key));
        let object = match self.inner.get_opts(&path(key), GetOptions::default()).await {
            Ok(object) => object,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed(what, e)),
        };
        if object.meta.size > cap {
            return Err(StoreError::local(
                &what,
                super::s3::too_large(object.meta.size, cap),
            ));
        }
        let bytes = object.bytes().await.map_err(|e| self.failed(what, e))?;
        Ok(Some(bytes.to_vec()))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        self.inner
            .get_range(&path(key), range.clone())
            .await
            .map(|bytes| bytes.to_vec())
            .map_err(|e| self.failed(format!("reading bytes {range:?} of {}", self.url(key)), e))
    }

    async fn etag(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self.inner.head(&path(key)).await {
            Ok(meta) => Ok(Some(meta.e_tag.unwrap_or_default())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed(format!("looking up {}", self.url(key)), e)),
        }
    }

    async fn list(&self, prefix: &str, direct_only: bool) -> Result<Vec<Listed>, StoreError> {
        let what = format!("listing {}", self.url(prefix));
        // object_store lists by whole path segments: a prefix names a folder.
        let folder = path(prefix.trim_end_matches('/'));
        let folder = (!prefix.trim_end_matches('/').is_empty()).then_some(&folder);
        let metas = if direct_only {
            self.inner
                .list_with_delimiter(folder)
                .await
                .map(|listing| listing.objects)
                .map_err(|e| self.failed(what.clone(), e))?
        } else {
            self.inner
                .list(folder)
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| self.failed(what.clone(), e))?
        };
        Ok(metas
            .into_iter()
            .map(|meta| Listed {
                key: meta.location.to_string(),
                size: meta.size,
                // Azure's ETags are not MD5s; readers fall back on the manifest's.
                md5: None,
            })
            .filter(|listed| listed.key.starts_with(prefix))
            .collect())
    }

    async fn holds_any(&self, prefix: &str) -> Result<bool, StoreError> {
        let trimmed = prefix.trim_end_matches('/');
        let folder = path(trimmed);
        let mut listing = self.inner.list((!trimmed.is_empty()).then_some(&folder));
        match listing.try_next().await {
            Ok(first) => Ok(first.is_some()),
            Err(e) => Err(self.failed(format!("listing {}", self.url(prefix)), e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(format!("removing {}", self.url(key)), e)),
        }
    }

    /// object_store's copy inside Azure keeps the source's headers and takes no condition, and a
    /// copy must carry its own: the caller uploads the bytes instead.
    async fn copy(&self, copy: ObjectCopy<'_>) -> Result<(), StoreError> {
        let why = "a copy inside Azure Blob Storage cannot be given its own headers";
        Err(super::no_copy(&self.bucket, copy.from, copy.to, why))
    }

    async fn download_into(&self, key: &str, file: &mut File) -> Result<String, StoreError> {
        let what = format!("downloading {}", self.url(key));
        let object = self
            .inner
            .get(&path(key))
            .await
            .map_err(|e| self.failed(what.clone(), e))?;
        let etag = object.meta.e_tag.clone().unwrap_or_default();
        super::write_chunks(object.into_stream(), file, &what, |e| {
            self.failed(what.clone(), e)
        })
        .await?;
        Ok(etag)
    }

    async fn upload_parts(&self, source: &FileUpload<'_>) -> Result<String, StoreError> {
        let options = PutMultipartOptions {
            attributes: attributes(source.headers),
            ..PutMultipartOptions::default()
        };
        let mut upload = self
            .inner
            .put_multipart_opts(&path(source.key), options)
            .await
            .map_err(|e| self.failed(source.what, e))?;
        let sent = async {
            let mut file =
                std::fs::File::open(source.path).map_err(|e| StoreError::local(source.what, e))?;
            let mut in_flight = futures::stream::FuturesUnordered::new();
            let mut offset = 0;
            while offset < source.size {
                let length = source.part_size.min(source.size - offset);
                let bytes = super::read_part(&mut file, length, source.what)?;
                in_flight.push(upload.put_part(PutPayload::from(Bytes::from(bytes))));
                offset += length;
                if in_flight.len() >= PARTS_IN_FLIGHT {
                    if let Some(done) = in_flight.next().await {
                        done.map_err(|e| self.failed(source.what, e))?;
                    }
                }
            }
            while let Some(done) = in_flight.next().await {
                done.map_err(|e| self.failed(source.what, e))?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        match sent {
            Ok(()) => upload
                .complete()
                .await
                .map(|put| put.e_tag.unwrap_or_default())
                .map_err(|e| self.failed(source.what, e)),
            Err(err) => {
                // Uncommitted blocks are dropped by Azure after a week; nothing shows.
                let _ = upload.abort().await;
                Err(err)
            }
        }
    }

    fn public_base(&self, prefix: &str) -> String {
        super::under(&self.public, prefix)
    }

    /// Where the block requests can be signed: the new bytes are staged as blocks and the blob
    /// committed again as them followed by all its own ([`blocks`]).
    fn splice_rule(&self) -> Option<SpliceRule> {
        self.blocks.as_ref().map(|_| SpliceRule {
            min_first: 0,
            keeps_whole: true,
        })
    }

    async fn splice(&self, key: &str, splice: Splice<'_>) -> Result<String, StoreError> {
        self.splice_blocks(key, splice).await
    }
}
