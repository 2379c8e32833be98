//! Tiles in a remote store (S3 and S3-compatible stores, Azure Blob Storage): `{prefix}/{z}/{x}/{y}.ext` objects with the headers a CDN needs, and
//! `tiles.json` beside them.
//!
//! At start the prefix is listed once; the listing's ETags (the MD5 of single-part objects) let a tile
//! whose bytes the object already holds be skipped without a request, which avoids PUT costs and CDN
//! churn. Uploads run concurrently, bounded by a semaphore, each retried with exponential backoff on
//! throttling, 5xx and connection failures; a tile that still fails fails the job, naming the tile.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use md5::{Digest, Md5};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

mod agg;
pub mod kind;
mod object;
pub mod read;
mod store;

pub use object::download;
pub use store::{list_tiles, tile_object_key, ListedTile};

use super::agg_hash::{AGG_TILES_HASH_KEY, TILE_DIGEST_KEY};
use super::tilejson::{says_the_same, tilejson, TILEJSON_NAME};
use super::{
    ChangedList, Finish, OutputSettings, Resume, Sink, SinkReport, Sweep, TilesetMetadata,
};
use crate::config::{Bucket, StoreConfig};
use crate::coordination::parts::{decode_tiles, encode_tiles, PartOf, PartRecord, PREFIX_FOLDER};
use crate::error::{Error, Result};
use crate::state::journal::FileJournal;
use crate::store::document::{DOCUMENT_CAP, LIST_CAP};
use crate::store::pace::Throttled;
use crate::store::{local_file, ObjectHeaders, ObjectStore, MVT_CONTENT_TYPE};
use crate::tile::{tile_from_key, tile_key, TileCoord};

/// A sink uploading to a remote object store.
pub struct ObjectSink {
    store: Arc<dyn ObjectStore>,
    bucket: Bucket,
    prefix: String,
    /// The URL under which readers fetch the prefix's objects, for TileJSON.
    public_base: String,
    settings: OutputSettings,
    changes: ChangedList,
    handle: Handle,
    slots: Arc<Semaphore>,
    uploads: JoinSet<Result<Option<TileCoord>>>,
    /// MD5 of every tile object that existed at start; entries are removed as tiles are produced, so
    /// what remains at the end of a full seed is stale.
    existing: HashMap<u64, (TileCoord, Option<[u8; 16]>)>,
    /// MD5 of every tile the prefix holds once this run is done, saved as the manifest on finish.
    hashes: HashMap<u64, [u8; 16]>,
    /// The manifest the last finished run left (`None`: there is none, or it cannot be read, so the
    /// prefix is listed), until [`Sink::prepare`].
    manifest: Option<HashMap<u64, [u8; 16]>>,
    /// Whether a manifest object is stored, readable or not: it is removed before the first upload.
    manifest_stored: bool,
    /// Whether `existing` has been filled, which happens once, before the first tile.
    prepared: bool,
    report: SinkReport,
    state: Option<String>,
    journal: Option<FileJournal>,
    /// Tiles whose upload is in flight, with what the journal records once it has succeeded.
    uploading: HashMap<u64, Option<(TileCoord, [bool; 4])>>,
    /// Set when the sink writes one shard's part of the prefix.
    part: Option<PartOf>,
    /// The tiles this shard's part holds (only kept for a part).
    produced: HashSet<u64>,
    /// This machine's copy of the tiles, for the `agg_tiles_hash` (not kept by a part).
    cache: Option<agg::TileCache>,
    /// Whether some tile the prefix holds is missing from `hashes` (its MD5 is unknown).
    unhashed: bool,
    /// The `[store]` table the store was opened with, which finds its pace again.
    store_config: StoreConfig,
    /// What the bucket's pace had counted before this sink wrote, so the report says only its own.
    throttled_before: Throttled,
}

/// Where, under the prefix, the job state (change watermark) is kept.
pub(super) const STATE_NAME: &str = ".oar-tiles/state.json";

