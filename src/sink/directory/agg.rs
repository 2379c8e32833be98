//! A tree's `agg_tiles_hash`, written into its `tiles.json` when a run finishes.
//!
//! The hash covers every tile the tree holds, so computing it reads every tile back (1.0-3.0 s
//! more for a reseed of the 100k-row sample's 95,000 tiles, against 0.35-1.05 s for the reseed
//! itself). A run that changes nothing keeps the hash its
//! `tiles.json` already names, unless an earlier run may have changed tiles without finishing (a
//! kill, `--max-duration`, a shard before `finalize`): each run that is about to change a tile first
//! leaves a durable marker, [`STALE_NAME`], which only a finish that wrote a fresh hash removes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::entries::Found;
use super::read::tiles;
use super::{DirectorySink, STALE_NAME};
use crate::error::{Error, Result};
use crate::sink::agg_hash::{
    hash_order, AggHasher, TileDigest, AGG_TILES_HASH_KEY, TILE_DIGEST_KEY,
};
use crate::sink::tilejson::TILEJSON_NAME;
use crate::sink::{HashRefresh, TilesetMetadata};
use crate::store::document::{read_capped, DOCUMENT_CAP, TILE_FILE_CAP};
use crate::store::durable;
use crate::tile::{Coverage, TileCoord};

impl DirectorySink {
    /// Marks the hash stale, durably, before the first tile this run changes.
    pub(super) fn mark_hash_stale(&mut self) -> Result<()> {
        if self.hash_marked {
            return Ok(());
        }
        let path = self.root.join(STALE_NAME);
        durable::replace(&path, b"")
            .map_err(|e| Error::output(&path, format!("cannot write it: {e}")))?;
        self.hash_marked = true;
        self.unname_hash()
    }

    /// Takes the hash out of `tiles.json` once the marker is down: tiles purged while the run
    /// still writes (deepest zoom first) are served beside it, and it would name a hash they
    /// no longer have.
    fn unname_hash(&self) -> Result<()> {
        let path = self.root.join(TILEJSON_NAME);
        let Some(bytes) = read_capped(&path, DOCUMENT_CAP)? else {
            return Ok(());
        };
        let Ok(mut document) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            // Not this tool's document: the finish replaces it whole.
            return Ok(());
        };
        let Some(fields) = document.as_object_mut() else {
            return Ok(());
        };
        let hash = fields.remove(AGG_TILES_HASH_KEY);
        let digest = fields.remove(TILE_DIGEST_KEY);
        if hash.is_none() && digest.is_none() {
            return Ok(());
        }
        let text = serde_json::to_vec_pretty(&document).expect("JSON serializes");
        durable::place(&path, &text)
            .map_err(|e| Error::output(&path, format!("cannot write it: {e}")))
    }

    /// What `tiles.json` names once this run's tiles are all in place, and what `metadata`
    /// declares the tiles cover. A run that changed nothing keeps what is named; one that
    /// changed tiles, with `defer`, names the digest it kept from the tiles it changed (no other
    /// tile is read), or, when the digest was not known, leaves both pending for
    /// [`refresh_agg_hash`]; otherwise every tile is read back for both.
    pub(super) fn finish_hashes(
        &self,
        metadata: &mut TilesetMetadata,
        defer: bool,
    ) -> Result<Named> {
        let pending = self.hash_pending();
        if !pending {
            let (hash, digest) = named(&self.root);
            if hash.is_some() || digest.is_some() {
                self.keep_coverage(metadata);
                return Ok(Named {
                    hash,
                    digest,
                    pending: false,
                });
            }
        }
        if pending && defer {
            self.cover_without_hash(metadata)?;
            return Ok(Named {
                hash: None,
                digest: self.digest,
                pending: self.digest.is_none(),
            });
        }
        let never = AtomicBool::new(false);
        let (hash, digest, coverage) =
            hash_tree(&self.root, &self.settings.tile_extension, &never)?.unwrap_or_else(|| {
                (
                    AggHasher::new().finish(),
                    TileDigest::new(),
                    Coverage::default(),
                )
            });
        metadata.cover(&coverage);
        Ok(Named {
            hash: Some(hash),
            digest: Some(digest),
            pending: false,
        })
    }

    /// Keeps the digest as `tile` goes from what its name held (`found`, with the old bytes of a
    /// file) to `data`.
    pub(super) fn digest_replace(&mut self, tile: TileCoord, found: &Found, data: &[u8]) {
        let Some(digest) = self.digest.as_mut() else {
            return;
        };
        match found {
            Found::Same => return,
            Found::OtherFile(Some(old)) => digest.remove(tile, old),
            // Unreadable, or a link (read through by a reader) or something else at the name:
            // the next full read says what the tree holds.
            Found::OtherFile(None) | Found::NotAFile => {
                self.digest = None;
                return;
            }
            Found::NoFile => {}
        }
        digest.add(tile, data);
    }

    /// Keeps the digest as `tile`, at `path`, is deleted; before the deletion.
    pub(super) fn digest_delete(&mut self, tile: TileCoord, path: &Path) {
        let Some(digest) = self.digest.as_mut() else {
            return;
        };
        match std::fs::symlink_metadata(path) {
            Err(_) => {}
            Ok(meta) if meta.is_file() => match read_capped(path, TILE_FILE_CAP) {
                Ok(Some(old)) => digest.remove(tile, &old),
                _ => self.digest = None,
            },
            Ok(_) => self.digest = None,
        }
    }

    /// Whether tiles may have changed since `tiles.json` named their hash.
    pub(super) fn hash_pending(&self) -> bool {
        self.hash_marked || self.root.join(STALE_NAME).exists()
    }

    /// What a finish that leaves the hash pending declares the tiles cover, without reading a
    /// tile: what `tiles.json` declared, widened by this run's tiles. A run that deleted tiles
    /// may have emptied an edge, so it lists the tree's names (no tile is opened) instead.
    pub(super) fn cover_without_hash(&self, metadata: &mut TilesetMetadata) -> Result<()> {
        let mut previous = metadata.clone();
        self.keep_coverage(&mut previous);
        let declared = previous.covered_zooms.zip(previous.covered);
        let (Some((zooms, bounds)), 0) = (declared, self.report.deleted) else {
            let mut coverage = Coverage::default();
            for tile in tiles(&self.root, &self.settings.tile_extension)? {
                coverage.add(tile);
            }
            metadata.cover(&coverage);
            return Ok(());
        };
        metadata.cover_widened(zooms, bounds, &self.written);
        Ok(())
    }

    /// Takes the zooms and bounds `tiles.json` declares, for a run whose tiles hash as named
    /// there (so they cover what they covered).
    pub(super) fn keep_coverage(&self, metadata: &mut crate::coordination::TilesetMetadata) {
        let Some(document) = read_capped(&self.root.join(TILEJSON_NAME), DOCUMENT_CAP)
            .ok()
            .flatten()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        else {
            return;
        };
        let zoom = |key: &str| document[key].as_u64().and_then(|z| u8::try_from(z).ok());
        if let (Some(min), Some(max)) = (zoom("minzoom"), zoom("maxzoom")) {
            metadata.covered_zooms = crate::tile::ZoomRange::new(min, max).ok();
        }
        if let Some([west, south, east, north]) = document["bounds"]
            .as_array()
            .and_then(|b| {
                b.iter()
                    .map(serde_json::Value::as_f64)
                    .collect::<Option<Vec<f64>>>()
            })
            .and_then(|b| <[f64; 4]>::try_from(b).ok())
        {
            metadata.covered = crate::tile::BBox::new(west, south, east, north).ok();
        }
    }

    /// Removes the marker once `tiles.json` names the fresh hash durably.
    pub(super) fn clear_hash_stale(&self) -> Result<()> {
        clear_stale(&self.root)
    }
}

