//! A folder of objects under a prefix of a remote store: where shard plans, part records, the
//! outbox and the changes feed live.

use std::sync::Arc;

use super::key_under as object_key;
use super::{ObjectHeaders, ObjectStore, Put};
use crate::error::{Error, Result};

/// A folder of objects under a prefix of a remote store.
pub struct ObjectFolder {
    store: Arc<dyn ObjectStore>,
    folder: String,
}

impl ObjectFolder {
    /// The objects under `folder` (a key prefix without trailing slash) of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, folder: &str) -> ObjectFolder {
        ObjectFolder {
            store,
            folder: folder.to_string(),
        }
    }

    pub fn key(&self, name: &str) -> String {
        object_key(&self.folder, name)
    }

    pub fn location(&self, name: &str) -> String {
        format!("{}/{}", self.store.bucket(), self.key(name))
    }

    /// The object `name`'s bytes, `None` when there is none; one of more than `cap` bytes is an
    /// error naming it, its body not read.
    pub async fn get(&self, name: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        self.store
            .get(&self.key(name), cap)
            .await
            .map_err(|e| Error::output_caused(self.location(name), e))
    }

    /// Uploads `body` as `name`; with `only_new`, the store refuses when `name` exists, and the
    /// answer is false.
    pub async fn put(&self, name: &str, body: &[u8], only_new: bool) -> Result<bool> {
        self.store
            .put(
                &self.key(name),
                body.to_vec(),
                ObjectHeaders::default(),
                only_new,
            )
            .await
            .map(|put| put != Put::Exists)
            .map_err(|e| Error::output_caused(self.location(name), e))
    }

    /// Uploads `body` as `name` with the headers a reader through a CDN is served.
    pub async fn put_document(
        &self,
        name: &str,
        body: &[u8],
        content_type: &str,
        cache_control: &str,
    ) -> Result<()> {
        let headers = ObjectHeaders {
            content_type,
            cache_control,
            content_encoding: None,
        };
        self.store
            .put(&self.key(name), body.to_vec(), headers, false)
            .await
            .map(|_| ())
            .map_err(|e| Error::output_caused(self.location(name), e))
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        self.store
            .delete(&self.key(name))
            .await
            .map_err(|e| Error::output_caused(self.location(name), e))
    }

    /// Uploads the file at `path` as `name` (in parts above `part_size` bytes).
    pub async fn upload(&self, name: &str, path: &std::path::Path, part_size: u64) -> Result<()> {
        self.store
            .upload_file(&self.key(name), path, ObjectHeaders::default(), part_size)
            .await
            .map(|_| ())
            .map_err(|e| Error::output_caused(self.location(name), e))
    }

    /// Writes the object `name` into a new file at `path` as it arrives, never holding it whole;
    /// the file appears only once complete.
    pub async fn download(&self, name: &str, path: &std::path::Path) -> Result<()> {
        let partial = super::durable::temporary_name(path);
        let fail = |e: std::io::Error| {
            Error::output(path, format!("downloading {}: {e}", self.location(name)))
        };
        let _ = std::fs::remove_file(&partial);
        let written = async {
            let mut file = super::durable::create_new(&partial).map_err(fail)?;
            self.store
                .download_into(&self.key(name), &mut file)
                .await
                .map_err(|e| Error::output_caused(self.location(name), e))?;
            super::durable::rename(&partial, path).map_err(fail)
        }
        .await;
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        written
    }

    /// The names of the objects directly in the folder, sorted.
    pub async fn list(&self) -> Result<Vec<String>> {
        let prefix = format!("{}/", self.folder);
        let listed =
            self.store.list(&prefix, true).await.map_err(|e| {
                Error::output_caused(format!("{}/{prefix}", self.store.bucket()), e)
            })?;
        let mut names: Vec<String> = listed
            .iter()
            .filter_map(|object| object.key.strip_prefix(&prefix))
            .map(str::to_string)
            .collect();
        names.sort();
        Ok(names)
    }
}
