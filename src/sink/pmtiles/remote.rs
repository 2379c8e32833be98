//! A PMTiles archive kept as one object of a remote store (`s3://bucket/prefix/name.pmtiles`,
//! `az://container/prefix/name.pmtiles`, `gs://bucket/prefix/name.pmtiles`).
//!
//! The run itself is a local PMTiles run on a working copy in this machine's cache (its store is the
//! journal an interrupted run resumes from, and the place a reseed updates), and the archive is
//! uploaded only when its bytes differ from what the object holds. A machine whose working copy is
//! not the object's current version (a new pod, another host, an object replaced by someone else)
//! downloads the object and rebuilds the store from it, so a reseed still renders only what changed.
//!
//! Beside the archive, `.oar-tiles/NAME.state.json` under the same prefix records the job state and
//! the ETag of the archive it describes; it is written after the archive, so it never describes
//! tiles the object does not hold yet.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use super::versions::{self, md5_of_file, Names, Publication, Shelf};
use super::{rebuild_store, skeleton, store_path, Appended, Filler, InPlace, PmtilesSink};
use crate::config::{Bucket, StoreConfig, POINTER_CACHE_CONTROL, VERSION_CACHE_CONTROL};
use crate::error::{Error, Result};
use crate::sink::mbtiles::{partial_path, remove_sqlite_files};
use crate::sink::objects::{download, object_key};
use crate::sink::{ChangedList, Finish, OutputSettings, Resume, Sink, SinkReport};
use crate::store::document::DOCUMENT_CAP;
use crate::store::{local_file, ObjectCopy, ObjectHeaders, ObjectStore, Splice};
use crate::tile::TileCoord;

/// The media type of PMTiles archives.
pub const PMTILES_CONTENT_TYPE: &str = "application/vnd.pmtiles";

/// What the state object under the prefix records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RemoteState {
    /// The job state (watermark) the archive's tiles reflect.
    state: Option<String>,
    /// The ETag of the archive this state describes.
    archive_etag: String,
}

/// What this machine knows about its working copy: the object version it matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Synced {
    /// The object's ETag when the working copy last matched it.
    etag: Option<String>,
    /// MD5 of the archive file that the object then held.
    md5: Option<String>,
}

/// An archive in a remote store, written through a working copy on this machine.
pub struct RemotePmtilesSink {
    local: PmtilesSink,
    remote: Remote,
}

/// The object, and what this run knows of it.
struct Remote {
    store: Arc<dyn ObjectStore>,
    key: String,
    working_copy: PathBuf,
    part_size: u64,
    cache_control: String,
    changes: ChangedList,
    handle: Handle,
    etag: Option<String>,
    state: Option<RemoteState>,
    synced: Synced,
    /// Whether the archive is also published as a version with a pointer (`pmtiles_versions`).
    versions: Option<Publication>,
    /// Where the archive's prefix is served from, for the versions' URLs in TileJSON.
    public_base: String,
    /// The unreferenced share of tile data above which the archive is written whole again.
    compact_above: f64,
}

fn synced_path(working_copy: &Path) -> PathBuf {
    let mut name = working_copy.as_os_str().to_os_string();
    name.push(".synced.json");
    PathBuf::from(name)
}

fn read_synced(working_copy: &Path) -> Option<Synced> {
    let bytes = crate::store::document::read_capped(&synced_path(working_copy), DOCUMENT_CAP);
    serde_json::from_slice(&bytes.ok()??).ok()
}

fn write_synced(working_copy: &Path, synced: &Synced) -> Result<()> {
    let path = synced_path(working_copy);
    let json = serde_json::to_vec(synced).expect("JSON serializes");
    crate::store::durable::replace(&path, &json)
        .map_err(|e| Error::output(&path, format!("cannot write it: {e}")))
}

/// Removes the working copy, its store (with any journal) and what this machine knew of them.
fn forget(working_copy: &Path) {
    skeleton::forget_holes(working_copy);
    let store = store_path(working_copy);
    for path in [working_copy.to_path_buf(), synced_path(working_copy)] {
        let _ = std::fs::remove_file(path);
    }
    remove_sqlite_files(&store);
    remove_sqlite_files(&partial_path(&store));
}

