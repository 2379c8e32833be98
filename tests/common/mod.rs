//! Everything the integration tests share: the test database, running the binary, reading what it
//! wrote, the servers it talks to, and the worlds several test modules seed. A test module uses
//! only these, never another test module (tests/toolbox.rs checks), so what is shared is found,
//! documented and reused here.

pub mod api_limits;
pub mod azure;
pub mod capture;
pub mod cloudfront;
pub mod disk;
pub mod echo;
pub mod edge;
pub mod env;
pub mod fixture;
pub mod gcs;
pub mod geodata;
pub mod in_place;
pub mod journal;
pub mod mvt;
pub mod nginx;
pub mod pg;
pub mod pmtiles;
pub mod pmtiles_reader;
pub mod proxy;
pub mod recorder;
pub mod remote;
pub mod reseed;
pub mod run;
pub mod s3;
pub mod serve;
pub mod slow;
pub mod throttle;
pub mod varnish;
pub mod watcher;

/// The tiles a changes-feed segment lists, as `z/x/y`.
pub fn segment_tiles(segment: &serde_json::Value) -> std::collections::BTreeSet<String> {
    segment["tiles"]
        .as_array()
        .unwrap_or_else(|| panic!("a segment lists its tiles: {segment}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// Every file under `dir` whose extension is `extension`, in a stable order.
pub fn files_with_extension(dir: &std::path::Path, extension: &str) -> Vec<std::path::PathBuf> {
    let mut entries: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    let mut found = Vec::new();
    for path in entries {
        if path.is_dir() {
            found.extend(files_with_extension(&path, extension));
        } else if path.extension().is_some_and(|e| e == extension) {
            found.push(path);
        }
    }
    found
}

/// A loopback port nothing listens on now: for a server a test starts, or a service that is down.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A single-threaded Tokio runtime, for the async clients (S3, CloudFront, WebDriver) the
/// synchronous tests drive.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `future` to completion on a [`runtime`] of its own.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    runtime().block_on(future)
}
