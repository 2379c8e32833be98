//! One job per output at a time: an exclusive lock on a file beside the output (for outputs in
//! remote stores, in this machine's cache directory, which guards against jobs on the same machine
//! only; such an output's lease in its store, [`super::lease`], guards against other machines').
//!
//! The lock file records who holds it, so a second job can say whom it is waiting for. The holder
//! removes the file when it is done; a job that locked a file which was removed meanwhile notices (the
//! path no longer leads to its file) and locks again.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// This machine's host name, as lock files and leases name their holders.
pub use super::lease::hostname;

/// A held lock; released (and its file removed) on drop. A remote output's lease is held with
/// it: [`OutputLock::release`] removes it before the run ends, a drop as well as it can.
pub struct OutputLock {
    path: PathBuf,
    _file: File,
    lease: Option<super::lease::Lease>,
}

impl OutputLock {
    /// Releases the lock and waits for the output's lease, if any, to be removed.
    pub async fn release(mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The lock file's suffix beside a local file or tree: `NAME.oar-tiles.lock`.
pub const SUFFIX: &str = ".oar-tiles.lock";

/// Where an output's lock lives.
#[derive(Debug, Clone)]
pub struct LockPlace {
    /// The lock file.
    pub path: PathBuf,
    /// The output, as messages name it.
    pub output: String,
    /// Whether the lock's folder is the tool's own (this machine's state for a remote output,
    /// the folder of a tree's partition locks), which is created; a local output's folder must
    /// exist.
    pub creates_folder: bool,
    /// A remote output's lease in its store, held with the lock.
    pub lease: Option<super::lease::LeasePlace>,
}

impl LockPlace {
    /// The lock of the output `output` that lives at `home`.
    pub fn of(
        home: &super::Home,
        output: String,
        store_settings: &crate::config::StoreConfig,
    ) -> LockPlace {
        LockPlace {
            path: home.lock_path(store_settings),
            output,
            creates_folder: home.is_remote(),
            lease: home
                .lease_key()
                .map(|(bucket, key)| super::lease::LeasePlace {
                    bucket,
                    key,
                    store_settings: store_settings.clone(),
                }),
        }
    }

    /// The lock of partition `segment` (its path, escaped) of the tileset at `tileset`, whose
    /// own place is `partition`: a tree's partitions lock beside the tileset's tree, never
    /// inside what it serves (a lock names its holder's host and process).
    pub fn of_partition(tileset: &super::Home, segment: &str, partition: LockPlace) -> LockPlace {
        match tileset.partition_lock_path(segment) {
            Some(path) => LockPlace {
                path,
                creates_folder: true,
                ..partition
            },
            None => partition,
        }
    }
}

/// Takes the output's lock, and then its lease when it has one; without `wait`, fails at once
/// naming the holder. With `part` (a
/// shard's part name), only that part of the output is locked: shards writing into one tree or
/// prefix run side by side, but not twice each. A wait ends with `Error::Stopped` once `stopped`
/// resolves with a signal's name (the run's stop request; the signal handler that made it keeps
/// the signal from ending the process, so the wait must watch it).
pub async fn acquire(
    place: &LockPlace,
    wait: bool,
    part: Option<&str>,
    stopped: impl std::future::Future<Output = &'static str>,
) -> Result<OutputLock> {
    tokio::pin!(stopped);
    let mut path = place.path.clone();
    let mut output = place.output.clone();
    if let Some(part) = part {
        let mut name = path.into_os_string();
        name.push(format!(".{part}"));
        path = PathBuf::from(name);
        output = format!("{output} ({part})");
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if place.creates_folder {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::output(&path, format!("cannot create it: {e}")))?;
        } else if !dir.is_dir() {
            return Err(Error::missing_folder(&output, dir));
        }
    }
    let mut announced = false;
    loop {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                Error::output(
                    &output,
                    format!("cannot create the lock file {}: {e}", path.display()),
                )
            })?;
        match file.try_lock() {
            Ok(()) => {
                if !still_at(&path, &file) {
                    continue;
                }
                let (run, previous) = take_over_holding(&mut file, &path, &output)?;
                // Held from here, so a lease refused or waited for in vain removes the file.
                let mut lock = OutputLock {
                    path,
                    _file: file,
                    lease: None,
                };
                if let Some(lease) = &place.lease {
                    let whose = (part, run.as_str(), previous.as_str());
                    let taken = super::lease::take(lease, &output, whose, wait, stopped.as_mut());
                    lock.lease = Some(taken.await?);
                }
                return Ok(lock);
            }
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // A holder is one short line: no more is read of whatever is at the lock's name.
                let _ = Read::by_ref(&mut file)
                    .take(4096)
                    .read_to_string(&mut holder);
                let holder = if holder.trim().is_empty() {
                    "holder unknown".into()
                } else {
                    holder
                };
                if !wait {
                    return Err(Error::Locked { output, holder });
                }
                if !announced {
                    tracing::info!("waiting for {output}, locked by {holder}");
                    announced = true;
                }
                drop(file);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    signal = &mut stopped => {
                        tracing::warn!("{signal} received while waiting for {output}: stopping");
                        return Err(Error::Stopped { signal });
                    }
                }
            }
            Err(TryLockError::Error(err)) => {
                return Err(Error::output(
                    &output,
                    format!("cannot lock {}: {err}", path.display()),
                ))
            }
        }
    }
}

/// Whether `path` still leads to the file we locked: a holder that finished removed its file, and a
/// lock on a removed file guards nothing.
fn still_at(path: &Path, file: &File) -> bool {
    std::fs::metadata(path)
        .ok()
        .zip(file.metadata().ok())
        .is_some_and(|(on_disk, ours)| on_disk.ino() == ours.ino() && on_disk.dev() == ours.dev())
}

/// Makes this run the holder named in the lock's file: a new run id, and what the last holder
/// wrote there, in which a run killed while holding names the lease it left behind.
fn take_over_holding(file: &mut File, path: &Path, output: &str) -> Result<(String, String)> {
    let mut previous = String::new();
    let _ = Read::by_ref(file).take(4096).read_to_string(&mut previous);
    let run = super::lease::run_id();
    let tag = super::lease::holder_tag(&run, &previous);
    record_holder(file, path, output, &tag)?;
    Ok((run, previous))
}

/// Writes who holds the lock into its file, so a waiting job can say whom it waits for.
fn record_holder(file: &mut File, path: &Path, output: &str, runs: &str) -> Result<()> {
    let holder = format!(
        "pid {} on {} since {}{}",
        std::process::id(),
        hostname(),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        runs
    );
    file.set_len(0)
        .and_then(|()| file.write_all(holder.as_bytes()))
        .map_err(|e| {
            Error::output(
                output,
                format!("cannot write the lock file {}: {e}", path.display()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_job_is_refused_while_the_first_holds_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let place = LockPlace {
            path: dir.path().join("out.mbtiles.oar-tiles.lock"),
            output: "out.mbtiles".into(),
            creates_folder: false,
            lease: None,
        };
        let first = acquire(&place, false, None, std::future::pending())
            .await
            .unwrap();
        let err = acquire(&place, false, None, std::future::pending())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("--wait-lock"), "{err}");
        drop(first);
        assert!(!place.path.exists(), "the holder removes its lock file");
        let _again = acquire(&place, false, None, std::future::pending())
            .await
            .unwrap();
    }
}
