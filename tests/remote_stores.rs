//! Outputs in every remote object store, one body per behaviour run against each store: the S3
//! test server, Azure Blob Storage on Azurite and Google Cloud Storage on fake-gcs-server
//! (`common::remote`), read back through a client that is not the tool's (the AWS SDK, Microsoft's
//! Python SDK, the emulator's JSON API from Python). A tile prefix holds the same
//! tiles as a local file, with a tile's headers and an absolute TileJSON, takes a dirty reseed
//! that ends like a full seed, passes `validate` and `inspect`; a PMTiles archive equals a local
//! one before and after its reseed; shards finalize into exactly one run; a partitioned tileset
//! equals the same seeded into a tree; and each store keeps the contract the outputs build on.

use crate::common::azure::Container;
use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::pmtiles_reader::read_archive;
use crate::common::remote::Remote;
use crate::common::run::{
    assert_same_tiles, differences, lines, oar_tiles_with, read_mbtiles_raw, single_layer_config,
    Run, Tiles,
};

const PREFIX: &str = "facilities/v1";
const ZOOMS: &str = "0-8";

/// A fixture with a change log and a bucket of its own.
struct Setup {
    fixture: Fixture,
    remote: Remote,
}

impl Setup {
    fn new(label: &str, count: i64, remote: Remote) -> Setup {
        let points = hub_with_scatter(count, 5, 5, [72.9, 33.5, 73.3, 33.8]);
        let fixture = Fixture::new(label, &points, "remote.toml", |schema| {
            let changes = schema.companion("cdc");
            // No cache_control: the objects carry the default.
            let tileset = "";
            format!(
                "[changes]\nschema = \"{changes}\"\n{}\n{}",
                remote.config_table(),
                single_layer_config(&schema.name, "sites", tileset, "")
            )
        });
        let setup = Setup { fixture, remote };
        setup
            .run(&["changes", "install", "--config", setup.config()])
            .assert_success();
        setup
    }

    fn config(&self) -> &str {
        self.fixture.config.to_str().unwrap()
    }

    fn run(&self, args: &[&str]) -> Run {
        oar_tiles_with(Some(&self.fixture.schema.url), args, &self.remote.env())
    }

    fn seed(&self, output: &str, extra: &[&str]) -> Run {
        let run = self.run(&self.fixture.seed_args(output, ZOOMS, extra));
        run.assert_success();
        run
    }

    /// A full seed of the data as it is now into a new MBTiles file.
    fn reference(&self, name: &str) -> Tiles {
        let path = self.fixture.path(name);
        self.seed(path.to_str().unwrap(), &[]);
        read_mbtiles_raw(&path)
    }

    /// Deletes three rows, moves one, renames one and adds one: a few tiles change, empty and
    /// appear, so a dirty reseed renders a part of the pyramid.
    fn change_data(&mut self) {
        self.fixture.schema.execute(
            "DELETE FROM {schema}.sites WHERE site_id IN (3, 17, 40);
             UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(2.35, 48.85), 4326) WHERE site_id = 8;
             UPDATE {schema}.sites SET label = 'renamed' WHERE site_id = 21;
             INSERT INTO {schema}.sites (site_id, label, kind, score, pt)
               VALUES (9001, 'new', 'knit', 3, ST_SetSRID(ST_MakePoint(-70.1, 12.5), 4326));",
        );
    }

    fn validate(&self, output: &str) -> serde_json::Value {
        let run = self.run(&[
            "validate",
            "--json",
            "--config",
            self.config(),
            "--tileset",
            "sites",
            output,
        ]);
        run.assert_success();
        serde_json::from_str(&run.stdout).unwrap()
    }
}

// Each behaviour below runs on every store: `NAME_on_s3`, `NAME_on_azure` and `NAME_on_gcs`.

#[test]
#[ignore = "needs PostGIS and the S3 test server: run scripts/test.sh"]
fn a_prefix_holds_a_seeds_tiles_with_their_headers_and_a_dirty_reseed_ends_like_a_full_seed_on_s3()
{
    a_prefix_holds_a_seeds_tiles_with_their_headers_and_a_dirty_reseed_ends_like_a_full_seed(
        Remote::s3(),
    );
}

