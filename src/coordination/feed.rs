//! The changes feed of an output (`[tileset.feed]`): what the output's CDNs already serve anew,
//! told to open maps, so they refresh those tiles in place (MapLibre GL JS's `refreshTiles`).
//!
//! It is static, so a CDN serves it like the tiles: a folder `changes/` (inside a tree or remote
//! prefix; `NAME.changes/` beside an MBTiles or PMTiles file or archive object) holding
//! *segments*, `SEQUENCE.json`, immutable once written, each listing the tiles one publication
//! changed, and one *head*, `head.json`, naming the latest segment and the oldest one kept. A
//! client polls the head, fetches the segments after the last one it saw, and refreshes their
//! tiles; one that fell behind the oldest kept segment reloads every tile. Document format:
//! [`FORMAT`] version [`VERSION`] (the user guide, docs/src/live-maps.md).
//!
//! Order makes the promise: the segment is stored before the head names it, the head only after
//! the output's CDNs took the same changes (`delivery`), and segments past the retention are
//! removed only after the head stopped naming them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::folder::ObjectFolder;

/// The `format` field of every feed document.
pub const FORMAT: &str = "oar-tiles-changes";
/// The version of the documents this tool writes; a reader refuses a later one.
pub const VERSION: u32 = 1;
/// The head's name in the feed's folder.
pub const HEAD: &str = "head.json";
/// The feed's folder inside a tree or a prefix of a remote store.
pub const FOLDER: &str = "changes";

/// The feed folder's suffix beside a single file or archive object: `NAME.changes`.
pub const SUFFIX: &str = ".changes";
/// `Cache-Control` of a segment: it never changes once written.
pub const SEGMENT_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// Counts the segments this process published, so what pushes a feed to clients (`watch`'s
/// Server-Sent Events) reads the head as soon as a run publishes, not only when its cycle ends.
static PUBLICATIONS: std::sync::LazyLock<tokio::sync::watch::Sender<u64>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::Sender::new(0));

/// Changes after every segment this process publishes (to any feed).
pub fn publications() -> tokio::sync::watch::Receiver<u64> {
    PUBLICATIONS.subscribe()
}

/// `head.json`: the latest segment and the oldest one still kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// Always [`FORMAT`].
    pub format: String,
    /// The document version.
    pub version: u32,
    /// The latest segment's sequence number (from 1).
    pub sequence: u64,
    /// The oldest segment kept: a client that saw less than `oldest - 1` reloads every tile.
    pub oldest: u64,
    /// When the latest segment was published, in seconds since the Unix epoch.
    pub published: f64,
}

/// `SEQUENCE.json`: the tiles one publication changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Always [`FORMAT`].
    pub format: String,
    /// The document version.
    pub version: u32,
    /// Its number.
    pub sequence: u64,
    /// When it was published, in seconds since the Unix epoch.
    pub published: f64,
    /// Every tile may have changed (a full seed, a sharded run's finalize): reload them all.
    pub reload: bool,
    /// The tiles stored anew or deleted, as `z/x/y`, sorted.
    pub tiles: Vec<String>,
    /// A versioned feed's (`versioned = true`): what a following map puts in the query string
    /// of each tile listed (`?v=`), every tile for a reload, so no cache holding the tile's
    /// earlier bytes under its plain URL can answer. Unique to this segment, also across a feed
    /// started anew, whose sequences start from 1 again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tile_version: Option<String>,
}

/// The version of segment `sequence` published at `published` (Unix seconds): the sequence
/// and the publication's millisecond, so a feed removed and started anew never reuses one.
fn segment_version(sequence: u64, published: f64) -> String {
    format!("{sequence}-{:x}", (published * 1000.0) as u64)
}

/// The name of segment `sequence` in the feed's folder.
pub fn segment_name(sequence: u64) -> String {
    format!("{sequence}.json")
}

/// The sequence of the segment named `name`, `None` for any other name.
fn segment_number(name: &str) -> Option<u64> {
    name.strip_suffix(".json")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

/// A document a feed's folder may hold, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// `head.json`, which changes with every publication.
    Head,
    /// `N.json`, which never changes once written.
    Segment,
}

