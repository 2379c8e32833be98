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
    /// Outbox batches whose lines went into this list, marked taken once it is in place.
    taken: Arc<Mutex<Vec<Acknowledge>>>,
    /// Written before each tile's `z/x/y`, with a `/`: a partition's path inside the output.
    prefix: Option<Arc<str>>,
}

/// What marks lines the list took (from an outbox) as taken, once the list is in place.
pub type Acknowledge = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, Result<()>> + Send>;

/// The name under which `--changed-list` takes batches from the outboxes.
pub const CHANGED_LIST_CONSUMER: &str = "changed-list";

struct Recorder {
    path: PathBuf,
    /// Where the lines go until the list is closed and moved to `path`.
    temporary: PathBuf,
    /// `None` until the first line, for a recording made lazily.
    writer: Option<BufWriter<File>>,
    error: Option<std::io::Error>,
    /// Lines recorded so far.
    lines: u64,
    /// Whether `temporary` has been moved to `path` (or removed).
    published: bool,
    /// Where recorded lines are also handed, while a run purges them as they come.
    tap: Option<Arc<RecordedLines>>,
}

/// Lines as a sink records them, handed on while the run still writes: the tiles a writer records
/// only once they are served (`Home::stores_tile_by_tile`) can be purged
/// at once, before the run's slower tiles are done. The recording stays the durable record; this
/// is only a copy in memory, and a bounded one: while [`RecordedLines::CAP`] lines wait, the
/// writer never waits for whoever takes them, and the lines it records then are only in the
/// recording, where the run's delivery finds them ([`RecordedLines::overflowed`]).
#[derive(Default)]
pub struct RecordedLines {
    lines: Mutex<Vec<String>>,
    arrived: tokio::sync::Notify,
    closed: std::sync::atomic::AtomicBool,
    overflowed: std::sync::atomic::AtomicU64,
}

impl RecordedLines {
    /// Lines that may wait to be taken.
    pub const CAP: usize = 65_536;

    fn push(&self, line: String) {
        let mut lines = self
            .lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if lines.len() >= Self::CAP {
            self.overflowed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        lines.push(line);
        drop(lines);
        self.arrived.notify_one();
    }

    /// How many lines were left out while [`RecordedLines::CAP`] waited.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The lines recorded since the last call, waiting for one when there are none; `None` once
    /// [`RecordedLines::close`] was called and every line was taken.
    pub async fn next(&self) -> Option<Vec<String>> {
        loop {
            let lines = std::mem::take(
                &mut *self
                    .lines
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            if !lines.is_empty() {
                return Some(lines);
            }
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return None;
            }
            // `notify_one` keeps a permit when nobody waits, so a line pushed between the check
            // above and this wait is not missed.
            self.arrived.notified().await;
        }
    }

    /// Ends the stream: [`RecordedLines::next`] returns what is left, then `None`.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.arrived.notify_one();
    }
}

impl Recorder {
    /// A recorder of nothing yet, shared by the list's clones; `writer` is `None` for a file made
    /// at the first line.
    fn shared(
        path: &Path,
        temporary: PathBuf,
        writer: Option<BufWriter<File>>,
    ) -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder {
            path: path.to_path_buf(),
            temporary,
            writer,
            error: None,
            lines: 0,
            published: false,
            tap: None,
        }))
    }
}

