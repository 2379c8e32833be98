//! The single writer: one thread owns the sink and applies what the renderers send it through a
//! bounded channel, so memory stays flat and SQLite sees one writer.

use tokio::sync::mpsc;

use super::Sink;
use crate::error::{Error, Result};
use crate::tile::TileCoord;

/// Encoded tiles waiting for the writer; small, so memory stays flat whatever the job's size.
pub const WRITE_QUEUE: usize = 256;

/// What the writer thread is asked to do.
#[derive(Debug)]
pub enum WriterCommand {
    /// Store a tile; with the children it found, when a walk journals its progress.
    Write(TileCoord, Vec<u8>, Option<[bool; 4]>),
    /// Remove a tile that became empty.
    Delete(TileCoord),
    /// A walked tile held nothing; journal it with the children it found.
    Visited(TileCoord, [bool; 4]),
}

/// The sending side, which names the output when the writer has stopped.
#[derive(Clone)]
pub struct Writer {
    sender: mpsc::Sender<WriterCommand>,
    output: String,
}

impl Writer {
    /// Hands a command to the writer thread, waiting while its queue is full.
    pub async fn send(&self, command: WriterCommand) -> Result<()> {
        self.sender
            .send(command)
            .await
            .map_err(|_| Error::output(&self.output, "the writer stopped"))
    }
}

/// The writer's sink once every sender is dropped, or the error that stopped it; the channel
/// closes without a value only when the thread died.
pub type Written = tokio::sync::oneshot::Receiver<Result<Box<dyn Sink>>>;

/// A writer whose commands the caller receives instead of a sink: `watch`'s low lane renders
/// tiles into memory for a later cycle to store.
pub fn in_memory(output: &str) -> (Writer, mpsc::Receiver<WriterCommand>) {
    let (sender, receiver) = mpsc::channel(WRITE_QUEUE);
    let writer = Writer {
        sender,
        output: output.to_string(),
    };
    (writer, receiver)
}

/// Runs the sink on a thread of its own, named `oar-tiles-writer` (so a profile or the benchmark
/// tells its CPU apart: it is one of the two threads a run cannot spread), and returns the sender
/// that feeds it; [`Written`] yields the sink back once every sender is dropped, so the caller
/// decides between finishing and aborting.
pub fn spawn(mut sink: Box<dyn Sink>, output: &str) -> (Writer, Written) {
    let (sender, mut receiver) = mpsc::channel(WRITE_QUEUE);
    let (done, written) = tokio::sync::oneshot::channel();
    let work = move || {
        let outcome = (|| {
            while let Some(command) = receiver.blocking_recv() {
                let done = match command {
                    WriterCommand::Write(tile, data, children) => sink
                        .write_tile(tile, &data)
                        .and_then(|()| children.map_or(Ok(()), |c| sink.journal(tile, c, true))),
                    WriterCommand::Delete(tile) => sink.delete_tile(tile),
                    WriterCommand::Visited(tile, children) => sink.journal(tile, children, false),
                };
                if let Err(err) = done {
                    sink.abort();
                    return Err(err);
                }
            }
            Ok(sink)
        })();
        let _ = done.send(outcome);
    };
    if let Err(err) = std::thread::Builder::new()
        .name("oar-tiles-writer".into())
        .spawn(work)
    {
        // The closure and its sender are gone with the thread that never ran: `Written` says the
        // writer stopped.
        tracing::error!("cannot start the writer thread of `{output}`: {err}");
    }
    let writer = Writer {
        sender,
        output: output.to_string(),
    };
    (writer, written)
}
