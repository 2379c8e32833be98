//! A PMTiles archive in Google Cloud Storage (fake-gcs-server) updated in place: a reseed uploads
//! the changed tiles, the directories and the header as a piece, and GCS composes the object again
//! as that piece followed by the whole old object; readers see a valid archive equal to a full
//! seed, no piece is left behind, and an archive replaced by another writer while a run worked
//! is not composed onto but uploaded whole. Bytes sent are counted by a proxy between the tool and
//! the emulator.

use std::path::PathBuf;

use crate::common::fixture::Fixture;
use crate::common::gcs::{put_object, GcsBucket};
use crate::common::in_place::{
    assert_equals_a_full_seed, change_labels, reseeds_append_the_change,
    reseeds_from_an_empty_cache_read_the_directories, seed_in_store, ArchiveInStore,
};
use crate::common::pmtiles::{continent_points, setup_on};
use crate::common::proxy::CountingProxy;
use crate::common::run::{oar_tiles_with, Run};
use crate::common::runtime;

const KEY: &str = "maps/sites.pmtiles";

/// A fixture whose archive lives in a bucket of its own on fake-gcs-server, reached through a
/// counting proxy.
struct Setup {
    base: Fixture,
    proxy: CountingProxy,
    bucket: GcsBucket,
}

crate::common::fixture::wraps_fixture!(Setup, base);

impl Setup {
    fn new(label: &str, tileset: &str) -> Setup {
        let bucket = GcsBucket::create(label);
        let proxy = CountingProxy::start(&bucket.url);
        let base = setup_on(label, &continent_points(), "", tileset);
        Setup {
            base,
            proxy,
            bucket,
        }
    }

    /// Fails if a piece a compose started with is still in the bucket.
    fn assert_no_pieces_left(&self) {
        let names = self.bucket.names("");
        assert!(
            !names.iter().any(|name| name.contains(".splice-")),
            "a compose's piece is left: {names:?}"
        );
    }
}

#[test]
#[ignore = "needs PostGIS, fake-gcs-server and the Python pmtiles reader: run scripts/test.sh"]
fn a_reseed_of_a_gcs_archive_uploads_the_change_and_composes_the_rest_in_the_store() {
    let mut setup = Setup::new("pmgcs", "");
    // Compose keeps the whole old object after the new bytes.
    reseeds_append_the_change(&mut setup, 3, 4 * 1024 * 1024);
}

#[test]
#[ignore = "needs PostGIS, fake-gcs-server and the Python pmtiles reader: run scripts/test.sh"]
fn a_reseed_of_a_gcs_archive_from_an_empty_cache_reads_its_directories_not_its_tiles() {
    let mut setup = Setup::new("pmgcse", "");
    reseeds_from_an_empty_cache_read_the_directories(&mut setup);
}

impl ArchiveInStore for Setup {
    fn download(&self, name: &str) -> (PathBuf, Vec<u8>) {
        let path = self.path(name);
        self.bucket.download(KEY, &path);
        let bytes = std::fs::read(&path).unwrap();
        (path, bytes)
    }

    fn address(&self) -> String {
        format!("gs://{}/{KEY}", self.bucket.name)
    }

    fn run_on_store_as(&self, machine: &str, args: &[&str]) -> Run {
        let cache = self.path(machine);
        std::fs::create_dir_all(&cache).unwrap();
        let emulator = format!("http://127.0.0.1:{}", self.proxy.port);
        let env = [
            ("STORAGE_EMULATOR_HOST", emulator.as_str()),
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
        self.assert_no_pieces_left();
    }
}

#[test]
#[ignore = "needs PostGIS, fake-gcs-server and the Python pmtiles reader: run scripts/test.sh"]
fn a_gcs_archive_replaced_while_a_reseed_runs_is_uploaded_whole_not_composed_onto() {
    let mut setup = Setup::new("pmgcsr", "");
    seed_in_store(&setup, &[]);
    change_labels(&mut setup, 10, 1);
    // Another writer replaces the archive at the moment the run checks it before composing.
    let (bucket_url, bucket_name) = (setup.bucket.url.clone(), setup.bucket.name.clone());
    setup
        .proxy
        .on_request_holding("fields=generation,size", move || {
            put_object(&bucket_url, &bucket_name, KEY, b"another writer's archive");
        });
    let (run, _) = seed_in_store(&setup, &["--dirty"]);
    assert!(setup.proxy.triggered(), "the run never checked the object");
    assert!(
        run.stderr.contains("another writer replaced it")
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
    setup.assert_no_pieces_left();
}

#[test]
#[ignore = "needs fake-gcs-server: run scripts/test.sh"]
fn a_gcs_splice_composes_the_whole_object_and_refuses_one_replaced_since() {
    use oar_tiles::testing::{ObjectHeaders, Put, Splice};
    let bucket = GcsBucket::create("gcs-splice");
    let store = oar_tiles::testing::gcs_emulator_store(&bucket.url, &bucket.name);
    let headers = ObjectHeaders {
        content_type: "application/vnd.pmtiles",
        cache_control: "public, max-age=60",
        content_encoding: None,
    };
    let old = b"the old archive".to_vec();
    let Put::Stored(generation) = runtime()
        .block_on(store.put(KEY, old.clone(), headers, false))
        .unwrap()
    else {
        panic!("an unconditional write stores")
    };
    let rule = store.splice_rule().expect("GCS rebuilds objects in place");
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
    // A part of the object is refused: compose concatenates whole objects.
    let part = splice(&generation, 4..old.len() as u64).unwrap_err();
    assert!(part.to_string().contains("whole object"), "{part}");
    let composed = splice(&generation, whole.clone()).unwrap();
    let read = |what: &str| {
        let path = tempfile::NamedTempFile::new().unwrap();
        bucket.download(KEY, path.path());
        let bytes = std::fs::read(path.path()).unwrap();
        assert_eq!(bucket.names(""), [KEY], "{what}: only the object is left");
        bytes
    };
    assert_eq!(read("composed"), b"new bytes, then the old archive");
    let current = runtime().block_on(store.etag(KEY)).unwrap().unwrap();
    assert_eq!(
        composed, current,
        "the splice answers the object's generation"
    );
    // Another writer replaces it: a splice naming the generation before is refused.
    bucket.put(KEY, b"another writer's");
    let stale = splice(&current, 0..16).unwrap_err();
    assert!(stale.to_string().contains("replaced it"), "{stale}");
    assert_eq!(read("refused"), b"another writer's");
}
