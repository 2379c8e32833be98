//! Encode: rendered tiles turned into the bytes an output stores (gzip with fixed settings, so the
//! same MVT always gives the same bytes at a given level: skipping unchanged uploads and comparing
//! reseeds with full seeds rely on it), checked against the tileset's size budget.
//!
//! Most tiles are a few kilobytes, where setting up a fresh compressor (and zeroing its tables) costs
//! more than compressing; so each thread keeps one compressor and resets it between tiles.

use std::cell::RefCell;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

use crate::error::{Error, Result};
use crate::render::Rendered;
use crate::tile::TileCoord;

/// The default gzip level. Measured with `/usr/bin/time oar-tiles seed` of the 100k-facility sample
/// at z0-14, unclustered: 79.7 MiB stored at level 3 against 76.9 MiB at level 6, while the tool's
/// user CPU time falls from 4.8 s to 3.6 s; level 1 (a fixed Huffman table in zlib-rs) stores 96.8 MiB.
pub const DEFAULT_LEVEL: u32 = crate::config::output::DEFAULT_COMPRESSION_LEVEL;

/// A gzip member header: deflate, no name, no timestamp, unknown OS (so no machine leaves a trace).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

thread_local! {
    static COMPRESSOR: RefCell<(u32, Compress)> =
        RefCell::new((DEFAULT_LEVEL, Compress::new(Compression::new(DEFAULT_LEVEL), false)));
}

/// Gzip-compresses MVT bytes deterministically at `level` (1 fastest to 9 smallest).
pub fn gzip(mvt: &[u8], level: u32) -> Vec<u8> {
    gzip_chunks(std::iter::once(mvt), level)
}

/// Gzip-compresses MVT bytes that arrive in pieces, as one member, without joining them first.
/// The same pieces always give the same bytes.
pub fn gzip_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]> + Clone, level: u32) -> Vec<u8> {
    let total: usize = chunks.clone().into_iter().map(<[u8]>::len).sum();
    let mut out = Vec::with_capacity(total / 2 + 64);
    out.extend_from_slice(&GZIP_HEADER);
    let mut crc = Crc::new();
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != level {
            *cell = (level, Compress::new(Compression::new(level), false));
        }
        let compressor = &mut cell.1;
        compressor.reset();
        let mut fed = 0usize;
        for chunk in chunks {
            crc.update(chunk);
            let start = compressor.total_in() as usize;
            while (compressor.total_in() as usize) - start < chunk.len() {
                let consumed = compressor.total_in() as usize - start;
                out.reserve((chunk.len() - consumed) / 2 + 1024);
                compressor
                    .compress_vec(&chunk[consumed..], &mut out, FlushCompress::None)
                    .expect("deflating into a growable buffer cannot fail");
            }
            fed += chunk.len();
        }
        debug_assert_eq!(fed, total);
        loop {
            out.reserve(1024);
            let status = compressor
                .compress_vec(&[], &mut out, FlushCompress::Finish)
                .expect("deflating into a growable buffer cannot fail");
            if status == Status::StreamEnd {
                break;
            }
        }
    });
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out
}

/// How rendered tiles are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// Gzip-compress (MBTiles always; directory and S3 unless `compress = false`).
    pub gzip: bool,
    /// Gzip level.
    pub level: u32,
}

/// A rendered tile with the bytes to store; `None` when it holds nothing.
pub type Encoded = (Rendered, Option<Vec<u8>>);

/// Tiles at least this large in a batch are compressed off the task that drives the renders.
pub const OFFLOAD_BYTES: usize = 64 * 1024;

impl Encoding {
    /// Encodes each rendered tile that holds something, releasing its MVT bytes as it goes.
    pub fn encode_all(self, results: Vec<Result<Rendered>>) -> Vec<Result<Encoded>> {
        results
            .into_iter()
            .map(|result| result.map(|rendered| self.encode(rendered)))
            .collect()
    }

    fn encode(self, mut rendered: Rendered) -> Encoded {
        if rendered.mvt.is_empty() {
            return (rendered, None);
        }
        let mvt = rendered.mvt.take();
        let data = if self.gzip {
            gzip_chunks(mvt.chunks(), self.level)
        } else {
            mvt.to_vec()
        };
        (rendered, Some(data))
    }

    /// Whether encoding these results is worth a blocking thread (large tiles, compressed).
    pub fn is_heavy(self, results: &[Result<Rendered>]) -> bool {
        let bytes: usize = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| r.mvt.len())
            .sum();
        self.gzip && bytes >= OFFLOAD_BYTES
    }
}

/// Stored bytes above which a tile is reported, or with `strict` fails the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeBudget {
    /// The budget in stored bytes.
    pub bytes: u64,
    /// Fail instead of reporting.
    pub strict: bool,
}

impl SizeBudget {
    /// `Ok(true)` when the tile is over budget and only to be reported; an error under `strict`.
    pub fn check(&self, tileset: &str, tile: TileCoord, stored: usize) -> Result<bool> {
        if stored as u64 <= self.bytes {
            return Ok(false);
        }
        if self.strict {
            return Err(Error::Render {
                tileset: tileset.to_string(),
                tile,
                message: format!(
                    "{} stored, over the size budget of {} (--strict-size)",
                    human_bytes(stored as u64),
                    human_bytes(self.bytes)
                ),
            });
        }
        Ok(true)
    }
}

/// `12.3 KiB` style sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut decoded)
            .unwrap();
        decoded
    }

    #[test]
    fn the_same_bytes_always_compress_the_same_and_round_trip() {
        let data = b"a tile, a tile, a tile".repeat(20);
        for level in [1, DEFAULT_LEVEL, 9] {
            assert_eq!(gzip(&data, level), gzip(&data, level));
            assert_eq!(gunzip(&gzip(&data, level)), data);
            assert_eq!(gunzip(&gzip(b"", level)), b"");
        }
        assert!(gzip(&data, 9).len() <= gzip(&data, 1).len());
    }

    #[test]
    fn pieces_compress_like_the_whole() {
        let data = b"a tile in pieces, ".repeat(5000);
        let pieces: Vec<&[u8]> = data.chunks(777).collect();
        let joined = gzip_chunks(pieces.iter().copied(), DEFAULT_LEVEL);
        assert_eq!(gunzip(&joined), data);
        assert_eq!(joined, gzip_chunks(pieces.iter().copied(), DEFAULT_LEVEL));
        assert_eq!(gunzip(&gzip_chunks(std::iter::empty(), 1)), b"");
    }

    #[test]
    fn large_incompressible_tiles_round_trip() {
        let mut state = 1u64;
        let data: Vec<u8> = (0..300_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert_eq!(gunzip(&gzip(&data, DEFAULT_LEVEL)), data);
    }
}
