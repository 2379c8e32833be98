//! Tile encoding for storage: gzip with fixed settings, so the same MVT always gives the same bytes
//! (skipping unchanged uploads and comparing reseeds with full seeds rely on it).
//!
//! Most tiles are a few kilobytes, where setting up a fresh compressor (and zeroing its tables) costs
//! more than compressing; so each thread keeps one compressor and resets it between tiles.

use std::cell::RefCell;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// The gzip level every output uses.
const LEVEL: u32 = 6;

/// A gzip member header: deflate, no name, no timestamp, unknown OS (so no machine leaves a trace).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

thread_local! {
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::new(LEVEL), false));
}

/// Gzip-compresses MVT bytes deterministically.
pub fn gzip(mvt: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(mvt.len() / 2 + 64);
    out.extend_from_slice(&GZIP_HEADER);
    COMPRESSOR.with(|compressor| {
        let mut compressor = compressor.borrow_mut();
        compressor.reset();
        loop {
            let consumed = compressor.total_in() as usize;
            out.reserve(mvt.len().saturating_sub(consumed) / 2 + 1024);
            let status = compressor
                .compress_vec(&mvt[consumed..], &mut out, FlushCompress::Finish)
                .expect("deflating into a growable buffer cannot fail");
            if status == Status::StreamEnd {
                break;
            }
        }
    });
    let mut crc = Crc::new();
    crc.update(mvt);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(mvt.len() as u32).to_le_bytes());
    out
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
        assert_eq!(gzip(&data), gzip(&data));
        assert_eq!(gunzip(&gzip(&data)), data);
        assert_eq!(gunzip(&gzip(b"")), b"");
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
        assert_eq!(gunzip(&gzip(&data)), data);
    }
}
