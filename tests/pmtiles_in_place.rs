//! A PMTiles archive in S3 (moto) updated in place: a reseed sends the changed tiles, the
//! directories and at most one part of padding, the store rebuilds the object from the ranges it
//! holds, readers see a valid archive equal to a full seed, and an archive whose unreferenced bytes
//! pass `pmtiles_compact_above` is written whole and clustered again. Bytes sent are counted by a
//! proxy between the tool and the store.

use crate::common::cloudfront::moto_url;
use crate::common::fixture::Fixture;
use crate::common::pmtiles::{continent_points, seed, setup_on};
use crate::common::pmtiles_reader::{assert_same_digests, read_archive};
use crate::common::proxy::CountingProxy;
use crate::common::run::{oar_tiles, oar_tiles_with, Run};
use crate::common::runtime;

const KEY: &str = "maps/sites.pmtiles";

/// S3's smallest part but the last: the most padding a reseed may send.
const MIN_PART: u64 = 5 * 1024 * 1024;

/// A fixture whose archive lives in a bucket of its own on moto, reached through a counting proxy.
struct Setup {
    base: Fixture,
    proxy: CountingProxy,
    bucket: String,
    client: aws_sdk_s3::Client,
}

crate::common::fixture::wraps_fixture!(Setup, base);

impl Setup {
    fn new(label: &str, tileset: &str) -> Setup {
        let moto = moto_url();
        let proxy = CountingProxy::start(&moto);
        let bucket = crate::common::remote::unique_name(label);
        let store = format!(
            "[store]\nendpoint = \"http://127.0.0.1:{}\"\nforce_path_style = true\nregion = \"us-east-1\"\n",
            proxy.port
        );
        let base = setup_on(label, &continent_points(), &store, tileset);
        let client = moto_client(&moto);
        runtime()
            .block_on(client.create_bucket().bucket(&bucket).send())
            .unwrap();
        Setup {
            base,
            proxy,
            bucket,
            client,
        }
    }

    fn env(&self, machine: &str) -> Vec<(&'static str, String)> {
        let cache = self.path(machine);
        std::fs::create_dir_all(&cache).unwrap();
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("XDG_CACHE_HOME", cache.to_str().unwrap().into()),
        ]
    }

    /// Seeds zooms 0-10 into the archive from `machine`; returns the run and the bytes sent.
    fn seed_s3(&self, machine: &str, extra: &[&str]) -> (Run, u64) {
        let target = format!("s3://{}/{KEY}", self.bucket);
        let args = self.seed_args(&target, "0-10", extra);
        let env = self.env(machine);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let before = self.proxy.sent();
        let run = oar_tiles_with(Some(&self.schema.url), &args, &env);
        run.assert_success();
        (run, self.proxy.sent() - before)
    }

    /// Downloads the archive object to `name` in the test directory.
    fn download(&self, name: &str) -> std::path::PathBuf {
        let path = self.path(name);
        let bytes = runtime().block_on(async {
            let object = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(KEY)
                .send()
                .await
                .unwrap();
            object.body.collect().await.unwrap().into_bytes()
        });
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Changes the labels of `rows` facilities.
    fn change(&mut self, rows: u32, round: u32) {
        self.schema.execute(&format!(
            "UPDATE {{schema}}.sites SET label = md5(label || '{round}') WHERE site_id <= {rows}"
        ));
    }
}

fn moto_client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .http_client(oar_tiles::testing::https_client())
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[test]
#[ignore = "needs PostGIS, moto and the Python pmtiles reader: run scripts/test.sh"]
fn a_reseed_of_an_s3_archive_sends_the_change_and_reads_as_a_full_seed() {
    let mut setup = Setup::new("pmip", "");
    let (_, first_sent) = setup.seed_s3("machine-a", &[]);
    let first = std::fs::metadata(setup.download("first.pmtiles"))
        .unwrap()
        .len();
    assert!(
        first > 2 * MIN_PART,
        "the archive is {first} bytes, too small to show what a reseed sends"
    );
    assert!(first_sent >= first, "a first seed sends the archive");

    let mut previous = first;
    for round in 1..=3 {
        setup.change(10, round);
        let (run, sent) = setup.seed_s3("machine-a", &["--dirty"]);
        let reseeded = setup.download(&format!("round-{round}.pmtiles"));
        let size = std::fs::metadata(&reseeded).unwrap().len();
        assert!(
            sent < MIN_PART + MIN_PART / 2,
            "round {round}: a 10-row change sent {sent} bytes of a {size}-byte archive: {}",
            run.stderr
        );
        assert!(
            size < previous + MIN_PART,
            "round {round}: the archive grew from {previous} to {size} bytes"
        );
        previous = size;
        let archive = read_archive(&reseeded);
        assert_eq!(archive.header["clustered"], false, "{}", archive.header);
        let full = setup.path(&format!("full-{round}.pmtiles"));
        seed(&setup, &full, &[]);
        assert_same_digests(
            &read_archive(&full).tiles,
            &archive.tiles,
            &format!("round {round}: the archive updated in place against a full seed"),
        );
        let checked = oar_tiles(None, &["validate", reseeded.to_str().unwrap()]);
        checked.assert_success();
    }
}

