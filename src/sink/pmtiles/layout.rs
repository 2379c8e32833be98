//! How a PMTiles v3 archive lies on disk: the fixed 127-byte header and the directories'
//! columns of varints, decoded field by field so that the check can name what is damaged, and so
//! that the reader inflates directories and metadata under a cap of its own choosing (the
//! `pmtiles` crate inflates them whole, and a gzip bomb of a few megabytes in either took
//! gigabytes of memory).

use integer_encoding::VarInt;

use crate::error::{Error, Result};
use crate::tile::TileCoord;

/// A v3 header's size.
pub(super) const HEADER_LEN: usize = 127;

/// A directory or the metadata may inflate to at most this. The largest real directories are a
/// few megabytes (a planet's leaves, each of some hundred thousand entries, so that the root stays
/// within 16 KiB) and metadata is a JSON object of a few kilobytes here, so the cap leaves a wide
/// margin while keeping a hostile archive's cost to tens of megabytes.
pub(super) const SECTION_CAP: u64 = 32 << 20;

/// A directory's or the metadata's bytes as stored, inflated as the header's internal
/// compression says (none or gzip) under [`SECTION_CAP`]; the error ends a sentence whose
/// subject is the part ("the metadata inflates past …").
pub(super) fn inflate_section(
    internal_compression: u8,
    stored: Vec<u8>,
) -> std::result::Result<Vec<u8>, SectionProblem> {
    match internal_compression {
        1 if stored.len() as u64 > SECTION_CAP => Err(SectionProblem::PastCap(stored.len())),
        1 => Ok(stored),
        2 => crate::encode::gunzip_capped(&stored, SECTION_CAP).map_err(SectionProblem::Inflate),
        other => Err(SectionProblem::Compression(other)),
    }
}

/// Why a directory or the metadata gave no bytes; said as the end of a sentence whose subject is
/// the part.
#[derive(Debug, thiserror::Error)]
pub(super) enum SectionProblem {
    /// Stored uncompressed in more bytes than the cap.
    #[error("is {0} bytes, past the {cap} MiB cap on PMTiles directories and metadata: refused", cap = SECTION_CAP >> 20)]
    PastCap(usize),
    /// Gzip that does not inflate, or inflates past the cap.
    #[error("{}", .0.describe())]
    Inflate(crate::encode::Inflate),
    /// A compression code this tool does not read.
    #[error("is compressed with code {0}, which this tool cannot decode (it reads none and gzip)")]
    Compression(u8),
}

/// Why a directory does not decode; said as a clause about the directory.
#[derive(Debug, thiserror::Error)]
pub(super) enum DirectoryProblem {
    /// A varint runs past the end or past 64 bits.
    #[error("its {what} varint at byte {at} is cut short or overlong")]
    Varint {
        /// Which column's varint.
        what: &'static str,
        /// Where it starts.
        at: usize,
    },
    /// More entries than the bytes can hold.
    #[error("it claims {count} entries but its {bytes} bytes hold at most {room}")]
    Count {
        /// Entries claimed.
        count: u64,
        /// The directory's size.
        bytes: usize,
        /// Entries that fit.
        room: u64,
    },
    /// The first entry's offset is 0, "right after the previous one", with no previous one.
    #[error("its first entry's offset says \"right after the previous one\"")]
    FirstOffset,
    /// Bytes past the last column.
    #[error("{0} bytes follow its last entry")]
    Trailing(usize),
}

/// A section of the archive as the header places it.
#[derive(Clone, Copy)]
pub(super) struct Section {
    pub(super) name: &'static str,
    pub(super) offset: u64,
    pub(super) length: u64,
}

/// The header's fields (spec v3, section 3).
pub(super) struct Header {
    pub(super) version: u8,
    pub(super) root: Section,
    pub(super) metadata: Section,
    pub(super) leaves: Section,
    pub(super) data: Section,
    pub(super) addressed: u64,
    pub(super) entries: u64,
    pub(super) contents: u64,
    pub(super) clustered: u8,
    pub(super) internal_compression: u8,
    pub(super) tile_compression: u8,
    pub(super) tile_type: u8,
    pub(super) min_zoom: u8,
    pub(super) max_zoom: u8,
    pub(super) bounds: [f64; 4],
    pub(super) center_zoom: u8,
    pub(super) center: (f64, f64),
}

