//! A real S3-compatible server (s3s-fs, started by `scripts/s3-server.sh`) on a free loopback port,
//! stopped when the test ends, and a client to look inside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::Client;

/// Credentials the test server accepts.
pub const ACCESS_KEY: &str = "oar-tiles-test";
/// Secret of [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "oar-tiles-test-secret";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3-server.sh")
}

/// One server process and its data directory.
pub struct S3Server {
    pub port: u16,
    pub data: PathBuf,
    pid: Option<String>,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server holding an empty `bucket`.
    pub fn start(bucket: &str) -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut server = S3Server {
            port,
            data,
            pid: None,
            _dir: dir,
        };
        server.restart(&[bucket]);
        server
    }

    /// Starts the server (again) on the same port and data.
    pub fn restart(&mut self, buckets: &[&str]) {
        let output = Command::new(script())
            .arg("start")
            .arg(self.port.to_string())
            .arg(&self.data)
            .args(buckets)
            .env("S3_SERVER_WATCH_PID", std::process::id().to_string())
            .output()
            .expect("run scripts/s3-server.sh");
        assert!(
            output.status.success(),
            "s3-server start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.pid = Some(String::from_utf8_lossy(&output.stdout).trim().to_string());
    }

    /// Kills the server as a crash would.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new(script()).args(["kill", &pid]).output();
        }
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `[store]` table of a config that reaches this server.
    pub fn config_table(&self, extra: &str) -> String {
        format!(
            "[store]\nendpoint = \"{}\"\nforce_path_style = true\nregion = \"us-east-1\"\n{extra}\n",
            self.endpoint()
        )
    }

    /// Environment the binary needs for the server's credentials.
    pub fn env(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
    }

    /// A client for looking at what the server holds.
    pub fn client(&self) -> Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .http_client(oar_tiles::testing::https_client())
            .credentials_provider(Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "tests",
            ))
            .build();
        Client::from_conf(config)
    }

    /// Files the server has stored under `bucket/prefix` (its data is plain files).
    pub fn stored_files(&self, bucket: &str, prefix: &str) -> usize {
        fn count(dir: &Path) -> usize {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .map(|e| e.unwrap().path())
                        .map(|p| if p.is_dir() { count(&p) } else { 1 })
                        .sum()
                })
                .unwrap_or(0)
        }
        count(&self.data.join(bucket).join(prefix))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new(script()).args(["stop", &pid]).output();
        }
    }
}

impl S3Server {
    /// The tiles (`z/x/y.pbf`) stored under `bucket/prefix/`, read from the server's files (a
    /// request per tile would take minutes for thousands).
    pub fn stored_tiles(&self, bucket: &str, prefix: &str) -> super::run::Tiles {
        super::run::read_tree(&self.data.join(bucket).join(prefix), "pbf")
    }

    /// Every object under `bucket/prefix/`, named from there on, with its bytes, in name order.
    pub fn read_prefix(&self, bucket: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let blobs = self.read_blobs(bucket, prefix).into_iter();
        blobs.map(|blob| (blob.name, blob.data)).collect()
    }
}

impl S3Server {
    /// Every object under `bucket/prefix/` (all of them for `""`), named from there on, with
    /// its headers, in name order.
    pub fn read_blobs(&self, bucket: &str, prefix: &str) -> Vec<super::remote::Blob> {
        let client = self.client();
        let under = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        super::runtime().block_on(async {
            let mut blobs = Vec::new();
            let mut pages = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(&under)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for object in page.unwrap().contents() {
                    let key = object.key().unwrap();
                    let got = client.get_object().bucket(bucket).key(key).send().await;
                    let got = got.unwrap();
                    let text = |value: Option<&str>| value.map(str::to_string);
                    let (content_type, cache_control, content_encoding, etag) = (
                        text(got.content_type()),
                        text(got.cache_control()),
                        text(got.content_encoding()),
                        text(got.e_tag()),
                    );
                    let data = got.body.collect().await.unwrap().into_bytes().to_vec();
                    blobs.push(super::remote::Blob {
                        name: key[under.len()..].to_string(),
                        data,
                        content_type,
                        cache_control,
                        content_encoding,
                        etag,
                    });
                }
            }
            blobs.sort_by(|a, b| a.name.cmp(&b.name));
            blobs
        })
    }
}

/// The tiles (`z/x/y.pbf`) among the objects of [`S3Server::read_prefix`].
pub fn tiles_of(objects: &[(String, Vec<u8>)]) -> super::run::Tiles {
    objects
        .iter()
        .filter_map(|(name, bytes)| {
            let path = name.strip_suffix(".pbf")?;
            let parts: Vec<u32> = path.split('/').map(|p| p.parse().unwrap()).collect();
            Some(((parts[0] as u8, parts[1], parts[2]), bytes.clone()))
        })
        .collect()
}
