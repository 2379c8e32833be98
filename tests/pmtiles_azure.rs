//! A PMTiles archive in Azure Blob Storage (Azurite) updated in place: a reseed stages the changed
//! tiles, the directories and the header as a block and commits the blob again as that block
//! followed by all the blocks it had; readers see a valid archive equal to a full seed, and an
//! archive replaced by another writer while a run worked is not committed onto (`If-Match`) but
//! uploaded whole. Bytes sent are counted by a proxy between the tool and the emulator.

use std::path::PathBuf;

use crate::common::azure::{put_blob, Container};
use crate::common::fixture::Fixture;
use crate::common::in_place::{
    assert_equals_a_full_seed, change_labels, reseeds_append_the_change,
    reseeds_from_an_empty_cache_read_the_directories, seed_in_store, ArchiveInStore,
};
use crate::common::pmtiles::continent_points;
use crate::common::proxy::CountingProxy;
use crate::common::run::{oar_tiles, oar_tiles_with, single_layer_config, Run};
use crate::common::runtime;

const FOLDER: &str = "maps";
const KEY: &str = "maps/sites.pmtiles";

/// A fixture whose archive lives in a container of its own on Azurite, reached through a
/// counting proxy.
struct Setup {
    base: Fixture,
    proxy: CountingProxy,
    container: Container,
}

crate::common::fixture::wraps_fixture!(Setup, base);

impl Setup {
    fn new(label: &str) -> Setup {
        Setup::with_store(label, "")
    }

    /// [`Setup::new`] with a `[store]` table.
    fn with_store(label: &str, store: &str) -> Setup {
        let container = Container::create(label);
        let proxy = CountingProxy::start(&container.url);
        let base = Fixture::new(label, &continent_points(), "pmtiles.toml", |schema| {
            let changes = schema.companion("cdc");
            format!(
                "[changes]\nschema = \"{changes}\"\n{store}\n{}",
                single_layer_config(&schema.name, "sites", "", "cluster_maxzoom = 5")
            )
        });
        let config = base.config.to_str().unwrap();
        oar_tiles(
            Some(&base.schema.url),
            &["changes", "install", "--config", config],
        )
        .assert_success();
        Setup {
            base,
            proxy,
            container,
        }
    }
}

#[test]
#[ignore = "needs PostGIS, Azurite with Azure's Python SDK and the Python pmtiles reader: run scripts/test.sh"]
fn a_reseed_of_an_azure_archive_sends_the_change_and_keeps_the_old_blocks_in_the_store() {
    let mut setup = Setup::new("pmaz");
    // Put Block List keeps every old block after the new one. An archive of one 8 MiB part
    // would be one block, which a reseed could not keep.
    reseeds_append_the_change(&mut setup, 3, 8 * 1024 * 1024);
}

#[test]
#[ignore = "needs PostGIS, Azurite with Azure's Python SDK and the Python pmtiles reader: run scripts/test.sh"]
fn a_reseed_of_an_azure_archive_from_an_empty_cache_reads_its_directories_not_its_tiles() {
    let mut setup = Setup::new("pmaze");
    reseeds_from_an_empty_cache_read_the_directories(&mut setup);
}

#[test]
#[ignore = "needs PostGIS, Azurite with Azure's Python SDK and the Python pmtiles reader: run scripts/test.sh"]
fn an_azure_archive_of_one_block_reseeded_from_an_empty_cache_is_downloaded_and_written_whole() {
    // Parts larger than the archive: it is one block, which Azure cannot keep behind a new one.
    let mut setup = Setup::with_store("pmaz1", "[store]\npart_size_mib = 64");
    seed_in_store(&setup, &[]);
    change_labels(&mut setup, 10, 1);
    let target = setup.address();
    let args = setup.seed_args(&target, "0-10", &["--dirty"]);
    let run = setup.run_on_store_as("machine-b", &args);
    run.assert_success();
    assert!(
        run.stderr
            .contains("read the archive's header and directories")
            && run
                .stderr
                .contains("downloading the archive to write it whole"),
        "{}",
        run.stderr
    );
    let (path, _) = setup.download("reseeded.pmtiles");
    let archive = crate::common::pmtiles_reader::read_archive(&path);
    assert_eq!(archive.header["clustered"], true, "{}", archive.header);
    assert!(
        archive.metadata["agg_tiles_hash"].is_string(),
        "{}",
        archive.metadata
    );
    assert_equals_a_full_seed(&setup, &path, "the one-block archive written whole");
}

impl ArchiveInStore for Setup {
    /// Reads the archive blob with Azure's SDK.
    fn download(&self, name: &str) -> (PathBuf, Vec<u8>) {
        let blobs = self.container.read_prefix(FOLDER);
        let bytes = blobs
            .into_iter()
            .find(|blob| blob.name == "sites.pmtiles")
            .expect("the archive is in the container")
            .data;
        let path = self.path(name);
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    }

    fn address(&self) -> String {
        self.container.address(KEY)
    }