/// Which document `name` is, `None` when it is none of the feed's (a server answers 404).
pub fn document_named(name: &str) -> Option<Document> {
    if name == HEAD {
        Some(Document::Head)
    } else {
        segment_number(name).map(|_| Document::Segment)
    }
}

/// Where an output keeps its feed.
pub enum FeedStore {
    /// A folder on this machine.
    Folder(PathBuf),
    /// A folder of objects under a prefix of a remote store.
    Objects(ObjectFolder),
}

/// What one publication added, for the run's summary and log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Published {
    /// The new segment's number (the last one's, for several).
    pub sequence: u64,
    /// The tiles it lists.
    pub tiles: usize,
    /// Its size in bytes.
    pub bytes: usize,
    /// The segments it took: a run publishes the tiles its CDNs purged while it still rendered
    /// in segments of their own.
    pub segments: usize,
}

impl Published {
    /// This publication and a `later` one, together.
    pub fn then(self, later: Published) -> Published {
        Published {
            sequence: later.sequence,
            tiles: self.tiles + later.tiles,
            bytes: self.bytes + later.bytes,
            segments: self.segments + later.segments,
        }
    }
}

impl FeedStore {
    /// Where it is, for messages.
    pub fn describe(&self) -> String {
        match self {
            FeedStore::Folder(path) => path.display().to_string(),
            FeedStore::Objects(folder) => folder.location(""),
        }
    }

    /// A document of the feed (the head or a segment) as stored, `None` when there is none.
    pub async fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self {
            FeedStore::Folder(path) => {
                crate::store::document::read_capped(&path.join(name), MAX_DOCUMENT)
            }
            FeedStore::Objects(folder) => folder.get(name, MAX_DOCUMENT).await,
        }
    }

    /// The head, `None` before the first publication.
    pub async fn head(&self) -> Result<Option<Head>> {
        let Some(bytes) = self.read(HEAD).await? else {
            return Ok(None);
        };
        let where_ = || match self {
            FeedStore::Folder(path) => path.join(HEAD).display().to_string(),
            FeedStore::Objects(folder) => folder.location(HEAD),
        };
        let head: Head = serde_json::from_slice(&bytes).map_err(|e| {
            Error::output(
                where_(),
                format!("not a feed head ({e}); remove the feed's folder to start it anew"),
            )
        })?;
        if head.format != FORMAT || head.version > VERSION {
            return Err(Error::output(
                where_(),
                format!(
                    "a feed head of format `{}` version {}: this tool writes `{FORMAT}` version {VERSION}",
                    head.format, head.version
                ),
            ));
        }
        Ok(Some(head))
    }

    /// Publishes one segment of `tiles` (or a reload), then the head naming it, then removes the
    /// segments past the `retention` latest. `head_cache_control` is the head's `Cache-Control`;
    /// a `versioned` feed's segment carries a version (`Segment::tile_version`).
    pub async fn publish(
        &self,
        mut tiles: Vec<String>,
        reload: bool,
        retention: u64,
        head_cache_control: &str,
        versioned: bool,
    ) -> Result<Published> {
        let last = self.head().await?;
        let sequence = last.as_ref().map_or(0, |h| h.sequence) + 1;
        let published = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        tiles.sort();
        tiles.dedup();
        let segment = Segment {
            format: FORMAT.into(),
            version: VERSION,
            sequence,
            published,
            reload,
            tiles: if reload { Vec::new() } else { tiles },
            tile_version: versioned.then(|| segment_version(sequence, published)),
        };
        let bytes = serde_json::to_vec(&segment).unwrap_or_default();
        self.write(&segment_name(sequence), &bytes, SEGMENT_CACHE_CONTROL)
            .await?;
        let oldest_kept = sequence.saturating_sub(retention.max(1)) + 1;
        let oldest = last.as_ref().map_or(1, |h| h.oldest).max(oldest_kept);
        let head = Head {
            format: FORMAT.into(),
            version: VERSION,
            sequence,
            oldest,
            published,
        };
        self.write(
            HEAD,
            &serde_json::to_vec(&head).unwrap_or_default(),
            head_cache_control,
        )
        .await?;
        PUBLICATIONS.send_modify(|count| *count += 1);
        // Segments the head no longer names; a crash before this leaves them for the next one.
        for name in self.list().await? {
            let expired = segment_number(&name).is_some_and(|n| n < oldest);
            if expired {
                self.remove(&name).await?;
            }
        }
        Ok(Published {
            sequence,
            tiles: segment.tiles.len(),
            bytes: bytes.len(),
            segments: 1,
        })
    }

    async fn write(&self, name: &str, bytes: &[u8], cache_control: &str) -> Result<()> {
        match self {
            FeedStore::Folder(path) => {
                match std::fs::create_dir(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(Error::output(
                            path,
                            format!("cannot create the changes feed's folder: {e}"),
                        ))
                    }
                    _ => {}
                }
                crate::store::durable::replace(&path.join(name), bytes)
                    .map_err(|e| Error::output(path.join(name), format!("cannot write it: {e}")))
            }
            FeedStore::Objects(folder) => {
                folder
                    .put_document(name, bytes, "application/json", cache_control)
                    .await
            }
        }
    }

    async fn list(&self) -> Result<Vec<String>> {
        match self {
            FeedStore::Folder(path) => match std::fs::read_dir(path) {
                Ok(entries) => Ok(entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(Error::output(path, format!("cannot list it: {e}"))),
            },
            FeedStore::Objects(folder) => folder.list().await,
        }
    }

    async fn remove(&self, name: &str) -> Result<()> {
        match self {
            FeedStore::Folder(path) => {
                crate::store::durable::remove_file_if_there(&path.join(name))
            }
            FeedStore::Objects(folder) => folder.delete(name).await,
        }
    }
}

