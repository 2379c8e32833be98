//! A PMTiles archive published in versions (`pmtiles_versions = true`), so that a client behind a
//! CDN never reads byte ranges of one archive with the header of another (maplibre-native #4564).
//!
//! Each archive a run writes is also published beside it as `NAME.HASH.pmtiles`, HASH being the
//! first 16 hex digits of the archive's MD5: a name that never holds other bytes, so caches may keep
//! it for good, and that a run producing the same bytes finds again. Only then do the TileJSON
//! `NAME.json` and the pointer `NAME.latest.json` switch to it, so a crash at any point leaves the
//! pointer on a whole version. The pointer lists the versions it named before, with when each was
//! superseded; a map that read an older pointer goes on reading its version until the tileset's
//! `pmtiles_keep_versions` has passed, and the next publication after that deletes it.
//!
//! `NAME.pmtiles` itself is still written as before: the store's state, `inspect` and `serve` rely
//! on it. On this machine a version is a hard link to it (the archive is only ever replaced by a
//! rename, never written in place), on S3 a server-side copy of the uploaded object ([`Shelf`] is
//! where they differ).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::config::OutputSettings;
use crate::error::{Error, Result};
use crate::sink::tilejson::{tilejson_with_tiles, warn_relative_once};
use crate::sink::{ChangedList, TilesetMetadata};
use crate::store::document::{read_capped, DOCUMENT_CAP};
use crate::store::durable;

/// Hex digits of the archive's hash in a version's name: 64 bits, so two archives of one tileset
/// do not meet by chance.
const HASH_DIGITS: usize = 16;

/// What a versioned publication takes from the tileset's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    keep: Duration,
    /// The public URL of the folder serving the versions (`tiles_url`), when the tileset sets it.
    folder_url: Option<String>,
}

impl Publication {
    /// The publication the tileset asks for, if any.
    pub fn of(settings: &OutputSettings) -> Option<Publication> {
        settings.pmtiles_versions.map(|versions| Publication {
            keep: versions.keep,
            folder_url: settings.tiles_url.clone(),
        })
    }
}

/// The names beside an archive `NAME.pmtiles`: its versions and its two pointer documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    stem: String,
}

impl Names {
    /// The names beside the archive whose file (or key) name is `archive`.
    pub fn of(archive: &str) -> Names {
        Names {
            stem: archive
                .strip_suffix(".pmtiles")
                .unwrap_or(archive)
                .to_string(),
        }
    }

    /// `NAME.HASH.pmtiles`, for the archive whose hex hash is `hash`.
    pub fn version(&self, hash: &str) -> String {
        let hash = hash.get(..HASH_DIGITS).unwrap_or(hash);
        format!("{}.{hash}.pmtiles", self.stem)
    }

    /// `NAME.latest.json`, the pointer.
    pub fn pointer(&self) -> String {
        format!("{}.latest.json", self.stem)
    }

    /// `NAME.json`, the TileJSON of the current version.
    pub fn tilejson(&self) -> String {
        format!("{}.json", self.stem)
    }

    /// Whether `name` is one of this archive's versions. A pointer read back names what a run
    /// deletes, so nothing else (`../x`, the archive itself) may pass.
    fn is_version(&self, name: &str) -> bool {
        name.strip_prefix(self.stem.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_suffix(".pmtiles"))
            .is_some_and(|hash| {
                hash.len() == HASH_DIGITS
                    && hash
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
    }
}

/// The pointer document, `NAME.latest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// The current version's name, in the pointer's own folder.
    pub archive: String,
    /// When it became current, in Unix seconds.
    pub published: u64,
    /// The versions named before and still kept, oldest first.
    #[serde(default)]
    pub superseded: Vec<Superseded>,
}

/// A version the pointer named before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superseded {
    /// Its name.
    pub archive: String,
    /// When the pointer moved on from it, in Unix seconds.
    pub at: u64,
}

/// Where an archive's versions and pointer documents are kept: its folder on this machine, or its
/// prefix on S3.
pub trait Shelf {
    /// The bytes of `name`, or `None` when it is not there.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Whether the version `name` is there.
    fn holds(&self, name: &str) -> Result<bool>;
    /// Publishes the archive this run wrote as the version `name`: whole, or not at all.
    fn add_version(&self, name: &str) -> Result<()>;
    /// Replaces the pointer document `name` with `bytes` at once.
    fn put_document(&self, name: &str, bytes: &[u8]) -> Result<()>;
    /// Removes the version `name`; one that is not there is fine.
    fn remove(&self, name: &str) -> Result<()>;
    /// The address of `name` (a path or an `s3://` URL), for the outbox and messages.
    fn address(&self, name: &str) -> String;
    /// The URL maps read `name` from, when the shelf knows where it is served.
    fn public_url(&self, name: &str) -> Option<String>;
}