#[test]
#[ignore = "needs PostGIS and Azurite: run scripts/test.sh"]
fn a_prefix_holds_a_seeds_tiles_with_their_headers_and_a_dirty_reseed_ends_like_a_full_seed_on_azure(
) {
    a_prefix_holds_a_seeds_tiles_with_their_headers_and_a_dirty_reseed_ends_like_a_full_seed(
        Remote::azure("remote"),
    );
}

#[test]
#[ignore = "needs PostGIS and fake-gcs-server: run scripts/test.sh"]
fn a_prefix_holds_a_seeds_tiles_with_their_headers_and_a_dirty_reseed_ends_like_a_full_seed_on_gcs()
{
    a_prefix_holds_a_seeds_tiles_with_their_headers_and_a_dirty_reseed_ends_like_a_full_seed(
        Remote::gcs("remote"),
    );
}

#[test]
#[ignore = "needs PostGIS and the S3 test server: run scripts/test.sh"]
fn a_pmtiles_archive_equals_a_local_one_and_takes_a_dirty_reseed_on_s3() {
    a_pmtiles_archive_equals_a_local_one_and_takes_a_dirty_reseed(Remote::s3());
}

#[test]
#[ignore = "needs PostGIS and Azurite: run scripts/test.sh"]
fn a_pmtiles_archive_equals_a_local_one_and_takes_a_dirty_reseed_on_azure() {
    a_pmtiles_archive_equals_a_local_one_and_takes_a_dirty_reseed(Remote::azure("remote"));
}

#[test]
#[ignore = "needs PostGIS and fake-gcs-server: run scripts/test.sh"]
fn a_pmtiles_archive_equals_a_local_one_and_takes_a_dirty_reseed_on_gcs() {
    a_pmtiles_archive_equals_a_local_one_and_takes_a_dirty_reseed(Remote::gcs("remote"));
}

#[test]
#[ignore = "needs PostGIS and the S3 test server: run scripts/test.sh"]
fn shards_finalize_into_exactly_the_single_run_and_refuse_until_every_shard_finished_on_s3() {
    shards_finalize_into_exactly_the_single_run_and_refuse_until_every_shard_finished(Remote::s3());
}

#[test]
#[ignore = "needs PostGIS and Azurite: run scripts/test.sh"]
fn shards_finalize_into_exactly_the_single_run_and_refuse_until_every_shard_finished_on_azure() {
    shards_finalize_into_exactly_the_single_run_and_refuse_until_every_shard_finished(
        Remote::azure("remote"),
    );
}

#[test]
#[ignore = "needs PostGIS and fake-gcs-server: run scripts/test.sh"]
fn shards_finalize_into_exactly_the_single_run_and_refuse_until_every_shard_finished_on_gcs() {
    shards_finalize_into_exactly_the_single_run_and_refuse_until_every_shard_finished(Remote::gcs(
        "remote",
    ));
}

#[test]
#[ignore = "needs PostGIS, the S3 test server and the Python pmtiles reader: run scripts/test.sh"]
fn pmtiles_shards_finalize_into_the_single_runs_archive_on_s3() {
    pmtiles_shards_finalize_into_the_single_runs_archive(Remote::s3());
}

#[test]
#[ignore = "needs PostGIS, Azurite and the Python pmtiles reader: run scripts/test.sh"]
fn pmtiles_shards_finalize_into_the_single_runs_archive_on_azure() {
    pmtiles_shards_finalize_into_the_single_runs_archive(Remote::azure("remote"));
}

#[test]
#[ignore = "needs PostGIS, fake-gcs-server and the Python pmtiles reader: run scripts/test.sh"]
fn pmtiles_shards_finalize_into_the_single_runs_archive_on_gcs() {
    pmtiles_shards_finalize_into_the_single_runs_archive(Remote::gcs("remote"));
}

#[test]
#[ignore = "needs PostGIS and the S3 test server: run scripts/test.sh"]
fn a_partitioned_tileset_equals_the_same_in_a_tree_and_lists_its_partitions_on_s3() {
    a_partitioned_tileset_equals_the_same_in_a_tree_and_lists_its_partitions(Remote::s3());
}