impl Drop for Recorder {
    /// A run that ends without closing the list (it failed) still publishes the tiles it changed,
    /// for whoever invalidates them; one that changed nothing (a run refused for the output's
    /// lock, say) leaves the list another run may be writing as it is.
    fn drop(&mut self) {
        if self.published {
            return;
        }
        let flushed = self.writer.as_mut().is_some_and(|w| w.flush().is_ok());
        if self.lines > 0 && flushed {
            let _ = crate::store::durable::rename(&self.temporary, &self.path);
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
        let file = crate::store::durable::create_new(&temporary).map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: format!(
                "cannot create the changed-tile list (as {}): {e}",
                temporary.display()
            ),
        })?;
        Ok(Self {
            inner: Some(Recorder::shared(
                path,
                temporary,
                Some(BufWriter::new(file)),
            )),
            prefix: None,
            taken: Arc::default(),
        })
    }

    /// A recording (an outbox batch) whose file, and the one folder it goes into, are made only
    /// when the first line comes: a run that changes nothing leaves nothing behind.
    pub fn create_lazily(path: &Path) -> Self {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{}.writing", std::process::id()));
        Self {
            inner: Some(Recorder::shared(path, path.with_file_name(name), None)),
            prefix: None,
            taken: Arc::default(),
        }
    }

    /// Hands every line recorded from now on to the returned stream too (`None` for a disabled
    /// list), so a run can act on them while it still writes.
    pub fn tap(&self) -> Option<Arc<RecordedLines>> {
        let inner = self.inner.as_ref()?;
        let tap = Arc::new(RecordedLines::default());
        inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .tap = Some(tap.clone());
        Some(tap)
    }

    /// Whether it records anything (a disabled list does not).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Adds lines an outbox holds (a tile's `z/x/y`, under this list's prefix, or an object's
    /// name) and keeps `acknowledge`, which marks them taken, for when the list is in place
    /// ([`ChangedList::close_and_acknowledge`]).
    pub fn take_lines(&self, lines: impl IntoIterator<Item = String>, acknowledge: Acknowledge) {
        if self.inner.is_none() {
            return;
        }
        for line in lines {
            match line.parse::<TileCoord>() {
                Ok(tile) => self.record(tile),
                Err(_) => self.record_object(&line),
            }
        }
        self.taken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(acknowledge);
    }

    /// Closes the list (see [`ChangedList::close`]) and then marks the outbox batches it took as
    /// taken: when the list cannot be written, they stay for the next run's list.
    pub async fn close_and_acknowledge(&self) -> Result<()> {
        self.close()?;
        let taken = std::mem::take(
            &mut *self
                .taken
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for acknowledge in taken {
            acknowledge().await?;
        }
        Ok(())
    }

    /// Drops a recording: what it holds was never kept by the output.
    pub fn discard_recording(&self) {
        if let Some(inner) = &self.inner {
            let mut recorder = inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            recorder.published = true;
            recorder.writer = None;
            let _ = std::fs::remove_file(&recorder.temporary);
        }
    }

    /// Closes a recording (an outbox batch): moves it into place when it holds lines, removes it
    /// otherwise, and returns how many lines it holds.
    pub fn close_recording(&self) -> Result<u64> {
        let Some(inner) = &self.inner else {
            return Ok(0);
        };
        let lines = {
            let mut recorder = inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if recorder.lines == 0 && recorder.error.is_none() {
                recorder.published = true;
                let _ = std::fs::remove_file(&recorder.temporary);
                return Ok(0);
            }
            recorder.lines
        };
        self.close()?;
        Ok(lines)
    }

    /// The same list, naming tiles as `PREFIX/z/x/y`: those of a partition, under its path.
    pub fn under(&self, prefix: &str) -> Self {
        Self {
            inner: self.inner.clone(),
            prefix: Some(prefix.into()),
            taken: self.taken.clone(),
        }
    }

    /// Records one changed tile; a write error is kept and reported by [`ChangedList::close`].
    pub fn record(&self, tile: TileCoord) {
        match &self.prefix {
            Some(prefix) => self.record_line(&format_args!("{prefix}/{tile}")),
            None => self.record_line(&tile),
        }
    }

    /// Records an object rewritten as a whole, which CDNs invalidate per object: an archive by its
    /// path or URL, a document (`tiles.json`) by its name in the output, under the list's prefix.
    pub fn record_object(&self, name: &str) {
        match &self.prefix {
            Some(prefix) if !name.contains(['/', ':']) => {
                self.record_line(&format_args!("{prefix}/{name}"))
            }
            _ => self.record_line(&name),
        }
    }

    fn record_line(&self, line: &dyn std::fmt::Display) {
        if let Some(inner) = &self.inner {
            let mut recorder = inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if recorder.error.is_none() && recorder.writer.is_none() {
                let opened = recorder
                    .temporary
                    .parent()
                    .map_or(Ok(()), |folder| match std::fs::create_dir(folder) {
                        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
                        _ => Ok(()),
                    })
                    .and_then(|()| crate::store::durable::create_new(&recorder.temporary));
                match opened {
                    Ok(file) => recorder.writer = Some(BufWriter::new(file)),
                    Err(err) => recorder.error = Some(err),
                }
            }
            if recorder.error.is_none() {
                let written = match recorder.writer.as_mut() {
                    Some(writer) => writeln!(writer, "{line}"),
                    None => Ok(()),
                };
                match written {
                    Ok(()) => {
                        recorder.lines += 1;
                        if let Some(tap) = &recorder.tap {
                            tap.push(line.to_string());
                        }
                    }
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
        let mut flushed = match recorder.writer.as_mut() {
            Some(writer) => writer.flush().and_then(|()| writer.get_ref().sync_data()),
            None => Ok(()),
        };
        let has_file = recorder.writer.is_some();
        if publish && has_file && !recorder.published && flushed.is_ok() && recorder.error.is_none()
        {
            flushed = crate::store::durable::rename(&recorder.temporary, &recorder.path);
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
