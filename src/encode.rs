//! Encode: rendered tiles turned into the bytes an output stores (gzip with fixed settings, so the
//! same MVT always gives the same bytes at a given level: skipping unchanged uploads and comparing
//! reseeds with full seeds rely on it), checked against the tileset's size budget.
//!
//! Compression is libdeflate's, on whole buffers: at the same level it compresses MVT smaller than
//! zlib and in about half the CPU time (measured on the sample when it was chosen), and the tool's
//! CPU beside PostgreSQL's is what limits a seed on a small machine; only tiles that arrive in pieces
//! (over a megabyte) are streamed through zlib-rs as their pieces arrive. Most tiles are a few kilobytes,
//! where setting up a fresh compressor costs more than compressing; so each thread keeps one.

use std::cell::RefCell;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use libdeflater::{CompressionLvl, Compressor};

use crate::error::{Error, Result};
use crate::render::Rendered;
use crate::tile::TileCoord;

/// The default gzip level. Measured with zlib (before libdeflate) on the 100k-facility sample at
/// z0-14, unclustered: 79.7 MiB stored at level 3 against 76.9 MiB at level 6, while the tool's user
/// CPU time fell from 4.8 s to 3.6 s.
pub const DEFAULT_LEVEL: u32 = crate::config::output::DEFAULT_COMPRESSION_LEVEL;

/// A gzip member header: deflate, no name, no timestamp, unknown OS (so no machine leaves a trace).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

thread_local! {
    static COMPRESSOR: RefCell<Option<(u32, Compressor)>> = const { RefCell::new(None) };
    static STREAM: RefCell<(u32, Compress)> =
        RefCell::new((DEFAULT_LEVEL, Compress::new(Compression::new(DEFAULT_LEVEL), false)));
}

/// Gzip-compresses MVT bytes deterministically at `level` (1 fastest to 9 smallest).
pub fn gzip(mvt: &[u8], level: u32) -> Vec<u8> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(current, _)| *current != level) {
            let lvl = CompressionLvl::new(level.clamp(1, 12) as i32)
                .expect("levels 1 to 12 are libdeflate's");
            *cell = Some((level, Compressor::new(lvl)));
        }
        let (_, compressor) = cell.as_mut().expect("set above");
        let mut out = Vec::new();
        out.extend_from_slice(&GZIP_HEADER);
        // Tiles compress to well under half their size: trying with that much room first keeps a
        // tile of tens of megabytes from reserving its whole size again. The outcome does not
        // depend on the room given, only whether it fits.
        let fits = deflate_into(compressor, mvt, &mut out, mvt.len() / 2 + 1024);
        if !fits {
            let bound = compressor.deflate_compress_bound(mvt.len());
            assert!(
                deflate_into(compressor, mvt, &mut out, bound),
                "libdeflate's bound always fits"
            );
        }
        out.extend_from_slice(&libdeflater::crc32(mvt).to_le_bytes());
        out.extend_from_slice(&(mvt.len() as u32).to_le_bytes());
        out
    })
}

/// A gzip member of MVT bytes that arrive in pieces (tiles over
/// [`crate::render::sql::MVT_CHUNK`]), written piece by piece as they come on the thread's zlib-rs
/// compressor: libdeflate needs the whole tile in one buffer, and joining the pieces of a z0 tile of
/// 90 MB (1M facilities) took the peak RSS from 228 to 269 MB. The same pieces always give the same
/// bytes, however long each took to arrive. One stream at a time per thread.
struct GzipStream {
    out: Vec<u8>,
    crc: Crc,
}

impl GzipStream {
    fn new(level: u32) -> Self {
        STREAM.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.0 != level {
                *cell = (level, Compress::new(Compression::new(level), false));
            }
            cell.1.reset();
        });
        GzipStream {
            out: GZIP_HEADER.to_vec(),
            crc: Crc::new(),
        }
    }

    fn write(&mut self, chunk: &[u8]) {
        self.crc.update(chunk);
        let out = &mut self.out;
        STREAM.with(|cell| {
            let compressor = &mut cell.borrow_mut().1;
            let start = compressor.total_in() as usize;
            while (compressor.total_in() as usize) - start < chunk.len() {
                let consumed = compressor.total_in() as usize - start;
                out.reserve((chunk.len() - consumed) / 2 + 1024);
                compressor
                    .compress_vec(&chunk[consumed..], out, FlushCompress::None)
                    .expect("deflating into a growable buffer cannot fail");
            }
        });
    }

    fn finish(mut self) -> Vec<u8> {
        let out = &mut self.out;
        STREAM.with(|cell| {
            let compressor = &mut cell.borrow_mut().1;
            loop {
                out.reserve(1024);
                let status = compressor
                    .compress_vec(&[], out, FlushCompress::Finish)
                    .expect("deflating into a growable buffer cannot fail");
                if status == Status::StreamEnd {
                    break;
                }
            }
        });
        let total = self.crc.amount();
        self.out.extend_from_slice(&self.crc.sum().to_le_bytes());
        self.out.extend_from_slice(&total.to_le_bytes());
        self.out
    }
}