/// Where, under the prefix, the tile hashes are kept for stores whose listings carry no ETag.
const MANIFEST_NAME: &str = ".oar-tiles/tile-hashes";

/// The key of `name` under `prefix`.
pub use crate::store::key_under as object_key;

impl ObjectSink {
    /// Connects, and reads the job state and tile manifest the last finished run left.
    pub async fn create(
        bucket: &Bucket,
        prefix: &str,
        config: &StoreConfig,
        settings: &OutputSettings,
        changes: ChangedList,
        journal: Option<&str>,
        part: Option<PartOf>,
    ) -> Result<Self> {
        let target = format!("{bucket}/{prefix}");
        let store = crate::store::open(bucket, config)
            .await
            .map_err(|e| Error::output_caused(&target, e))?;
        // Reading the state proves early that the bucket exists and the credentials work; what the
        // prefix holds is only learnt in `prepare`, once it is known how much of it the run needs.
        let state = store
            .get(&object_key(prefix, STATE_NAME), DOCUMENT_CAP)
            .await
            .map_err(|e| Error::output_caused(&target, e))?
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let manifest = store
            .get(&object_key(prefix, MANIFEST_NAME), LIST_CAP)
            .await
            .map_err(|e| Error::output_caused(&target, e))?;
        let manifest_stored = manifest.is_some();
        // Taken as empty, an unreadable manifest would hide every stored tile from a run over a
        // tile list: its deletions would go uncounted and unlisted.
        let manifest = manifest.and_then(|bytes| {
            let read = decode_tiles(&bytes);
            if read.is_none() {
                tracing::warn!(
                    "{target}: the tile manifest {MANIFEST_NAME} cannot be read; listing the prefix instead"
                );
            }
            read
        });
        let public_base = store.public_base(prefix);
        Ok(Self {
            store,
            bucket: bucket.clone(),
            prefix: prefix.to_string(),
            public_base,
            settings: settings.clone(),
            changes,
            handle: Handle::current(),
            slots: Arc::new(Semaphore::new(config.max_concurrent_uploads)),
            uploads: JoinSet::new(),
            existing: HashMap::new(),
            hashes: HashMap::new(),
            manifest,
            manifest_stored,
            prepared: false,
            report: SinkReport::default(),
            state,
            journal: match journal {
                Some(fingerprint) => {
                    // Shards writing into one prefix each journal their own walk.
                    let journaled = match &part {
                        Some(part) => format!("{prefix}#{}", part.name("journal")),
                        None => prefix.to_string(),
                    };
                    let path = local_file(bucket, config, &journaled, "journals", "sqlite");
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)
                            .map_err(|e| Error::output(&path, format!("cannot create it: {e}")))?;
                    }
                    Some(FileJournal::open(&path, fingerprint)?)
                }
                None => None,
            },
            uploading: HashMap::new(),
            cache: part
                .is_none()
                .then(|| {
                    let path = local_file(bucket, config, prefix, "tile-cache", "sqlite");
                    agg::TileCache::open(&path)
                })
                .flatten(),
            part,
            produced: HashSet::new(),
            unhashed: false,
            throttled_before: crate::store::throttled(bucket, config).unwrap_or_default(),
            store_config: config.clone(),
        })
    }

    /// Ends a shard's part: its tile list with their hashes, then (which marks the part finished)
    /// its record.
    fn finish_part(&mut self, part: &PartOf, end: &Finish<'_>) -> Result<()> {
        let Some(state) = end.state else {
            // An incomplete shard leaves no record, so `finalize` waits for its retry.
            return Ok(());
        };
        let tiles: HashMap<u64, [u8; 16]> = self
            .produced
            .iter()
            .map(|key| (*key, self.hashes.get(key).copied().unwrap_or_default()))
            .collect();
        let record = PartRecord::new(part, state, end.metadata, tiles.len() as u64);
        let folder = |name: String| format!("{PREFIX_FOLDER}/{name}");
        self.put(
            &folder(part.name("tiles")),
            encode_tiles(&tiles),
            "application/octet-stream",
        )?;
        self.put(
            &folder(part.name("json")),
            record.to_json(),
            "application/json",
        )
    }

    /// Uploads a document (not a tile) under the prefix.
    fn put(&self, name: &str, body: Vec<u8>, content_type: &str) -> Result<()> {
        let key = object_key(&self.prefix, name);
        let headers = ObjectHeaders {
            content_type,
            cache_control: &self.settings.cache_control,
            content_encoding: None,
        };
        self.handle
            .block_on(self.store.put(&key, body, headers, false))
            .map(|_| ())
            .map_err(|e| Error::output_caused(self.target(), e))
    }

    /// Every tile object under the prefix, with its MD5 where the store's listing tells it.
    fn list_prefix(&self) -> Result<Vec<ListedTile>> {
        self.handle
            .block_on(list_tiles(
                self.store.as_ref(),
                &self.prefix,
                &self.settings.tile_extension,
            ))
            .map_err(|e| Error::output_caused(self.target(), e))
    }

    fn target(&self) -> String {
        format!("{}/{}", self.bucket, self.prefix)
    }

    fn reap(
        &mut self,
        outcome: std::result::Result<Result<Option<TileCoord>>, tokio::task::JoinError>,
    ) -> Result<()> {
        match outcome {
            Ok(Ok(Some(tile))) => {
                // The upload task recorded the tile in the outbox as soon as its PUT was done.
                self.report.changed += 1;
                // Only now is the tile stored, so only now may the journal say so.
                if let (Some(Some((tile, children))), Some(journal)) = (
                    self.uploading.remove(&tile_key(tile)),
                    self.journal.as_mut(),
                ) {
                    journal.record(tile, children, true)?;
                }
                Ok(())
            }
            Ok(Ok(None)) => Ok(()),
            Ok(Err(err)) => Err(err),
            Err(err) => Err(Error::output(
                self.target(),
                format!("an upload task failed: {err}"),
            )),
        }
    }

    /// Collects finished uploads without waiting; the first failure stops the job.
    fn reap_finished(&mut self) -> Result<()> {
        while let Some(outcome) = self.uploads.try_join_next() {
            self.reap(outcome)?;
        }
        Ok(())
    }

    fn wait_all(&mut self) -> Result<()> {
        while let Some(outcome) = self.handle.clone().block_on(self.uploads.join_next()) {
            self.reap(outcome)?;
        }
        self.report.throttled = crate::store::throttled(&self.bucket, &self.store_config)
            .map(|now| now.since(&self.throttled_before))
            .filter(|run| run.refused_writes > 0);
        Ok(())
    }

    fn sweep(&mut self, metadata: &TilesetMetadata, scope: &Sweep) -> Result<()> {
        let stale: Vec<TileCoord> = self
            .existing
            .values()
            .map(|(tile, _)| *tile)
            .filter(|tile| scope.takes(*tile, metadata))
            .collect();
        for batch in stale.chunks(1000) {
            let keys: Vec<String> = batch
                .iter()
                .map(|tile| tile_object_key(&self.prefix, *tile, &self.settings.tile_extension))
                .collect();
            self.handle
                .block_on(self.store.delete_many(&keys))
                .map_err(|e| Error::output_caused(self.target(), e))?;
            for tile in batch {
                self.hashes.remove(&tile_key(*tile));
                self.report.deleted += 1;
                self.changes.record(*tile);
            }
        }
        Ok(())
    }
}

