//! A bucket of a remote object store under test, whichever the store: the S3-compatible server
//! (`s3.rs`), Azure Blob Storage on the shared Azurite (`azure.rs`) or Google Cloud Storage on the
//! shared fake-gcs-server (`gcs.rs`). Tests that hold every
//! remote store to the same behaviour write one body against a [`Remote`] and run it on each,
//! reading what the tool stored back through a client that is not the tool's.

use super::azure::Container;
use super::gcs::GcsBucket;
use super::run::Tiles;
use super::s3::S3Server;

/// The bucket the S3 server is started with.
const S3_BUCKET: &str = "tiles";

/// One object as a client read it back.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Its name under the prefix read.
    pub name: String,
    /// Its bytes, as stored (a gzip `Content-Encoding` not undone).
    pub data: Vec<u8>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// The store's `ETag`, which a browser revalidates with.
    pub etag: Option<String>,
}

/// The objects a test's script printed as JSON lines (`name`, hex `data`, `content_type`,
/// `cache_control`, `content_encoding`, `etag`), in name order.
pub fn blobs_of_lines(text: &str) -> Vec<Blob> {
    let mut blobs: Vec<Blob> = text
        .lines()
        .map(|line| {
            let json: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = |key: &str| json[key].as_str().map(str::to_string);
            Blob {
                name: text("name").unwrap(),
                data: hex_bytes(json["data"].as_str().unwrap()),
                content_type: text("content_type"),
                cache_control: text("cache_control"),
                content_encoding: text("content_encoding"),
                etag: text("etag"),
            }
        })
        .collect();
    blobs.sort_by(|a, b| a.name.cmp(&b.name));
    blobs
}

/// A bucket or container name of its own for a test, from `label`: unique in the run and across
/// runs sharing a server.
pub fn unique_name(label: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{}-{}-{}",
        label.replace('_', "-").to_lowercase(),
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// What a test's script printed; `what` names it when it fails.
pub fn script_output(command: &mut std::process::Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `prefix/` as a listing's prefix (`""` for the whole bucket).
pub fn folder(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// An empty bucket of one remote store, removed with its server or container when dropped.
pub enum Remote {
    /// A bucket on an S3 server of its own.
    S3(S3Server),
    /// A container of its own on the shared Azurite.
    Azure(Container),
    /// A bucket of its own on the shared fake-gcs-server.
    Gcs(GcsBucket),
}

impl Remote {
    /// A bucket on a new S3-compatible server.
    pub fn s3() -> Remote {
        Remote::S3(S3Server::start(S3_BUCKET))
    }

    /// A new container on the shared Azurite, named after `label`.
    pub fn azure(label: &str) -> Remote {
        Remote::Azure(Container::create(label))
    }

    /// A new bucket on the shared fake-gcs-server, named after `label`.
    pub fn gcs(label: &str) -> Remote {
        Remote::Gcs(GcsBucket::create(label))
    }

    /// The bucket's or container's name.
    pub fn bucket(&self) -> &str {
        match self {
            Remote::S3(_) => S3_BUCKET,
            Remote::Azure(container) => &container.name,
            Remote::Gcs(bucket) => &bucket.name,
        }
    }

    /// The output address of `key` (a prefix or an archive's key) in the bucket.
    pub fn address(&self, key: &str) -> String {
        match self {
            Remote::S3(_) => format!("s3://{S3_BUCKET}/{key}"),
            Remote::Azure(container) => container.address(key),
            Remote::Gcs(bucket) => bucket.address(key),
        }
    }

    /// The config's `[store]` table the store needs, if any (Azure and GCS are reached through
    /// the environment alone).
    pub fn config_table(&self) -> String {
        match self {
            Remote::S3(server) => server.config_table(""),
            Remote::Azure(_) | Remote::Gcs(_) => String::new(),
        }
    }

    /// The environment the binary reaches the store with.
    pub fn env(&self) -> Vec<(&str, &str)> {
        match self {
            Remote::S3(server) => server.env(),
            Remote::Azure(container) => container.env(),
            Remote::Gcs(bucket) => bucket.env(),
        }
    }

    /// Every object under `prefix/` (all of them for `""`), named from there on, in name order,
    /// with its headers.
    pub fn read_prefix(&self, prefix: &str) -> Vec<Blob> {
        match self {
            Remote::S3(server) => server.read_blobs(S3_BUCKET, prefix),
            Remote::Azure(container) => container.read_prefix(prefix),
            Remote::Gcs(bucket) => bucket.read_prefix(prefix),
        }
    }

    /// The tiles (`z/x/y.pbf`) stored under `prefix/`.
    pub fn stored_tiles(&self, prefix: &str) -> Tiles {
        let objects: Vec<(String, Vec<u8>)> = self
            .read_prefix(prefix)
            .into_iter()
            .map(|blob| (blob.name, blob.data))
            .collect();
        super::s3::tiles_of(&objects)
    }
}
