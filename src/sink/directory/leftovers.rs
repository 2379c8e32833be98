//! Temporary tile files (`.Y.ext.PID.tmp`, or `.Y.ext.N.PID.tmp` holding a replaced tile's old
//! bytes until they are removed) that a killed writer left beside the tiles.
//!
//! A temporary names its writer's process, not its host, and the lock a writer holds is the whole
//! output's or, for a shard, only its part's: shards of one tree run side by side, on this machine
//! or on others that mount the tree. So each writer marks the tree's root while it has the tree
//! open (`.oar-tiles-writer.PID.HOST`, HOST a digest of the host's name: the root is served), and
//! removes the mark when it is done; a killed writer leaves its mark. The next open, under its
//! lock, judges each mark: a writer on this machine is gone when its process is; one elsewhere only
//! when the opener holds the whole output (no shard may run beside an unsharded run), since no
//! process of another machine can be asked. A gone writer's temporaries are removed, everywhere in
//! the tree, unless a writer not judged gone has the same process id (a temporary's name cannot
//! tell the two apart): those wait for a later open.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::entries::{parse_name, read_dir_if_exists};
use crate::error::{Error, Result};
use crate::store::durable;
use crate::tile::TileCoord;

/// The start of a writer's mark in the tree's root.
const MARK_PREFIX: &str = ".oar-tiles-writer.";

/// A writer of the tree: its process and a digest of its host's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Writer {
    pub pid: u32,
    pub host: String,
}

impl Writer {
    /// This process.
    pub fn this() -> Writer {
        Writer {
            pid: std::process::id(),
            host: host_digest(&crate::coordination::lock::hostname()),
        }
    }

    /// The name of its mark.
    pub fn mark_name(&self) -> String {
        format!("{MARK_PREFIX}{}.{}", self.pid, self.host)
    }

    fn from_mark(name: &std::ffi::OsStr) -> Option<Writer> {
        let (pid, host) = name.to_str()?.strip_prefix(MARK_PREFIX)?.split_once('.')?;
        Some(Writer {
            pid: pid.parse().ok()?,
            host: host.to_string(),
        })
    }
}

/// The first 12 hex digits of the MD5 of a host name: enough to tell a tree's hosts apart, and
/// nothing a reader of the served tree learns the name from.
pub(super) fn host_digest(name: &str) -> String {
    let digest = Md5::digest(name.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// This writer's mark in the tree's root; dropping it (the sink finished, failed or was aborted)
/// removes it.
pub(super) struct WriterMark(PathBuf);

impl Drop for WriterMark {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// At the tree's open, under the lock the caller holds (`whole`: the whole output's, else a
/// shard's part's): removes the temporaries of the writers whose marks say they are gone, as the
/// module explains, then marks this writer.
pub(super) fn clear_gone_writers(root: &Path, whole: bool) -> Result<WriterMark> {
    let me = Writer::this();
    let mut gone = Vec::new();
    let mut live_pids = HashSet::from([me.pid]);
    for entry in read_dir_if_exists(root)? {
        let Some(writer) = Writer::from_mark(&entry.file_name()) else {
            continue;
        };
        if writer == me {
            continue;
        }
        let is_gone = if writer.host == me.host {
            process_alive(writer.pid) == Some(false)
        } else {
            whole
        };
        if is_gone {
            gone.push((writer, entry.path()));
        } else {
            live_pids.insert(writer.pid);
        }
    }
    for (writer, mark) in gone {
        if live_pids.contains(&writer.pid) {
            continue;
        }
        tracing::debug!(
            "{}: removing what the gone writer (process {}) left half written",
            root.display(),
            writer.pid
        );
        remove_temporaries_of(root, writer.pid, None)?;
        durable::remove_file_if_there(&mark)?;
    }
    let mark = root.join(me.mark_name());
    durable::create_new(&mark)
        .map_err(|e| Error::output(&mark, format!("cannot create it: {e}")))?;
    Ok(WriterMark(mark))
}

/// Whether process `pid` of this machine runs: `None` when it cannot be told (no `/proc`). A
/// zombie, killed but not yet reaped, is gone: it writes nothing more.
fn process_alive(pid: u32) -> Option<bool> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // `PID (COMM) STATE …`, where COMM may hold spaces and parentheses.
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(!matches!(state, 'Z' | 'X' | 'x'))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Path::new("/proc/self/stat").exists().then_some(false)
        }
        Err(_) => None,
    }
}

/// Removes the temporary tile files the process `pid` (a killed run) left in the tree at `root`:
/// in the columns of its `planned` tiles, or in every column when it planned everything. A
/// column that is a link is not entered; nothing but that process's temporaries is removed.
pub(crate) fn remove_temporaries_of(
    root: &Path,
    pid: u32,
    planned: Option<&[TileCoord]>,
) -> Result<()> {
    let columns: Vec<PathBuf> = match planned {
        Some(tiles) => tiles
            .iter()
            .map(|t| (t.z(), t.x()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|(z, x)| root.join(z.to_string()).join(x.to_string()))
            .collect(),
        None => {
            let mut columns = Vec::new();
            for zoom in read_dir_if_exists(root)? {
                if parse_name::<u8>(&zoom.file_name(), "").is_none()
                    || !zoom.file_type().is_ok_and(|t| t.is_dir())
                {
                    continue;
                }
                for column in read_dir_if_exists(&zoom.path())? {
                    if parse_name::<u32>(&column.file_name(), "").is_some()
                        && column.file_type().is_ok_and(|t| t.is_dir())
                    {
                        columns.push(column.path());
                    }
                }
            }
            columns
        }
    };
    for column in columns {
        if !std::fs::symlink_metadata(&column).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        for entry in read_dir_if_exists(&column)? {
            if durable::temporary_writer(&entry.file_name()) == Some(pid) {
                let path = entry.path();
                durable::remove_file_if_there(&path)?;
            }
        }
    }
    Ok(())
}
