//! A PMTiles archive as one object on a real S3-compatible server: read back by the PyPI reader,
//! uploaded only when its bytes change, reseeded from a machine that has never seen it (a new pod)
//! without rendering every tile, and large archives uploaded in parts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::env::fault_seed;
use crate::common::fixture::Fixture;
use crate::common::pmtiles::{seed, setup_with};
use crate::common::pmtiles_reader::{assert_same_digests, digests_of_mbtiles, read_archive};
use crate::common::run::lines;
use crate::common::run::{
    oar_tiles_command, oar_tiles_with, run_from, send_signal, wait_for_progress, wrapped_command,
    Run,
};
use crate::common::runtime;
use crate::common::s3::S3Server;

const BUCKET: &str = "tiles";
const KEY: &str = "maps/facilities.pmtiles";

/// A fixture whose config reaches its own S3 server.
struct Setup {
    base: Fixture,
    server: S3Server,
}

crate::common::fixture::wraps_fixture!(Setup, base);

impl Setup {
    fn new(label: &str) -> Setup {
        Setup::with(label, "")
    }

    /// [`Setup::new`] with more tileset keys.
    fn with(label: &str, tileset: &str) -> Setup {
        let server = S3Server::start(BUCKET);
        let base = setup_with(
            label,
            &server.config_table(""),
            &format!("cache_control = \"public, max-age=60\"\n{tileset}"),
        );
        Setup { base, server }
    }

    /// The bytes of object `key`, `None` when there is none.
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let client = self.server.client();
        runtime().block_on(async {
            match client.get_object().bucket(BUCKET).key(key).send().await {
                Ok(object) => Some(object.body.collect().await.unwrap().into_bytes().to_vec()),
                Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
                Err(err) => panic!("reading {key}: {err:?}"),
            }
        })
    }

    /// Object `key` as JSON.
    fn json(&self, key: &str) -> serde_json::Value {
        let bytes = self.get(key).unwrap_or_else(|| panic!("no object {key}"));
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The headers of object `key`.
    fn head_of(&self, key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
        let client = self.server.client();
        runtime()
            .block_on(client.head_object().bucket(BUCKET).key(key).send())
            .unwrap_or_else(|e| panic!("{key}: {e:?}"))
    }

    /// The modification time of the file the server keeps object `key` in.
    fn stored_at(&self, key: &str) -> std::time::SystemTime {
        let stored = self.server.data.join(BUCKET).join(key);
        std::fs::metadata(stored).unwrap().modified().unwrap()
    }

    /// The seed command into the archive from a machine whose cache is `machine` (a directory of
    /// the test).
    fn seed_command(&self, machine: &str, zoom: &str, extra: &[&str]) -> std::process::Command {
        let cache = self.path(machine);
        std::fs::create_dir_all(&cache).unwrap();
        let mut env = self.server.env();
        env.push(("XDG_CACHE_HOME", cache.to_str().unwrap()));
        let target = format!("s3://{BUCKET}/{KEY}");
        let args = self.seed_args(&target, zoom, extra);
        oar_tiles_command(Some(&self.schema.url), &args, &env)
    }

    /// Seeds into the archive from `machine`, which must succeed.
    fn seed_s3(&self, machine: &str, extra: &[&str]) -> Run {
        let run = run_from(self.seed_command(machine, "0-10", extra).output().unwrap());
        run.assert_success();
        run
    }

    /// Downloads the archive object to `name` in the test directory.
    fn download(&self, name: &str) -> std::path::PathBuf {
        let path = self.path(name);
        let client = self.server.client();
        let bytes = runtime().block_on(async {
            let object = client
                .get_object()
                .bucket(BUCKET)
                .key(KEY)
                .send()
                .await
                .unwrap();
            object.body.collect().await.unwrap().into_bytes()
        });
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The archive object's headers.
    fn head(&self) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
        let client = self.server.client();
        runtime()
            .block_on(client.head_object().bucket(BUCKET).key(KEY).send())
            .unwrap()
    }

    /// The object's ETag and the modification time of the file the server keeps it in, which
    /// changes with every upload.
    fn version(&self) -> (String, std::time::SystemTime) {
        let etag = self.head().e_tag().unwrap().to_string();
        let stored = self.server.data.join(BUCKET).join(KEY);
        (etag, std::fs::metadata(stored).unwrap().modified().unwrap())
    }
}