impl Sink for ObjectSink {
    fn state(&self) -> Option<String> {
        self.state.clone()
    }

    fn write_tile(&mut self, tile: TileCoord, data: &[u8]) -> Result<()> {
        self.prepare(None)?;
        self.reap_finished()?;
        let md5: [u8; 16] = Md5::digest(data).into();
        self.hashes.insert(tile_key(tile), md5);
        if let Some(cache) = &self.cache {
            cache.put(tile, &md5, data);
        }
        if self.part.is_some() {
            self.produced.insert(tile_key(tile));
        }
        if let Some((_, known)) = self.existing.remove(&tile_key(tile)) {
            if known == Some(md5) {
                self.report.unchanged += 1;
                return Ok(());
            }
        }
        self.uploading.insert(tile_key(tile), None);
        let permit = self
            .handle
            .block_on(self.slots.clone().acquire_owned())
            .expect("the semaphore is never closed");
        let store = self.store.clone();
        let bucket = self.bucket.clone();
        let key = tile_object_key(&self.prefix, tile, &self.settings.tile_extension);
        let encoding = self.settings.compress.then_some("gzip");
        let cache_control = self.settings.cache_control_at(tile.z()).to_string();
        let body = data.to_vec();
        let target = self.target();
        let changes = self.changes.clone();
        self.uploads.spawn_on(
            async move {
                let _permit = permit;
                let headers = ObjectHeaders {
                    content_type: MVT_CONTENT_TYPE,
                    cache_control: &cache_control,
                    content_encoding: encoding,
                };
                store
                    .put(&key, body, headers, false)
                    .await
                    .map_err(|e| e.about(format!("uploading tile {tile} to {bucket}/{key}")))
                    .map_err(|e| Error::output_caused(&target, e))?;
                // Recorded here, not when the writer next reaps its uploads: a run purges what
                // the outbox records as it comes, and the object is served from now on.
                changes.record(tile);
                Ok(Some(tile))
            },
            &self.handle,
        );
        Ok(())
    }

