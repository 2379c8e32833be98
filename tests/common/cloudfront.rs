//! CloudFront as the tests reach it: moto's server (started by `scripts/moto-server.sh`), a
//! distribution of each test's own on it, the invalidations the tool sent there, and the paths a
//! tileset under `path_prefix = "/v1"` names.

use std::collections::BTreeSet;

use super::fixture::Fixture;
use super::run::{differences, Tiles};

/// The URL of moto's server, which `scripts/test.sh` starts and names in `OAR_TILES_TEST_MOTO`;
/// a test run without it fails, saying how to run it.
pub fn moto_url() -> String {
    match std::env::var("OAR_TILES_TEST_MOTO") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "OAR_TILES_TEST_MOTO is not set: the CloudFront tests run through scripts/test.sh, \
             which starts moto's server and sets it"
        ),
    }
}

/// The environment that sends the tool's CloudFront calls to moto's server at `endpoint`.
pub fn moto_env(endpoint: &str) -> [(&'static str, &str); 5] {
    [
        ("AWS_ENDPOINT_URL_CLOUDFRONT", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// A CloudFront client of moto's server at `endpoint`, to look at what the tool sent.
pub fn cloudfront_client(endpoint: &str) -> aws_sdk_cloudfront::Client {
    let config = aws_sdk_cloudfront::Config::builder()
        .behavior_version(aws_sdk_cloudfront::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudfront::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .http_client(oar_tiles::testing::https_client())
        .credentials_provider(aws_sdk_cloudfront::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .build();
    aws_sdk_cloudfront::Client::from_conf(config)
}

/// Sets distribution `id`'s propagation time, for its invalidations in flight too.
pub fn set_propagation(endpoint: &str, id: &str, seconds: u32) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/moto-server.sh");
    let output = std::process::Command::new(script)
        .args(["propagation", endpoint, id, &seconds.to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A distribution of the test's own on moto's server (made by `scripts/moto-server.sh`).
pub fn distribution(endpoint: &str, name: &str) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/moto-server.sh");
    let output = std::process::Command::new(script)
        .args(["distribution", endpoint, name])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Every invalidation's paths, oldest first.
pub fn invalidations(client: &aws_sdk_cloudfront::Client, id: &str) -> Vec<Vec<String>> {
    super::block_on(async {
        let listed = client
            .list_invalidations()
            .distribution_id(id)
            .send()
            .await
            .unwrap();
        let mut all = Vec::new();
        for summary in listed.invalidation_list().unwrap().items() {
            let detail = client
                .get_invalidation()
                .distribution_id(id)
                .id(summary.id())
                .send()
                .await
                .unwrap();
            let invalidation = detail.invalidation().unwrap();
            let paths = invalidation
                .invalidation_batch()
                .unwrap()
                .paths()
                .unwrap()
                .items()
                .to_vec();
            // The caller reference ends in the time it was made.
            let reference = invalidation
                .invalidation_batch()
                .unwrap()
                .caller_reference();
            all.push((reference.to_string(), paths));
        }
        all.sort();
        all.into_iter().map(|(_, paths)| paths).collect()
    })
}

/// Whether an invalidation of `purged` (paths, or folders ending in `*`) reaches `path`.
pub fn covered(path: &str, purged: &[String]) -> bool {
    purged.iter().any(|p| match p.strip_suffix('*') {
        Some(folder) => path.starts_with(folder),
        None => p == path,
    })
}

/// `/v1/z/x/y.pbf` of every tile that differs between two reads of a tree.
pub fn changed(before: &Tiles, after: &Tiles) -> BTreeSet<String> {
    differences(before, after)
        .into_iter()
        .map(|tile| format!("/v1/{tile}.pbf"))
        .collect()
}

/// A path for a `--summary-json` report in the fixture's directory, and the same as an argument.
pub fn summary_path(fixture: &Fixture, name: &str) -> (std::path::PathBuf, String) {
    let path = fixture.path(name);
    let arg = path.to_str().unwrap().to_string();
    (path, arg)
}