/// Where, under the archive's prefix, its state object lives.
fn state_key(key: &str) -> String {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    object_key(prefix, &format!(".oar-tiles/{name}.state.json"))
}

impl RemotePmtilesSink {
    /// Reads what the object and its state hold, brings the working copy up to date with them, and
    /// opens its store.
    pub async fn create(
        bucket: &Bucket,
        key: &str,
        config: &StoreConfig,
        settings: &OutputSettings,
        changes: ChangedList,
        journal: Option<&str>,
    ) -> Result<Self> {
        let target = format!("{bucket}/{key}");
        let store = crate::store::open(bucket, config)
            .await
            .map_err(|e| Error::output_caused(&target, e))?;
        let remote_etag = store
            .etag(key)
            .await
            .map_err(|e| Error::output_caused(&target, e))?;
        let remote_state = store
            .get(&state_key(key), DOCUMENT_CAP)
            .await
            .map_err(|e| Error::output_caused(&target, e))?
            .and_then(|bytes| serde_json::from_slice::<RemoteState>(&bytes).ok());
        let working_copy = local_file(bucket, config, key, "pmtiles", "pmtiles");
        if let Some(dir) = working_copy.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::output(dir, format!("cannot create it: {e}")))?;
        }
        let known = read_synced(&working_copy);
        let synced = match (&remote_etag, known) {
            // The working copy is the object's current version (or a newer one whose upload did
            // not happen yet): use it as it is, with any journal it keeps.
            (Some(etag), Some(known)) if known.etag.as_ref() == Some(etag) => known,
            (Some(etag), _) => {
                forget(&working_copy);
                // Where the store rebuilds objects from their ranges, the directories are
                // enough; without versions, whose names are the archive's MD5.
                let skeletal = store.splice_rule().is_some() && settings.pmtiles_versions.is_none();
                let skeleton = match skeletal {
                    true => {
                        skeleton::try_read_object(store.as_ref(), key, etag, &working_copy).await
                    }
                    false => None,
                };
                let (placeholders, version) = match skeleton {
                    Some(version) => (true, version),
                    None => {
                        tracing::info!("{target}: downloading the archive to update it");
                        forget(&working_copy);
                        let downloaded = download(store.as_ref(), key, &working_copy)
                            .await
                            .map_err(|e| Error::output_caused(&target, e))?;
                        (false, downloaded)
                    }
                };
                // A state written for another version of the object is not this archive's.
                let state = remote_state
                    .as_ref()
                    .filter(|remote| remote.archive_etag == version)
                    .and_then(|remote| remote.state.clone());
                rebuild_store(&working_copy, state, placeholders).await?;
                let synced = Synced {
                    etag: Some(version),
                    md5: Some(md5_of_file(&working_copy)?),
                };
                write_synced(&working_copy, &synced)?;
                synced
            }
            // The object is gone since this machine uploaded it: start again.
            (None, Some(known)) if known.etag.is_some() => {
                forget(&working_copy);
                Synced::default()
            }
            // Nothing uploaded yet: a working copy here is an interrupted first run's.
            (None, _) => Synced::default(),
        };
        let public_base = store.public_base(folder_of(key).0);
        let local = PmtilesSink {
            announce: false,
            ..PmtilesSink::create(&working_copy, changes.clone(), journal)?
        };
        Ok(RemotePmtilesSink {
            local,
            remote: Remote {
                store,
                key: key.to_string(),
                working_copy,
                part_size: config.part_size_mib * 1024 * 1024,
                cache_control: settings.cache_control.clone(),
                changes,
                handle: Handle::current(),
                etag: synced.etag.clone().or(remote_etag),
                state: remote_state,
                synced,
                versions: Publication::of(settings),
                public_base,
                compact_above: f64::from(settings.pmtiles_compact_above_per_mille) / 1000.0,
            },
        })
    }
}