#[test]
#[ignore = "needs PostGIS, the S3 test server and the Python pmtiles reader: run scripts/test.sh"]
fn an_s3_archive_is_uploaded_when_it_changes_and_reseeded_from_a_new_machine() {
    let mut setup = Setup::new("pms3");
    let object = format!("s3://{BUCKET}/{KEY}");
    setup.seed_s3("machine-a", &[]);
    let mbtiles = setup.path("reference.mbtiles");
    seed(&setup, &mbtiles, &[]);
    let archive = read_archive(&setup.download("first.pmtiles"));
    assert_same_digests(
        &digests_of_mbtiles(&mbtiles),
        &archive.tiles,
        "the S3 archive against MBTiles",
    );
    assert_eq!(archive.header["clustered"], true, "{}", archive.header);
    assert_eq!(archive.metadata["vector_layers"][0]["id"], "sites");
    let head = setup.head();
    assert_eq!(head.content_type(), Some("application/vnd.pmtiles"));
    assert_eq!(head.cache_control(), Some("public, max-age=60"));

    // Nothing changed: nothing uploaded, nothing to invalidate.
    let changed = setup.path("changed.txt");
    let changed_arg = changed.to_str().unwrap().to_string();
    let uploaded = setup.version();
    setup.seed_s3("machine-a", &["--dirty", "--changed-list", &changed_arg]);
    assert_eq!(
        setup.version(),
        uploaded,
        "an unchanged archive is not uploaded"
    );
    assert!(lines(&changed).is_empty(), "{:?}", lines(&changed));

    // A new machine (an empty cache) reseeds the changes: it starts from the object, renders only
    // the dirty tiles, and the result equals a full seed.
    setup.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(90.41, 23.81), 4326) WHERE site_id % 9 = 0;
         DELETE FROM {schema}.sites WHERE site_id = 9000;
         INSERT INTO {schema}.sites (site_id, label, pt) VALUES (9100, 'new', ST_SetSRID(ST_MakePoint(13.4, 52.5), 4326));",
    );
    let reseed = setup.seed_s3("machine-b", &["--dirty", "--changed-list", &changed_arg]);
    assert!(
        reseed.stderr.contains("downloading the archive"),
        "{}",
        reseed.stderr
    );
    let listed = lines(&changed);
    assert!(listed.contains(&object), "the object is named: {listed:?}");
    assert_eq!(
        listed.len(),
        1,
        "and nothing else: an archive's tiles have no URL of their own to invalidate: {listed:?}"
    );
    let rendered: usize = format!("{}{}", reseed.stdout, reseed.stderr)
        .split("output: ")
        .nth(1)
        .and_then(|summary| summary.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("a summary line: {}{}", reseed.stdout, reseed.stderr));
    assert!(
        rendered < archive.tiles.len() / 2,
        "a reseed renders the changes, not the pyramid: {rendered} of {} tiles",
        archive.tiles.len()
    );
    let full = setup.path("full.pmtiles");
    seed(&setup, &full, &[]);
    assert_same_digests(
        &read_archive(&full).tiles,
        &read_archive(&setup.download("reseeded.pmtiles")).tiles,
        "the reseeded S3 archive against a full seed",
    );

    // Another new machine with nothing to do uploads nothing either.
    let uploaded = setup.version();
    setup.seed_s3("machine-c", &["--dirty", "--changed-list", &changed_arg]);
    assert_eq!(
        setup.version(),
        uploaded,
        "an unchanged archive is not uploaded"
    );
    assert!(lines(&changed).is_empty(), "{:?}", lines(&changed));

    // inspect reads the object; changes status lists it with its watermark.
    let mut env = setup.server.env();
    let config = setup.config.to_str().unwrap().to_string();
    let inspected = oar_tiles_with(
        None,
        &["inspect", &object, "--config", &config, "--json"],
        &env,
    );
    inspected.assert_success();
    let inventory: serde_json::Value = serde_json::from_str(&inspected.stdout).unwrap();
    assert_eq!(
        inventory["tiles"].as_u64(),
        Some(read_archive(&full).tiles.len() as u64)
    );
    assert_eq!(inventory["metadata"]["pmtiles"]["clustered"], true);
    env.clear();
    let status = oar_tiles_with(
        Some(&setup.schema.url),
        &["changes", "status", "--config", &config],
        &env,
    );
    status.assert_success();
    assert!(status.stdout.contains(&object), "{}", status.stdout);
}