    fn run_on_store_as(&self, machine: &str, args: &[&str]) -> Run {
        let cache = self.path(machine);
        std::fs::create_dir_all(&cache).unwrap();
        let emulator = format!("http://127.0.0.1:{}", self.proxy.port);
        let env = [
            ("AZURE_STORAGE_USE_EMULATOR", "true"),
            ("AZURITE_BLOB_STORAGE_URL", emulator.as_str()),
            ("XDG_CACHE_HOME", cache.to_str().unwrap()),
        ];
        oar_tiles_with(Some(&self.schema.url), args, &env)
    }

    fn sent(&self) -> u64 {
        self.proxy.sent()
    }

    fn received(&self) -> u64 {
        self.proxy.received()
    }

    fn after_reseed(&self) {
        assert!(
            self.container.committed_blocks(KEY) > 1,
            "the archive is committed in blocks"
        );
    }
}

#[test]
#[ignore = "needs PostGIS, Azurite with Azure's Python SDK and the Python pmtiles reader: run scripts/test.sh"]
fn an_azure_archive_replaced_before_its_block_list_is_committed_is_uploaded_whole() {
    let mut setup = Setup::new("pmazr");
    seed_in_store(&setup, &[]);
    change_labels(&mut setup, 10, 1);
    // Another writer replaces the archive at the moment the run commits its block list: only
    // Put Block List's If-Match stands between them (its 412 says "no longer").
    let name = setup.container.name.clone();
    setup
        .proxy
        .on_request_holding("?comp=blocklist HTTP/1.1", move || {
            put_blob(&name, KEY, b"another writer's archive");
        });
    let (run, _) = seed_in_store(&setup, &["--dirty"]);
    assert!(
        setup.proxy.triggered(),
        "the run never committed a block list"
    );
    assert!(
        run.stderr.contains("ETag is no longer")
            && run.stderr.contains("another writer replaced it")
            && run.stderr.contains("uploading the archive whole"),
        "{}",
        run.stderr
    );
    let (reseeded, _) = setup.download("reseeded.pmtiles");
    assert_equals_a_full_seed(
        &setup,
        &reseeded,
        "the archive uploaded whole after the replacement",
    );
}

#[test]
#[ignore = "needs Azurite with Azure's Python SDK: run scripts/test.sh"]
fn an_azure_splice_commits_the_new_block_before_the_whole_blob_and_refuses_one_replaced_since() {
    use oar_tiles::testing::{ObjectHeaders, Put, Splice};
    let container = Container::create("az-splice");
    let store = oar_tiles::testing::azurite_store(&container.url, &container.name);
    let headers = ObjectHeaders {
        content_type: "application/vnd.pmtiles",
        cache_control: "public, max-age=60",
        content_encoding: None,
    };
    let old = b"the old archive".to_vec();
    let rule = store.splice_rule().expect("Azure rebuilds blobs in place");
    assert!(rule.keeps_whole && rule.min_first == 0, "{rule:?}");
    let splice = |if_etag: &str, kept: std::ops::Range<u64>| {
        let splice = Splice {
            if_etag,
            new: b"new bytes, then ",
            kept,
            headers,
        };
        runtime().block_on(store.splice(KEY, splice))
    };
    let whole = 0..old.len() as u64;
    // One Put Blob leaves no blocks to keep.
    let Put::Stored(single) = runtime()
        .block_on(store.put(KEY, old.clone(), headers, false))
        .unwrap()
    else {
        panic!("an unconditional write stores")
    };
    let unblocked = splice(&single, whole.clone()).unwrap_err();
    assert!(unblocked.to_string().contains("no blocks"), "{unblocked}");
    // The same bytes in parts of 4 bytes: four blocks.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &old).unwrap();
    let blocked = runtime()
        .block_on(store.upload_file(KEY, file.path(), headers, 4))
        .unwrap();
    assert_eq!(container.committed_blocks(KEY), 4);
    let part = splice(&blocked, 4..old.len() as u64).unwrap_err();
    assert!(part.to_string().contains("whole blob"), "{part}");
    let spliced = splice(&blocked, whole).unwrap();
    let blobs = container.read_prefix(FOLDER);
    assert_eq!(blobs.len(), 1, "only the archive is there");
    assert_eq!(blobs[0].data, b"new bytes, then the old archive");
    assert_eq!(blobs[0].content_type.as_deref(), Some(headers.content_type));
    assert_eq!(
        blobs[0].cache_control.as_deref(),
        Some(headers.cache_control)
    );
    assert_eq!(container.committed_blocks(KEY), 5);
    let current = runtime().block_on(store.etag(KEY)).unwrap().unwrap();
    assert_eq!(spliced, current, "the splice answers the blob's ETag");
    // Another writer replaces it in blocks: a splice naming the ETag before is refused.
    runtime()
        .block_on(store.upload_file(KEY, file.path(), headers, 4))
        .unwrap();
    let stale = splice(&current, 0..old.len() as u64).unwrap_err();
    assert!(stale.to_string().contains("replaced it"), "{stale}");
    assert_eq!(container.read_prefix(FOLDER)[0].data, old);
}
