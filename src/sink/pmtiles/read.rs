//! Reading a PMTiles archive with positioned reads; an archive on S3 is downloaded first.
//!
//! The header and directories are decoded here (`layout.rs`, which the check decodes with too)
//! rather than by the `pmtiles` crate, which inflates directories and metadata whole: a gzip bomb
//! of 3 MB there took 3 GB of memory in `inspect` and `validate`. Here every directory and the
//! metadata inflate under [`SECTION_CAP`], and an error names the archive, the part (the metadata,
//! the root directory, the leaf directory at its offset) and the cap.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;

use super::layout::{
    decode_directory, inflate_section, Entry, Header, Section, HEADER_LEN, SECTION_CAP,
};
use crate::config::{Bucket, StoreConfig};
use crate::error::{Error, Result};
use crate::sink::read::ReadTiles;
use crate::tile::TileCoord;

/// Directories deeper than this are refused: writers use one level of leaves, and a leaf that
/// points back at itself must not loop.
const MAX_DEPTH: usize = 4;

/// A PMTiles archive opened for reading.
pub struct PmtilesReader {
    /// The archive (or, downloaded from S3, its URL), for messages.
    path: PathBuf,
    /// The open archive, shared by concurrent reads, and the file it was opened from.
    opened: Mutex<Opened>,
    /// A local archive's file, opened again once a run replaced it (a reseed renames a new
    /// archive over the old one, which an open file would keep showing); none for a download.
    follows: Option<PathBuf>,
}

/// An archive as opened, and which file it was.
struct Opened {
    archive: Arc<Archive>,
    file: Option<FileIdentity>,
}

/// What tells one version of a file from the next: a new file after a rename, or new bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileIdentity {
    fn of(metadata: &std::fs::Metadata) -> FileIdentity {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
            len: metadata.len(),
            modified: metadata.modified().ok(),
        }
    }
}

impl PmtilesReader {
    /// Opens a local archive.
    pub async fn open(path: &Path) -> Result<PmtilesReader> {
        if !path.is_file() {
            return Err(Error::output(path, "no such PMTiles file"));
        }
        let file =
            File::open(path).map_err(|e| Error::output(path, format!("cannot read it: {e}")))?;
        let mut reader = Self::from_file(file, path).await?;
        reader.follows = Some(path.to_path_buf());
        Ok(reader)
    }

    /// An archive on S3, downloaded to a private temporary file (a name no other user can guess
    /// or plant a link at, readable by this user alone) and read as a local one. The file's name
    /// is removed once it is open: the open file keeps its bytes until the reader goes.
    pub async fn download(
        output: &str,
        bucket: &Bucket,
        key: &str,
        config: &StoreConfig,
    ) -> Result<PmtilesReader> {
        let downloaded = download_to_private_file(output, bucket, key, config).await?;
        let file = downloaded
            .reopen()
            .map_err(|e| Error::output(downloaded.path(), format!("cannot read it: {e}")))?;
        drop(downloaded);
        Self::from_file(file, Path::new(output)).await
    }

    async fn from_file(file: File, path: &Path) -> Result<PmtilesReader> {
        let identity = file.metadata().ok().map(|m| FileIdentity::of(&m));
        let name = path.to_path_buf();
        let archive = blocking(move || Archive::open(file, name)).await?;
        Ok(PmtilesReader {
            path: path.to_path_buf(),
            opened: Mutex::new(Opened {
                archive: Arc::new(archive),
                file: identity,
            }),
            follows: None,
        })
    }

