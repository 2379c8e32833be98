//! What the shards of one sharded run share inside their output: the shard plan, and a part
//! record from each shard that finished.
//!
//! Directory and prefix shards write their tiles straight into the one tree or prefix (the plan gives
//! them disjoint tiles) but nothing that describes the whole output: no TileJSON, no state, no
//! sweep of stale tiles. Instead each finished shard leaves a part record (its watermark, the
//! tileset's metadata, the plan it ran under) and the list of tiles it holds. `finalize` reads
//! every part, refuses unless all are there and agree, and then finishes the output as one run
//! would have. MBTiles shards write part files beside the output instead, and only the plan lives
//! here. A PMTiles archive is written whole, so its shards keep their tiles here too: each an
//! MBTiles part (`part-I-of-N.mbtiles`) and its record, which `finalize` merges.
//!
//! Layout: `ROOT/.oar-tiles-shards/{plan.json, part-I-of-N.json, part-I-of-N.tiles}` in a tree,
//! `PREFIX/.oar-tiles/shards/…` in a remote store, `OUT.mbtiles.shard-plan.json` beside an MBTiles
//! file, `OUT.pmtiles.oar-tiles-shards/{plan.json, part-I-of-N.json, part-I-of-N.mbtiles}` beside a
//! PMTiles file and `PREFIX/.oar-tiles/NAME.pmtiles.shards/…` beside a PMTiles object.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::parts::{decode_tiles, part_name, PartRecord, PREFIX_FOLDER, TREE_FOLDER};
use crate::config::{Bucket, StoreConfig};
use crate::error::{Error, Result};
use crate::job::ShardSpec;
use crate::store::document::LIST_CAP;
use crate::store::folder::ObjectFolder;
use crate::store::key_under;

const PLAN_NAME: &str = "plan.json";

/// The extension of a part file: an MBTiles file of the shard's tiles.
const PART_FILE: &str = "mbtiles";

/// A finished shard's part: its record and the tiles it holds.
#[derive(Debug, Clone)]
pub struct Part {
    /// The record.
    pub record: PartRecord,
    /// The tiles, with the MD5 of their bytes where known.
    pub tiles: HashMap<u64, [u8; 16]>,
}

/// Where an output's shard files live.
pub enum ShardStore {
    /// On this file system: the plan file and the folder of part records.
    Files {
        /// The plan.
        plan: PathBuf,
        /// Part records (trees only).
        folder: PathBuf,
    },
    /// Objects under a prefix of a remote store.
    Objects(ObjectFolder),
}

impl ShardStore {
    /// The shard files of a tree: `ROOT/.oar-tiles-shards/`.
    pub fn in_tree(root: &Path) -> ShardStore {
        ShardStore::Files {
            plan: root.join(TREE_FOLDER).join(PLAN_NAME),
            folder: root.join(TREE_FOLDER),
        }
    }

    /// The shard files of the single file `path`: `PATH.oar-tiles-shards/`.
    pub fn beside_file(path: &Path) -> ShardStore {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(TREE_FOLDER);
        let folder = path.with_file_name(name);
        ShardStore::Files {
            plan: folder.join(PLAN_NAME),
            folder,
        }
    }

    /// The shard objects of the object `key` of a remote store: `PREFIX/.oar-tiles/NAME.shards/`
    /// beside it, apart from a prefix's own shards and other objects'.
    pub async fn beside_object(
        store_settings: &StoreConfig,
        bucket: &Bucket,
        key: &str,
    ) -> Result<ShardStore> {
        let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
        let folder = key_under(prefix, &format!(".oar-tiles/{name}.shards"));
        Ok(ShardStore::Objects(
            super::store_folder(store_settings, bucket, &folder).await?,
        ))
    }

    /// The shard objects of a prefix of a remote store: `PREFIX/.oar-tiles/shards/`.
    pub async fn on_store(
        store_settings: &StoreConfig,
        bucket: &Bucket,
        prefix: &str,
    ) -> Result<ShardStore> {
        let folder = key_under(prefix, PREFIX_FOLDER);
        Ok(ShardStore::Objects(
            super::store_folder(store_settings, bucket, &folder).await?,
        ))
    }

    /// The plan's file or object, for messages.
    pub fn plan_location(&self) -> String {
        self.location(PLAN_NAME)
    }

