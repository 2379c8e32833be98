//! A whole object as a file on this machine: an archive's download, moved into place durably.

use std::path::Path;

use crate::store::durable;
use crate::store::{ObjectStore, StoreError};

/// Downloads the object into `path` (through a temporary file beside it, moved into place durably
/// when complete); returns its ETag.
pub async fn download(
    store: &dyn ObjectStore,
    key: &str,
    path: &Path,
) -> Result<String, StoreError> {
    let what = format!("downloading {}/{key} to {}", store.bucket(), path.display());
    let mut partial = path.as_os_str().to_os_string();
    partial.push(".download");
    let partial = std::path::PathBuf::from(partial);
    let written = async {
        let mut file = durable::create_new(&partial).map_err(|e| StoreError::local(&what, e))?;
        let etag = store.download_into(key, &mut file).await?;
        durable::rename(&partial, path).map_err(|e| StoreError::local(&what, e))?;
        Ok(etag)
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}