    /// The archive as the file holds it now: opened again when the file followed is no longer
    /// the one opened (one `stat` a read, so `serve` answers a reseed's tiles at once).
    async fn current(&self) -> Result<Arc<Archive>> {
        let opened = || {
            let opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
            (opened.archive.clone(), opened.file)
        };
        let (archive, identity) = opened();
        let Some(path) = &self.follows else {
            return Ok(archive);
        };
        let now = std::fs::metadata(path)
            .map(|m| FileIdentity::of(&m))
            .map_err(|e| Error::output(path, format!("cannot read it: {e}")))?;
        if identity == Some(now) {
            return Ok(archive);
        }
        let file =
            File::open(path).map_err(|e| Error::output(path, format!("cannot read it: {e}")))?;
        let identity = file.metadata().ok().map(|m| FileIdentity::of(&m));
        let name = path.clone();
        let archive = Arc::new(blocking(move || Archive::open(file, name)).await?);
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        *opened = Opened {
            archive: archive.clone(),
            file: identity,
        };
        Ok(archive)
    }

    /// The archive's own JSON metadata, as written (an error when it is not JSON).
    pub(super) fn archive_metadata(&self) -> Result<Value> {
        let bytes = self.opened().metadata()?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::output(
                &self.path,
                format!("the metadata is not readable JSON: {e}"),
            )
        })
    }

    /// Every tile the directories address, in tile-id order, with its stored bytes.
    pub(super) fn each_tile(
        &self,
        mut visit: impl FnMut(TileCoord, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let archive = self.opened();
        archive.walk(&mut |tile, entry| visit(tile, archive.data(entry)?))
    }

    /// Every tile the directories address, in tile-id order, without reading its bytes: what a
    /// skeleton (`skeleton.rs`), whose tile data is a hole, can give.
    pub(super) fn each_tile_id(
        &self,
        mut visit: impl FnMut(TileCoord) -> Result<()>,
    ) -> Result<()> {
        self.opened().walk(&mut |tile, _| visit(tile))
    }

    /// The archive as opened, for one pass over it that must see a single version.
    fn opened(&self) -> Arc<Archive> {
        let opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        opened.archive.clone()
    }
}

/// Runs blocking file work (positioned reads, inflating a directory) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Usage(format!("reading a PMTiles archive stopped: {e}")))?
}

/// An open archive: its file, header and root directory.
struct Archive {
    file: File,
    /// The file's length when opened.
    len: u64,
    /// The archive, for messages.
    name: PathBuf,
    header: Header,
    root: Vec<Entry>,
    /// Leaf directories decoded lately, the latest first: reading every tile of an archive
    /// would otherwise inflate and decode a leaf of thousands of entries once per tile.
    leaves: Mutex<Vec<(u64, Arc<Vec<Entry>>)>>,
}

/// How many decoded leaf directories an open archive keeps.
const LEAVES_KEPT: usize = 8;

