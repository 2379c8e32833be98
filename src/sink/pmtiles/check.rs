//! The PMTiles v3 container check (<https://github.com/protomaps/PMTiles/blob/main/spec/v3/spec.md>):
//! the header, where its sections lie, every directory decoded and walked in order, the counts
//! and flags the header states against what the directories hold, the tiles' type and
//! compression, and the JSON metadata.
//!
//! The `pmtiles` crate reads archives but keeps a directory's entries and the header's offsets to
//! itself, and refuses a damaged archive with one error. So the header and directories are decoded
//! here, field by field, and a damaged archive comes out as findings naming the entry or section at
//! fault. Reads are positioned (`pread`), so memory stays at one directory, whatever the archive's
//! size.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde_json::Value;

use crate::config::{Bucket, StoreConfig};
use crate::error::{Error, Result};
use crate::sink::check::{
    check_bounds, check_center, check_vector_layers, check_zooms, gzip_holds_mvt, Finding,
    Findings, Magic,
};
use crate::tile::{in_scope, BBox, TileCoord, ZoomRange};

use super::layout::{
    decode_directory, inflate_section, tile_of, zoom_of, Entry, Header, HEADER_LEN, SECTION_CAP,
};

/// The header and root directory fit in this many bytes, so a reader gets both in one request.
const ROOT_LIMIT: u64 = 16_384;
/// Directories deeper than this are refused: readers stop at a few levels, and a leaf that points
/// back at itself must not loop.
const MAX_DEPTH: usize = 4;
/// A directory or metadata stored in more bytes than its inflated size may take is refused
/// rather than read.
const MAX_SECTION: u64 = SECTION_CAP;
/// Bytes of each tile content read to tell its compression and whether it holds MVT.
const TILE_START: u64 = 512;

/// Checks a local archive. Fails only when there is no file to read.
pub async fn check_local(path: &Path) -> Result<Vec<Finding>> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::output(&path, "no such PMTiles file"),
            _ => Error::output(&path, format!("cannot read it: {e}")),
        })?;
        check_file(&file).map_err(|e| Error::output(&path, format!("cannot read it: {e}")))
    })
    .await
    .map_err(|e| Error::Usage(format!("the PMTiles check stopped: {e}")))?
}

/// Checks an archive on S3, downloaded to a private temporary file first (as `inspect` reads
/// one). Fails when the object cannot be downloaded.
pub async fn check_on_s3(
    output: &str,
    bucket: &Bucket,
    key: &str,
    config: &StoreConfig,
) -> Result<Vec<Finding>> {
    let file = super::read::download_to_private_file(output, bucket, key, config).await?;
    let output = output.to_string();
    tokio::task::spawn_blocking(move || {
        check_file(file.as_file())
            .map_err(|e| Error::output(&output, format!("cannot read it: {e}")))
    })
    .await
    .map_err(|e| Error::Usage(format!("the PMTiles check stopped: {e}")))?
}

/// Checks an open archive; an I/O error reading a part the header places inside the file is
/// an error, everything else a finding.
fn check_file(file: &File) -> std::io::Result<Vec<Finding>> {
    let len = file.metadata()?.len();
    let mut check = Check {
        file,
        len,
        findings: Findings::default(),
    };
    check.archive()?;
    Ok(check.findings.finish())
}

/// What the walk over the directories has seen so far.
#[derive(Default)]
struct Walk {
    /// The tile id the next entry must reach at least: the end of the last run.
    next_id: u64,
    addressed: u64,
    entries: u64,
    contents: HashSet<u64>,
    /// Where the next new tile content starts in a clustered archive.
    next_offset: u64,
}

struct Check<'a> {
    file: &'a File,
    len: u64,
    findings: Findings,
}

