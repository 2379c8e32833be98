//! Whole objects as files: an archive's ETag, its download, and its upload (in parts above a size,
//! as S3's own tools do), each request retried like any other.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};

use super::store::{with_retries, S3Error};
use crate::sink::durable;

/// Parts of one multipart upload in flight at once; with the part size, this bounds the memory.
const PARTS_IN_FLIGHT: usize = 4;

/// The headers an uploaded object carries.
#[derive(Debug, Clone, Copy)]
pub struct ObjectHeaders<'a> {
    /// `Content-Type`.
    pub content_type: &'a str,
    /// `Cache-Control`.
    pub cache_control: &'a str,
}

fn local_error(what: &str, err: std::io::Error) -> S3Error {
    S3Error {
        what: what.to_string(),
        message: err.to_string(),
        attempts: 0,
        source: Box::new(err),
    }
}

/// The object's ETag, or `None` when there is no such key.
pub async fn etag(
    client: &Client,
    bucket: &str,
    key: &str,
    attempts: u32,
) -> Result<Option<String>, S3Error> {
    let what = format!("looking up s3://{bucket}/{key}");
    with_retries(attempts, &what, || async {
        match client.head_object().bucket(bucket).key(key).send().await {
            Ok(head) => Ok(Some(head.e_tag().unwrap_or_default().to_string())),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
            Err(err) => Err(err),
        }
    })
    .await
}

/// Downloads the object into `path` (through a temporary file beside it, moved into place durably
/// when complete); returns its ETag.
pub async fn download(
    client: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
    attempts: u32,
) -> Result<String, S3Error> {
    let what = format!("downloading s3://{bucket}/{key} to {}", path.display());
    let mut partial = path.as_os_str().to_os_string();
    partial.push(".download");
    let partial = std::path::PathBuf::from(partial);
    let written = async {
        let mut file = durable::create_new(&partial).map_err(|e| local_error(&what, e))?;
        let etag = fetch(client, (bucket, key), &mut file, attempts, &what).await?;
        durable::rename(&partial, path).map_err(|e| local_error(&what, e))?;
        Ok(etag)
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Downloads the object into `file`, an open file of the caller's (a private temporary file);
/// returns its ETag.
pub async fn download_into(
    client: &Client,
    bucket: &str,
    key: &str,
    file: &mut std::fs::File,
    attempts: u32,
) -> Result<String, S3Error> {
    let what = format!("downloading s3://{bucket}/{key}");
    fetch(client, (bucket, key), file, attempts, &what).await
}

async fn fetch(
    client: &Client,
    (bucket, key): (&str, &str),
    file: &mut std::fs::File,
    attempts: u32,
    what: &str,
) -> Result<String, S3Error> {
    let object = with_retries(attempts, what, || {
        client.get_object().bucket(bucket).key(key).send()
    })
    .await?;
    let etag = object.e_tag().unwrap_or_default().to_string();
    let mut body = object.body;
    while let Some(chunk) = body.try_next().await.map_err(|e| S3Error {
        what: what.to_string(),
        message: e.to_string(),
        attempts: 0,
        source: Box::new(e),
    })? {
        file.write_all(&chunk).map_err(|e| local_error(what, e))?;
    }
    file.flush().map_err(|e| local_error(what, e))?;
    Ok(etag)
}

/// Uploads `body` as the object in one request, with retries; returns the new ETag.
pub async fn put_bytes(
    client: &Client,
    (bucket, key): (&str, &str),
    body: &[u8],
    headers: ObjectHeaders<'_>,
    attempts: u32,
) -> Result<String, S3Error> {
    let what = format!("uploading s3://{bucket}/{key}");
    let put = with_retries(attempts, &what, || {
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .content_type(headers.content_type)
            .cache_control(headers.cache_control)
            .send()
    })
    .await?;
    Ok(put.e_tag().unwrap_or_default().to_string())
}

/// Uploads a file as the object, in one request up to `part_size` bytes and as a multipart upload
/// above it (aborted if any part fails for good); returns the new ETag.
pub async fn upload(
    client: &Client,
    (bucket, key): (&str, &str),
    path: &Path,
    headers: ObjectHeaders<'_>,
    attempts: u32,
    part_size: u64,
) -> Result<String, S3Error> {
    let what = format!("uploading {} to s3://{bucket}/{key}", path.display());
    let size = std::fs::metadata(path)
        .map_err(|e| local_error(&what, e))?
        .len();
    if size <= part_size {
        let body = std::fs::read(path).map_err(|e| local_error(&what, e))?;
        return put_bytes(client, (bucket, key), &body, headers, attempts).await;
    }
    let started = with_retries(attempts, &what, || {
        client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type(headers.content_type)
            .cache_control(headers.cache_control)
            .send()
    })
    .await?;
    let upload_id = started.upload_id().unwrap_or_default().to_string();
    let parts = size.div_ceil(part_size);
    let uploaded = futures::stream::iter(0..parts)
        .map(|index| {
            let (what, upload_id) = (&what, &upload_id);
            async move {
                let offset = index * part_size;
                let length = part_size.min(size - offset);
                let mut bytes = vec![0; length as usize];
                let mut file = std::fs::File::open(path).map_err(|e| local_error(what, e))?;
                file.seek(SeekFrom::Start(offset))
                    .and_then(|_| file.read_exact(&mut bytes))
                    .map_err(|e| local_error(what, e))?;
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
                Ok::<_, S3Error>(
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
    let completed = match uploaded {
        Ok(parts) => {
            let done = CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build();
            with_retries(attempts, &what, || {
                client
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
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
                .upload_id(&upload_id)
                .send()
                .await;
            Err(err)
        }
    }
}
