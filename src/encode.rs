//! Tile encoding for storage: gzip with fixed settings, so the same MVT always gives the same bytes
//! (skipping unchanged uploads and comparing reseeds with full seeds rely on it).

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

/// The gzip level every output uses.
const LEVEL: u32 = 6;

/// Gzip-compresses MVT bytes deterministically (no timestamp, no file name in the header).
pub fn gzip(mvt: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(mvt.len() / 2 + 64),
        Compression::new(LEVEL),
    );
    encoder
        .write_all(mvt)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_same_bytes_always_compress_the_same_and_round_trip() {
        let data = b"a tile, a tile, a tile".repeat(20);
        assert_eq!(gzip(&data), gzip(&data));
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&gzip(&data)[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, data);
    }
}