impl Remote {
    fn target(&self) -> String {
        format!("{}/{}", self.store.bucket(), self.key)
    }

    /// How this run may write the archive in place: when the store rebuilds objects from their
    /// ranges and the working copy is, byte for byte, the object whose ranges it would keep.
    fn in_place(&self) -> Result<Option<InPlace>> {
        let Some(rule) = self.store.splice_rule() else {
            return Ok(None);
        };
        if self.etag.is_none() || self.synced.etag != self.etag || !self.working_copy.exists() {
            return Ok(None);
        }
        let md5 = md5_of_file(&self.working_copy)?;
        if self.synced.md5.as_deref() != Some(md5.as_str()) {
            return Ok(None);
        }
        Ok(Some(InPlace {
            min_first: rule.min_first,
            keeps_whole: rule.keeps_whole,
            compact_above: self.compact_above,
        }))
    }

    /// Rebuilds the object in the store from the working copy's new first bytes and the ranges
    /// of the object it keeps; `None` when the store refused, and the archive goes whole.
    fn splice(&self, appended: &Appended, headers: ObjectHeaders<'_>) -> Result<Option<String>> {
        let Some(etag) = &self.etag else {
            return Ok(None);
        };
        let mut new = vec![0; usize::try_from(appended.sent).unwrap_or(usize::MAX)];
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.working_copy)
            .map_err(|e| Error::output(&self.working_copy, format!("cannot open it: {e}")))?;
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut new, 0)
            .map_err(|e| Error::output(&self.working_copy, format!("cannot read it: {e}")))?;
        // A skeleton's working copy lacks some of the old bytes, the padding perhaps among them.
        let holes = skeleton::holes_after(&self.working_copy, appended)?;
        let padding = appended.sent - appended.padding..appended.sent;
        if let Some(holes) = &holes {
            let object = (self.store.as_ref(), self.key.as_str(), &self.handle);
            let copy = (new.as_mut_slice(), &file, self.working_copy.as_path());
            skeleton::read_padding(object, holes, appended, copy)?;
        }
        let splice = Splice {
            if_etag: etag,
            new: &new,
            kept: appended.kept.clone(),
            headers,
        };
        let spliced = self.handle.block_on(self.store.splice(&self.key, splice));
        match spliced {
            Ok(etag) => {
                if let Some(holes) = &holes {
                    skeleton::write_holes(&self.working_copy, &skeleton::without(holes, padding))?;
                }
                tracing::info!(
                    "{}: updated in place, {} bytes sent, {} kept in the store",
                    self.target(),
                    appended.sent,
                    appended.kept.end - appended.kept.start
                );
                Ok(Some(etag))
            }
            Err(err) => {
                tracing::info!("{err}; uploading the archive whole");
                Ok(None)
            }
        }
    }

    /// Uploads the working copy unless the object already holds these bytes (only what is new
    /// when it was `appended` to; after writing it `whole` when the store did not take that and the
    /// working copy is a skeleton); returns the ETag.
    fn upload_if_changed(
        &mut self,
        appended: Option<Appended>,
        whole: impl FnOnce() -> Result<()>,
    ) -> Result<Option<String>> {
        let md5 = md5_of_file(&self.working_copy)?;
        let current = self.etag.is_some()
            && self.synced.etag == self.etag
            && self.synced.md5.as_deref() == Some(md5.as_str());
        if current {
            return Ok(self.etag.clone());
        }
        let headers = ObjectHeaders {
            content_type: PMTILES_CONTENT_TYPE,
            cache_control: &self.cache_control,
            content_encoding: None,
        };
        let spliced = match &appended {
            Some(appended) if appended.kept.end > appended.kept.start => {
                self.splice(appended, headers)?
            }
            _ => None,
        };
        // A skeleton's padding may have been read from the store into the working copy meanwhile.
        let mut md5 = match appended {
            Some(appended) if spliced.is_some() && appended.padding > 0 => {
                md5_of_file(&self.working_copy)?
            }
            _ => md5,
        };
        let skeletal = skeleton::read_holes(&self.working_copy)?.is_some()
            || skeleton::holds_placeholders(&store_path(&self.working_copy))?;
        if spliced.is_none() && skeletal {
            // This machine holds the archive's directories and changed tiles, not the tiles the
            // store kept: the archive is written whole from the object's bytes first.
            whole()?;
            md5 = md5_of_file(&self.working_copy)?;
        }
        let etag = match spliced {
            Some(etag) => etag,
            None => self
                .handle
                .block_on(self.store.upload_file(
                    &self.key,
                    &self.working_copy,
                    headers,
                    self.part_size,
                ))
                .map_err(|e| Error::output_caused(self.target(), e))?,
        };
        self.changes.record_object(&self.target());
        self.synced = Synced {
            etag: Some(etag.clone()),
            md5: Some(md5),
        };
        write_synced(&self.working_copy, &self.synced)?;
        self.etag = Some(etag.clone());
        Ok(Some(etag))
    }

    /// Downloads the object this working copy describes and fills the store's placeholders from
    /// it, for an archive that must be written whole (`skeleton.rs`).
    fn filler(&self) -> Filler {
        let (store, key) = (self.store.clone(), self.key.clone());
        skeleton::filler(store, key, self.handle.clone(), self.etag.clone())
    }

    fn put_state(&self, state: &RemoteState) -> Result<()> {
        let key = state_key(&self.key);
        let body = serde_json::to_vec(state).expect("JSON serializes");
        let headers = ObjectHeaders {
            content_type: "application/json",
            cache_control: "no-cache",
            content_encoding: None,
        };
        self.handle
            .block_on(self.store.put(&key, body, headers, false))
            .map(|_| ())
            .map_err(|e| Error::output_caused(self.target(), e))
    }
}

