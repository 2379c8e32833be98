//! An S3 object rebuilt from ranges it already holds: a multipart upload whose first part is sent
//! and whose other parts are `UploadPartCopy`s of byte ranges of the object as it is (checked by
//! its ETag), completed at once, so a reader sees the old object or the new, never a mixture.

use std::ops::Range;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::CompletedPart;

use super::{with_retries, S3Store, COPY_SOURCE};
use crate::store::{Splice, StoreError};

/// S3's smallest part but the last.
pub(super) const MIN_PART: u64 = 5 * 1024 * 1024;

/// S3's largest part, copied or sent.
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

/// The copied parts of `kept`: each at most [`MAX_PART`], and none but the last under
/// [`MIN_PART`] (the last two share what would leave a short one before the end).
fn copied_parts(kept: Range<u64>) -> Vec<Range<u64>> {
    let mut parts = Vec::new();
    let mut start = kept.start;
    while start < kept.end {
        let left = kept.end - start;
        let length = if left <= MAX_PART {
            left
        } else if left - MAX_PART < MIN_PART {
            left / 2
        } else {
            MAX_PART
        };
        parts.push(start..start + length);
        start += length;
    }
    parts
}

impl S3Store {
    /// [`crate::store::ObjectStore::splice`] on S3.
    pub(super) async fn splice_parts(
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
        let upload_id = self.start_multipart(key, headers, &what).await?;
        let parts = self
            .send_parts(key, if_etag, new, kept, &upload_id, &what)
            .await;
        self.finish_multipart(key, &upload_id, parts, &what).await
    }

    /// The sent first part, then the copied ones, in order.
    async fn send_parts(
        &self,
        key: &str,
        if_etag: &str,
        new: &[u8],
        kept: Range<u64>,
        upload_id: &str,
        what: &str,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        let (client, bucket, attempts) = (&self.client, &self.bucket.name, self.attempts);
        let sent = with_retries(attempts, &format!("{what}, part 1"), || {
            client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(1)
                .body(ByteStream::from(new.to_vec()))
                .send()
        })
        .await?;
        let mut parts = vec![CompletedPart::builder()
            .part_number(1)
            .set_e_tag(sent.e_tag().map(str::to_string))
            .build()];
        let source = format!(
            "{bucket}/{}",
            percent_encoding::utf8_percent_encode(key, COPY_SOURCE)
        );
        for (index, range) in copied_parts(kept).into_iter().enumerate() {
            let number = i32::try_from(index + 2).unwrap_or(i32::MAX);
            let copied = with_retries(attempts, &format!("{what}, part {number}"), || {
                client
                    .upload_part_copy()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .copy_source(&source)
                    .copy_source_if_match(if_etag)
                    .copy_source_range(format!("bytes={}-{}", range.start, range.end - 1))
                    .send()
            })
            .await?;
            let etag = copied
                .copy_part_result()
                .and_then(|result| result.e_tag())
                .map(str::to_string);
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(etag)
                    .build(),
            );
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_parts_leave_no_short_part_before_the_last() {
        assert_eq!(copied_parts(10..20), vec![10..20]);
        let huge = MAX_PART + 1;
        let parts = copied_parts(0..huge);
        assert_eq!(parts, vec![0..huge / 2, huge / 2..huge]);
        let parts = copied_parts(0..2 * MAX_PART + MIN_PART);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.end - p.start >= MIN_PART));
    }
}