impl Archive {
    fn open(file: File, name: PathBuf) -> Result<Archive> {
        let fail = |message: String| Error::output(&name, message);
        let len = file
            .metadata()
            .map_err(|e| fail(format!("cannot read it: {e}")))?
            .len();
        if len < HEADER_LEN as u64 {
            return Err(fail(format!(
                "the file is {len} bytes, shorter than a PMTiles header ({HEADER_LEN}): it is \
                 not a PMTiles archive, or it is cut short"
            )));
        }
        let mut bytes = [0; HEADER_LEN];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| fail(format!("cannot read its header: {e}")))?;
        if !bytes.starts_with(b"PMTiles") {
            return Err(fail(
                "the file is not a PMTiles archive (no PMTiles magic number)".into(),
            ));
        }
        let header = Header::parse(&bytes);
        if header.version != 3 {
            return Err(fail(format!(
                "the header says PMTiles version {}; this tool reads version 3",
                header.version
            )));
        }
        let mut archive = Archive {
            file,
            len,
            name,
            header,
            root: Vec::new(),
            leaves: Mutex::new(Vec::new()),
        };
        let root = archive.header.root;
        archive.root = archive.directory(root.offset, root.length, "the root directory")?;
        Ok(archive)
    }

    fn fail(&self, message: impl std::fmt::Display) -> Error {
        Error::output(&self.name, message.to_string())
    }

    /// The bytes at `offset`, which must lie inside the file.
    fn read(&self, offset: u64, length: u64, part: &str) -> Result<Vec<u8>> {
        if offset.checked_add(length).is_none_or(|end| end > self.len) {
            return Err(self.fail(format!(
                "{part} (offset {offset}, length {length}) reaches past the end of the file \
                 ({} bytes): the file is cut short or the header is wrong",
                self.len
            )));
        }
        let mut bytes = vec![0; length as usize];
        self.file
            .read_exact_at(&mut bytes, offset)
            .map_err(|e| self.fail(format!("cannot read {part}: {e}")))?;
        Ok(bytes)
    }

    /// A directory or the metadata, inflated under the cap.
    fn section(&self, offset: u64, length: u64, part: &str) -> Result<Vec<u8>> {
        if length > SECTION_CAP {
            return Err(self.fail(format!(
                "{part} is stored in {length} bytes, past the {} MiB cap on PMTiles directories \
                 and metadata: refused",
                SECTION_CAP >> 20
            )));
        }
        let stored = self.read(offset, length, part)?;
        inflate_section(self.header.internal_compression, stored)
            .map_err(|e| self.fail(format!("{part} {e}")))
    }

    fn directory(&self, offset: u64, length: u64, part: &str) -> Result<Vec<Entry>> {
        let bytes = self.section(offset, length, part)?;
        decode_directory(&bytes).map_err(|e| self.fail(format!("{part} does not decode: {e}")))
    }

    fn metadata(&self) -> Result<Vec<u8>> {
        let metadata = self.header.metadata;
        self.section(metadata.offset, metadata.length, "the metadata")
    }

    /// The leaf directory an entry of `part` points at, decoded once while it is among the
    /// latest few read.
    fn leaf(&self, entry: &Entry, part: &str) -> Result<Arc<Vec<Entry>>> {
        let kept = |leaves: &mut Vec<(u64, Arc<Vec<Entry>>)>| {
            let at = leaves
                .iter()
                .position(|(offset, _)| *offset == entry.offset)?;
            let found = leaves.remove(at);
            leaves.insert(0, found.clone());
            Some(found.1)
        };
        if let Some(found) = kept(&mut self.leaves.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(found);
        }
        let decoded = Arc::new(self.decode_leaf(entry, part)?);
        let mut leaves = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        leaves.insert(0, (entry.offset, decoded.clone()));
        leaves.truncate(LEAVES_KEPT);
        Ok(decoded)
    }

    fn decode_leaf(&self, entry: &Entry, part: &str) -> Result<Vec<Entry>> {
        let leaves = self.header.leaves;
        let leaf = format!("the leaf directory at offset {}", entry.offset);
        if entry
            .offset
            .checked_add(entry.length)
            .is_none_or(|end| end > leaves.length)
        {
            return Err(self.fail(format!(
                "{part} points to {leaf} (length {}), outside the leaf directories section \
                 ({} bytes)",
                entry.length, leaves.length
            )));
        }
        self.directory(leaves.offset + entry.offset, entry.length, &leaf)
    }

    /// The stored bytes of a tile entry.
    fn data(&self, entry: &Entry) -> Result<Vec<u8>> {
        let data = self.header.data;
        if entry
            .offset
            .checked_add(entry.length)
            .is_none_or(|end| end > data.length)
        {
            return Err(self.fail(format!(
                "a directory places tile id {}'s data at offset {} (length {}), outside the tile \
                 data section ({} bytes)",
                entry.tile_id, entry.offset, entry.length, data.length
            )));
        }
        self.read(data.offset + entry.offset, entry.length, "the tile data")
    }

    /// The entry holding tile id `id`, if the archive addresses it.
    fn find(&self, id: u64) -> Result<Option<Entry>> {
        let mut leaf: Arc<Vec<Entry>>;
        let mut entries = &self.root;
        let mut part = "the root directory".to_string();
        for _ in 0..MAX_DEPTH {
            // The last entry starting at or before the id: directories are sorted by tile id.
            let at = entries.partition_point(|e| e.tile_id <= id);
            let Some(entry) = at.checked_sub(1).map(|at| entries[at]) else {
                return Ok(None);
            };
            if entry.run_length > 0 {
                return Ok(
                    (id - entry.tile_id < entry.run_length && entry.length > 0).then_some(entry)
                );
            }
            leaf = self.leaf(&entry, &part)?;
            part = format!("the leaf directory at offset {}", entry.offset);
            entries = &leaf;
        }
        Err(self.fail(format!(
            "{part} points to leaf directories more than {MAX_DEPTH} levels deep"
        )))
    }

    /// Calls `visit` with every tile the directories address (each tile of a run with the run's
    /// entry), in directory order.
    fn walk(&self, visit: &mut dyn FnMut(TileCoord, &Entry) -> Result<()>) -> Result<()> {
        let mut addressed = 0;
        self.walk_directory(&self.root, "the root directory", 0, &mut addressed, visit)
    }

    fn walk_directory(
        &self,
        entries: &[Entry],
        part: &str,
        depth: usize,
        addressed: &mut u64,
        visit: &mut dyn FnMut(TileCoord, &Entry) -> Result<()>,
    ) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(self.fail(format!(
                "{part} lies more than {MAX_DEPTH} levels of leaf directories deep"
            )));
        }
        for entry in entries {
            if entry.length == 0 {
                continue;
            }
            if entry.run_length == 0 {
                let leaf = self.leaf(entry, part)?;
                let name = format!("the leaf directory at offset {}", entry.offset);
                self.walk_directory(&leaf, &name, depth + 1, addressed, visit)?;
                continue;
            }
            // A run is walked tile by tile: when the header counts the tiles, no more than that
            // many, so a run length in the trillions cannot hold the walk.
            *addressed = addressed.saturating_add(entry.run_length);
            let stated = self.header.addressed;
            if stated != 0 && *addressed > stated {
                return Err(self.fail(format!(
                    "{part} addresses more tiles than the {stated} the header counts"
                )));
            }
            for id in entry.tile_id..entry.tile_id.saturating_add(entry.run_length) {
                let tile = pmtiles::TileId::new(id)
                    .ok()
                    .map(pmtiles::TileCoord::from)
                    .and_then(|c| TileCoord::new(c.z(), c.x(), c.y()).ok())
                    .ok_or_else(|| {
                        self.fail(format!(
                            "{part} holds tile id {id}, which names no tile this tool can address"
                        ))
                    })?;
                visit(tile, entry)?;
            }
        }
        Ok(())
    }
}