/// The largest feed document read: a segment lists at most the tiles of a run that is not a
/// reload, a few tens of bytes each.
const MAX_DOCUMENT: u64 = 256 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn read_segment(folder: &std::path::Path, sequence: u64) -> Option<Segment> {
        let bytes = std::fs::read(folder.join(segment_name(sequence))).ok()?;
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn segments_are_numbered_the_head_names_the_latest_and_retention_removes_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("changes");
        let feed = FeedStore::Folder(folder.clone());
        assert_eq!(feed.head().await.unwrap(), None);
        let first = feed
            .publish(
                vec!["3/4/2".into(), "1/0/0".into(), "3/4/2".into()],
                false,
                2,
                "max-age=1",
                false,
            )
            .await
            .unwrap();
        assert_eq!((first.sequence, first.tiles), (1, 2));
        assert_eq!(read_segment(&folder, 1).unwrap().tiles, ["1/0/0", "3/4/2"]);
        feed.publish(vec!["2/1/1".into()], false, 2, "max-age=1", true)
            .await
            .unwrap();
        let third = feed
            .publish(vec!["9/9/9".into()], true, 2, "max-age=1", false)
            .await
            .unwrap();
        assert_eq!(third.sequence, 3);
        let head = feed.head().await.unwrap().unwrap();
        assert_eq!((head.sequence, head.oldest), (3, 2));
        assert!(read_segment(&folder, 1).is_none(), "past the retention");
        let versioned = read_segment(&folder, 2).unwrap();
        assert!(versioned.tile_version.is_some_and(|v| v.starts_with("2-")));
        assert_eq!(read_segment(&folder, 3).unwrap().tile_version, None);
        let reload = read_segment(&folder, 3).unwrap();
        assert!(reload.reload && reload.tiles.is_empty());
    }

    #[test]
    fn only_the_head_and_numbered_segments_are_feed_documents() {
        assert_eq!(document_named("head.json"), Some(Document::Head));
        assert_eq!(document_named("12.json"), Some(Document::Segment));
        for other in [
            "tiles.json",
            ".json",
            "-1.json",
            "1.json.tmp",
            "../head.json",
            "1e3.json",
        ] {
            assert_eq!(document_named(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn a_head_of_a_later_version_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("changes")).unwrap();
        std::fs::write(
            dir.path().join("changes/head.json"),
            r#"{"format":"oar-tiles-changes","version":9,"sequence":1,"oldest":1,"published":0}"#,
        )
        .unwrap();
        let feed = FeedStore::Folder(dir.path().join("changes"));
        let err = feed
            .publish(vec![], false, 5, "", false)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("head.json") && err.contains("version 9"),
            "{err}"
        );
    }
}
