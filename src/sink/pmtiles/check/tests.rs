use std::io::Read;

use super::*;
use pmtiles::{Compression, PmTilesWriter, TileType};

/// An archive as the sink writes one: gzip MVT tiles of zooms 0-2 in tile-id order.
fn archive() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = PmTilesWriter::new(TileType::Mvt)
        .precompressed(Compression::Gzip)
        .min_zoom(0)
        .max_zoom(2)
        .bounds(-180.0, -85.0, 180.0, 85.0)
        .center(0.0, 0.0)
        .center_zoom(1)
        .metadata(r#"{"vector_layers":[{"id":"sites","fields":{}}]}"#)
        .create(&mut out)
        .unwrap();
    let mut ids: Vec<(u64, pmtiles::TileCoord)> = (0..=2u8)
        .flat_map(|z| (0..1u32 << z).flat_map(move |x| (0..1u32 << z).map(move |y| (z, x, y))))
        .map(|(z, x, y)| {
            let coord = pmtiles::TileCoord::new(z, x, y).unwrap();
            (pmtiles::TileId::from(coord).value(), coord)
        })
        .collect();
    ids.sort_by_key(|(id, _)| *id);
    for (id, coord) in ids {
        let tile = crate::encode::gzip(&[0x1a, 0x02, 0x78, id as u8], 6);
        writer.add_tile(coord, &tile).unwrap();
    }
    writer.finalize().unwrap();
    out.into_inner()
}

fn check(bytes: &[u8]) -> Vec<String> {
    let mut file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut file, bytes).unwrap();
    check_file(&file)
        .unwrap()
        .into_iter()
        .map(|f| f.to_string())
        .collect()
}

#[test]
fn an_archive_as_written_has_no_findings() {
    assert_eq!(check(&archive()), Vec::<String>::new());
}

#[test]
fn a_root_directory_decodes_to_the_tiles_written() {
    let bytes = archive();
    let header = Header::parse(&bytes[..HEADER_LEN].try_into().unwrap());
    assert_eq!((header.version, header.addressed), (3, 21));
    let root = &bytes[header.root.offset as usize..][..header.root.length as usize];
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(root)
        .read_to_end(&mut inflated)
        .unwrap();
    let entries = decode_directory(&inflated).unwrap();
    assert_eq!(entries.len(), 21);
    assert!(entries.windows(2).all(|w| w[0].tile_id < w[1].tile_id));
    assert_eq!(entries[0].offset, 0);
}

#[test]
fn a_short_or_foreign_file_is_a_finding_not_an_error() {
    let bytes = archive();
    assert!(check(&bytes[..60])[0].contains("shorter than a PMTiles header"));
    assert!(check(b"SQLite format 3\0")[0].contains("not a PMTiles archive"));
    let cut = check(&bytes[..bytes.len() - 10]);
    assert!(
        cut.iter()
            .any(|f| f.contains("tile data") && f.contains("past the end")),
        "{cut:?}"
    );
}

#[test]
fn a_directory_that_does_not_decode_is_named() {
    assert!(decode_directory(&[5, 1])
        .unwrap_err()
        .to_string()
        .contains("claims 5 entries"));
    assert!(decode_directory(&[1, 0, 1, 1, 0])
        .unwrap_err()
        .to_string()
        .contains("first entry's offset"));
    assert!(decode_directory(&[1, 0, 1, 1, 1, 9])
        .unwrap_err()
        .to_string()
        .contains("follow its last entry"));
    let mut bytes = archive();
    // Gzip's header says the stream is deflate; damage it.
    bytes[HEADER_LEN + 2] = 0;
    let found = check(&bytes);
    assert!(
        found[0].contains("the root directory is gzip but does not inflate"),
        "{found:?}"
    );
}