/// By tile id, each tile's offset in the archive's tile data section and its length.
pub(super) type Placed = HashMap<u64, (u64, u64)>;

/// Where a local archive keeps its tiles: its tile data section and each tile's place in it;
/// what an in-place update keeps of it.
pub(super) fn placed_tiles(path: &Path) -> Result<(Section, Placed)> {
    let file = File::open(path)
        .map_err(|e| Error::output(path, format!("cannot open the archive: {e}")))?;
    let archive = Archive::open(file, path.to_path_buf())?;
    let mut placed = HashMap::new();
    archive.walk(&mut |tile, entry| {
        placed.insert(
            super::layout::pmtiles_id(tile)?,
            (entry.offset, entry.length),
        );
        Ok(())
    })?;
    Ok((archive.header.data, placed))
}

/// Downloads an archive on S3 into a private temporary file (a name no other user can guess or
/// plant a link at, readable by this user alone), removed when the handle is dropped.
pub(super) async fn download_to_private_file(
    output: &str,
    bucket: &Bucket,
    key: &str,
    config: &StoreConfig,
) -> Result<tempfile::NamedTempFile> {
    let store = crate::store::open(bucket, config)
        .await
        .map_err(|e| Error::output_caused(output, e))?;
    let (file, _) = download_privately(store.as_ref(), output, key).await?;
    Ok(file)
}