fn clear_stale(root: &Path) -> Result<()> {
    crate::store::durable::remove_file_if_there(&root.join(STALE_NAME))
}

/// What `tiles.json` names: the hash, the digest.
fn named(root: &Path) -> (Option<String>, Option<TileDigest>) {
    let Some(document) = read_capped(&root.join(TILEJSON_NAME), DOCUMENT_CAP)
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
    else {
        return (None, None);
    };
    (
        document[AGG_TILES_HASH_KEY].as_str().map(str::to_string),
        document[TILE_DIGEST_KEY]
            .as_str()
            .and_then(TileDigest::parse),
    )
}

/// The digest a run opening the tree starts from: the one `tiles.json` names, unless a run
/// changed tiles since without naming it (the stale marker is there).
pub(super) fn trusted_digest(root: &Path) -> Option<TileDigest> {
    if root.join(STALE_NAME).exists() {
        return None;
    }
    named(root).1
}

/// What a finish names in `tiles.json`; `pending` when tiles changed and neither is known yet.
pub(super) struct Named {
    pub(super) hash: Option<String>,
    pub(super) digest: Option<TileDigest>,
    pub(super) pending: bool,
}

/// Every tile read back in hash order: the hash and what the tiles cover; `None` once `cancel`
/// is set.
fn hash_tree(
    root: &Path,
    extension: &str,
    cancel: &AtomicBool,
) -> Result<Option<(String, TileDigest, Coverage)>> {
    let mut listed = tiles(root, extension)?;
    listed.sort_unstable_by_key(hash_order);
    let mut hasher = AggHasher::new();
    let mut digest = TileDigest::new();
    let mut coverage = Coverage::default();
    for tile in listed {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        coverage.add(tile);
        let path = root
            .join(tile.z().to_string())
            .join(tile.x().to_string())
            .join(format!("{}.{extension}", tile.y()));
        let data = read_capped(&path, TILE_FILE_CAP)?
            .ok_or_else(|| Error::output(&path, "went while it was being hashed"))?;
        hasher.add(tile, &data);
        digest.add(tile, &data);
    }
    Ok(Some((hasher.finish(), digest, coverage)))
}

