//! Removing the old tiles a reseed replaced, beside the writer.
//!
//! A replaced tile is exchanged with its new file ([`durable::swap_unsynced`]), which leaves the old
//! bytes under a temporary name. Removing that file frees its blocks, and on ext4 (mounted with
//! `discard` here) an unlink waits on the journal: about 0.2-0.3 ms each with little CPU, which
//! for 94,000 replaced tiles was most of a reseed's writer. A thread of its own removes them while
//! the writer goes on, through a bounded queue so memory stays flat; the sink waits for it before
//! it ends, so no temporary outlives the run. One killed meanwhile leaves them to the next open,
//! which removes a gone writer's temporaries (`leftovers.rs`). They go over in batches: one
//! hand-over per file woke the thread for each (two futex calls a tile, 190,000 in a reseed of the
//! 100k sample's 95,000 tiles, about 1 s of the writer's and the reaper's CPU on tmpfs).

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use crate::store::durable;

/// Old files handed over at once.
const REAP_BATCH: usize = 64;

/// Batches waiting for removal at most (8,192 files); the writer waits when the reaper is this
/// far behind.
const REAP_QUEUE: usize = 128;

/// The thread removing replaced tiles, started at the first one.
#[derive(Default)]
pub(super) struct Reaper {
    running: Option<(SyncSender<Vec<PathBuf>>, JoinHandle<()>)>,
    batch: Vec<PathBuf>,
}

impl Reaper {
    /// Hands `old` (a temporary file holding a replaced tile) over for removal. Without a thread
    /// (it could not start), removes it here.
    pub fn remove(&mut self, old: PathBuf) {
        self.batch.push(old);
        if self.batch.len() >= REAP_BATCH {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        if batch.is_empty() {
            return;
        }
        if self.running.is_none() {
            self.running = start();
        }
        let batch = match &self.running {
            Some((sender, _)) => match sender.send(batch) {
                Ok(()) => return,
                Err(returned) => returned.0,
            },
            None => batch,
        };
        batch.into_iter().for_each(remove);
    }

    /// Waits until every file handed over is removed.
    pub fn drain(&mut self) {
        self.hand_over();
        if let Some((sender, thread)) = self.running.take() {
            drop(sender);
            let _ = thread.join();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.drain();
    }
}

fn start() -> Option<(SyncSender<Vec<PathBuf>>, JoinHandle<()>)> {
    let (sender, receiver) = sync_channel::<Vec<PathBuf>>(REAP_QUEUE);
    let thread = std::thread::Builder::new()
        .name("oar-tiles-reaper".into())
        .spawn(move || receiver.into_iter().flatten().for_each(remove));
    match thread {
        Ok(thread) => Some((sender, thread)),
        Err(err) => {
            tracing::debug!("no thread to remove replaced tiles beside the writer: {err}");
            None
        }
    }
}

/// A file that cannot be removed holds only a replaced tile under a temporary name: the run's
/// tiles are right, so it is said and left for the next open to remove.
fn remove(old: PathBuf) {
    if let Err(err) = durable::remove_file_if_there(&old) {
        tracing::warn!("{err}");
    }
}
