//! Where an outbox's files live: a folder on this machine, or a folder of objects in a remote
//! store, whose batches are recorded in a working folder here first.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::store::folder::ObjectFolder;

/// Where an output keeps its outbox.
pub enum OutboxStore {
    /// A folder on this machine.
    Folder(PathBuf),
    /// A folder of objects in a remote store; batches are written locally first, under `local`.
    Objects {
        /// The objects.
        folder: ObjectFolder,
        /// This machine's working folder for the batch being written.
        local: PathBuf,
    },
}

impl OutboxStore {
    /// Where it is, for messages.
    pub fn describe(&self) -> String {
        match self {
            OutboxStore::Folder(path) => path.display().to_string(),
            OutboxStore::Objects { folder, .. } => folder.location(""),
        }
    }

    /// Where the file `name` is, for messages.
    pub fn location(&self, name: &str) -> String {
        match self {
            OutboxStore::Folder(path) => path.join(name).display().to_string(),
            OutboxStore::Objects { folder, .. } => folder.location(name),
        }
    }

    pub(super) async fn list(&self) -> Result<Vec<String>> {
        match self {
            OutboxStore::Folder(path) => match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut names: Vec<String> = entries
                        .filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .collect();
                    names.sort();
                    Ok(names)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(Error::output(path, format!("cannot list the outbox: {e}"))),
            },
            OutboxStore::Objects { folder, .. } => folder.list().await,
        }
    }

    /// The file `name`'s bytes, `None` when there is none. Only a regular file of at most `cap`
    /// bytes is read (whoever can write the folder may have planted a link to a device, a pipe or
    /// a giant at its name), an object only up to `cap`; anything else is an error naming it.
    pub(super) async fn read(&self, name: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        match self {
            OutboxStore::Folder(path) => crate::store::document::read_capped(&path.join(name), cap),
            OutboxStore::Objects { folder, .. } => folder.get(name, cap).await,
        }
    }

    /// Writes `name` durably: on return it survives a crash (or is stored by the remote store).
    pub(super) async fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        match self {
            OutboxStore::Folder(path) => {
                self.ensure_folder()?;
                crate::store::durable::replace(&path.join(name), bytes)
                    .map_err(|e| Error::output(path.join(name), format!("cannot write it: {e}")))
            }
            OutboxStore::Objects { folder, .. } => folder.put(name, bytes, false).await.map(|_| ()),
        }
    }

    pub(super) async fn remove(&self, name: &str) -> Result<()> {
        match self {
            OutboxStore::Folder(path) => {
                crate::store::durable::remove_file_if_there(&path.join(name))
            }
            OutboxStore::Objects { folder, .. } => folder.delete(name).await,
        }
    }

    /// Makes the folder: only its last level beside or inside an output (whose own folder must
    /// exist), the whole path of this machine's working folder for an outbox in a remote store.
    pub(super) fn ensure_folder(&self) -> Result<()> {
        let (path, made) = match self {
            OutboxStore::Folder(path) => (path, std::fs::create_dir(path)),
            OutboxStore::Objects { local, .. } => (local, std::fs::create_dir_all(local)),
        };
        match made {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(Error::output(
                path,
                format!("cannot create the outbox: {e}"),
            )),
            _ => Ok(()),
        }
    }

    /// Where the batch `name` is written while the run records it.
    pub(super) fn recording_path(&self, name: &str) -> PathBuf {
        match self {
            OutboxStore::Folder(path) => path.join(name),
            OutboxStore::Objects { local, .. } => local.join(name),
        }
    }
}