/// Brings a tree's `agg_tiles_hash` up to date when a deferred finish left it pending (the stale
/// marker is there): every tile read back, the hash written into `tiles.json`, then the marker
/// removed. The caller holds the output's lock and writes no tile meanwhile. Gives up, changing
/// nothing, once `cancel` is set.
pub(crate) fn refresh_agg_hash(
    root: &Path,
    extension: &str,
    cancel: &AtomicBool,
) -> Result<HashRefresh> {
    let tilejson_path = root.join(TILEJSON_NAME);
    if !root.join(STALE_NAME).exists() {
        return Ok(HashRefresh::Current);
    }
    // Without a `tiles.json` there is nothing to name the hash in: the next finish writes both.
    let Some(bytes) = read_capped(&tilejson_path, DOCUMENT_CAP)? else {
        return Ok(HashRefresh::Current);
    };
    let mut document: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::output(&tilejson_path, format!("is not JSON: {e}")))?;
    let Some((hash, digest, _)) = hash_tree(root, extension, cancel)? else {
        return Ok(HashRefresh::Cancelled);
    };
    // The tiles may hash as they did (a run that rewrote them with the same bytes): `tiles.json` is
    // then left as it is, so nothing purges or lists a document that did not change.
    if document.get(AGG_TILES_HASH_KEY).and_then(|v| v.as_str()) == Some(hash.as_str())
        && document.get(TILE_DIGEST_KEY).and_then(|v| v.as_str()) == Some(&digest.to_hex())
    {
        clear_stale(root)?;
        return Ok(HashRefresh::Current);
    }
    document[AGG_TILES_HASH_KEY] = hash.clone().into();
    document[TILE_DIGEST_KEY] = digest.to_hex().into();
    let text = serde_json::to_vec_pretty(&document).expect("JSON serializes");
    durable::place(&tilejson_path, &text)
        .map_err(|e| Error::output(&tilejson_path, format!("cannot write it: {e}")))?;
    durable::sync_dir(root)
        .map_err(|e| Error::output(root, format!("cannot sync it to disk: {e}")))?;
    clear_stale(root)?;
    Ok(HashRefresh::Computed(hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{ChangedList, Finish, OutputSettings, Sink, TilesetMetadata};
    use crate::tile::{BBox, ZoomRange};

    /// Finishes a run that walked zooms 0 to `max_zoom`, its hash deferred or not.
    fn finish(sink: DirectorySink, max_zoom: u8, defer_hash: bool) {
        let zooms = ZoomRange::new(0, max_zoom).unwrap();
        let metadata = TilesetMetadata::bare("t", BBox::WORLD, zooms);
        Box::new(sink)
            .finish(Finish {
                metadata: &metadata,
                sweep: &crate::sink::Sweep::Nothing,
                state: None,
                defer_hash,
            })
            .unwrap();
    }

    fn sink(root: &std::path::Path) -> DirectorySink {
        let settings = OutputSettings::default();
        DirectorySink::create(root, &settings, ChangedList::disabled(), None, None).unwrap()
    }

    fn named_hash(root: &std::path::Path) -> String {
        let document: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join(TILEJSON_NAME)).unwrap()).unwrap();
        document[AGG_TILES_HASH_KEY].as_str().unwrap().to_string()
    }

    #[test]
    fn a_run_that_changes_nothing_after_a_stopped_one_still_names_the_trees_hash() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        let (a, b) = (
            TileCoord::new(3, 1, 6).unwrap(),
            TileCoord::new(1, 0, 0).unwrap(),
        );
        let mut first = sink(&root);
        first.write_tile(a, b"old").unwrap();
        finish(first, 3, false);
        let mut expected = AggHasher::new();
        expected.add(a, b"old");
        assert_eq!(named_hash(&root), expected.finish());
        assert!(!root.join(STALE_NAME).exists());

        // A run that changes tiles and stops before it finishes.
        let mut stopped = sink(&root);
        stopped.write_tile(a, b"new").unwrap();
        stopped.write_tile(b, b"added").unwrap();
        Box::new(stopped).abort();
        assert!(root.join(STALE_NAME).exists());

        // The next run finds both tiles as it would write them: it changes nothing.
        let mut next = sink(&root);
        next.write_tile(a, b"new").unwrap();
        next.write_tile(b, b"added").unwrap();
        assert_eq!(next.report.changed, 0);
        finish(next, 3, false);
        let mut expected = AggHasher::new();
        expected.add(b, b"added");
        expected.add(a, b"new");
        assert_eq!(named_hash(&root), expected.finish());
        assert!(!root.join(STALE_NAME).exists());

        // With nothing changed since, the hash named is reused as it is.
        let fake = "0123456789ABCDEF0123456789ABCDEF";
        let document = std::fs::read_to_string(root.join(TILEJSON_NAME)).unwrap();
        std::fs::write(
            root.join(TILEJSON_NAME),
            document.replace(&named_hash(&root), fake),
        )
        .unwrap();
        finish(sink(&root), 3, false);
        assert_eq!(named_hash(&root), fake, "no tile was read again");
    }

    fn declared(root: &std::path::Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(root.join(TILEJSON_NAME)).unwrap()).unwrap()
    }

    #[test]
    fn a_deferred_finish_names_the_digest_kept_from_the_changed_tiles_and_reads_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        let tile = |text: &str| text.parse::<TileCoord>().unwrap();
        let mut first = sink(&root);
        first.write_tile(tile("3/1/6"), b"a").unwrap();
        first.write_tile(tile("1/0/0"), b"b").unwrap();
        finish(first, 3, false);
        // A tile no run touches again, changed behind the sink's back: a finish that read it
        // would take the new bytes into the digest.
        std::fs::write(root.join("3/1/6.pbf"), b"changed behind").unwrap();

        // A deeper tile and a replaced one: the zooms widen, the digest follows.
        let mut next = sink(&root);
        next.write_tile(tile("4/2/12"), b"c").unwrap();
        next.write_tile(tile("1/0/0"), b"bb").unwrap();
        finish(next, 5, true);
        assert!(!root.join(STALE_NAME).exists());
        let document = declared(&root);
        assert!(document.get(AGG_TILES_HASH_KEY).is_none(), "{document}");
        let mut expected = TileDigest::new();
        expected.add(tile("3/1/6"), b"a");
        // Not read: the digest keeps the term the first finish read.
        expected.add(tile("1/0/0"), b"bb");
        expected.add(tile("4/2/12"), b"c");
        assert_eq!(document[TILE_DIGEST_KEY], expected.to_hex());
        assert_eq!(
            (document["minzoom"].as_u64(), document["maxzoom"].as_u64()),
            (Some(1), Some(4))
        );
        let widened = document.clone();

        // A deletion may empty an edge: the names are listed again.
        let mut deleting = sink(&root);
        deleting.delete_tile(tile("4/2/12")).unwrap();
        finish(deleting, 5, true);
        let document = declared(&root);
        assert_eq!(
            (document["minzoom"].as_u64(), document["maxzoom"].as_u64()),
            (Some(1), Some(3))
        );
        assert_ne!(document["bounds"], widened["bounds"]);
        expected.remove(tile("4/2/12"), b"c");
        assert_eq!(document[TILE_DIGEST_KEY], expected.to_hex());
    }

    #[test]
    fn after_a_stopped_run_a_deferred_finish_leaves_both_pending_for_the_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        let tile = |text: &str| text.parse::<TileCoord>().unwrap();
        let mut first = sink(&root);
        first.write_tile(tile("1/0/0"), b"b").unwrap();
        finish(first, 3, false);
        let mut stopped = sink(&root);
        stopped.write_tile(tile("3/1/6"), b"a").unwrap();
        Box::new(stopped).abort();

        let mut next = sink(&root);
        next.write_tile(tile("2/1/1"), b"c").unwrap();
        finish(next, 3, true);
        assert!(root.join(STALE_NAME).exists());
        let document = declared(&root);
        assert!(document.get(AGG_TILES_HASH_KEY).is_none(), "{document}");
        assert!(document.get(TILE_DIGEST_KEY).is_none(), "{document}");

        let cancelled = AtomicBool::new(true);
        assert_eq!(
            refresh_agg_hash(&root, "pbf", &cancelled).unwrap(),
            HashRefresh::Cancelled
        );
        assert!(root.join(STALE_NAME).exists());
        let go = AtomicBool::new(false);
        let mut expected = AggHasher::new();
        let mut digest = TileDigest::new();
        for (text, data) in [("1/0/0", b"b"), ("2/1/1", b"c"), ("3/1/6", b"a")] {
            expected.add(tile(text), data);
            digest.add(tile(text), data);
        }
        let expected = expected.finish();
        assert_eq!(
            refresh_agg_hash(&root, "pbf", &go).unwrap(),
            HashRefresh::Computed(expected.clone())
        );
        assert_eq!(named_hash(&root), expected);
        assert_eq!(declared(&root)[TILE_DIGEST_KEY], digest.to_hex());
        assert!(!root.join(STALE_NAME).exists());
        assert_eq!(
            refresh_agg_hash(&root, "pbf", &go).unwrap(),
            HashRefresh::Current
        );
    }
}
