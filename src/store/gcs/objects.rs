//! [`ObjectStore`] for a GCS bucket: each method as the JSON API's requests.

use std::fs::File;
use std::ops::Range;

use async_trait::async_trait;
use http_body_util::BodyDataStream;
use hyper::header::{CONTENT_RANGE, CONTENT_TYPE, RANGE};
use hyper::{Method, StatusCode};

use super::api::{read_capped, Call};
use super::{generation, json_of, metadata, multipart, GcsStore, CHUNK_QUANTUM, JSON_CAP};
use crate::config::Bucket;
use crate::store::{
    FileUpload, Listed, NewObject, ObjectCopy, ObjectStore, Put, Splice, SpliceRule, StoreError,
};

/// The answer's generation header, which downloads carry.
fn header_generation(headers: &hyper::HeaderMap) -> String {
    headers
        .get("x-goog-generation")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[async_trait]
impl ObjectStore for GcsStore {
    fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    async fn write(&self, key: &str, object: NewObject<'_>) -> Result<Put, StoreError> {
        let NewObject {
            body,
            headers,
            only_new,
        } = object;
        // A generation precondition of 0: only if no live object has the name.
        let condition = if only_new { "&ifGenerationMatch=0" } else { "" };
        let what = format!("uploading {}", self.url(key));
        let (content_type, body) = multipart(&metadata(key, headers), headers.content_type, &body);
        let call = Call::new(
            Method::POST,
            format!("{}?uploadType=multipart{condition}", self.uploads()),
        )
        .header(CONTENT_TYPE, content_type)
        .body(body);
        match self.api.fetch(&what, &call, JSON_CAP).await {
            Ok((_, answer)) => Ok(Put::Stored(generation(&json_of(&what, &answer)?))),
            Err(failed)
                if only_new && failed.error.status() == Some(StatusCode::PRECONDITION_FAILED) =>
            {
                Ok(Put::Exists)
            }
            Err(failed) => Err(self.failed(&what, failed)),
        }
    }

    async fn get(&self, key: &str, cap: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let what = format!("reading {}", self.url(key));
        let answer = match self.api.send(&what, &self.media(key)).await {
            Ok(answer) => answer,
            Err(failed) if failed.error.status() == Some(StatusCode::NOT_FOUND) => return Ok(None),
            Err(failed) => return Err(self.failed(&what, failed)),
        };
        let size = answer
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if let Some(size) = size.filter(|size| *size > cap) {
            return Err(StoreError::local(
                &what,
                crate::store::s3::too_large(size, cap),
            ));
        }
        // Without a length, the cap holds as the body is read.
        let limit = usize::try_from(cap.saturating_add(1)).unwrap_or(usize::MAX);
        let bytes = read_capped(answer.into_body(), limit)
            .await
            .map_err(|e| StoreError::local(&what, e))?;
        if bytes.len() as u64 > cap {
            return Err(StoreError::local(
                &what,
                crate::store::s3::too_large(bytes.len() as u64, cap),
            ));
        }
        Ok(Some(bytes.to_vec()))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        let what = format!("reading bytes {range:?} of {}", self.url(key));
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let call = self
            .media(key)
            .header(RANGE, format!("bytes={}-{}", range.start, range.end - 1));
        let length = (range.end - range.start) as usize;
        let (answer, bytes) = self
            .api
            .fetch(&what, &call, length.saturating_add(1))
            .await
            .map_err(|e| self.failed(&what, e))?;
        if answer.status() != StatusCode::PARTIAL_CONTENT || bytes.len() != length {
            return Err(StoreError::local(
                &what,
                std::io::Error::other(format!(
                    "GCS answered {} with {} bytes",
                    answer.status(),
                    bytes.len()
                )),
            ));
        }
        Ok(bytes.to_vec())
    }

    async fn etag(&self, key: &str) -> Result<Option<String>, StoreError> {
        let what = format!("looking up {}", self.url(key));
        let call = Call::new(
            Method::GET,
            format!("{}?fields=generation", self.object(key)),
        );
        match self.api.fetch(&what, &call, JSON_CAP).await {
            Ok((_, body)) => Ok(Some(generation(&json_of(&what, &body)?))),
            Err(failed) if failed.error.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(failed) => Err(self.failed(&what, failed)),
        }
    }

    async fn list(&self, prefix: &str, direct_only: bool) -> Result<Vec<Listed>, StoreError> {
        let mut listed = Vec::new();
        let mut page = None;
        loop {
            page = self
                .list_page(prefix, direct_only, page.as_deref(), &mut listed)
                .await?;
            if page.is_none() {
                return Ok(listed);
            }
        }
    }

    async fn holds_any(&self, prefix: &str) -> Result<bool, StoreError> {
        let what = format!("listing {}", self.url(prefix));
        let url = format!(
            "{}?prefix={}&maxResults=1&fields=items(name)",
            self.object(""),
            super::api::encoded(prefix)
        );
        let json = self.json(&what, &Call::new(Method::GET, url)).await?;
        Ok(json["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty()))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let what = format!("removing {}", self.url(key));
        match self
            .api
            .send(&what, &Call::new(Method::DELETE, self.object(key)))
            .await
        {
            Ok(_) => Ok(()),
            Err(failed) if failed.error.status() == Some(StatusCode::NOT_FOUND) => Ok(()),
            Err(failed) => Err(self.failed(&what, failed)),
        }
    }

    /// Not done inside GCS: fake-gcs-server ignores a rewrite's source precondition, so a copy
    /// could not be tested to copy only the bytes the caller uploaded; the caller uploads them.
    async fn copy(&self, copy: ObjectCopy<'_>) -> Result<(), StoreError> {
        let why = "this build does not copy inside Google Cloud Storage";
        Err(crate::store::no_copy(&self.bucket, copy.from, copy.to, why))
    }

    async fn download_into(&self, key: &str, file: &mut File) -> Result<String, StoreError> {
        let what = format!("downloading {}", self.url(key));
        let answer = self
            .api
            .send(&what, &self.media(key))
            .await
            .map_err(|e| self.failed(&what, e))?;
        let etag = header_generation(answer.headers());
        let chunks = BodyDataStream::new(answer.into_body());
        crate::store::write_chunks(chunks, file, &what, |e| StoreError::local(&what, e)).await?;
        Ok(etag)
    }

    /// A resumable upload, one chunk in flight (GCS takes a session's chunks in order).
    async fn upload_parts(&self, upload: &FileUpload<'_>) -> Result<String, StoreError> {
        let session = self
            .start_upload(upload.key, upload.headers, upload.what)
            .await?;
        let chunk = (upload.part_size / CHUNK_QUANTUM).max(1) * CHUNK_QUANTUM;
        let mut file =
            std::fs::File::open(upload.path).map_err(|e| StoreError::local(upload.what, e))?;
        let mut offset = 0;
        while offset < upload.size {
            let length = chunk.min(upload.size - offset);
            let bytes = crate::store::read_part(&mut file, length, upload.what)?;
            let mut call = Call::new(Method::PUT, session.clone())
                .header(
                    CONTENT_RANGE,
                    format!("bytes {offset}-{}/{}", offset + length - 1, upload.size),
                )
                .body(bytes);
            // GCS types the object from the session's metadata; fake-gcs-server from the
            // last chunk's request.
            if !upload.headers.content_type.is_empty() {
                call = call.header(CONTENT_TYPE, upload.headers.content_type);
            }
            let sent = self.api.fetch(upload.what, &call, JSON_CAP).await;
            offset += length;
            match sent {
                Ok((_, body)) if offset == upload.size => {
                    return Ok(generation(&json_of(upload.what, &body)?));
                }
                Ok(_) => {}
                Err(failed) => {
                    // An unfinished session is dropped by GCS after a week; nothing shows.
                    let _ = self
                        .api
                        .send(upload.what, &Call::new(Method::DELETE, session))
                        .await;
                    return Err(self.failed(upload.what, failed));
                }
            }
        }
        Err(StoreError::local(
            upload.what,
            std::io::Error::other("an empty file is not uploaded in parts"),
        ))
    }

    fn public_base(&self, prefix: &str) -> String {
        crate::store::under(&self.public, prefix)
    }

    /// Compose takes whole objects and no smallest size.
    fn splice_rule(&self) -> Option<SpliceRule> {
        Some(SpliceRule {
            min_first: 0,
            keeps_whole: true,
        })
    }

    async fn splice(&self, key: &str, splice: Splice<'_>) -> Result<String, StoreError> {
        self.compose_in_place(key, splice).await
    }
}
