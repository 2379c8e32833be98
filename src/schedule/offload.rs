//! Compressing a statement's tiles off the thread that drives the renders. That one thread bounds
//! how many database cores one process can keep busy, and compression was the largest part of its
//! work; handing each small tile to the blocking pool alone would cost more in handoffs than the
//! tile costs to compress, so light tiles go in chunks of about [`CHUNK_BYTES`] of MVT.

use std::cell::RefCell;
use std::collections::HashMap;

use tokio::task::{JoinError, JoinHandle};

use crate::encode::{Encoded, Encoding};
use crate::render::Rendered;
use crate::tile::{tile_key, TileCoord};

/// MVT bytes gathered before a chunk of light tiles is sent to be compressed: a few dozen tiles at
/// the deep zooms, so the handoff is paid once per chunk rather than per tile, while a statement
/// holds little uncompressed data at any time.
const CHUNK_BYTES: usize = 128 * 1024;

/// The light tiles of one statement, compressed in chunks on the blocking pool as they arrive.
pub(super) struct Chunks {
    encoding: Encoding,
    gathering: RefCell<(Vec<Rendered>, usize)>,
    sent: RefCell<Vec<JoinHandle<Vec<Encoded>>>>,
}

impl Chunks {
    pub(super) fn new(encoding: Encoding) -> Self {
        Chunks {
            encoding,
            gathering: RefCell::new((Vec::new(), 0)),
            sent: RefCell::new(Vec::new()),
        }
    }

    /// Takes a tile to compress later; a full chunk is sent off at once.
    pub(super) fn push(&self, rendered: Rendered) {
        let mut gathering = self.gathering.borrow_mut();
        gathering.1 += rendered.mvt.len();
        gathering.0.push(rendered);
        if gathering.1 >= CHUNK_BYTES {
            let chunk = std::mem::take(&mut gathering.0);
            gathering.1 = 0;
            drop(gathering);
            self.send(chunk);
        }
    }

    fn send(&self, chunk: Vec<Rendered>) {
        let encoding = self.encoding;
        let job = tokio::task::spawn_blocking(move || {
            chunk
                .into_iter()
                .map(|rendered| encoding.encode(rendered))
                .collect()
        });
        self.sent.borrow_mut().push(job);
    }

    /// Every tile taken, compressed, by tile. A tile a failed attempt of the statement already
    /// passed in may be there twice; both copies are the same bytes.
    pub(super) async fn finish(self) -> Result<HashMap<u64, Encoded>, JoinError> {
        let rest = std::mem::take(&mut self.gathering.borrow_mut().0);
        if !rest.is_empty() {
            self.send(rest);
        }
        let mut done = HashMap::new();
        for job in self.sent.into_inner() {
            let encoded = job.await?;
            done.extend(
                encoded
                    .into_iter()
                    .map(|encoded| (tile_key(encoded.0.tile), encoded)),
            );
        }
        Ok(done)
    }
}

/// Takes the compressed tile `tile` out of `done`.
pub(super) fn take(done: &mut HashMap<u64, Encoded>, tile: TileCoord) -> Option<Encoded> {
    done.remove(&tile_key(tile))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::render::Mvt;

    fn rendered(tile: TileCoord, size: usize) -> Rendered {
        let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        Rendered {
            tile,
            mvt: Mvt::from_bytes(bytes),
            children: [false; 4],
            elapsed: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn every_tile_comes_back_compressed_as_alone_in_several_chunks() {
        let encoding = Encoding {
            gzip: true,
            level: 3,
        };
        let chunks = Chunks::new(encoding);
        let tiles: Vec<TileCoord> = (0..40u32)
            .map(|x| TileCoord::new(6, x, 5).unwrap())
            .collect();
        for tile in &tiles {
            chunks.push(rendered(*tile, 10_000));
        }
        // A failed attempt's tile taken again: the same bytes, kept once.
        chunks.push(rendered(tiles[3], 10_000));
        assert_eq!(
            chunks.sent.borrow().len(),
            2,
            "410,000 bytes: two full chunks, the rest at finish"
        );
        let mut done = chunks.finish().await.unwrap();
        for tile in &tiles {
            let (got, data) = take(&mut done, *tile).unwrap();
            assert_eq!(got.tile, *tile);
            let (_, alone) = encoding.encode(rendered(*tile, 10_000));
            assert_eq!(data, alone, "{tile}");
        }
        assert!(done.is_empty());
    }
}