    fn delete_tile(&mut self, tile: TileCoord) -> Result<()> {
        self.prepare(None)?;
        self.reap_finished()?;
        let existed = self.existing.remove(&tile_key(tile)).is_some();
        self.hashes.remove(&tile_key(tile));
        self.produced.remove(&tile_key(tile));
        let key = tile_object_key(&self.prefix, tile, &self.settings.tile_extension);
        self.handle
            .block_on(self.store.delete(&key))
            .map_err(|e| e.about(format!("deleting tile {tile}")))
            .map_err(|e| Error::output_caused(self.target(), e))?;
        if existed {
            self.report.deleted += 1;
            self.changes.record(tile);
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, end: Finish<'_>) -> Result<SinkReport> {
        let (metadata, sweep, state) = (end.metadata, end.sweep, end.state);
        // A sink never prepared knows nothing of the prefix yet: listing keeps the sweep right.
        self.prepare(None)?;
        self.wait_all()?;
        if let Some(part) = self.part.clone() {
            self.finish_part(&part, &end)?;
            if let Some(journal) = self.journal.take() {
                journal.remove();
            }
            return Ok(self.report);
        }
        if !sweep.is_nothing() {
            self.sweep(metadata, sweep)?;
        }
        let named = self.agg_tiles_hash(end.defer_hash)?;
        let mut metadata = metadata.clone();
        metadata.cover(&named.coverage);
        let metadata = &metadata;
        let mut tilejson_document = tilejson(metadata, &self.settings, Some(&self.public_base));
        if let Some(hash) = named.hash {
            tilejson_document[AGG_TILES_HASH_KEY] = hash.into();
        }
        tilejson_document[TILE_DIGEST_KEY] = named.digest.to_hex().into();
        let document = serde_json::to_vec_pretty(&tilejson_document).expect("JSON serializes");
        let key = object_key(&self.prefix, TILEJSON_NAME);
        let previous = self
            .handle
            .block_on(self.store.get(&key, DOCUMENT_CAP))
            .map_err(|e| Error::output_caused(format!("{}/{key}", self.bucket), e))?;
        // The TileJSON a CDN serves goes to the outbox when what it says changes, as tiles do (a
        // new `agg_tiles_hash` too: the edge must not keep naming the old one); one that says
        // the same is not sent again.
        if !says_the_same(previous.as_deref(), &tilejson_document, false) {
            self.changes.record_object(TILEJSON_NAME);
            self.put(TILEJSON_NAME, document, "application/json")?;
        }
        let manifest = encode_tiles(&self.hashes);
        self.put(MANIFEST_NAME, manifest, "application/octet-stream")?;
        if let Some(state) = state {
            self.put(STATE_NAME, state.as_bytes().to_vec(), "application/json")?;
        }
        if let Some(journal) = self.journal.take() {
            journal.remove();
        }
        Ok(self.report)
    }

    fn adopt(&mut self, tiles: &HashMap<u64, [u8; 16]>) -> Result<()> {
        self.prepare(None)?;
        for (key, md5) in tiles {
            self.existing.remove(key);
            // A hash the shard did not know stays as the listing gave it, or unknown.
            if *md5 != [0; 16] {
                self.hashes.insert(*key, *md5);
            }
            self.unhashed |= !self.hashes.contains_key(key);
        }
        Ok(())
    }

    fn abort(mut self: Box<Self>) {
        // Each object is replaced atomically by the store; stop what is in flight and leave the rest as it is.
        self.uploads.abort_all();
        while let Some(outcome) = self.handle.clone().block_on(self.uploads.join_next()) {
            // Uploads that completed before the abort are still journaled.
            let _ = self.reap(outcome);
        }
        if let Some(journal) = self.journal.as_mut() {
            let _ = journal.commit();
        }
    }

    /// A run over a known list of tiles trusts the manifest the last finished run left for what the
    /// prefix holds, instead of listing every object (a request per thousand tiles, on every cron
    /// run); a walk of the pyramid, or a prefix without a manifest, is listed in full. The manifest
    /// is removed before anything is uploaded, so a run that dies midway cannot leave hashes that no
    /// longer match the objects.
    fn prepare(&mut self, planned: Option<usize>) -> Result<()> {
        if self.prepared {
            return Ok(());
        }
        let manifest = self.manifest.take();
        self.existing = match (&manifest, planned) {
            (Some(manifest), Some(_)) => manifest
                .iter()
                .filter_map(|(key, md5)| Some((*key, (tile_from_key(*key)?, Some(*md5)))))
                .collect(),
            _ => {
                let listed = self.list_prefix()?;
                // Stores whose listings carry no ETag (some S3-compatible ones) fall back on the
                // manifest's hashes.
                listed
                    .into_iter()
                    .map(|(tile, etag, _)| {
                        let key = tile_key(tile);
                        let known = manifest.as_ref().and_then(|m| m.get(&key).copied());
                        (key, (tile, etag.or(known)))
                    })
                    .collect()
            }
        };
        self.hashes = self
            .existing
            .iter()
            .filter_map(|(key, (_, md5))| md5.map(|md5| (*key, md5)))
            .collect();
        self.unhashed = self.hashes.len() < self.existing.len();
        if self.manifest_stored {
            let key = object_key(&self.prefix, MANIFEST_NAME);
            self.handle
                .block_on(self.store.delete(&key))
                .map_err(|e| e.about("removing the old tile manifest".into()))
                .map_err(|e| Error::output_caused(self.target(), e))?;
        }
        self.prepared = true;
        Ok(())
    }

    fn begin_journal(&mut self, watermark: Option<&str>) -> Result<Option<Resume>> {
        let Some(journal) = self.journal.as_mut() else {
            return Ok(None);
        };
        let (resume, written) = journal.begin(watermark)?;
        for tile in written {
            // Stored by the interrupted run: not stale, whatever the listing said.
            self.existing.remove(&tile_key(tile));
            if self.part.is_some() {
                self.produced.insert(tile_key(tile));
            }
        }
        Ok(Some(resume))
    }

    fn journal(&mut self, tile: TileCoord, children: [bool; 4], written: bool) -> Result<()> {
        if let Some(pending) = self.uploading.get_mut(&tile_key(tile)) {
            *pending = Some((tile, children));
            return Ok(());
        }
        match self.journal.as_mut() {
            Some(journal) => journal.record(tile, children, written),
            None => Ok(()),
        }
    }
}