#[test]
#[ignore = "needs PostGIS, the S3 test server and the Python pmtiles reader: run scripts/test.sh"]
fn inspect_downloads_an_s3_archive_to_a_private_file_not_through_a_planted_link() {
    let setup = Setup::new("pms3tmp");
    setup.seed_s3("machine-a", &[]);
    let temporary = setup.path("shared-tmp");
    std::fs::create_dir_all(&temporary).unwrap();
    let victim = setup.path("victim.txt");
    std::fs::write(&victim, b"the victim's own bytes").unwrap();
    // Another user plants a link where a run with a predictable name would write: the shell's
    // pid is the inspect's, through exec.
    let plant = r#"ln -s "$VICTIM" "$TMPDIR/oar-tiles-read-$$-facilities.pmtiles.download" && exec "$0" "$@""#;
    let mut env = setup.server.env();
    env.extend([
        ("TMPDIR", temporary.to_str().unwrap()),
        ("VICTIM", victim.to_str().unwrap()),
    ]);
    let object = format!("s3://{BUCKET}/{KEY}");
    let config = setup.config.to_str().unwrap();
    let args = ["inspect", &object, "--config", config, "--json"];
    let inspected = run_from(
        wrapped_command(&["sh", "-c", plant], None, &args, &env)
            .output()
            .unwrap(),
    );
    let now = std::fs::read(&victim).unwrap();
    assert!(
        now == b"the victim's own bytes",
        "the planted link was followed: its target now holds {} bytes starting {:?}",
        now.len(),
        String::from_utf8_lossy(&now[..now.len().min(7)])
    );
    inspected.assert_success();
    let inventory: serde_json::Value = serde_json::from_str(&inspected.stdout).unwrap();
    assert!(inventory["tiles"].as_u64().unwrap() > 0, "{inventory}");
    let left: Vec<_> = std::fs::read_dir(&temporary)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| !name.to_string_lossy().ends_with(".download"))
        .collect();
    assert!(left.is_empty(), "the private file is removed: {left:?}");
}

#[test]
#[ignore = "needs the S3 test server: run scripts/test.sh"]
fn an_archive_larger_than_a_part_is_uploaded_in_parts_and_arrives_whole() {
    let server = S3Server::start(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.pmtiles");
    // 11 MiB of bytes that repeat nowhere: three parts of 5, 5 and 1 MiB.
    let body: Vec<u8> = (0u32..11 * 1024 * 1024 / 4)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    std::fs::write(&file, &body).unwrap();
    let client = server.client();
    runtime().block_on(async {
        let headers = oar_tiles::testing::ObjectHeaders {
            content_type: "application/vnd.pmtiles",
            cache_control: "no-cache",
            content_encoding: None,
        };
        let store = oar_tiles::testing::s3_store(client.clone(), BUCKET);
        let etag = store
            .upload_file("big/archive.pmtiles", &file, headers, 5 * 1024 * 1024)
            .await
            .unwrap();
        assert!(
            etag.trim_matches('"').ends_with("-3"),
            "three parts: {etag}"
        );
        let back = client
            .get_object()
            .bucket(BUCKET)
            .key("big/archive.pmtiles")
            .send()
            .await
            .unwrap();
        assert_eq!(back.content_type(), Some("application/vnd.pmtiles"));
        let stored = back.body.collect().await.unwrap().into_bytes();
        assert!(stored.as_ref() == body.as_slice(), "the object is the file");
    });
}

/// The store of the working copy in `machine`'s cache, once a seed has started one.
fn working_store(setup: &Setup, machine: &str, child: &mut std::process::Child) -> PathBuf {
    let dir = setup.path(machine).join("oar-tiles/pmtiles");
    let started = Instant::now();
    loop {
        let found = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .find_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                let store = name.strip_suffix(".partial")?;
                store.ends_with(".store.mbtiles").then(|| dir.join(store))
            });
        if let Some(store) = found {
            return store;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no working store in {} after two minutes",
            dir.display()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the seed ended before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[ignore = "needs PostGIS, the S3 test server and the Python pmtiles reader: run scripts/test.sh"]
fn an_interrupted_s3_archive_seed_uploads_nothing_and_resumes_to_the_same_archive() {
    let mut setup = Setup::new("pms3resume");
    setup.schema.execute(
        "INSERT INTO {schema}.sites (site_id, label, pt)
         SELECT 20000 + g, 'extra', ST_SetSRID(ST_MakePoint(90.3 + (g % 97) * 0.002, 23.7 + (g % 89) * 0.002), 4326)
         FROM generate_series(1, 3000) g; ANALYZE {schema}.sites;",
    );
    let text = std::fs::read_to_string(&setup.config).unwrap().replace(
        "cluster_maxzoom = 5",
        "cluster_maxzoom = 5\nfilter = \"site_id % 10 <> 0 OR pg_sleep(0.0005) IS NOT NULL\"",
    );
    std::fs::write(&setup.config, text).unwrap();
    let mut child = setup.seed_command("machine", "0-12", &[]).spawn().unwrap();
    let store = working_store(&setup, "machine", &mut child);
    wait_for_progress(&mut child, &store);
    send_signal(&child, libc::SIGINT);
    let stopped = run_from(child.wait_with_output().unwrap());
    assert_eq!(stopped.code, 130, "{}", stopped.stderr);
    let client = setup.server.client();
    let listed = runtime().block_on(async {
        let listing = client
            .list_objects_v2()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        listing.contents().len()
    });
    assert_eq!(listed, 0, "nothing is uploaded before the run is complete");
    let resumed = run_from(setup.seed_command("machine", "0-12", &[]).output().unwrap());
    resumed.assert_success();
    assert!(resumed.stderr.contains("resum"), "{}", resumed.stderr);
    let reference = setup.path("reference.pmtiles");
    let args = setup.seed_args(reference.to_str().unwrap(), "0-12", &[]);
    oar_tiles_with(Some(&setup.schema.url), &args, &[]).assert_success();
    assert_same_digests(
        &read_archive(&reference).tiles,
        &read_archive(&setup.download("resumed.pmtiles")).tiles,
        "the resumed S3 archive",
    );
}

#[test]
#[ignore = "needs PostGIS, the S3 test server and the Python pmtiles reader: run scripts/test.sh"]
fn an_s3_archive_seed_through_a_server_killed_at_a_random_moment_never_shows_half_an_archive() {
    let mut setup = Setup::new("pms3fault");
    let started = Instant::now();
    setup.seed_s3("machine", &[]);
    let first_run = started.elapsed();
    let before = read_archive(&setup.download("before.pmtiles")).tiles;
    setup.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(-70.6, -33.4), 4326) WHERE site_id % 7 = 0;
         DELETE FROM {schema}.sites WHERE site_id % 11 = 0;",
    );
    let reference = setup.path("after.mbtiles");
    seed(&setup, &reference, &[]);
    let after = digests_of_mbtiles(&reference);

    let seed_number = fault_seed();
    let mut rng = crate::common::pg::Rng::new(seed_number);
    let moment = Duration::from_secs_f64(rng.range(0.0, first_run.as_secs_f64()));
    let child = setup.seed_command("machine", "0-10", &[]).spawn().unwrap();
    std::thread::sleep(moment);
    setup.server.kill();
    std::thread::sleep(Duration::from_millis(1500));
    setup.server.restart(&[]);
    let interrupted = run_from(child.wait_with_output().unwrap());
    let context = format!(
        "OAR_TILES_TEST_SEED={seed_number}: the server killed {moment:?} into the reseed, which exited {}\n{}",
        interrupted.code, interrupted.stderr
    );
    eprintln!("{context}");
    // Whatever the run did, the object is one whole archive: the old one or the new one.
    let visible = read_archive(&setup.download("visible.pmtiles")).tiles;
    assert!(visible == before || visible == after, "{context}");

    setup.seed_s3("machine", &[]);
    assert_same_digests(
        &after,
        &read_archive(&setup.download("rerun.pmtiles")).tiles,
        &context,
    );
}

