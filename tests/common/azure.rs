//! Azure Blob Storage for the tests: the one Azurite process `scripts/test.sh` starts
//! (`OAR_TILES_TEST_AZURITE`, its blob service's URL), a container of its own per test, made,
//! read and removed through Microsoft's Python SDK (`OAR_TILES_TEST_AZURE_PYTHON`), so what the
//! tool stored is read by a client that is not the tool's.

use std::process::Command;

use super::remote::{blobs_of_lines, folder, script_output, unique_name, Blob};

/// Azurite's blob service URL, set by `scripts/test.sh`.
const AZURITE_ENV: &str = "OAR_TILES_TEST_AZURITE";
/// A python with `azure-storage-blob`, set by `scripts/test.sh`.
const PYTHON_ENV: &str = "OAR_TILES_TEST_AZURE_PYTHON";

/// Azurite's published development account and key (the same in every installation).
const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The SDK calls a test needs, one per run of the script: `create`, `drop`, `put NAME HEX` (one
/// Put Blob, as another writer), `blocks NAME` (how many committed blocks it has), `read PREFIX`
/// (every blob under it, as JSON lines of name, hex bytes and headers). A blob is read as stored: the SDK
/// would otherwise undo a gzip `Content-Encoding` as a browser does.
const SCRIPT: &str = r#"
import json, sys
from azure.storage.blob import BlobServiceClient
service = BlobServiceClient.from_connection_string(sys.argv[1])
container = service.get_container_client(sys.argv[2])
op = sys.argv[3]
if op == "create":
    container.create_container()
elif op == "drop":
    container.delete_container()
elif op == "put":
    container.upload_blob(sys.argv[4], bytes.fromhex(sys.argv[5]), overwrite=True)
elif op == "blocks":
    committed, _ = container.get_blob_client(sys.argv[4]).get_block_list("committed")
    print(len(committed))
elif op == "read":
    prefix = sys.argv[4]
    for blob in container.list_blobs(name_starts_with=prefix):
        settings = blob.content_settings
        data = container.download_blob(blob.name, decompress=False).readall()
        print(json.dumps({
            "name": blob.name[len(prefix):],
            "data": data.hex(),
            "content_type": settings.content_type,
            "cache_control": settings.cache_control,
            "content_encoding": settings.content_encoding,
            "etag": blob.etag,
        }))
"#;

fn connection_string(url: &str) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};\
         BlobEndpoint={}/{ACCOUNT};",
        url.trim_end_matches('/')
    )
}

/// The script run with `args` on the container `name` of the Azurite at `url`.
fn sdk(python: &str, url: &str, name: &str, args: &[&str]) -> String {
    let mut command = Command::new(python);
    command
        .arg("-c")
        .arg(SCRIPT)
        .arg(connection_string(url))
        .arg(name)
        .args(args);
    script_output(
        &mut command,
        &format!("azure-storage-blob {args:?} on {name}"),
    )
}

/// Writes `data` as the blob `blob` of the container `name` in one request (Put Blob), as
/// another writer would: from a proxy's thread, which cannot hold the test's [`Container`].
pub fn put_blob(name: &str, blob: &str, data: &[u8]) {
    let (python, url) = (required(PYTHON_ENV), required(AZURITE_ENV));
    sdk(&python, &url, name, &["put", blob, &hex::encode(data)]);
}

/// A container of its own on the shared Azurite, removed when dropped.
pub struct Container {
    /// The container's name.
    pub name: String,
    /// Azurite's blob service URL.
    pub url: String,
    python: String,
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the Azure tests run through scripts/test.sh, which starts Azurite"
        )
    })
}

impl Container {
    /// Makes an empty container named after `label` (lowercase letters, digits and `-`).
    pub fn create(label: &str) -> Container {
        let name = unique_name(label);
        let container = Container {
            name,
            url: required(AZURITE_ENV),
            python: required(PYTHON_ENV),
        };
        container.sdk(&["create"]);
        container
    }

    fn connection_string(&self) -> String {
        connection_string(&self.url)
    }

    fn sdk(&self, args: &[&str]) -> String {
        sdk(&self.python, &self.url, &self.name, args)
    }

    /// The output address of `prefix` in this container: `az://NAME/PREFIX`.
    pub fn address(&self, prefix: &str) -> String {
        format!("az://{}/{prefix}", self.name)
    }

    /// The environment the binary reaches Azurite with, as Azure's tools do.
    pub fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true"),
            ("AZURITE_BLOB_STORAGE_URL", self.url.as_str()),
        ]
    }

    /// How many committed blocks the blob `name` has (none when one request wrote it).
    pub fn committed_blocks(&self, name: &str) -> usize {
        self.sdk(&["blocks", name]).trim().parse().unwrap()
    }

    /// Every blob under `prefix/` (all of them for `""`), named from there on, in name order.
    pub fn read_prefix(&self, prefix: &str) -> Vec<Blob> {
        blobs_of_lines(&self.sdk(&["read", &folder(prefix)]))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new(&self.python)
            .arg("-c")
            .arg(SCRIPT)
            .arg(self.connection_string())
            .arg(&self.name)
            .arg("drop")
            .output();
    }
}