#[test]
#[ignore = "needs PostGIS and Azurite: run scripts/test.sh"]
fn a_partitioned_tileset_equals_the_same_in_a_tree_and_lists_its_partitions_on_azure() {
    a_partitioned_tileset_equals_the_same_in_a_tree_and_lists_its_partitions(Remote::azure(
        "remote",
    ));
}

#[test]
#[ignore = "needs PostGIS and fake-gcs-server: run scripts/test.sh"]
fn a_partitioned_tileset_equals_the_same_in_a_tree_and_lists_its_partitions_on_gcs() {
    a_partitioned_tileset_equals_the_same_in_a_tree_and_lists_its_partitions(Remote::gcs("remote"));
}

fn a_prefix_holds_a_seeds_tiles_with_their_headers_and_a_dirty_reseed_ends_like_a_full_seed(
    remote: Remote,
) {
    let mut setup = Setup::new("remote_prefix", 300, remote);
    let target = setup.remote.address(PREFIX);
    let before = setup.reference("before.mbtiles");
    setup.seed(&target, &[]);
    assert_same_tiles(
        &setup.remote.stored_tiles(PREFIX),
        &before,
        "the bucket holds exactly the MBTiles tiles",
    );
    let blobs = setup.remote.read_prefix(PREFIX);
    let (z, x, y) = before.keys().last().unwrap();
    let tile = blobs
        .iter()
        .find(|blob| blob.name == format!("{z}/{x}/{y}.pbf"))
        .unwrap();
    assert_eq!(
        tile.content_type.as_deref(),
        Some("application/vnd.mapbox-vector-tile")
    );
    assert_eq!(tile.content_encoding.as_deref(), Some("gzip"));
    // A CDN keeps it a day, a browser revalidates it with the store's ETag.
    assert_eq!(
        tile.cache_control.as_deref(),
        Some("public, max-age=0, s-maxage=86400")
    );
    assert!(
        tile.etag.as_deref().is_some_and(|etag| etag.len() > 2),
        "{:?}",
        tile.etag
    );
    let tilejson = blobs.iter().find(|blob| blob.name == "tiles.json").unwrap();
    let tilejson: serde_json::Value = serde_json::from_slice(&tilejson.data).unwrap();
    assert_eq!(tilejson["vector_layers"][0]["id"], "sites");
    assert!(
        tilejson["tiles"][0].as_str().unwrap().ends_with(&format!(
            "/{}/{PREFIX}/{{z}}/{{x}}/{{y}}.pbf",
            setup.remote.bucket()
        )),
        "an absolute tile URL at the bucket's address: {}",
        tilejson["tiles"][0]
    );

    setup.change_data();
    let after = setup.reference("after.mbtiles");
    let changed = setup.fixture.path("changed.txt");
    let summary = setup.fixture.path("summary.json");
    let (changed_arg, summary_arg) = (changed.to_str().unwrap(), summary.to_str().unwrap());
    setup.seed(
        &target,
        &[
            "--dirty",
            "--changed-list",
            changed_arg,
            "--summary-json",
            summary_arg,
        ],
    );
    assert_same_tiles(
        &setup.remote.stored_tiles(PREFIX),
        &after,
        "the reseeded bucket holds exactly a full seed's tiles",
    );
    // The changed tiles, and `tiles.json`, whose `agg_tiles_hash` changed with them.
    let mut expected = differences(&before, &after);
    expected.insert("tiles.json".to_string());
    assert_eq!(lines(&changed), expected);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let queried = json[0]["tiles_queried"].as_u64().unwrap();
    assert!(
        queried > 0 && queried < after.len() as u64,
        "{queried} of {} tiles re-rendered",
        after.len()
    );

    // The reseed left its manifest and watermark: the next one, with nothing changed, does nothing.
    let nothing = setup.fixture.path("nothing.txt");
    setup.seed(
        &target,
        &["--dirty", "--changed-list", nothing.to_str().unwrap()],
    );
    assert!(lines(&nothing).is_empty());
    assert_same_tiles(
        &setup.remote.stored_tiles(PREFIX),
        &after,
        "the bucket after a reseed that found nothing changed",
    );

    let report = setup.validate(&target);
    assert_eq!(
        report["outputs"][0]["tiles"].as_u64(),
        Some(after.len() as u64),
        "{report}"
    );
    let inspect = setup.run(&["inspect", &target, "--config", setup.config(), "--json"]);
    inspect.assert_success();
    let inventory: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(inventory["tiles"].as_u64().unwrap(), after.len() as u64);
}

