//! A GCS object rebuilt in place from what it already holds: the new bytes are uploaded as a piece
//! of their own, and `compose` makes the object again as the piece followed by the whole object as
//! it is, on condition that its generation is still the one the caller read, so a reader sees the
//! old object or the new and another writer's object is never built upon. GCS's compose
//! concatenates whole objects, never a range of one, so every old byte stays in the new object.
//!
//! Documented limits this stays within: 32 sources a compose (two here), and 1,024 components in a
//! composite object; past those GCS refuses the compose and the caller uploads the object whole,
//! which leaves it one component again.

use std::sync::atomic::{AtomicU64, Ordering};

use hyper::header::CONTENT_TYPE;
use hyper::Method;

use super::api::{encoded, Call};
use super::{generation, json_of, metadata, GcsStore, JSON_CAP};
use crate::store::{key_under, NewObject, ObjectHeaders, ObjectStore, Put, Splice, StoreError};

/// Pieces this process uploaded so far, which keeps their names apart.
static PIECES: AtomicU64 = AtomicU64::new(0);

/// A name no other upload takes for the piece of `key` a compose starts with: under the
/// `.oar-tiles/` folder beside the object, where the tool keeps its own objects.
fn piece_key(key: &str) -> String {
    let (folder, name) = key.rsplit_once('/').unwrap_or(("", key));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let count = PIECES.fetch_add(1, Ordering::Relaxed);
    let unique = format!("{}-{nanos}-{count}", std::process::id());
    key_under(folder, &format!(".oar-tiles/{name}.splice-{unique}"))
}

/// A splice refused before anything was written, saying `why`.
fn refused(what: &str, why: String) -> StoreError {
    StoreError::local(what, std::io::Error::other(why))
}

impl GcsStore {
    /// [`crate::store::ObjectStore::splice`] on GCS: the splice must keep the whole object.
    pub(super) async fn compose_in_place(
        &self,
        key: &str,
        splice: Splice<'_>,
    ) -> Result<String, StoreError> {
        let Splice {
            if_etag,
            new,
            kept,
            headers,
        } = splice;
        let what = format!("rebuilding {} in place", self.url(key));
        self.check_whole(key, if_etag, kept, &what).await?;
        let piece = piece_key(key);
        let object = NewObject {
            body: new.to_vec(),
            headers: ObjectHeaders::default(),
            only_new: true,
        };
        if self.write(&piece, object).await? == Put::Exists {
            let why = format!("its piece {} is already there", self.url(&piece));
            return Err(refused(&what, why));
        }
        let composed = self.compose(key, &piece, if_etag, headers, &what).await;
        if let Err(err) = self.delete(&piece).await {
            tracing::warn!("{err}: it is no part of any archive, and can be removed");
        }
        composed
    }

    /// Refuses a splice whose object is no longer generation `if_etag`, or that keeps less than
    /// all of it: the object's generation and size, asked before anything is uploaded. GCS's own
    /// guard is the compose's precondition; this one also holds where an emulator ignores it.
    async fn check_whole(
        &self,
        key: &str,
        if_etag: &str,
        kept: std::ops::Range<u64>,
        what: &str,
    ) -> Result<(), StoreError> {
        let call = Call::new(
            Method::GET,
            format!("{}?fields=generation,size", self.object(key)),
        );
        let json = self.json(what, &call).await?;
        let (current, size) = (generation(&json), json["size"].as_str().unwrap_or_default());
        if current != if_etag {
            let why = format!(
                "the object is generation {current}, not {if_etag} as this run read it: \
                 another writer replaced it since"
            );
            return Err(refused(what, why));
        }
        if kept.start != 0 || size != kept.end.to_string() {
            let why = format!(
                "GCS keeps only a whole object of {size} bytes after the new ones, not bytes \
                 {kept:?}"
            );
            return Err(refused(what, why));
        }
        Ok(())
    }

    /// The object made again as `piece` followed by itself, if it is still generation `if_etag`
    /// (the piece's own generation is left free: only this process wrote it); its new generation.
    async fn compose(
        &self,
        key: &str,
        piece: &str,
        if_etag: &str,
        headers: ObjectHeaders<'_>,
        what: &str,
    ) -> Result<String, StoreError> {
        let body = serde_json::json!({
            "sourceObjects": [
                { "name": piece },
                { "name": key, "objectPreconditions": { "ifGenerationMatch": if_etag } },
            ],
            "destination": metadata(key, headers),
        });
        let url = format!(
            "{}/compose?ifGenerationMatch={}",
            self.object(key),
            encoded(if_etag)
        );
        let call = Call::new(Method::POST, url)
            .header(CONTENT_TYPE, "application/json; charset=UTF-8")
            .body(body.to_string());
        let (_, answer) = self
            .api
            .fetch(what, &call, JSON_CAP)
            .await
            .map_err(|e| self.failed(what, e))?;
        Ok(generation(&json_of(what, &answer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_sit_in_the_tools_folder_beside_the_object_under_names_of_their_own() {
        let first = piece_key("maps/sites.pmtiles");
        assert!(
            first.starts_with("maps/.oar-tiles/sites.pmtiles.splice-"),
            "{first}"
        );
        assert_ne!(first, piece_key("maps/sites.pmtiles"));
        assert!(piece_key("sites.pmtiles").starts_with(".oar-tiles/sites.pmtiles.splice-"));
    }
}