/// The current time in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The hex MD5 of a file's bytes.
pub fn md5_of_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::output(path, format!("cannot read it: {e}")))?;
    let mut hasher = Md5::new();
    io::copy(&mut file, &mut hasher)
        .map_err(|e| Error::output(path, format!("cannot read it: {e}")))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Makes `version` (named by [`Names::version`] after the archive's hash) the current version:
/// publishes it unless it is there, then switches the TileJSON and the pointer to it (recording
/// both in the outbox), then deletes the versions superseded longer ago than the retention. Says
/// whether the pointer moved; it does not when it already names this version and the version is
/// there (the TileJSON is still brought up to date: `tiles_url` may have changed).
pub fn publish(
    shelf: &dyn Shelf,
    names: &Names,
    version: &str,
    publication: &Publication,
    metadata: &TilesetMetadata,
    changes: &ChangedList,
    now: u64,
) -> Result<bool> {
    let version = version.to_string();
    let pointer_name = names.pointer();
    let previous = match shelf.read(&pointer_name)? {
        None => None,
        Some(bytes) => match serde_json::from_slice::<Pointer>(&bytes) {
            Ok(pointer) => Some(pointer),
            Err(err) => {
                tracing::warn!(
                    "{}: cannot be read ({err}); it is replaced, and the versions it listed are \
                     left for the operator to delete",
                    shelf.address(&pointer_name)
                );
                None
            }
        },
    };
    let tilejson = tilejson_of(shelf, &version, publication, metadata);
    let there = shelf.holds(&version)?;
    if there && previous.as_ref().is_some_and(|p| p.archive == version) {
        if shelf.read(&names.tilejson())?.as_deref() != Some(tilejson.bytes.as_slice()) {
            write_tilejson(shelf, names, &tilejson, changes)?;
        }
        return Ok(false);
    }
    // The version is whole before anything names it.
    if !there {
        shelf.add_version(&version)?;
    }
    let mut superseded = Vec::new();
    if let Some(previous) = previous {
        for entry in previous.superseded {
            if names.is_version(&entry.archive) && entry.archive != version {
                superseded.push(entry);
            }
        }
        if names.is_version(&previous.archive) && previous.archive != version {
            superseded.push(Superseded {
                archive: previous.archive,
                at: now,
            });
        }
    }
    let mut pointer = Pointer {
        archive: version.clone(),
        published: now,
        superseded,
    };

    write_tilejson(shelf, names, &tilejson, changes)?;
    write_pointer(shelf, &pointer_name, &pointer)?;
    changes.record_object(&shelf.address(&pointer_name));

    // Deleted only once the pointer no longer names them as current; dropped from its list only
    // once deleted, so a crash in between leaves them listed for the next publication to delete.
    let keep = publication.keep.as_secs();
    let (expired, kept): (Vec<Superseded>, Vec<Superseded>) =
        std::mem::take(&mut pointer.superseded)
            .into_iter()
            .partition(|entry| now.saturating_sub(entry.at) >= keep);
    pointer.superseded = kept;
    if !expired.is_empty() {
        for entry in &expired {
            shelf.remove(&entry.archive)?;
        }
        write_pointer(shelf, &pointer_name, &pointer)?;
    }
    Ok(true)
}

/// The TileJSON of a version.
struct TileJson {
    bytes: Vec<u8>,
    /// Whether it names the archive by a relative URL, for want of an address to build on.
    relative: bool,
}

/// The TileJSON of `version`, whose `tiles` is the template the pmtiles protocol itself hands
/// MapLibre for an archive.
fn tilejson_of(
    shelf: &dyn Shelf,
    version: &str,
    publication: &Publication,
    metadata: &TilesetMetadata,
) -> TileJson {
    let (url, relative) = match (&publication.folder_url, shelf.public_url(version)) {
        (Some(folder), _) => (format!("{}/{version}", folder.trim_end_matches('/')), false),
        (None, Some(url)) => (url, false),
        (None, None) => (version.to_string(), true),
    };
    let template = format!("pmtiles://{url}/{{z}}/{{x}}/{{y}}");
    let document = tilejson_with_tiles(metadata, &template);
    TileJson {
        bytes: serde_json::to_vec_pretty(&document).expect("JSON serializes"),
        relative,
    }
}

fn write_tilejson(
    shelf: &dyn Shelf,
    names: &Names,
    tilejson: &TileJson,
    changes: &ChangedList,
) -> Result<()> {
    let name = names.tilejson();
    if tilejson.relative {
        let document = shelf.address(&name);
        warn_relative_once(&document, || {
            format!(
                "{document} names the archive by a relative URL, which map clients resolve against \
                 their page: set tiles_url = \"https://HOST/PATH\" in the tileset to where this \
                 folder is served"
            )
        });
    }
    shelf.put_document(&name, &tilejson.bytes)?;
    changes.record_object(&shelf.address(&name));
    Ok(())
}

fn write_pointer(shelf: &dyn Shelf, name: &str, pointer: &Pointer) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(pointer).expect("JSON serializes");
    shelf.put_document(name, &bytes)
}

