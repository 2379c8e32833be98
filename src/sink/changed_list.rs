//! The changed-tile list (`--changed-list`): one `z/x/y` per line for every tile a sink wrote with new
//! bytes or deleted, and the path of every archive rewritten as a whole, ready to hand to a CDN
//! invalidation.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::tile::TileCoord;

/// A shared, optional recorder of changed tiles; cloning shares the file.
#[derive(Clone, Default)]
pub struct ChangedList {
    inner: Option<Arc<Mutex<Recorder>>>,
    /// Written before each tile's `z/x/y`, with a `/`: a partition's path inside the output.
    prefix: Option<Arc<str>>,
}

struct Recorder {
    path: PathBuf,
    /// Where the lines go until the list is closed and moved to `path`.
    temporary: PathBuf,
    writer: BufWriter<File>,
    error: Option<std::io::Error>,
    /// Lines recorded so far.
    lines: u64,
    /// Whether `temporary` has been moved to `path` (or removed).
    published: bool,
}

impl Drop for Recorder {
    /// A run that ends without closing the list (it failed) still publishes the tiles it changed,
    /// for whoever invalidates them; one that changed nothing (a run refused for the output's
    /// lock, say) leaves the list another run may be writing as it is.
    fn drop(&mut self) {
        if self.published {
            return;
        }
        if self.lines > 0 && self.writer.flush().is_ok() {
            let _ = super::durable::rename(&self.temporary, &self.path);
        } else {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

impl ChangedList {
    /// A log that records nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Starts the list. Its lines go to a new file beside `path`, which replaces `path` when the
    /// list is closed: a run refused for the output's lock never truncates the list the running
    /// job writes, and a reader never sees half a list.
    pub fn create(path: &Path) -> Result<Self> {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{}.writing", std::process::id()));
        let temporary = path.with_file_name(name);
        let file = super::durable::create_new(&temporary).map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: format!(
                "cannot create the changed-tile list (as {}): {e}",
                temporary.display()
            ),
        })?;
        Ok(Self {
            inner: Some(Arc::new(Mutex::new(Recorder {
                path: path.to_path_buf(),
                temporary,
                writer: BufWriter::new(file),
                error: None,
                lines: 0,
                published: false,
            }))),
            prefix: None,
        })
    }

    /// The same list, naming tiles as `PREFIX/z/x/y`: those of a partition, under its path.
    pub fn under(&self, prefix: &str) -> Self {
        Self {
            inner: self.inner.clone(),
            prefix: Some(prefix.into()),
        }
    }

    /// Records one changed tile; a write error is kept and reported by [`ChangedList::close`].
    pub fn record(&self, tile: TileCoord) {
        match &self.prefix {
            Some(prefix) => self.record_line(&format_args!("{prefix}/{tile}")),
            None => self.record_line(&tile),
        }
    }

    /// Records an object rewritten as a whole (a PMTiles archive), which CDNs invalidate per object.
    pub fn record_object(&self, name: &str) {
        self.record_line(&name);
    }

    fn record_line(&self, line: &dyn std::fmt::Display) {
        if let Some(inner) = &self.inner {
            let mut recorder = inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if recorder.error.is_none() {
                match writeln!(recorder.writer, "{line}") {
                    Ok(()) => recorder.lines += 1,
                    Err(err) => recorder.error = Some(err),
                }
            }
        }
    }

    /// Flushes the lines so far to disk (under the list's temporary name) and reports any write
    /// error; an output calls it before its state claims the tiles listed.
    pub fn sync(&self) -> Result<()> {
        self.flush(false)
    }

    /// Flushes the list to disk, moves it into place and reports any write error.
    pub fn close(&self) -> Result<()> {
        self.flush(true)
    }

    fn flush(&self, publish: bool) -> Result<()> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let mut recorder = inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut flushed = recorder
            .writer
            .flush()
            .and_then(|()| recorder.writer.get_ref().sync_data());
        if publish && !recorder.published && flushed.is_ok() && recorder.error.is_none() {
            flushed = super::durable::rename(&recorder.temporary, &recorder.path);
            recorder.published = flushed.is_ok();
        }
        match recorder.error.take().map_or(flushed, Err) {
            Ok(()) => Ok(()),
            Err(err) => Err(Error::File {
                path: recorder.path.clone(),
                message: format!("cannot write the changed-tile list: {err}"),
            }),
        }
    }
}