/// The tiles of a new local PMTiles seed of the data as it is now.
fn local_archive(setup: &Setup, name: &str) -> crate::common::pmtiles_reader::Digests {
    let path = setup.fixture.path(name);
    setup.seed(path.to_str().unwrap(), &[]);
    read_archive(&path).tiles
}

/// The tiles of the archive the bucket holds, read back by the store's own client.
fn stored_archive(setup: &Setup, name: &str) -> crate::common::pmtiles_reader::Digests {
    let blob = setup
        .remote
        .read_prefix(PREFIX)
        .into_iter()
        .find(|blob| blob.name == "sites.pmtiles")
        .expect("the archive is stored");
    assert_eq!(
        blob.content_type.as_deref(),
        Some("application/vnd.pmtiles")
    );
    let path = setup.fixture.path(name);
    std::fs::write(&path, &blob.data).unwrap();
    read_archive(&path).tiles
}

fn a_pmtiles_archive_equals_a_local_one_and_takes_a_dirty_reseed(remote: Remote) {
    let mut setup = Setup::new("remote_pmtiles", 300, remote);
    let key = format!("{PREFIX}/sites.pmtiles");
    let target = setup.remote.address(&key);
    setup.seed(&target, &[]);
    assert_eq!(
        stored_archive(&setup, "stored-before.pmtiles"),
        local_archive(&setup, "before.pmtiles")
    );
    setup.validate(&target);

    setup.change_data();
    setup.seed(&target, &["--dirty"]);
    let after = local_archive(&setup, "after.pmtiles");
    let reseeded = stored_archive(&setup, "stored-after.pmtiles");
    assert_eq!(
        reseeded, after,
        "the reseeded archive holds a full seed's tiles"
    );
    setup.validate(&target);
}

/// Runs shard `index` of `count` into `target` as a Kubernetes Indexed Job's pod would: the same
/// command, the index and count in the environment.
fn run_shard(setup: &Setup, target: &str, index: u32, count: u32) {
    let (index, count) = (index.to_string(), count.to_string());
    let mut env = setup.remote.env();
    env.push(("JOB_COMPLETION_INDEX", &index));
    env.push(("OAR_TILES_SHARDS", &count));
    let args = setup.fixture.seed_args(target, ZOOMS, &[]);
    oar_tiles_with(Some(&setup.fixture.schema.url), &args, &env).assert_success();
}

