//! A folder of objects under an S3 prefix: where shard plans, part records and the outbox live.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use super::{get_if_exists, object_key, with_retries};
use crate::error::{Error, Result};

/// A folder of objects under an S3 prefix.
pub struct ObjectFolder {
    client: Client,
    bucket: String,
    folder: String,
    attempts: u32,
}

impl ObjectFolder {
    /// The objects under `folder` (a key prefix without trailing slash) in `bucket`.
    pub fn new(client: Client, bucket: &str, folder: &str, attempts: u32) -> ObjectFolder {
        ObjectFolder {
            client,
            bucket: bucket.to_string(),
            folder: folder.to_string(),
            attempts,
        }
    }

    pub fn key(&self, name: &str) -> String {
        object_key(&self.folder, name)
    }

    pub fn location(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(name))
    }

    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        get_if_exists(&self.client, &self.bucket, &self.key(name), self.attempts)
            .await
            .map_err(|e| Error::output_caused(self.location(name), e))
    }

    /// Uploads `body` as `name`; with `only_new`, the store refuses (412) when `name` exists,
    /// and the answer is false.
    pub async fn put(&self, name: &str, body: &[u8], only_new: bool) -> Result<bool> {
        let (client, bucket, key) = (&self.client, &self.bucket, self.key(name));
        let what = format!("uploading {}", self.location(name));
        with_retries(self.attempts, &what, || async {
            let request = client
                .put_object()
                .bucket(bucket)
                .key(&key)
                .body(ByteStream::from(body.to_vec()));
            let request = if only_new {
                request.if_none_match("*")
            } else {
                request
            };
            match request.send().await {
                Ok(_) => Ok(true),
                Err(err)
                    if only_new
                        && err
                            .raw_response()
                            .is_some_and(|r| r.status().as_u16() == 412) =>
                {
                    Ok(false)
                }
                Err(err) => Err(err),
            }
        })
        .await
        .map_err(|e| Error::output_caused(self.location(name), e))
    }

    /// Uploads `body` as `name` with the headers a reader through a CDN is served.
    pub async fn put_document(
        &self,
        name: &str,
        body: &[u8],
        content_type: &str,
        cache_control: &str,
    ) -> Result<()> {
        let headers = super::object::ObjectHeaders {
            content_type,
            cache_control,
        };
        super::object::put_bytes(
            &self.client,
            (&self.bucket, &self.key(name)),
            body,
            headers,
            self.attempts,
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::output_caused(self.location(name), e))
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        let (client, bucket, key) = (&self.client, &self.bucket, self.key(name));
        let what = format!("removing {}", self.location(name));
        with_retries(self.attempts, &what, || {
            client.delete_object().bucket(bucket).key(&key).send()
        })
        .await
        .map(|_| ())
        .map_err(|e| Error::output_caused(self.location(name), e))
    }

    /// The names of the objects directly in the folder, sorted.
    pub async fn list(&self) -> Result<Vec<String>> {
        let prefix = format!("{}/", self.folder);
        let what = format!("listing s3://{}/{prefix}", self.bucket);
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = with_retries(self.attempts, &what, || {
                self.client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&prefix)
                    .delimiter("/")
                    .set_continuation_token(token.clone())
                    .send()
            })
            .await
            .map_err(|e| Error::output_caused(format!("s3://{}/{prefix}", self.bucket), e))?;
            names.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| object.key()?.strip_prefix(&prefix))
                    .map(str::to_string),
            );
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        names.sort();
        Ok(names)
    }
}