impl Check<'_> {
    fn read(&self, offset: u64, length: u64) -> std::io::Result<Vec<u8>> {
        let mut bytes = vec![0; length as usize];
        self.file.read_exact_at(&mut bytes, offset)?;
        Ok(bytes)
    }

    fn archive(&mut self) -> std::io::Result<()> {
        if self.len < HEADER_LEN as u64 {
            let start = self.read(0, self.len.min(7))?;
            self.findings.add(if b"PMTiles".starts_with(&start) {
                format!(
                    "the file is {} bytes, shorter than a PMTiles header ({HEADER_LEN}): it is cut short",
                    self.len
                )
            } else {
                "the file is not a PMTiles archive (no PMTiles magic number)".to_string()
            });
            return Ok(());
        }
        let bytes: [u8; HEADER_LEN] = self.read(0, HEADER_LEN as u64)?.try_into().expect("read");
        if !bytes.starts_with(b"PMTiles") {
            self.findings.add(if bytes.starts_with(b"PM") {
                "the archive is PMTiles v1 or v2, not v3"
            } else {
                "the file is not a PMTiles archive (no PMTiles magic number)"
            });
            return Ok(());
        }
        let header = Header::parse(&bytes);
        if header.version != 3 {
            self.findings.add(format!(
                "the header says spec version {}, not 3",
                header.version
            ));
            return Ok(());
        }
        let placed = self.check_sections(&header);
        self.check_header_fields(&header);
        if !matches!(header.internal_compression, 1 | 2) {
            self.findings.add(format!(
                "the header says directories and metadata are compressed with {}, which this \
                 check cannot decode (it reads none and gzip): they are not checked",
                compression_name(header.internal_compression)
            ));
            return Ok(());
        }
        if placed.contains(&"metadata") {
            self.check_metadata(&header)?;
        }
        if !placed.contains(&"root directory") {
            return Ok(());
        }
        let mut walk = Walk::default();
        let root = self.read(header.root.offset, header.root.length)?;
        self.walk_directory(&header, &mut walk, &root, 0, "the root directory")?;
        self.check_walk(&header, &walk, placed.contains(&"tile data"));
        Ok(())
    }

    /// Reports sections outside the file (or the root outside its first 16 KiB); returns the
    /// names of those that lie inside it.
    fn check_sections(&mut self, header: &Header) -> Vec<&'static str> {
        let mut placed = Vec::new();
        for section in [header.root, header.metadata, header.leaves, header.data] {
            let end = section.offset.checked_add(section.length);
            match end {
                Some(end) if end <= self.len => placed.push(section.name),
                _ => self.findings.add(format!(
                    "the {} (offset {}, length {}) reaches past the end of the file ({} bytes): \
                     the file is cut short or the header is wrong",
                    section.name, section.offset, section.length, self.len
                )),
            }
        }
        let root = header.root;
        if root.offset < HEADER_LEN as u64 {
            self.findings.add(format!(
                "the root directory starts at byte {}, inside the {HEADER_LEN}-byte header",
                root.offset
            ));
        }
        if root.length == 0 {
            self.findings
                .add("the header places no root directory (length 0)");
            placed.retain(|name| *name != "root directory");
        } else if root.offset.saturating_add(root.length) > ROOT_LIMIT {
            self.findings.add(format!(
                "the root directory ends at byte {}, past the first {ROOT_LIMIT} bytes that \
                 readers fetch with the header",
                root.offset.saturating_add(root.length)
            ));
        }
        for section in [header.root, header.metadata, header.leaves] {
            if section.length > MAX_SECTION && placed.contains(&section.name) {
                self.findings.add(format!(
                    "the {} is {} bytes, more than any reader should fetch: it is not read",
                    section.name, section.length
                ));
                placed.retain(|name| *name != section.name);
            }
        }
        placed
    }

    fn check_header_fields(&mut self, header: &Header) {
        if header.tile_type != 1 {
            self.findings.add(format!(
                "the header says the tiles are {}, not MVT (tile type 1), which this output writes",
                match header.tile_type {
                    0 => "of an unknown type".to_string(),
                    2 => "PNG".into(),
                    3 => "JPEG".into(),
                    4 => "WebP".into(),
                    5 => "AVIF".into(),
                    6 => "MapLibre Tiles".into(),
                    other => format!("of type {other}, which the spec does not define"),
                }
            ));
        }
        if !matches!(header.tile_compression, 1..=4) {
            self.findings.add(format!(
                "the header says the tiles are compressed with {}: clients cannot tell how to \
                 read them",
                compression_name(header.tile_compression)
            ));
        }
        if header.clustered > 1 {
            self.findings.add(format!(
                "the header's clustered flag is {}, neither 0 nor 1",
                header.clustered
            ));
        }
        check_zooms(
            &mut self.findings,
            "the header",
            header.min_zoom,
            header.max_zoom,
        );
        let bounds = check_bounds(&mut self.findings, "the header", header.bounds);
        let (lon, lat) = header.center;
        check_center(
            &mut self.findings,
            "the header",
            (lon, lat, f64::from(header.center_zoom)),
            bounds,
            (header.min_zoom, header.max_zoom),
        );
    }

    fn check_metadata(&mut self, header: &Header) -> std::io::Result<()> {
        let raw = self.read(header.metadata.offset, header.metadata.length)?;
        let bytes = match inflate_section(header.internal_compression, raw) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.findings.add(format!("the metadata {e}"));
                return Ok(());
            }
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(json) if json.is_object() => check_vector_layers(
                &mut self.findings,
                "the metadata",
                &json["vector_layers"],
                Some((header.min_zoom, header.max_zoom)),
            ),
            Ok(_) => self.findings.add("the metadata is not a JSON object"),
            Err(e) => self
                .findings
                .add(format!("the metadata is not readable JSON: {e}")),
        }
        Ok(())
    }

    fn walk_directory(
        &mut self,
        header: &Header,
        walk: &mut Walk,
        compressed: &[u8],
        depth: usize,
        name: &str,
    ) -> std::io::Result<()> {
        let entries = match inflate_section(header.internal_compression, compressed.to_vec())
            .map_err(|e| format!("{name} {e}"))
            .and_then(|bytes| {
                decode_directory(&bytes).map_err(|e| format!("{name} does not decode: {e}"))
            }) {
            Ok(entries) => entries,
            Err(e) => {
                self.findings.add(e);
                return Ok(());
            }
        };
        for entry in entries {
            let id = entry.tile_id;
            if id < walk.next_id {
                let due = walk.next_id;
                let message = || {
                    format!(
                        "{name} holds an entry for tile id {id} where tile id {due} or higher \
                         was due: tile ids must increase across all entries (runs included), \
                         or readers' search misses tiles"
                    )
                };
                self.findings
                    .under("tile ids out of order", tile_of(id), message);
            }
            if entry.length == 0 {
                self.findings.under("entries of length 0", tile_of(id), || {
                    format!("{name} holds an entry for tile id {id} of length 0")
                });
                continue;
            }
            if entry.run_length == 0 {
                self.walk_leaf(header, walk, entry, depth, name)?;
            } else {
                self.tile_entry(header, walk, entry, name)?;
            }
        }
        Ok(())
    }

    fn walk_leaf(
        &mut self,
        header: &Header,
        walk: &mut Walk,
        entry: Entry,
        depth: usize,
        name: &str,
    ) -> std::io::Result<()> {
        let leaves = header.leaves;
        let inside = entry
            .offset
            .checked_add(entry.length)
            .is_some_and(|end| end <= leaves.length)
            && leaves.offset.saturating_add(leaves.length) <= self.len;
        if !inside {
            self.findings.under("leaf pointers out of range", None, || {
                format!(
                    "{name} points to a leaf directory at offset {} (length {}) outside the leaf \
                     directories section ({} bytes)",
                    entry.offset, entry.length, leaves.length
                )
            });
            return Ok(());
        }
        if entry.length > MAX_SECTION {
            self.findings.under("leaf pointers out of range", None, || {
                format!(
                    "{name} points to a leaf directory of {} bytes, more than any reader should \
                     fetch: it is not read",
                    entry.length
                )
            });
            return Ok(());
        }
        if depth + 1 >= MAX_DEPTH {
            self.findings.add(format!(
                "{name} points to leaf directories more than {MAX_DEPTH} levels deep"
            ));
            return Ok(());
        }
        walk.next_id = walk.next_id.max(entry.tile_id);
        let bytes = self.read(leaves.offset + entry.offset, entry.length)?;
        let leaf = format!("the leaf directory at offset {}", entry.offset);
        self.walk_directory(header, walk, &bytes, depth + 1, &leaf)
    }

    fn tile_entry(
        &mut self,
        header: &Header,
        walk: &mut Walk,
        entry: Entry,
        name: &str,
    ) -> std::io::Result<()> {
        let id = entry.tile_id;
        let tile = tile_of(id);
        let last = id.checked_add(entry.run_length - 1);
        if last.is_none_or(|last| pmtiles::TileId::new(last).is_err()) {
            self.findings.under("tile ids beyond the pyramid", tile, || {
                format!(
                    "{name} holds a run of {} tiles from tile id {id}, past the last tile id there is",
                    entry.run_length
                )
            });
            return Ok(());
        }
        let last = last.unwrap_or(id);
        walk.next_id = walk.next_id.max(last.saturating_add(1));
        walk.addressed += entry.run_length;
        walk.entries += 1;
        // A run's ends stand for it: a run of millions of (ocean) tiles is not walked tile by tile.
        let ends: &[u64] = if last == id { &[id] } else { &[id, last] };
        for &id in ends {
            if let Some(z) = zoom_of(id) {
                self.check_tile_place(header, id, z, tile_of(id));
            }
        }
        let data = header.data;
        if entry
            .offset
            .checked_add(entry.length)
            .is_none_or(|end| end > data.length)
        {
            self.findings.under("tile data out of range", tile, || {
                format!(
                    "{name} places the tile's data at offset {} (length {}), outside the tile \
                     data section ({} bytes)",
                    entry.offset, entry.length, data.length
                )
            });
            return Ok(());
        }
        if header.clustered == 1 {
            if entry.offset == walk.next_offset {
                walk.next_offset += entry.length;
            } else if entry.offset + entry.length > walk.next_offset {
                let expected = walk.next_offset;
                self.findings.under("not clustered", tile, || {
                    format!(
                        "the header says the archive is clustered, but the tile's data starts at \
                         offset {} where the next new tile was due at {expected}: tile data is \
                         not in tile-id order and contiguous",
                        entry.offset
                    )
                });
                walk.next_offset = walk.next_offset.max(entry.offset + entry.length);
            }
        }
        if walk.contents.insert(entry.offset) {
            let start = data.offset + entry.offset;
            if start.saturating_add(entry.length) <= self.len {
                let bytes = self.read(start, entry.length.min(TILE_START))?;
                self.check_tile_start(header, tile, &bytes);
            }
        }
        Ok(())
    }

    /// Whether a tile lies within the header's zooms and bounds.
    fn check_tile_place(&mut self, header: &Header, id: u64, z: u8, tile: Option<TileCoord>) {
        let (min, max) = (header.min_zoom, header.max_zoom);
        if !(min..=max).contains(&z) {
            self.findings
                .under("tiles outside the header's zooms", tile, || {
                    format!("tile id {id} is at zoom {z}, outside the header's zooms {min}-{max}")
                });
            return;
        }
        let [west, south, east, north] = header.bounds;
        let (Ok(bounds), Ok(zooms), Some(tile)) = (
            BBox::new(west, south, east, north),
            ZoomRange::new(min, max),
            tile,
        ) else {
            return;
        };
        if !in_scope(tile, zooms, &bounds) {
            self.findings
                .under("tiles outside the header's bounds", Some(tile), || {
                    format!(
                        "the tile lies outside the header's bounds {west},{south},{east},{north}"
                    )
                });
        }
    }

    fn check_tile_start(&mut self, header: &Header, tile: Option<TileCoord>, bytes: &[u8]) {
        let magic = Magic::of(bytes);
        let expected = match header.tile_compression {
            1 => Magic::Other,
            2 => Magic::Gzip,
            4 => Magic::Zstd,
            // Brotli streams have no magic number; unknown was reported with the header.
            _ => return,
        };
        if magic != expected {
            self.findings.under("tile compression", tile, || {
                format!(
                    "the tile holds {}, but the header says tiles are {}",
                    magic.name(),
                    compression_name(header.tile_compression)
                )
            });
        } else if magic == Magic::Gzip
            && header.tile_type == 1
            && gzip_holds_mvt(bytes) == Some(false)
        {
            self.findings.under("tile type", tile, || {
                "the tile's gzip stream does not inflate to MVT, which the header says it holds"
                    .into()
            });
        }
    }

    /// The counts and flags the header states, against what the directories held.
    fn check_walk(&mut self, header: &Header, walk: &Walk, data_placed: bool) {
        let contents = walk.contents.len() as u64;
        for (what, stated, found) in [
            ("addressed tiles", header.addressed, walk.addressed),
            ("tile entries", header.entries, walk.entries),
            ("tile contents", header.contents, contents),
        ] {
            // 0 is how the spec writes "unknown".
            if stated != 0 && stated != found {
                self.findings.add(format!(
                    "the header counts {stated} {what}, but the directories hold {found}"
                ));
            }
        }
        if header.clustered == 1 && data_placed && walk.next_offset != header.data.length {
            self.findings.add(format!(
                "the header says the archive is clustered, but its tiles' data ends at byte {} \
                 of the {}-byte tile data section",
                walk.next_offset, header.data.length
            ));
        }
    }
}

fn compression_name(code: u8) -> String {
    match code {
        0 => "an unknown compression".into(),
        1 => "uncompressed".into(),
        2 => "gzip".into(),
        3 => "brotli".into(),
        4 => "zstd".into(),
        other => format!("compression {other}, which the spec does not define"),
    }
}

#[cfg(test)]
mod tests;