    /// The stored plan's text, if there is one.
    pub async fn read_plan(&self) -> Result<Option<String>> {
        let bytes = self.read(PLAN_NAME).await?;
        bytes
            .map(|bytes| {
                String::from_utf8(bytes)
                    .map_err(|_| Error::output(self.plan_location(), "the shard plan is not text"))
            })
            .transpose()
    }

    /// Stores `text` as the plan unless one is there already: false when another shard stored
    /// its plan first (that one is the run's).
    pub async fn store_plan_if_absent(&self, text: &str) -> Result<bool> {
        match self {
            ShardStore::Files { plan, .. } => {
                create_parent(plan)?;
                let mut private = plan.as_os_str().to_os_string();
                private.push(format!(".{}.partial", std::process::id()));
                let private = PathBuf::from(private);
                let fail = |e: std::io::Error| {
                    Error::output(plan, format!("cannot store the shard plan: {e}"))
                };
                std::fs::write(&private, text).map_err(fail)?;
                // A hard link fails rather than replaces, so the plan appears whole, once.
                let linked = std::fs::hard_link(&private, plan);
                let _ = std::fs::remove_file(&private);
                match linked {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(fail(e)),
                }
            }
            ShardStore::Objects(objects) => objects.put(PLAN_NAME, text.as_bytes(), true).await,
        }
    }

    /// Stores `text` as the plan, replacing any (`shard-plan`, before the shards start).
    pub async fn replace_plan(&self, text: &str) -> Result<()> {
        match self {
            ShardStore::Files { plan, .. } => {
                create_parent(plan)?;
                crate::store::durable::replace(plan, text.as_bytes())
                    .map_err(|e| Error::output(plan, format!("cannot write the shard plan: {e}")))
            }
            ShardStore::Objects(objects) => objects
                .put(PLAN_NAME, text.as_bytes(), false)
                .await
                .map(|_| ()),
        }
    }

    /// Shard `spec`'s part, if that shard finished.
    pub async fn read_part(&self, spec: ShardSpec) -> Result<Option<Part>> {
        let name = part_name(spec, "json");
        let Some(bytes) = self.read(&name).await? else {
            return Ok(None);
        };
        let source = self.location(&name);
        let record = PartRecord::from_json(&bytes, &source)?;
        let list = part_name(spec, "tiles");
        let tiles = self
            .read(&list)
            .await?
            .and_then(|bytes| decode_tiles(&bytes))
            .ok_or_else(|| Error::output(self.location(&list), "missing or not a tile list"))?;
        if tiles.len() as u64 != record.tiles {
            return Err(Error::output(
                self.location(&list),
                format!(
                    "holds {} tiles, its record says {}",
                    tiles.len(),
                    record.tiles
                ),
            ));
        }
        Ok(Some(Part { record, tiles }))
    }

    /// Shard `spec`'s part record alone, if that shard finished: parts whose tiles are a part file
    /// ([`ShardStore::keep_part_file`]) keep no tile list.
    pub async fn read_record(&self, spec: ShardSpec) -> Result<Option<PartRecord>> {
        let name = part_name(spec, "json");
        match self.read(&name).await? {
            Some(bytes) => PartRecord::from_json(&bytes, &self.location(&name)).map(Some),
            None => Ok(None),
        }
    }

    /// Stores shard `spec`'s record, which marks its part finished: written last.
    pub async fn put_record(&self, spec: ShardSpec, record: &PartRecord) -> Result<()> {
        let name = part_name(spec, "json");
        match self {
            ShardStore::Files { .. } => {
                let path = PathBuf::from(self.location(&name));
                create_parent(&path)?;
                crate::store::durable::replace(&path, &record.to_json())
                    .map_err(|e| Error::output(&path, format!("cannot write the part record: {e}")))
            }
            ShardStore::Objects(objects) => objects
                .put(&name, &record.to_json(), false)
                .await
                .map(|_| ()),
        }
    }

    /// Where shard `spec` writes its part file on this machine when the parts are files here;
    /// `None` when they are objects of a remote store.
    pub fn local_part_file(&self, spec: ShardSpec) -> Option<PathBuf> {
        match self {
            ShardStore::Files { folder, .. } => Some(folder.join(part_name(spec, PART_FILE))),
            ShardStore::Objects(_) => None,
        }
    }