#[test]
#[ignore = "needs PostGIS, moto and the Python pmtiles reader: run scripts/test.sh"]
fn an_archive_whose_unreferenced_bytes_pass_the_share_is_written_whole_again() {
    let mut setup = Setup::new("pmipc", "pmtiles_compact_above = 0.05");
    setup.seed_s3("machine-a", &[]);
    let first = std::fs::metadata(setup.download("first.pmtiles"))
        .unwrap()
        .len();
    // The first change leaves fewer unreferenced bytes than the share: in place.
    setup.change(1, 1);
    let (_, sent) = setup.seed_s3("machine-a", &["--dirty"]);
    assert!(sent < first / 2, "sent {sent} of {first}");
    assert_eq!(
        read_archive(&setup.download("appended.pmtiles")).header["clustered"],
        false
    );
    // A large change passes it: the next run writes the archive whole and clustered.
    setup.change(3000, 2);
    let (_, sent) = setup.seed_s3("machine-a", &["--dirty"]);
    let compacted = setup.download("compacted.pmtiles");
    let archive = read_archive(&compacted);
    assert_eq!(archive.header["clustered"], true, "{}", archive.header);
    assert!(sent >= std::fs::metadata(&compacted).unwrap().len());
}

#[test]
#[ignore = "needs PostGIS, moto and the Python pmtiles reader: run scripts/test.sh"]
fn a_reseed_from_an_empty_cache_reads_the_directories_not_the_archive() {
    let mut setup = Setup::new("pmipe", "");
    setup.seed_s3("machine-a", &[]);
    let size = std::fs::metadata(setup.download("first.pmtiles"))
        .unwrap()
        .len();
    // Twice from machines that never held the archive, then once more from the second one, whose
    // working copy is now a skeleton.
    for (round, machine) in [(1, "machine-b"), (2, "machine-c"), (3, "machine-c")] {
        setup.change(10, round);
        let before = setup.proxy.received();
        let (run, sent) = setup.seed_s3(machine, &["--dirty"]);
        let received = setup.proxy.received() - before;
        // Its directories, and the old tile data's first bytes that pad the new ones to S3's
        // smallest first part: they are sent again, so this machine needs them, once.
        let most = match round {
            3 => 256 * 1024,
            _ => MIN_PART + MIN_PART / 10,
        };
        assert!(
            received < most,
            "round {round}: a reseed from {machine} received {received} bytes of a {size}-byte \
             archive: {}",
            run.stderr
        );
        assert!(
            sent < MIN_PART + MIN_PART / 2,
            "round {round}: sent {sent} bytes: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("downloading the archive"),
            "round {round}: {}",
            run.stderr
        );
        let reseeded = setup.download(&format!("round-{round}.pmtiles"));
        let archive = read_archive(&reseeded);
        assert_eq!(archive.header["clustered"], false, "{}", archive.header);
        let full = setup.path(&format!("full-{round}.pmtiles"));
        seed(&setup, &full, &[]);
        assert_same_digests(
            &read_archive(&full).tiles,
            &archive.tiles,
            &format!("round {round}: the archive updated from {machine}'s skeleton"),
        );
        // Its hash cannot be known without every tile: the archive says it is pending.
        assert!(
            archive.metadata["oar_tiles_hash_pending"].is_string(),
            "{}",
            archive.metadata
        );
        oar_tiles(None, &["validate", reseeded.to_str().unwrap()]).assert_success();
    }
    // Nothing changed: nothing is sent, from a machine with or without a working copy.
    for machine in ["machine-c", "machine-d"] {
        let (run, sent) = setup.seed_s3(machine, &["--dirty"]);
        assert!(
            sent < 64 * 1024,
            "{machine}: sent {sent} bytes for no change: {}",
            run.stderr
        );
    }
}

#[test]
#[ignore = "needs PostGIS, moto and the Python pmtiles reader: run scripts/test.sh"]
fn an_archive_written_whole_from_an_empty_cache_is_downloaded_first_and_hashed_again() {
    // Any bytes left unreferenced pass the share.
    let mut setup = Setup::new("pmipw", "pmtiles_compact_above = 0.001");
    setup.seed_s3("machine-a", &[]);
    // A change past the share, from a machine with no working copy: it reads the directories,
    // then must write the archive whole, so it downloads the tiles it lacks.
    setup.change(10, 1);
    let (run, _) = setup.seed_s3("machine-b", &["--dirty"]);
    assert!(
        run.stderr
            .contains("downloading the archive to write it whole"),
        "{}",
        run.stderr
    );
    let compacted = setup.download("compacted.pmtiles");
    let archive = read_archive(&compacted);
    assert_eq!(archive.header["clustered"], true, "{}", archive.header);
    assert!(
        archive.metadata["agg_tiles_hash"].is_string()
            && archive.metadata["oar_tiles_hash_pending"].is_null(),
        "{}",
        archive.metadata
    );
    let full = setup.path("full.pmtiles");
    seed(&setup, &full, &[]);
    assert_same_digests(
        &read_archive(&full).tiles,
        &archive.tiles,
        "the archive written whole from a skeleton",
    );
    oar_tiles(None, &["validate", compacted.to_str().unwrap()]).assert_success();
}