impl Sink for RemotePmtilesSink {
    fn write_tile(&mut self, tile: TileCoord, data: &[u8]) -> Result<()> {
        self.local.write_tile(tile, data)
    }

    fn delete_tile(&mut self, tile: TileCoord) -> Result<()> {
        self.local.delete_tile(tile)
    }

    fn state(&self) -> Option<String> {
        self.local.state()
    }

    fn begin_journal(&mut self, watermark: Option<&str>) -> Result<Option<Resume>> {
        self.local.begin_journal(watermark)
    }

    fn prepare(&mut self, planned: Option<usize>) -> Result<()> {
        self.local.prepare(planned)
    }

    fn journal(&mut self, tile: TileCoord, children: [bool; 4], written: bool) -> Result<()> {
        self.local.journal(tile, children, written)
    }

    fn finish(self: Box<Self>, finish: Finish<'_>) -> Result<SinkReport> {
        let RemotePmtilesSink {
            mut local,
            mut remote,
        } = *self;
        let kept = local.state();
        local.in_place = remote.in_place()?;
        local.fill = Some(remote.filler());
        let (report, _, appended) = local.finish_archive(finish)?;
        let (working_copy, filler) = (remote.working_copy.clone(), remote.filler());
        let whole = || super::write_whole(&working_copy, finish.metadata, finish.state, filler);
        let etag = remote
            .upload_if_changed(appended, whole)?
            .unwrap_or_default();
        // The state names the archive version it describes, and follows it: a crash in between
        // leaves a state that a new machine does not trust, so it falls back on the archive's own.
        let state = RemoteState {
            state: finish.state.map(str::to_string).or(kept),
            archive_etag: etag,
        };
        if remote.state.as_ref() != Some(&state) {
            remote.put_state(&state)?;
        }
        if let Some(publication) = &remote.versions {
            let hash = match &remote.synced.md5 {
                Some(md5) => md5.clone(),
                None => md5_of_file(&remote.working_copy)?,
            };
            let (prefix, name) = folder_of(&remote.key);
            let shelf = ObjectShelf {
                remote: &remote,
                prefix,
            };
            let names = Names::of(name);
            versions::publish(
                &shelf,
                &names,
                &names.version(&hash),
                publication,
                finish.metadata,
                &remote.changes,
                versions::unix_now(),
            )?;
        }
        Ok(report)
    }

