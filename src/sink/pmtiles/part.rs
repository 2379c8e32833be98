//! A shard's part of a PMTiles archive, and the parts joined at `finalize`.
//!
//! An archive is written whole, in tile-id order, from its MBTiles store, so a shard cannot write
//! into it. Instead each shard fills an MBTiles part, exactly as an MBTiles shard fills its part
//! file (journaled, so a retried shard resumes), and keeps it in the archive's shard folder
//! (`coordination::shards`): a file beside a local archive, an object beside a remote one, uploaded
//! when the shard finishes. Its part record, written last, says it is finished. `finalize` takes
//! the parts ([`PmtilesSink::adopt_parts`]): it streams each one (downloaded first from a remote
//! store) into a new store, which replaces the archive's, and the archive is then written once from
//! it as any run writes it.

use std::path::{Path, PathBuf};

use rusqlite::OpenFlags;
use tokio::runtime::Handle;

use super::tile_store::{open_store, store_path};
use super::PmtilesSink;
use crate::coordination::parts::{part_name, PartRecord};
use crate::coordination::shards::ShardStore;
use crate::coordination::{ChangedList, PartOf};
use crate::error::{Error, Result};
use crate::job::ShardSpec;
use crate::sink::mbtiles::merge::merge_mbtiles;
use crate::sink::mbtiles::{remove_sqlite_files, MbtilesSink};
use crate::sink::{Finish, Resume, Sink, SinkReport};
use crate::tile::TileCoord;

/// Writes one shard's part of a PMTiles archive: an MBTiles file, kept with the archive's shards.
pub struct PartSink {
    store: Box<MbtilesSink>,
    file: PathBuf,
    part: PartOf,
    shards: ShardStore,
    /// Uploads above this many bytes go in parts.
    part_size: u64,
    handle: Handle,
}

impl PartSink {
    /// Opens (or, after an interrupted attempt of the same job, picks up) the part's file: the
    /// shard folder's own where the parts are files, else `file`, uploaded when finished.
    pub fn create(
        shards: ShardStore,
        file: PathBuf,
        part: PartOf,
        journal: Option<&str>,
        part_size: u64,
    ) -> Result<Self> {
        let file = shards.local_part_file(part.spec).unwrap_or(file);
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::output(dir, format!("cannot create it: {e}")))?;
        }
        // The part's tiles are served by no one until `finalize`: nothing to list or purge.
        let store = MbtilesSink::create(&file, ChangedList::disabled(), journal)?;
        Ok(PartSink {
            store: Box::new(store),
            file,
            part,
            shards,
            part_size,
            handle: Handle::current(),
        })
    }
}

impl Sink for PartSink {
    fn write_tile(&mut self, tile: TileCoord, data: &[u8]) -> Result<()> {
        self.store.write_tile(tile, data)
    }

    fn delete_tile(&mut self, tile: TileCoord) -> Result<()> {
        self.store.delete_tile(tile)
    }

    fn state(&self) -> Option<String> {
        self.store.state()
    }

    fn begin_journal(&mut self, watermark: Option<&str>) -> Result<Option<Resume>> {
        self.store.begin_journal(watermark)
    }

    fn prepare(&mut self, planned: Option<usize>) -> Result<()> {
        self.store.prepare(planned)
    }

    fn journal(&mut self, tile: TileCoord, children: [bool; 4], written: bool) -> Result<()> {
        self.store.journal(tile, children, written)
    }

    fn finish(self: Box<Self>, finish: Finish<'_>) -> Result<SinkReport> {
        let PartSink {
            store,
            file,
            part,
            shards,
            part_size,
            handle,
        } = *self;
        // `finalize` merges the parts' hashes away: each is computed at once, as MBTiles parts do.
        let report = store.finish(Finish {
            defer_hash: false,
            ..finish
        })?;
        // Without a state the shard did not finish its walk: no record, so `finalize` waits.
        let Some(state) = finish.state else {
            return Ok(report);
        };
        let tiles: u64 = open_store(&file, OpenFlags::SQLITE_OPEN_READ_ONLY)?
            .query_row("SELECT count(*) FROM tiles", [], |row| row.get(0))
            .map_err(|e| Error::output(&file, format!("counting the part's tiles: {e}")))?;
        handle.block_on(shards.keep_part_file(part.spec, &file, part_size))?;
        let record = PartRecord::new(&part, state, finish.metadata, tiles);
        handle.block_on(shards.put_record(part.spec, &record))?;
        if shards.local_part_file(part.spec).is_none() {
            // Uploaded: the store keeps it now.
            remove_sqlite_files(&file);
        }
        Ok(report)
    }

    fn abort(self: Box<Self>) {
        // A journaled part is kept, for the shard's next attempt to resume.
        self.store.abort();
    }
}

/// Where a part that is uploaded when finished is written, and where `finalize` downloads one:
/// beside the archive's working copy.
pub fn part_place(archive: &Path, spec: ShardSpec) -> PathBuf {
    let mut name = archive.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}", part_name(spec, "mbtiles")));
    archive.with_file_name(name)
}

impl PmtilesSink {
    /// Replaces the store's tiles with those of the shards' parts kept in `shards` (`finalize`),
    /// streaming each part, never the archive, through memory; returns the sink, ready to write
    /// the archive when it finishes, and how many tiles the parts held. The parts must be
    /// disjoint, of one settings digest and one tileset, as `merge` requires of MBTiles parts.
    pub fn adopt_parts(self, shards: &ShardStore, specs: &[ShardSpec]) -> Result<(Self, u64)> {
        let PmtilesSink {
            store,
            archive,
            changes,
            written_from: _,
            announce,
            versions,
            in_place,
            fill,
        } = self;
        // The store is replaced whole: let go of it first.
        store.abort();
        let handle = Handle::current();
        let mut files = Vec::new();
        let mut downloaded = Vec::new();
        let fetched = specs.iter().try_for_each(|spec| {
            let place = part_place(&archive, *spec);
            let file = handle.block_on(shards.fetch_part_file(*spec, &place))?;
            if file == place {
                downloaded.push(place);
            }
            files.push(file);
            Ok::<_, Error>(())
        });
        let store_file = store_path(&archive);
        let merged = fetched.and_then(|()| merge_mbtiles(&store_file, &files));
        for file in &downloaded {
            remove_sqlite_files(file);
        }
        let merged = merged?;
        let store = MbtilesSink::create(&store_file, ChangedList::default(), None)?;
        let sink = PmtilesSink {
            store: Box::new(store),
            archive,
            changes,
            // The store is new: the archive is written from it, whatever it held before.
            written_from: None,
            announce,
            versions,
            in_place,
            fill,
        };
        Ok((sink, merged.tiles))
    }
}