/// Publishes the archive `archive` on this machine, after a run that rewrote it (`rewrote`) or
/// whose pointer does not name it yet (the first run with `pmtiles_versions`, or a crash before the
/// pointer switched).
pub fn publish_local(
    archive: &Path,
    publication: &Publication,
    metadata: &TilesetMetadata,
    changes: &ChangedList,
    rewrote: bool,
) -> Result<()> {
    let names = Names::of(&archive.file_name().unwrap_or_default().to_string_lossy());
    let version = match points_at(archive, &names) {
        Some(version) if !rewrote => version,
        _ => names.version(&md5_of_file(archive)?),
    };
    publish(
        &LocalShelf { archive },
        &names,
        &version,
        publication,
        metadata,
        changes,
        unix_now(),
    )?;
    Ok(())
}

/// Removes the pointer documents and versions beside `archive` (a partition whose value vanished),
/// the pointer first, so that nothing names a version once it is gone.
pub fn remove_local(archive: &Path) -> Result<()> {
    let names = Names::of(&archive.file_name().unwrap_or_default().to_string_lossy());
    let shelf = LocalShelf { archive };
    let Some(bytes) = shelf.read(&names.pointer())? else {
        return Ok(());
    };
    let listed = serde_json::from_slice::<Pointer>(&bytes)
        .map(|pointer| {
            let mut listed: Vec<String> =
                pointer.superseded.into_iter().map(|s| s.archive).collect();
            listed.push(pointer.archive);
            listed
        })
        .unwrap_or_default();
    for name in [names.pointer(), names.tilejson()] {
        shelf.remove(&name)?;
    }
    for name in listed.iter().filter(|name| names.is_version(name)) {
        shelf.remove(name)?;
    }
    Ok(())
}

/// The version the pointer beside `archive` names, when it is the archive itself (a hard link to
/// it): after a run that changed nothing, that saves reading the whole archive for its hash.
fn points_at(archive: &Path, names: &Names) -> Option<String> {
    let bytes = read_capped(&archive.with_file_name(names.pointer()), DOCUMENT_CAP).ok()??;
    let pointer = serde_json::from_slice::<Pointer>(&bytes).ok()?;
    (names.is_version(&pointer.archive)
        && same_file(archive, &archive.with_file_name(&pointer.archive)))
    .then_some(pointer.archive)
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_a: &Path, _b: &Path) -> bool {
    false
}

/// The archive's folder on this machine.
struct LocalShelf<'a> {
    archive: &'a Path,
}

impl LocalShelf<'_> {
    fn path(&self, name: &str) -> PathBuf {
        self.archive.with_file_name(name)
    }
}

fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    }
}

impl Shelf for LocalShelf<'_> {
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        // Documents (the pointer, a version's TileJSON): a regular file within their cap.
        read_capped(&self.path(name), DOCUMENT_CAP)
    }

    fn holds(&self, name: &str) -> Result<bool> {
        Ok(self.path(name).is_file())
    }

    fn add_version(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        let fail = |e: io::Error| Error::output(&path, format!("cannot publish the version: {e}"));
        // The archive was made durable before it was renamed into place, and is never written in
        // place: a second name for its bytes costs nothing and stays what it is.
        match std::fs::hard_link(self.archive, &path) {
            Ok(()) => return durable::sync_dir(folder_of(&path)).map_err(fail),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(err) => tracing::debug!("{}: no hard link ({err}); copying", path.display()),
        }
        let temporary = durable::temporary_name(&path);
        let copied = (|| {
            let mut to = durable::create_new(&temporary)?;
            io::copy(&mut std::fs::File::open(self.archive)?, &mut to)?;
            durable::rename(&temporary, &path)
        })();
        if copied.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        copied.map_err(fail)
    }

    fn put_document(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(name);
        durable::replace(&path, bytes)
            .map_err(|e| Error::output(&path, format!("cannot write it: {e}")))
    }

    fn remove(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match std::fs::remove_file(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(Error::output(
                path,
                format!("cannot delete the superseded version: {err}"),
            )),
            _ => Ok(()),
        }
    }

    fn address(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn public_url(&self, _name: &str) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests;