fn shards_finalize_into_exactly_the_single_run_and_refuse_until_every_shard_finished(
    remote: Remote,
) {
    let mut setup = Setup::new("remote_shards", 600, remote);
    let target = setup.remote.address(PREFIX);
    setup.seed(&target, &[]);
    let earlier = setup.remote.stored_tiles(PREFIX);
    setup.change_data();
    let finalize =
        |target: &str| setup.run(&["finalize", "--config", setup.config(), "--output", target]);
    for index in 0..3 {
        run_shard(&setup, &target, index, 3);
        let finalized = finalize(&target);
        if index < 2 {
            assert_eq!(finalized.code, 2, "{}", finalized.stderr);
            assert!(
                finalized.stderr.contains("have not finished"),
                "{}",
                finalized.stderr
            );
        } else {
            finalized.assert_success();
        }
    }
    let single = setup.reference("single.mbtiles");
    assert!(
        earlier.keys().any(|k| !single.contains_key(k)),
        "the change emptied tiles the shards' sweep removes"
    );
    assert_same_tiles(
        &setup.remote.stored_tiles(PREFIX),
        &single,
        "the finalized bucket and one unsharded run",
    );
    let names: Vec<String> = setup
        .remote
        .read_prefix(PREFIX)
        .into_iter()
        .map(|blob| blob.name)
        .filter(|name| !name.ends_with(".pbf"))
        .collect();
    assert_eq!(
        names,
        [
            ".oar-tiles/state.json",
            ".oar-tiles/tile-hashes",
            "tiles.json"
        ],
        "TileJSON, state and tile hashes written; the plan and parts removed"
    );
    // The finalized output is a seed's: a second full seed finds every tile already stored.
    let summary = setup.fixture.path("summary.json");
    let run = setup.seed(&target, &["--summary-json", summary.to_str().unwrap()]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let stored = &json[0]["stored"];
    assert_eq!(stored["changed"].as_u64(), Some(0), "{json} {}", run.stderr);
    assert_eq!(stored["deleted"].as_u64(), Some(0), "{json}");
    assert_eq!(stored["unchanged"].as_u64(), Some(single.len() as u64));
    // One shard alone is a sharded run too.
    let alone = format!("{PREFIX}-alone");
    let target = setup.remote.address(&alone);
    run_shard(&setup, &target, 0, 1);
    finalize(&target).assert_success();
    assert_same_tiles(
        &setup.remote.stored_tiles(&alone),
        &single,
        "one shard, finalized",
    );
}

/// Shards of an archive in the store keep their parts beside it; finalize joins them into the
/// archive a single run writes, and removes them.
fn pmtiles_shards_finalize_into_the_single_runs_archive(remote: Remote) {
    let setup = Setup::new("remote_pmshards", 600, remote);
    let target = setup.remote.address(&format!("{PREFIX}/sites.pmtiles"));
    for index in 0..3 {
        run_shard(&setup, &target, index, 3);
    }
    setup
        .run(&["finalize", "--config", setup.config(), "--output", &target])
        .assert_success();
    assert_eq!(
        stored_archive(&setup, "stored.pmtiles"),
        local_archive(&setup, "single.pmtiles")
    );
    let names: Vec<String> = setup
        .remote
        .read_prefix(PREFIX)
        .into_iter()
        .map(|blob| blob.name)
        .filter(|name| name.contains("shards"))
        .collect();
    assert!(
        names.is_empty(),
        "the plan and parts are removed: {names:?}"
    );
    setup.validate(&target);
}

fn a_partitioned_tileset_equals_the_same_in_a_tree_and_lists_its_partitions(remote: Remote) {
    let setup = Setup::new("remote_partitions", 300, remote);
    let partitioned = |output: &str, name: &str| {
        let text = std::fs::read_to_string(&setup.fixture.config)
            .unwrap()
            .replace(
                "[[tileset.layer]]",
                &format!("partition_by = \"kind\"\noutput = \"{output}\"\n[[tileset.layer]]"),
            );
        let path = setup.fixture.path(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let seed = |config: &std::path::Path| {
        let config = config.to_str().unwrap();
        setup
            .run(&["seed", "--config", config, "--zoom", ZOOMS])
            .assert_success();
    };
    let tree = setup.fixture.path("tree");
    seed(&partitioned(
        &format!("dir:{}", tree.display()),
        "tree.toml",
    ));
    let target = setup.remote.address(PREFIX);
    seed(&partitioned(&target, "remote.toml"));

    let index: serde_json::Value = serde_json::from_slice(
        &setup
            .remote
            .read_prefix(PREFIX)
            .into_iter()
            .find(|blob| blob.name == "partitions.json")
            .expect("the index is stored")
            .data,
    )
    .unwrap();
    let local: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tree.join("partitions.json")).unwrap())
            .unwrap();
    let paths = |index: &serde_json::Value| -> Vec<String> {
        index["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(paths(&index), paths(&local));
    assert!(paths(&index).len() > 1, "{index}");
    for path in paths(&index) {
        assert_same_tiles(
            &setup.remote.stored_tiles(&format!("{PREFIX}/{path}")),
            &crate::common::run::read_tree(&tree.join(&path), "pbf"),
            &format!("partition {path} in the bucket and in the tree"),
        );
    }
}

/// What every store promises the outputs above it, checked on `store` (holding nothing yet):
/// headers kept, a write of only a new object refused when one is there, a document's cap, folder
/// listings, removal of many, and a file above the part size uploaded in parts arriving whole.
fn the_store_contract_holds(store: &dyn oar_tiles::testing::ObjectStore, dir: &std::path::Path) {
    use oar_tiles::testing::{ObjectHeaders, Put};
    let headers = ObjectHeaders {
        content_type: "application/json",
        cache_control: "public, max-age=60",
        content_encoding: None,
    };
    crate::common::block_on(async {
        let stored = store
            .put("t/a.json", b"{}".to_vec(), headers, false)
            .await
            .unwrap();
        assert!(matches!(stored, Put::Stored(_)), "{stored:?}");
        let again = store
            .put("t/a.json", b"[]".to_vec(), headers, true)
            .await
            .unwrap();
        assert_eq!(again, Put::Exists, "a write of only a new object finds one");
        assert_eq!(
            store.get("t/a.json", 1 << 20).await.unwrap().unwrap(),
            b"{}"
        );
        assert_eq!(store.get("t/missing", 1 << 20).await.unwrap(), None);
        let refused = store.get("t/a.json", 1).await.unwrap_err().to_string();
        assert!(refused.contains("past the"), "{refused}");
        assert!(store.etag("t/a.json").await.unwrap().is_some());
        assert_eq!(store.etag("t/missing").await.unwrap(), None);
        store
            .put("t/deeper/b", b"b".to_vec(), headers, false)
            .await
            .unwrap();
        let direct: Vec<String> = store
            .list("t/", true)
            .await
            .unwrap()
            .into_iter()
            .map(|listed| listed.key)
            .collect();
        assert_eq!(direct, ["t/a.json"], "a folder's own objects");
        assert_eq!(store.list("t/", false).await.unwrap().len(), 2);
        assert!(store.holds_any("t/").await.unwrap());
        assert!(!store.holds_any("u/").await.unwrap());
        assert_eq!(
            store.get_range("t/a.json", 1..2).await.unwrap(),
            b"}",
            "a ranged read"
        );
        let keys = ["t/a.json".to_string(), "t/deeper/b".to_string()];
        store.delete_many(&keys).await.unwrap();
        store.delete("t/already-gone").await.unwrap();
        assert!(!store.holds_any("t/").await.unwrap());

        // 11 MiB of bytes that repeat nowhere: three parts of 5, 5 and 1 MiB.
        let body: Vec<u8> = (0u32..11 * 1024 * 1024 / 4)
            .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
            .collect();
        let file = dir.join("big.pmtiles");
        std::fs::write(&file, &body).unwrap();
        let archive = ObjectHeaders {
            content_type: "application/vnd.pmtiles",
            cache_control: "no-cache",
            content_encoding: None,
        };
        store
            .upload_file("big/archive.pmtiles", &file, archive, 5 * 1024 * 1024)
            .await
            .unwrap();
        let back = store
            .get("big/archive.pmtiles", u64::MAX)
            .await
            .unwrap()
            .unwrap();
        assert!(back == body, "the object is the file");
    });
}

#[test]
#[ignore = "needs Azurite and the S3 test server: run scripts/test.sh"]
fn the_store_contract_holds_on_azure_and_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let container = Container::create("az-contract");
    let azure = oar_tiles::testing::azurite_store(&container.url, &container.name);
    the_store_contract_holds(azure.as_ref(), dir.path());
    the_big_archive_keeps_its_headers(&container.read_prefix("big"));

    let server = crate::common::s3::S3Server::start("contract");
    let s3 = oar_tiles::testing::s3_store(server.client(), "contract");
    the_store_contract_holds(s3.as_ref(), dir.path());
}

#[test]
#[ignore = "needs fake-gcs-server: run scripts/test.sh"]
fn the_store_contract_holds_on_gcs() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = crate::common::gcs::GcsBucket::create("gcs-contract");
    let gcs = oar_tiles::testing::gcs_emulator_store(&bucket.url, &bucket.name);
    the_store_contract_holds(gcs.as_ref(), dir.path());
    the_big_archive_keeps_its_headers(&bucket.read_prefix("big"));
}

/// The headers of the archive the contract uploads in parts, as another client read them.
fn the_big_archive_keeps_its_headers(objects: &[crate::common::remote::Blob]) {
    let archive = objects
        .iter()
        .find(|blob| blob.name == "archive.pmtiles")
        .unwrap();
    assert_eq!(
        archive.content_type.as_deref(),
        Some("application/vnd.pmtiles")
    );
    assert_eq!(archive.cache_control.as_deref(), Some("no-cache"));
}