/// Deflates `data` after the header already in `out`, with `room` bytes for it; false when it
/// does not fit (and `out` holds only the header again).
fn deflate_into(compressor: &mut Compressor, data: &[u8], out: &mut Vec<u8>, room: usize) -> bool {
    let header = out.len();
    out.resize(header + room, 0);
    match compressor.deflate_compress(data, &mut out[header..]) {
        Ok(written) => {
            out.truncate(header + written);
            true
        }
        Err(_) => {
            out.truncate(header);
            false
        }
    }
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

/// Tiles at least this large are compressed off the task that drives the renders.
pub const OFFLOAD_BYTES: usize = 64 * 1024;

impl Encoding {
    /// The bytes to store for a rendered tile (`None` when it holds nothing), releasing its MVT
    /// bytes.
    pub fn encode(self, mut rendered: Rendered) -> Encoded {
        if rendered.mvt.is_empty() {
            return (rendered, None);
        }
        let mvt = rendered.mvt.take();
        let data = match (self.gzip, mvt.single()) {
            (true, Some(bytes)) => gzip(bytes, self.level),
            (true, None) => {
                let mut stream = GzipStream::new(self.level);
                mvt.for_each_piece(|piece| stream.write(piece));
                stream.finish()
            }
            (false, _) => mvt.into_bytes(),
        };
        (rendered, Some(data))
    }

    /// Whether encoding this tile must run on a blocking thread: its pieces are still arriving, or
    /// it is large and compressed.
    pub fn is_heavy(self, rendered: &Rendered) -> bool {
        rendered.mvt.is_arriving() || (self.gzip && rendered.mvt.len() >= OFFLOAD_BYTES)
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

/// Why [`gunzip_capped`] gave no bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inflate {
    /// The stream is cut short or corrupt: the decoder's words.
    Damaged(String),
    /// The stream inflates to more than the cap it was given, in bytes.
    OverCap(u64),
}

impl Inflate {
    /// The failure as the end of a sentence whose subject is the stream's owner ("the metadata
    /// …", "the tile …").
    pub fn describe(&self) -> String {
        match self {
            Inflate::Damaged(e) => format!("is gzip but does not inflate (cut or corrupt): {e}"),
            Inflate::OverCap(cap) => format!(
                "inflates past the {} cap: refused as a possible gzip bomb",
                human_bytes(*cap).replace(".0 ", " ")
            ),
        }
    }
}

/// The inflated bytes of a gzip stream (members concatenated, as gzip allows), stopping at `cap`
/// bytes: gzip compresses a run of zeros about a thousand times, so a few megabytes on disk could
/// otherwise take gigabytes of memory. Everything that inflates what an output holds (tiles,
/// PMTiles directories and metadata) comes through here.
pub fn gunzip_capped(bytes: &[u8], cap: u64) -> std::result::Result<Vec<u8>, Inflate> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| Inflate::Damaged(e.to_string()))?;
    if out.len() as u64 > cap {
        return Err(Inflate::OverCap(cap));
    }
    Ok(out)
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

    #[test]
    fn a_stream_inflates_up_to_its_cap_and_no_further() {
        let data = vec![0u8; 3 << 20];
        let bytes = gzip(&data, DEFAULT_LEVEL);
        assert_eq!(gunzip_capped(&bytes, 3 << 20).as_deref(), Ok(&data[..]));
        assert_eq!(
            gunzip_capped(&bytes, (3 << 20) - 1),
            Err(Inflate::OverCap((3 << 20) - 1))
        );
        assert_eq!(
            Inflate::OverCap(32 << 20).describe(),
            "inflates past the 32 MiB cap: refused as a possible gzip bomb"
        );
        assert!(matches!(
            gunzip_capped(&bytes[..bytes.len() / 2], 3 << 20),
            Err(Inflate::Damaged(_))
        ));
    }

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
        let encoded = || {
            let pieces = data.chunks(777).map(<[u8]>::to_vec).collect();
            let encoding = Encoding {
                gzip: true,
                level: DEFAULT_LEVEL,
            };
            encoding
                .encode(rendered(crate::render::Mvt::from_pieces(pieces)))
                .1
                .unwrap()
        };
        assert_eq!(gunzip(&encoded()), data);
        assert_eq!(encoded(), encoded());
        assert_eq!(gunzip(&GzipStream::new(1).finish()), b"");
    }

    /// Encodes `pieces` as a statement's rows bring them: the first held, the others sent over a
    /// channel one at a time while the encoder already works on a thread of its own.
    fn encode_arriving(encoding: Encoding, pieces: &[Vec<u8>]) -> Vec<u8> {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let arriving = rendered(crate::render::Mvt::arriving(
            vec![pieces[0].clone()],
            receiver,
        ));
        assert!(
            encoding.is_heavy(&arriving),
            "taking pieces that arrive blocks"
        );
        let encoder = std::thread::spawn(move || encoding.encode(arriving).1.unwrap());
        for piece in &pieces[1..] {
            sender.blocking_send(piece.clone()).unwrap();
        }
        drop(sender);
        encoder.join().unwrap()
    }

    fn rendered(mvt: crate::render::Mvt) -> Rendered {
        Rendered {
            tile: TileCoord::new(0, 0, 0).unwrap(),
            mvt,
            children: [false; 4],
            elapsed: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn pieces_still_arriving_compress_like_pieces_held() {
        let data = b"a tile arriving in pieces, ".repeat(4000);
        let pieces: Vec<Vec<u8>> = data.chunks(1000).map(<[u8]>::to_vec).collect();
        let encoding = Encoding {
            gzip: true,
            level: DEFAULT_LEVEL,
        };
        let streamed = encode_arriving(encoding, &pieces);
        let held = encoding
            .encode(rendered(crate::render::Mvt::from_pieces(pieces.clone())))
            .1
            .unwrap();
        assert_eq!(streamed, held);
        assert_eq!(gunzip(&streamed), data);
        let plain = Encoding {
            gzip: false,
            ..encoding
        };
        assert_eq!(encode_arriving(plain, &pieces), data);
    }

    /// Also the path where the first try's room (half the size) is too small.
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