/// Downloads object `key` of `store` (the archive `output`) as [`download_to_private_file`]
/// does; the file and the ETag the object had.
pub(super) async fn download_privately(
    store: &dyn crate::store::ObjectStore,
    output: &str,
    key: &str,
) -> Result<(tempfile::NamedTempFile, String)> {
    let mut file = tempfile::Builder::new()
        .prefix("oar-tiles-")
        .suffix(".pmtiles")
        .tempfile()
        .map_err(|e| {
            Error::output(
                std::env::temp_dir(),
                format!("cannot create a temporary file to download {output} into: {e}"),
            )
        })?;
    let etag = store
        .download_into(key, file.as_file_mut())
        .await
        .map_err(|e| Error::output_caused(output, e))?;
    Ok((file, etag))
}

impl ReadTiles for PmtilesReader {
    /// The JSON metadata, with the header's bounds, zooms, tile type, compression and clustering
    /// under `pmtiles`. Metadata that inflates but is not a JSON object reads as `{}` (the check
    /// reports it); metadata that does not inflate, or inflates past the cap, is an error.
    fn metadata(&self) -> BoxFuture<'_, Result<Value>> {
        async move {
            let archive = self.current().await?;
            let reading = archive.clone();
            let bytes = blocking(move || reading.metadata()).await?;
            let header = &archive.header;
            let mut metadata: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if !metadata.is_object() {
                metadata = serde_json::json!({});
            }
            metadata["bounds"] = serde_json::json!(header.bounds);
            metadata["pmtiles"] = serde_json::json!({
                "clustered": header.clustered == 1,
                "tile_type": tile_type_name(header.tile_type),
                "tile_compression": compression_name(header.tile_compression),
                "minzoom": header.min_zoom,
                "maxzoom": header.max_zoom,
                "addressed_tiles": (header.addressed != 0).then_some(header.addressed),
                "tile_contents": (header.contents != 0).then_some(header.contents),
            });
            Ok(metadata)
        }
        .boxed()
    }

    fn tile_sizes(&self) -> BoxFuture<'_, Result<Vec<(TileCoord, u64)>>> {
        async move {
            let archive = self.current().await?;
            blocking(move || {
                let mut sizes = Vec::new();
                archive.walk(&mut |tile, entry| {
                    sizes.push((tile, entry.length));
                    Ok(())
                })?;
                Ok(sizes)
            })
            .await
        }
        .boxed()
    }

    fn tile(&self, tile: TileCoord) -> BoxFuture<'_, Result<Option<Vec<u8>>>> {
        async move {
            let archive = self.current().await?;
            let id = pmtiles::TileCoord::new(tile.z(), tile.x(), tile.y())
                .map(|coord| pmtiles::TileId::from(coord).value())
                .map_err(|e| Error::output(&self.path, format!("tile {tile}: {e}")))?;
            blocking(move || match archive.find(id)? {
                Some(entry) => archive.data(&entry).map(Some),
                None => Ok(None),
            })
            .await
        }
        .boxed()
    }

    fn state(&self) -> BoxFuture<'_, Result<Option<String>>> {
        async move {
            let metadata = self.metadata().await?;
            Ok(metadata[super::layout::ARCHIVE_STATE_KEY]
                .as_str()
                .map(str::to_string))
        }
        .boxed()
    }
}

/// The names the `pmtiles` crate gave the header's tile types, which `inspect --json` printed.
fn tile_type_name(code: u8) -> &'static str {
    match code {
        1 => "mvt",
        2 => "png",
        3 => "jpeg",
        4 => "webp",
        5 => "avif",
        6 => "mlt",
        _ => "unknown",
    }
}

/// The names the `pmtiles` crate gave the header's compressions.
fn compression_name(code: u8) -> &'static str {
    match code {
        1 => "none",
        2 => "gzip",
        3 => "brotli",
        4 => "zstd",
        _ => "unknown",
    }
}