#[test]
#[ignore = "needs PostGIS, the S3 test server and the Python pmtiles reader: run scripts/test.sh"]
fn an_s3_archive_in_versions_is_copied_under_its_hash_before_the_pointer_names_it() {
    let mut setup = Setup::with("pms3versions", "pmtiles_versions = true");
    let pointer = "maps/facilities.latest.json";
    let tilejson = "maps/facilities.json";
    let changed = setup.path("changed.txt");
    let changed_arg = changed.to_str().unwrap().to_string();
    let documents = [
        format!("s3://{BUCKET}/{pointer}"),
        format!("s3://{BUCKET}/{tilejson}"),
    ];
    let version_key = |pointer: &serde_json::Value| {
        let name = pointer["archive"].as_str().unwrap();
        let hash = name
            .strip_prefix("facilities.")
            .and_then(|rest| rest.strip_suffix(".pmtiles"))
            .unwrap_or_else(|| panic!("not a version: {pointer}"));
        assert!(
            hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{pointer}"
        );
        format!("maps/{name}")
    };
    let seeded = setup.seed_s3("machine-a", &["--changed-list", &changed_arg]);
    assert!(
        !seeded.stderr.contains("uploading the version instead"),
        "the version is a copy inside the store: {}",
        seeded.stderr
    );

    let first = setup.json(pointer);
    let first_key = version_key(&first);
    let first_bytes = setup.get(&first_key).unwrap();
    assert!(
        Some(&first_bytes) == setup.get(KEY).as_ref(),
        "the version is the archive byte for byte"
    );
    assert_eq!(first["superseded"], serde_json::json!([]), "{first}");
    for key in [pointer, tilejson] {
        assert!(
            setup.stored_at(&first_key) <= setup.stored_at(key),
            "the version is stored before {key} names it"
        );
    }
    let head = setup.head_of(&first_key);
    assert_eq!(head.content_type(), Some("application/vnd.pmtiles"));
    assert_eq!(
        head.cache_control(),
        Some("public, max-age=31536000, immutable")
    );
    for key in [pointer, tilejson] {
        let head = setup.head_of(key);
        assert_eq!(head.cache_control(), Some("public, max-age=60"), "{key}");
        assert_eq!(head.content_type(), Some("application/json"), "{key}");
    }
    let document = setup.json(tilejson);
    assert_eq!(document["tilejson"], "3.0.0", "{document}");
    assert_eq!(
        document["tiles"],
        serde_json::json!([format!(
            "pmtiles://{}/{BUCKET}/{first_key}/{{z}}/{{x}}/{{y}}",
            setup.server.endpoint()
        )]),
        "the bucket's own address, without public_url"
    );
    assert_eq!(document["vector_layers"][0]["id"], "sites", "{document}");
    let listed = lines(&changed);
    for name in &documents {
        assert!(
            listed.contains(name),
            "{name} goes to the CDNs; listed besides tiles: {:?}",
            listed
                .iter()
                .filter(|l| l.contains('.'))
                .collect::<Vec<_>>()
        );
    }
    assert!(
        !listed.iter().any(|line| line.ends_with(&first_key)),
        "a new version is no purge: {listed:?}"
    );

    // A change, reseeded from a new machine: a new version, the pointer on it, the first kept.
    setup.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(90.41, 23.81), 4326) WHERE site_id % 9 = 0;",
    );
    setup.seed_s3("machine-b", &["--dirty", "--changed-list", &changed_arg]);
    let second = setup.json(pointer);
    let second_key = version_key(&second);
    assert_ne!(second_key, first_key);
    assert!(
        setup.get(&second_key) == setup.get(KEY),
        "the new version is the archive byte for byte"
    );
    assert!(
        setup.get(&first_key) == Some(first_bytes),
        "the superseded version is kept as it was"
    );
    for key in [pointer, tilejson] {
        assert!(
            setup.stored_at(&second_key) <= setup.stored_at(key),
            "the version is stored before {key} names it"
        );
    }
    let superseded = second["superseded"].as_array().unwrap();
    assert_eq!(superseded.len(), 1, "{second}");
    assert_eq!(
        format!("maps/{}", superseded[0]["archive"].as_str().unwrap()),
        first_key
    );
    let listed = lines(&changed);
    for name in &documents {
        assert!(
            listed.contains(name),
            "{name} goes to the CDNs; listed besides tiles: {:?}",
            listed
                .iter()
                .filter(|l| l.contains('.'))
                .collect::<Vec<_>>()
        );
    }

    // Nothing changed: the same version, the pointer not written.
    let written = (
        setup.head_of(pointer).e_tag().map(str::to_string),
        setup.stored_at(pointer),
    );
    setup.seed_s3("machine-b", &["--dirty", "--changed-list", &changed_arg]);
    assert_eq!(
        (
            setup.head_of(pointer).e_tag().map(str::to_string),
            setup.stored_at(pointer)
        ),
        written,
        "the pointer is not rewritten"
    );
    assert!(lines(&changed).is_empty(), "{:?}", lines(&changed));

    // With no retention, the next change deletes every superseded version.
    let text = std::fs::read_to_string(&setup.config).unwrap().replace(
        "pmtiles_versions = true",
        "pmtiles_versions = true\npmtiles_keep_versions = \"0s\"",
    );
    std::fs::write(&setup.config, text).unwrap();
    setup
        .schema
        .execute("DELETE FROM {schema}.sites WHERE site_id = 9000;");
    setup.seed_s3("machine-b", &["--dirty", "--changed-list", &changed_arg]);
    let third = setup.json(pointer);
    let third_key = version_key(&third);
    assert_eq!(third["superseded"], serde_json::json!([]), "{third}");
    assert!(setup.get(&first_key).is_none(), "{first_key} is deleted");
    assert!(setup.get(&second_key).is_none(), "{second_key} is deleted");
    assert!(setup.get(&third_key) == setup.get(KEY));
    assert_same_digests(
        &read_archive(&setup.download("third.pmtiles")).tiles,
        &{
            let path = setup.path("third-version.pmtiles");
            std::fs::write(&path, setup.get(&third_key).unwrap()).unwrap();
            read_archive(&path).tiles
        },
        "the current version against the archive",
    );
}
