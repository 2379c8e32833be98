//! Google Cloud Storage for the tests: the one fake-gcs-server `scripts/test.sh` starts
//! (`OAR_TILES_TEST_GCS`, its URL), a bucket of its own per test, made, read and removed through
//! the emulator's JSON API by Python's standard library, so what the tool stored is read by a
//! client that is not the tool's.

use std::process::Command;

use super::remote::{blobs_of_lines, folder, script_output, unique_name, Blob};

/// fake-gcs-server's URL, set by `scripts/test.sh` (`scripts/fake-gcs.sh start`).
pub const GCS_ENV: &str = "OAR_TILES_TEST_GCS";

/// The calls a test needs, one per run of the script: `create`, `drop`, `put NAME HEX`, `read PREFIX` (every
/// object under it, as JSON lines of name, hex bytes and headers), `get NAME PATH` (one object's
/// bytes into a file) and `names PREFIX` (the names under it, a line each). An object is read as stored:
/// `Accept-Encoding: gzip`, or the emulator (as GCS) would undo a gzip `Content-Encoding`.
const SCRIPT: &str = r#"
import json, sys, urllib.parse, urllib.request
base, bucket, op = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
def call(method, url, body=None, headers={}):
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(request) as answer:
        return answer.read(), answer.headers
def objects(prefix):
    token = ""
    while True:
        query = urllib.parse.urlencode({"prefix": prefix, "pageToken": token})
        page = json.loads(call("GET", f"{base}/storage/v1/b/{bucket}/o?{query}")[0])
        yield from page.get("items", [])
        token = page.get("nextPageToken")
        if not token:
            return
def quoted(name):
    return urllib.parse.quote(name, safe="")
if op == "create":
    call("POST", f"{base}/storage/v1/b", json.dumps({"name": bucket}).encode(),
         {"Content-Type": "application/json"})
elif op == "drop":
    for item in list(objects("")):
        call("DELETE", f"{base}/storage/v1/b/{bucket}/o/{quoted(item['name'])}")
    call("DELETE", f"{base}/storage/v1/b/{bucket}")
elif op == "put":
    call("POST", f"{base}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={quoted(sys.argv[4])}",
         bytes.fromhex(sys.argv[5]), {"Content-Type": "application/octet-stream"})
elif op == "get":
    data, _ = call("GET", f"{base}/storage/v1/b/{bucket}/o/{quoted(sys.argv[4])}?alt=media",
                   headers={"Accept-Encoding": "gzip"})
    with open(sys.argv[5], "wb") as out:
        out.write(data)
elif op == "names":
    for item in objects(sys.argv[4]):
        print(item["name"])
elif op == "read":
    prefix = sys.argv[4]
    for item in objects(prefix):
        data, _ = call("GET", f"{base}/storage/v1/b/{bucket}/o/{quoted(item['name'])}?alt=media",
                       headers={"Accept-Encoding": "gzip"})
        print(json.dumps({
            "name": item["name"][len(prefix):],
            "data": data.hex(),
            "content_type": item.get("contentType"),
            "cache_control": item.get("cacheControl"),
            "content_encoding": item.get("contentEncoding"),
            "etag": item.get("etag"),
        }))
"#;

/// A bucket of its own on the shared fake-gcs-server, removed when dropped.
pub struct GcsBucket {
    /// The bucket's name.
    pub name: String,
    /// The emulator's URL.
    pub url: String,
}

impl GcsBucket {
    /// Makes an empty bucket named after `label` (lowercase letters, digits and `-`).
    pub fn create(label: &str) -> GcsBucket {
        let name = unique_name(label);
        let url = std::env::var(GCS_ENV).unwrap_or_else(|_| {
            panic!(
                "{GCS_ENV} is not set: the GCS tests run through scripts/test.sh, which starts \
                 fake-gcs-server"
            )
        });
        let bucket = GcsBucket { name, url };
        bucket.api(&["create"]);
        bucket
    }

    /// The script run with `args` on this bucket.
    fn script(&self, args: &[&str]) -> Command {
        script_on(&self.url, &self.name, args)
    }

    fn api(&self, args: &[&str]) -> String {
        let what = format!("the GCS JSON API {args:?} on {}", self.name);
        script_output(&mut self.script(args), &what)
    }

    /// The output address of `prefix` in this bucket: `gs://NAME/PREFIX`.
    pub fn address(&self, prefix: &str) -> String {
        format!("gs://{}/{prefix}", self.name)
    }

    /// The environment the binary reaches the emulator with, as Google's libraries do.
    pub fn env(&self) -> Vec<(&str, &str)> {
        vec![("STORAGE_EMULATOR_HOST", self.url.as_str())]
    }

    /// Stores `data` as the object `name`, as another machine's client would.
    pub fn put(&self, name: &str, data: &[u8]) {
        put_object(&self.url, &self.name, name, data);
    }

    /// The bytes of the object `name`, written to `path` (an archive too large for
    /// [`GcsBucket::read_prefix`]'s hex lines).
    pub fn download(&self, name: &str, path: &std::path::Path) {
        self.api(&["get", name, path.to_str().unwrap()]);
    }

    /// The names of the objects whose names start with `prefix`, in name order.
    pub fn names(&self, prefix: &str) -> Vec<String> {
        self.api(&["names", prefix])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Every object under `prefix/` (all of them for `""`), named from there on, in name order.
    pub fn read_prefix(&self, prefix: &str) -> Vec<Blob> {
        blobs_of_lines(&self.api(&["read", &folder(prefix)]))
    }
}

/// The script run with `args` on the bucket `bucket` of the emulator at `url`.
fn script_on(url: &str, bucket: &str, args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(SCRIPT)
        .arg(url)
        .arg(bucket)
        .args(args);
    command
}

/// Stores `data` as the object `name` of the bucket `bucket` of the emulator at `url`, as another
/// machine's client would: for a test acting where it holds no [`GcsBucket`] (another thread).
pub fn put_object(url: &str, bucket: &str, name: &str, data: &[u8]) {
    let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
    let what = format!("the GCS JSON API put {name} on {bucket}");
    script_output(&mut script_on(url, bucket, &["put", name, &hex]), &what);
}

impl Drop for GcsBucket {
    fn drop(&mut self) {
        let _ = self.script(&["drop"]).output();
    }
}
