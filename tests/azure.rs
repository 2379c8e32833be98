//! Azure Blob Storage outputs (`az://CONTAINER/PREFIX` and `az://CONTAINER/KEY.pmtiles`) against
//! Azurite, read back through Microsoft's own SDK: the same tiles an S3 prefix or a local file
//! holds, with a tile's headers, a dirty reseed that ends like a full seed, `validate`, `inspect`,
//! a PMTiles archive with its reseed, shards finalized into one prefix, and a partitioned tileset
//! with its index.

use crate::common::azure::Container;
use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::pmtiles_reader::read_archive;
use crate::common::run::{
    assert_same_tiles, differences, lines, oar_tiles_with, read_mbtiles_raw, single_layer_config,
    Run, Tiles,
};

const PREFIX: &str = "facilities/v1";
const ZOOMS: &str = "0-8";

/// A fixture with a change log and a container of its own.
struct Setup {
    fixture: Fixture,
    container: Container,
}

impl Setup {
    fn new(label: &str, count: i64) -> Setup {
        let container = Container::create(label);
        let points = hub_with_scatter(count, 5, 5, [72.9, 33.5, 73.3, 33.8]);
        let fixture = Fixture::new(label, &points, "azure.toml", |schema| {
            let changes = schema.companion("cdc");
            let tileset = "cache_control = \"public, max-age=60\"";
            format!(
                "[changes]\nschema = \"{changes}\"\n{}",
                single_layer_config(&schema.name, "sites", tileset, "")
            )
        });
        let setup = Setup { fixture, container };
        setup
            .run(&["changes", "install", "--config", setup.config()])
            .assert_success();
        setup
    }

    fn config(&self) -> &str {
        self.fixture.config.to_str().unwrap()
    }

    fn run(&self, args: &[&str]) -> Run {
        oar_tiles_with(Some(&self.fixture.schema.url), args, &self.container.env())
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

#[test]
#[ignore = "needs PostGIS and Azurite: run scripts/test.sh"]
fn an_azure_prefix_holds_a_seeds_tiles_with_their_headers_and_a_dirty_reseed_ends_like_a_full_seed()
{
    let mut setup = Setup::new("az-prefix", 300);
    let target = setup.container.address(PREFIX);
    let before = setup.reference("before.mbtiles");
    setup.seed(&target, &[]);
    assert_same_tiles(
        &setup.container.stored_tiles(PREFIX),
        &before,
        "the container holds exactly the MBTiles tiles",
    );
    let blobs = setup.container.read_prefix(PREFIX);
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
    assert_eq!(tile.cache_control.as_deref(), Some("public, max-age=60"));
    let tilejson = blobs.iter().find(|blob| blob.name == "tiles.json").unwrap();
    let tilejson: serde_json::Value = serde_json::from_slice(&tilejson.data).unwrap();
    assert_eq!(tilejson["vector_layers"][0]["id"], "sites");
    assert!(
        tilejson["tiles"][0].as_str().unwrap().ends_with(&format!(
            "/{}/{PREFIX}/{{z}}/{{x}}/{{y}}.pbf",
            setup.container.name
        )),
        "an absolute tile URL at the container's address: {}",
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
        &setup.container.stored_tiles(PREFIX),
        &after,
        "the reseeded container holds exactly a full seed's tiles",
    );
    assert_eq!(lines(&changed), differences(&before, &after));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let queried = json[0]["tiles_queried"].as_u64().unwrap();
    assert!(
        queried > 0 && queried < after.len() as u64,
        "{queried} of {} tiles re-rendered",
        after.len()
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

/// The tiles of the archive the container holds, read through the SDK.
fn stored_archive(setup: &Setup, name: &str) -> crate::common::pmtiles_reader::Digests {
    let blob = setup
        .container
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

#[test]
#[ignore = "needs PostGIS and Azurite: run scripts/test.sh"]
fn an_azure_pmtiles_archive_equals_a_local_one_and_takes_a_dirty_reseed() {
    let mut setup = Setup::new("az-pmtiles", 300);
    let key = format!("{PREFIX}/sites.pmtiles");
    let target = setup.container.address(&key);
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

#[test]
#[ignore = "needs PostGIS and Azurite: run scripts/test.sh"]
fn shards_into_an_azure_prefix_finalize_into_exactly_the_single_run() {
    let setup = Setup::new("az-shards", 600);
    let target = setup.container.address(PREFIX);
    for index in 0..3 {
        let (index, count) = (index.to_string(), "3".to_string());
        let mut env = setup.container.env();
        env.push(("JOB_COMPLETION_INDEX", &index));
        env.push(("OAR_TILES_SHARDS", &count));
        let args = setup.fixture.seed_args(&target, ZOOMS, &[]);
        oar_tiles_with(Some(&setup.fixture.schema.url), &args, &env).assert_success();
    }
    setup
        .run(&["finalize", "--config", setup.config(), "--output", &target])
        .assert_success();
    let single = setup.reference("single.mbtiles");
    assert_same_tiles(
        &setup.container.stored_tiles(PREFIX),
        &single,
        "the finalized container and one unsharded run",
    );
    let names: Vec<String> = setup
        .container
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
}

#[test]
#[ignore = "needs PostGIS and Azurite: run scripts/test.sh"]
fn a_partitioned_tileset_in_azure_equals_the_same_in_a_tree_and_lists_its_partitions() {
    let setup = Setup::new("az-partitions", 300);
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
    let target = setup.container.address(PREFIX);
    seed(&partitioned(&target, "azure.toml"));

    let index: serde_json::Value = serde_json::from_slice(
        &setup
            .container
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
            &setup.container.stored_tiles(&format!("{PREFIX}/{path}")),
            &crate::common::run::read_tree(&tree.join(&path), "pbf"),
            &format!("partition {path} in the container and in the tree"),
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
    let blob = container
        .read_prefix("big")
        .into_iter()
        .find(|blob| blob.name == "archive.pmtiles")
        .unwrap();
    assert_eq!(
        blob.content_type.as_deref(),
        Some("application/vnd.pmtiles")
    );
    assert_eq!(blob.cache_control.as_deref(), Some("no-cache"));

    let server = crate::common::s3::S3Server::start("contract");
    let s3 = oar_tiles::testing::s3_store(server.client(), "contract");
    the_store_contract_holds(s3.as_ref(), dir.path());
}
