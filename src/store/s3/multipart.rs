//! An S3 multipart upload of a local file: its parts read and sent a few at a time, the upload
//! completed, or aborted when any part fails, since an abandoned upload's parts are billed.

use std::io::{Read, Seek, SeekFrom};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::{StreamExt, TryStreamExt};

use super::{with_retries, S3Store};
use crate::store::{FileUpload, ObjectHeaders, StoreError};

/// Parts of one multipart upload in flight at once; with the part size, this bounds the memory.
const PARTS_IN_FLIGHT: usize = 4;

impl S3Store {
    /// Uploads the file in parts, a few in flight at once, and returns the object's ETag; an
    /// upload that fails is aborted.
    pub(super) async fn multipart(&self, upload: &FileUpload<'_>) -> Result<String, StoreError> {
        let FileUpload {
            key,
            path,
            size,
            headers,
            part_size,
            what,
        } = *upload;
        let (client, bucket, attempts) = (&self.client, &self.bucket.name, self.attempts);
        let upload_id = self.start_multipart(key, headers, what).await?;
        let parts = size.div_ceil(part_size);
        let uploaded = futures::stream::iter(0..parts)
            .map(|index| {
                let upload_id = &upload_id;
                async move {
                    let offset = index * part_size;
                    let length = part_size.min(size - offset);
                    let mut bytes = vec![0; length as usize];
                    let mut file =
                        std::fs::File::open(path).map_err(|e| StoreError::local(what, e))?;
                    file.seek(SeekFrom::Start(offset))
                        .and_then(|_| file.read_exact(&mut bytes))
                        .map_err(|e| StoreError::local(what, e))?;
                    let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
                    let part = with_retries(attempts, &format!("{what}, part {number}"), || {
                        client
                            .upload_part()
                            .bucket(bucket)
                            .key(key)
                            .upload_id(upload_id)
                            .part_number(number)
                            .body(ByteStream::from(bytes.clone()))
                            .send()
                    })
                    .await?;
                    Ok::<_, StoreError>(
                        CompletedPart::builder()
                            .part_number(number)
                            .set_e_tag(part.e_tag().map(str::to_string))
                            .build(),
                    )
                }
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await;
        self.finish_multipart(key, &upload_id, uploaded, what).await
    }

    /// Starts a multipart upload of `key`, served with `headers` once complete; its upload id.
    pub(super) async fn start_multipart(
        &self,
        key: &str,
        headers: ObjectHeaders<'_>,
        what: &str,
    ) -> Result<String, StoreError> {
        let (client, bucket) = (&self.client, &self.bucket.name);
        let started = with_retries(self.attempts, what, || {
            client
                .create_multipart_upload()
                .bucket(bucket)
                .key(key)
                .content_type(headers.content_type)
                .cache_control(headers.cache_control)
                .set_content_encoding(headers.content_encoding.map(str::to_string))
                .send()
        })
        .await?;
        Ok(started.upload_id().unwrap_or_default().to_string())
    }

    /// Completes the upload `upload_id` of `key` from its `parts`, or aborts it when they or the
    /// completion failed; the object's ETag.
    pub(super) async fn finish_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Result<Vec<CompletedPart>, StoreError>,
        what: &str,
    ) -> Result<String, StoreError> {
        let (client, bucket) = (&self.client, &self.bucket.name);
        let completed = match parts {
            Ok(parts) => {
                let done = CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build();
                with_retries(self.attempts, what, || {
                    client
                        .complete_multipart_upload()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .multipart_upload(done.clone())
                        .send()
                })
                .await
            }
            Err(err) => Err(err),
        };
        match completed {
            Ok(output) => Ok(output.e_tag().unwrap_or_default().to_string()),
            Err(err) => {
                // Parts of an abandoned upload are billed until aborted.
                let _ = client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await;
                Err(err)
            }
        }
    }
}