    fn adopt_parts(
        self: Box<Self>,
        parts: &crate::coordination::shards::ShardStore,
        specs: &[crate::job::ShardSpec],
    ) -> Result<(Box<dyn Sink>, u64)> {
        let RemotePmtilesSink { local, remote } = *self;
        // The parts go through the working copy's store, and the archive is uploaded once.
        let (local, tiles) = local.adopt_parts(parts, specs)?;
        Ok((Box::new(RemotePmtilesSink { local, remote }), tiles))
    }

    fn abort(self: Box<Self>) {
        Box::new(self.local).abort();
    }
}

/// The prefix (`""` at the bucket's root) and name of an object key.
fn folder_of(key: &str) -> (&str, &str) {
    key.rsplit_once('/').unwrap_or(("", key))
}

/// The archive's prefix, where its versions and pointer documents go beside it.
struct ObjectShelf<'a> {
    remote: &'a Remote,
    prefix: &'a str,
}

impl ObjectShelf<'_> {
    fn key(&self, name: &str) -> String {
        object_key(self.prefix, name)
    }

    fn fail(&self, name: &str, err: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::output_caused(self.address(name), err)
    }
}

impl Shelf for ObjectShelf<'_> {
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let remote = self.remote;
        remote
            .handle
            .block_on(remote.store.get(&self.key(name), DOCUMENT_CAP))
            .map_err(|e| self.fail(name, e))
    }

    fn holds(&self, name: &str) -> Result<bool> {
        let remote = self.remote;
        remote
            .handle
            .block_on(remote.store.etag(&self.key(name)))
            .map(|etag| etag.is_some())
            .map_err(|e| self.fail(name, e))
    }

    fn add_version(&self, name: &str) -> Result<()> {
        let remote = self.remote;
        let key = self.key(name);
        let headers = ObjectHeaders {
            content_type: PMTILES_CONTENT_TYPE,
            cache_control: VERSION_CACHE_CONTROL,
            content_encoding: None,
        };
        // A copy inside the store, of exactly the bytes this run uploaded (If-Match).
        if let Some(etag) = &remote.etag {
            let copy = ObjectCopy {
                from: &remote.key,
                to: &key,
                if_etag: etag,
                headers,
            };
            let copied = remote.handle.block_on(remote.store.copy(copy));
            match copied {
                Ok(()) => return Ok(()),
                // Over 5 GiB, an object replaced since, or a store that cannot: the working copy
                // is these bytes.
                Err(err) => tracing::info!("{err}; uploading the version instead"),
            }
        }
        remote
            .handle
            .block_on(remote.store.upload_file(
                &key,
                &remote.working_copy,
                headers,
                remote.part_size,
            ))
            .map(|_| ())
            .map_err(|e| self.fail(name, e))
    }

    fn put_document(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let remote = self.remote;
        let headers = ObjectHeaders {
            content_type: "application/json",
            cache_control: POINTER_CACHE_CONTROL,
            content_encoding: None,
        };
        remote
            .handle
            .block_on(
                remote
                    .store
                    .put(&self.key(name), bytes.to_vec(), headers, false),
            )
            .map(|_| ())
            .map_err(|e| self.fail(name, e))
    }

    fn remove(&self, name: &str) -> Result<()> {
        let remote = self.remote;
        remote
            .handle
            .block_on(remote.store.delete(&self.key(name)))
            .map(|_| ())
            .map_err(|e| self.fail(name, e))
    }

    fn address(&self, name: &str) -> String {
        format!("{}/{}", self.remote.store.bucket(), self.key(name))
    }

    fn public_url(&self, name: &str) -> Option<String> {
        Some(format!("{}/{name}", self.remote.public_base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_object_sits_under_the_archives_prefix() {
        assert_eq!(
            state_key("tiles/v1/facilities.pmtiles"),
            "tiles/v1/.oar-tiles/facilities.pmtiles.state.json"
        );
        assert_eq!(
            state_key("facilities.pmtiles"),
            ".oar-tiles/facilities.pmtiles.state.json"
        );
    }
}