    /// Keeps shard `spec`'s finished part file `path` with the parts: uploaded (in parts above
    /// `part_size` bytes) where the parts are objects; a file here is written in place already.
    pub async fn keep_part_file(&self, spec: ShardSpec, path: &Path, part_size: u64) -> Result<()> {
        match self {
            ShardStore::Files { .. } => match self.local_part_file(spec) {
                Some(place) if place == path => Ok(()),
                _ => Err(Error::output(
                    path,
                    "a part file is written in its shard folder",
                )),
            },
            ShardStore::Objects(objects) => {
                objects
                    .upload(&part_name(spec, PART_FILE), path, part_size)
                    .await
            }
        }
    }

    /// Shard `spec`'s part file on this machine: the file itself, or the object downloaded (as it
    /// streams in) into `download_to`.
    pub async fn fetch_part_file(&self, spec: ShardSpec, download_to: &Path) -> Result<PathBuf> {
        let name = part_name(spec, PART_FILE);
        match self {
            ShardStore::Files { .. } => {
                let path = PathBuf::from(self.location(&name));
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(Error::output(
                        &path,
                        format!("the part file of shard {spec} is missing; run that shard again"),
                    ))
                }
            }
            ShardStore::Objects(objects) => {
                objects.download(&name, download_to).await?;
                Ok(download_to.to_path_buf())
            }
        }
    }

    /// Removes the plan and the part records of a run of `count` shards, once it is finalized, so
    /// the next sharded run plans afresh.
    ///
    /// A shard removes its own record with [`ShardStore::forget_part`] before it starts, so a
    /// record always means the shard finished in this run.
    pub async fn clear(&self, count: u32) -> Result<()> {
        let mut names = vec![PLAN_NAME.to_string()];
        for index in 0..count {
            let spec = ShardSpec::new(index, count)?;
            names.push(part_name(spec, "json"));
            names.push(part_name(spec, "tiles"));
            names.push(part_name(spec, PART_FILE));
        }
        // The plan goes first: without it nothing is taken for an unfinished run, and a shard of
        // the next run removes its own stale part record before it starts.
        for name in &names {
            self.remove(name).await?;
        }
        if let ShardStore::Files { folder, .. } = self {
            let own = |name: &std::ffi::OsStr| name.to_string_lossy().ends_with(TREE_FOLDER);
            if folder.file_name().is_some_and(own) {
                let _ = std::fs::remove_dir(folder);
            }
        }
        Ok(())
    }

    /// Removes shard `spec`'s part record, left by an earlier run or an earlier attempt.
    pub async fn forget_part(&self, spec: ShardSpec) -> Result<()> {
        self.remove(&part_name(spec, "json")).await
    }

    fn location(&self, name: &str) -> String {
        match self {
            ShardStore::Files { plan, .. } if name == PLAN_NAME => plan.display().to_string(),
            ShardStore::Files { folder, .. } => folder.join(name).display().to_string(),
            ShardStore::Objects(objects) => objects.location(name),
        }
    }

    async fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self {
            ShardStore::Files { .. } => {
                let path = PathBuf::from(self.location(name));
                crate::store::document::read_capped(&path, LIST_CAP)
            }
            ShardStore::Objects(objects) => objects.get(name, LIST_CAP).await,
        }
    }

    async fn remove(&self, name: &str) -> Result<()> {
        match self {
            ShardStore::Files { .. } => {
                crate::store::durable::remove_file_if_there(&PathBuf::from(self.location(name)))
            }
            ShardStore::Objects(objects) => objects.delete(name).await,
        }
    }
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir)
            .map_err(|e| Error::output(dir, format!("cannot create it: {e}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordination::parts::{encode_tiles, plan_id, PartOf};
    use crate::coordination::TilesetMetadata;

    fn spec(index: u32) -> ShardSpec {
        ShardSpec::new(index, 2).unwrap()
    }

    /// Shard `index` of two under the plan `plan`, and the metadata of the tileset its record
    /// describes.
    fn part_of(index: u32, plan: &str) -> (PartOf, TilesetMetadata) {
        let part = PartOf {
            spec: spec(index),
            plan: plan_id(plan),
        };
        let metadata = TilesetMetadata::bare(
            "t",
            crate::tile::BBox::WORLD,
            crate::tile::ZoomRange::new(0, 2).unwrap(),
        );
        (part, metadata)
    }

    #[tokio::test]
    async fn a_tree_keeps_one_plan_and_reads_back_parts_refusing_damaged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        let store = ShardStore::in_tree(&root);
        assert_eq!(store.read_plan().await.unwrap(), None);
        assert!(store.store_plan_if_absent("first").await.unwrap());
        assert!(!store.store_plan_if_absent("second").await.unwrap());
        assert_eq!(store.read_plan().await.unwrap().as_deref(), Some("first"));
        assert!(store.read_part(spec(1)).await.unwrap().is_none());

        let folder = root.join(TREE_FOLDER);
        let (part, metadata) = part_of(1, "first");
        let tiles: HashMap<u64, [u8; 16]> = [(5, [1; 16])].into_iter().collect();
        let record = PartRecord::new(&part, "{}", &metadata, 1);
        std::fs::write(folder.join(part.name("tiles")), encode_tiles(&tiles)).unwrap();
        std::fs::write(folder.join(part.name("json")), record.to_json()).unwrap();
        let read = store.read_part(spec(1)).await.unwrap().unwrap();
        assert_eq!(read.tiles, tiles);
        assert_eq!(read.record.shard, "1/2");

        let wrong_count = PartRecord::new(&part, "{}", &metadata, 2);
        std::fs::write(folder.join(part.name("json")), wrong_count.to_json()).unwrap();
        let err = store.read_part(spec(1)).await.unwrap_err().to_string();
        assert!(err.contains("holds 1 tiles, its record says 2"), "{err}");
        std::fs::write(folder.join(part.name("json")), b"{not json").unwrap();
        let err = store.read_part(spec(1)).await.unwrap_err().to_string();
        assert!(
            err.contains("part-1-of-2.json") && err.contains("not a shard's part record"),
            "{err}"
        );

        store.clear(2).await.unwrap();
        assert!(
            !folder.exists(),
            "the plan, the parts and their folder are gone"
        );
    }

    #[tokio::test]
    async fn a_single_files_parts_live_in_a_folder_beside_it_and_go_with_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::beside_file(&dir.path().join("t.pmtiles"));
        assert!(store.store_plan_if_absent("p").await.unwrap());
        let folder = dir.path().join("t.pmtiles.oar-tiles-shards");
        assert!(folder.join("plan.json").is_file());
        let file = store.local_part_file(spec(0)).unwrap();
        assert_eq!(file, folder.join("part-0-of-2.mbtiles"));
        std::fs::write(&file, b"tiles").unwrap();
        store.keep_part_file(spec(0), &file, 0).await.unwrap();
        let elsewhere = dir.path().join("elsewhere.mbtiles");
        assert!(store.keep_part_file(spec(0), &elsewhere, 0).await.is_err());
        let (part, metadata) = part_of(0, "p");
        let record = PartRecord::new(&part, "{}", &metadata, 3);
        store.put_record(spec(0), &record).await.unwrap();
        let read = store.read_record(spec(0)).await.unwrap().unwrap();
        assert_eq!((read.shard.as_str(), read.tiles), ("0/2", 3));
        assert_eq!(
            store.fetch_part_file(spec(0), &elsewhere).await.unwrap(),
            file
        );
        assert!(store.read_record(spec(1)).await.unwrap().is_none());
        let err = store
            .fetch_part_file(spec(1), &elsewhere)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("part-1-of-2.mbtiles"), "{err}");

        store.clear(2).await.unwrap();
        assert!(
            !folder.exists(),
            "the plan, the parts and their folder are gone"
        );
    }

    #[test]
    fn tile_lists_round_trip_and_garbage_is_no_list() {
        let tiles: HashMap<u64, [u8; 16]> =
            [(1, [7; 16]), (u64::MAX, [0; 16])].into_iter().collect();
        assert_eq!(decode_tiles(&encode_tiles(&tiles)), Some(tiles));
        assert_eq!(decode_tiles(b"not gzip"), None);
        let short = crate::encode::gzip(&[1, 2, 3], crate::encode::DEFAULT_LEVEL);
        assert_eq!(decode_tiles(&short), None);
    }
}