impl Header {
    /// Reads the fields from a header whose magic number was checked.
    pub(super) fn parse(b: &[u8; HEADER_LEN]) -> Header {
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let e7_at = |at: usize| {
            f64::from(i32::from_le_bytes(
                b[at..at + 4].try_into().expect("4 bytes"),
            )) / 1e7
        };
        let section = |name, at| Section {
            name,
            offset: u64_at(at),
            length: u64_at(at + 8),
        };
        Header {
            version: b[7],
            root: section("root directory", 8),
            metadata: section("metadata", 24),
            leaves: section("leaf directories", 40),
            data: section("tile data", 56),
            addressed: u64_at(72),
            entries: u64_at(80),
            contents: u64_at(88),
            clustered: b[96],
            internal_compression: b[97],
            tile_compression: b[98],
            tile_type: b[99],
            min_zoom: b[100],
            max_zoom: b[101],
            bounds: [e7_at(102), e7_at(106), e7_at(110), e7_at(114)],
            center_zoom: b[118],
            center: (e7_at(119), e7_at(123)),
        }
    }
}

/// One directory entry (spec v3, section 4): a run of tiles, or a leaf directory when the run
/// length is 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Entry {
    pub(super) tile_id: u64,
    pub(super) run_length: u64,
    pub(super) length: u64,
    pub(super) offset: u64,
}

/// Decodes a directory: the entry count, then the tile ids delta-encoded, the run lengths, the
/// lengths and the offsets, each a column of varints.
pub(super) fn decode_directory(bytes: &[u8]) -> std::result::Result<Vec<Entry>, DirectoryProblem> {
    let mut rest = bytes;
    let mut next = |what: &'static str| -> std::result::Result<u64, DirectoryProblem> {
        let (value, used) = u64::decode_var(rest).ok_or_else(|| DirectoryProblem::Varint {
            what,
            at: bytes.len() - rest.len(),
        })?;
        rest = &rest[used..];
        Ok(value)
    };
    let count = next("entry count")?;
    // Every entry takes at least one byte in each of its four columns.
    let room = (bytes.len() as u64).saturating_sub(1) / 4;
    if count > room {
        return Err(DirectoryProblem::Count {
            count,
            bytes: bytes.len(),
            room,
        });
    }
    let mut entries = vec![
        Entry {
            tile_id: 0,
            run_length: 0,
            length: 0,
            offset: 0,
        };
        count as usize
    ];
    let mut id = 0u64;
    for entry in &mut entries {
        // Added as the reference Go reader adds them, in wrapping u64: an entry written out of
        // order then decodes as the tile it is, and the order check names it.
        id = id.wrapping_add(next("tile id")?);
        entry.tile_id = id;
    }
    for entry in &mut entries {
        entry.run_length = next("run length")?;
    }
    for entry in &mut entries {
        entry.length = next("length")?;
    }
    for i in 0..entries.len() {
        let offset = next("offset")?;
        entries[i].offset = match (offset, i) {
            (0, 0) => return Err(DirectoryProblem::FirstOffset),
            (0, _) => entries[i - 1].offset.saturating_add(entries[i - 1].length),
            (offset, _) => offset - 1,
        };
    }
    if !rest.is_empty() {
        return Err(DirectoryProblem::Trailing(rest.len()));
    }
    Ok(entries)
}

/// The tile a tile id names, when it is one this tool can address.
pub(super) fn tile_of(id: u64) -> Option<TileCoord> {
    let coord = pmtiles::TileCoord::from(pmtiles::TileId::new(id).ok()?);
    TileCoord::new(coord.z(), coord.x(), coord.y()).ok()
}

pub(super) fn zoom_of(id: u64) -> Option<u8> {
    pmtiles::TileId::new(id)
        .ok()
        .map(|id| pmtiles::TileCoord::from(id).z())
}

/// The JSON metadata key of the job state the archive was written at.
pub(super) const ARCHIVE_STATE_KEY: &str = "oar_tiles_state";

/// The tile id the PMTiles spec gives `tile` (its Hilbert order within the zoom).
pub(super) fn pmtiles_id(tile: TileCoord) -> Result<u64> {
    let coord = pmtiles::TileCoord::new(tile.z(), tile.x(), tile.y())
        .map_err(|e| Error::Usage(format!("tile {tile} cannot be stored in PMTiles: {e}")))?;
    Ok(pmtiles::TileId::from(coord).value())
}
