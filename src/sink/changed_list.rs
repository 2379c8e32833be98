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
    writer: BufWriter<File>,
    error: Option<std::io::Error>,
}

impl ChangedList {
    /// A log that records nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Creates (truncates) the list file.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: format!("cannot create the changed-tile list: {e}"),
        })?;
        Ok(Self {
            inner: Some(Arc::new(Mutex::new(Recorder {
                path: path.to_path_buf(),
                writer: BufWriter::new(file),
                error: None,
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
                if let Err(err) = writeln!(recorder.writer, "{line}") {
                    recorder.error = Some(err);
                }
            }
        }
    }

    /// Flushes the list to disk and reports any write error; an output calls it before its
    /// state claims the tiles listed, so a power loss never loses a line a later run will not write.
    pub fn sync(&self) -> Result<()> {
        self.close()
    }

    /// Flushes the list to disk and reports any write error.
    pub fn close(&self) -> Result<()> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let mut recorder = inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let flushed = recorder
            .writer
            .flush()
            .and_then(|()| recorder.writer.get_ref().sync_data());
        match recorder.error.take().map_or(flushed, Err) {
            Ok(()) => Ok(()),
            Err(err) => Err(Error::File {
                path: recorder.path.clone(),
                message: format!("cannot write the changed-tile list: {err}"),
            }),
        }
    }
}
