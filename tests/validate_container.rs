//! The container checks `validate` runs on each kind of output: a tileset seeded into an MBTiles
//! file, a PMTiles archive (local and on S3), a tree and an S3 prefix has no findings; a copy
//! damaged one way at a time is reported with the reason, and the tile where there is one.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use oar_tiles::testing::{check_container, Finding, TileCoord};
use oar_tiles::{OutputTarget, StoreConfig};

use crate::common::fixture::Fixture;
use crate::common::pg::{hub_with_scatter, Point};
use crate::common::run::{oar_tiles_with, single_layer_config};
use crate::common::runtime;
use crate::common::s3::{S3Server, ACCESS_KEY, SECRET_KEY};

const BUCKET: &str = "tiles";
/// Where the tree's tiles are served in the config, so its TileJSON names absolute URLs.
const TILES_URL: &str = "https://tiles.example.org/sites/{z}/{x}/{y}.pbf";

fn points() -> Vec<Point> {
    hub_with_scatter(300, 7, 6, [90.3, 23.7, 90.5, 23.9])
}

/// A fixture over [`points`]; `tables` are more top-level tables (`[store]`).
fn setup(label: &str, tables: &str, tileset: &str) -> Fixture {
    Fixture::new(label, &points(), "validate.toml", |schema| {
        format!(
            "{tables}\n{}",
            single_layer_config(&schema.name, "sites", tileset, "")
        )
    })
}

fn seed(setup: &Fixture, output: &str, env: &[(&str, &str)]) {
    let args = setup.seed_args(output, "0-7", &[]);
    oar_tiles_with(Some(&setup.schema.url), &args, env).assert_success();
}

/// What `validate` finds in the container of `output`.
fn check_with(output: &str, store_settings: &StoreConfig) -> oar_tiles::Result<Vec<Finding>> {
    let target = OutputTarget::parse(output).unwrap();
    runtime().block_on(check_container(output, &target, store_settings, "pbf"))
}

fn check(output: &Path) -> Vec<Finding> {
    let output = output.to_str().unwrap();
    check_with(output, &StoreConfig::default())
        .unwrap_or_else(|e| panic!("{output} cannot be checked: {e}"))
}

/// Asserts that one finding's message holds every part of `reason`, at `tile` when given;
/// returns it.
#[track_caller]
fn assert_found<'a>(
    findings: &'a [Finding],
    reason: &[&str],
    tile: Option<Option<TileCoord>>,
) -> &'a Finding {
    findings
        .iter()
        .find(|f| {
            reason.iter().all(|part| f.message.contains(part)) && tile.is_none_or(|t| f.tile == t)
        })
        .unwrap_or_else(|| panic!("no finding {reason:?} at {tile:?} among {findings:#?}"))
}

fn copy(from: &Path, to: &Path) -> PathBuf {
    std::fs::copy(from, to).unwrap();
    to.to_path_buf()
}

// --- MBTiles -------------------------------------------------------------------------------

/// A copy of `original` named `name`, changed by `sql`.
fn damaged_mbtiles(original: &Path, name: &str, sql: &str) -> PathBuf {
    let damaged = copy(original, &original.with_file_name(name));
    let connection = rusqlite::Connection::open(&damaged).unwrap();
    connection.execute_batch(sql).unwrap();
    damaged
}

fn first_tile_at(mbtiles: &Path, z: u8) -> TileCoord {
    let connection = rusqlite::Connection::open(mbtiles).unwrap();
    let (x, row): (i64, i64) = connection
        .query_row(
            "SELECT tile_column, tile_row FROM tiles WHERE zoom_level = ?1 ORDER BY 1, 2 LIMIT 1",
            [z],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let y = (1i64 << z) - 1 - row;
    format!("{z}/{x}/{y}").parse().unwrap()
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn an_mbtiles_file_as_seeded_passes_and_each_damage_is_named() {
    let setup = setup("vcmbtiles", "", "");
    let seeded = setup.path("seeded.mbtiles");
    seed(&setup, seeded.to_str().unwrap(), &[]);
    assert_eq!(check(&seeded), vec![], "the seeded file has no findings");

    let tile = first_tile_at(&seeded, 5);
    let duplicated = damaged_mbtiles(
        &seeded,
        "duplicated.mbtiles",
        &format!(
            "DROP INDEX tile_index;
             INSERT INTO tiles SELECT * FROM tiles WHERE zoom_level = 5 AND tile_column = {} AND tile_row = {};",
            tile.x(),
            tile.tms_row()
        ),
    );
    let findings = check(&duplicated);
    assert_found(
        &findings,
        &["2 rows for this tile", "no unique index"],
        Some(Some(tile)),
    );
    assert_eq!(findings.len(), 1, "{findings:#?}");

    let lying = damaged_mbtiles(
        &seeded,
        "lying.mbtiles",
        "UPDATE metadata SET value = '3' WHERE name = 'minzoom';",
    );
    let findings = check(&lying);
    assert_found(
        &findings,
        &["tiles at zoom 0", "below metadata `minzoom` 3"],
        Some(Some(first_tile_at(&seeded, 0))),
    );

    let formatless = damaged_mbtiles(
        &seeded,
        "formatless.mbtiles",
        "DELETE FROM metadata WHERE name = 'format';",
    );
    let findings = check(&formatless);
    assert_found(&findings, &["no `format`"], Some(None));
    assert_eq!(findings.len(), 1, "{findings:#?}");

    // A crash in the middle of a write: the file and its journal as a transaction whose pages
    // spilled to the file left them.
    let hot = setup.path("hot.mbtiles");
    let hot_journal = setup.path("hot.mbtiles-journal");
    {
        let writing = copy(&seeded, &setup.path("writing.mbtiles"));
        let connection = rusqlite::Connection::open(&writing).unwrap();
        connection
            .execute_batch(
                "PRAGMA journal_mode = DELETE; PRAGMA cache_size = 10; BEGIN;
                 UPDATE tiles SET tile_data = randomblob(3000);",
            )
            .unwrap();
        copy(&writing, &hot);
        copy(&setup.path("writing.mbtiles-journal"), &hot_journal);
        connection.execute_batch("ROLLBACK").unwrap();
    }
    let (file_before, journal_before) = (
        std::fs::read(&hot).unwrap(),
        std::fs::read(&hot_journal).unwrap(),
    );
    assert!(
        !journal_before.is_empty(),
        "the transaction wrote its journal"
    );
    let findings = check(&hot);
    assert_found(
        &findings,
        &["hot rollback journal", "hot.mbtiles-journal"],
        Some(None),
    );
    assert_eq!(
        std::fs::read(&hot).unwrap(),
        file_before,
        "the check changed the file"
    );
    assert_eq!(
        std::fs::read(&hot_journal).unwrap(),
        journal_before,
        "the check changed (or rolled back) the journal"
    );

    let missing = check_with(
        setup.path("missing.mbtiles").to_str().unwrap(),
        &StoreConfig::default(),
    );
    assert!(missing.is_err(), "no file to read is an error: {missing:?}");
}

// --- PMTiles -------------------------------------------------------------------------------

/// A directory entry, as the spec lays one out.
#[derive(Clone, Copy)]
struct Entry {
    tile_id: u64,
    run_length: u64,
    length: u64,
    offset: u64,
}

fn varint(bytes: &mut &[u8]) -> u64 {
    let (value, used) = <u64 as integer_encoding::VarInt>::decode_var(bytes).unwrap();
    *bytes = &bytes[used..];
    value
}

fn root_entries(archive: &[u8]) -> Vec<Entry> {
    let (offset, length) = (u64_at(archive, 8) as usize, u64_at(archive, 16) as usize);
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(&archive[offset..offset + length])
        .read_to_end(&mut inflated)
        .unwrap();
    let mut bytes = inflated.as_slice();
    let count = varint(&mut bytes) as usize;
    let mut entries = vec![
        Entry {
            tile_id: 0,
            run_length: 0,
            length: 0,
            offset: 0
        };
        count
    ];
    let mut id = 0;
    for entry in &mut entries {
        id += varint(&mut bytes);
        entry.tile_id = id;
    }
    for entry in &mut entries {
        entry.run_length = varint(&mut bytes);
    }
    for entry in &mut entries {
        entry.length = varint(&mut bytes);
    }
    for i in 0..count {
        entries[i].offset = match varint(&mut bytes) {
            0 => entries[i - 1].offset + entries[i - 1].length,
            offset => offset - 1,
        };
    }
    entries
}

/// The archive with its root directory written anew from `entries`, in their order: a tile id
/// smaller than the one before is written as the wrapping difference, as a careless writer would.
fn with_root(archive: &[u8], entries: &[Entry]) -> Vec<u8> {
    use integer_encoding::VarInt;
    let mut plain = Vec::new();
    let mut push = |value: u64| plain.extend_from_slice(&value.encode_var_vec());
    push(entries.len() as u64);
    let mut last = 0u64;
    for entry in entries {
        push(entry.tile_id.wrapping_sub(last));
        last = entry.tile_id;
    }
    entries.iter().for_each(|e| push(e.run_length));
    entries.iter().for_each(|e| push(e.length));
    entries.iter().for_each(|e| push(e.offset + 1));
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&plain).unwrap();
    let root = gzip.finish().unwrap();
    let metadata_offset = u64_at(archive, 24) as usize;
    assert!(127 + root.len() <= metadata_offset, "the new root fits");
    let mut out = archive.to_vec();
    out[127..127 + root.len()].copy_from_slice(&root);
    out[16..24].copy_from_slice(&(root.len() as u64).to_le_bytes());
    out
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn tile_of(id: u64) -> TileCoord {
    let coord = pmtiles::TileCoord::from(pmtiles::TileId::new(id).unwrap());
    format!("{}/{}/{}", coord.z(), coord.x(), coord.y())
        .parse()
        .unwrap()
}

/// Checks the damages every archive must show, local or on S3: `check` checks bytes as an
/// archive of that kind.
fn assert_pmtiles_damages_are_named(
    archive: &[u8],
    mut check: impl FnMut(&str, &[u8]) -> Vec<Finding>,
) {
    let entries = root_entries(archive);
    assert!(entries.len() > 10 && entries.iter().all(|e| e.run_length > 0));
    let mut swapped = entries.clone();
    let i = entries.len() / 2;
    swapped.swap(i, i + 1);
    let findings = check("swapped", &with_root(archive, &swapped));
    let late = tile_of(entries[i].tile_id);
    assert_found(
        &findings,
        &["the root directory", "tile ids must increase"],
        Some(Some(late)),
    );

    let mut counted = archive.to_vec();
    let addressed = u64_at(archive, 72);
    counted[72..80].copy_from_slice(&(addressed + 1).to_le_bytes());
    let findings = check("counted", &counted);
    assert_found(
        &findings,
        &[&format!(
            "the header counts {} addressed tiles, but the directories hold {addressed}",
            addressed + 1
        )],
        Some(None),
    );
    assert_eq!(findings.len(), 1, "{findings:#?}");

    let findings = check("truncated", &archive[..archive.len() / 2]);
    assert_found(
        &findings,
        &["tile data", "past the end of the file"],
        Some(None),
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_pmtiles_archive_as_seeded_passes_and_each_damage_is_named() {
    let setup = setup("vcpmtiles", "", "");
    let seeded = setup.path("seeded.pmtiles");
    seed(&setup, seeded.to_str().unwrap(), &[]);
    assert_eq!(check(&seeded), vec![], "the seeded archive has no findings");
    let archive = std::fs::read(&seeded).unwrap();
    assert_pmtiles_damages_are_named(&archive, |name, bytes| {
        let path = setup.path(&format!("{name}.pmtiles"));
        std::fs::write(&path, bytes).unwrap();
        check(&path)
    });
    let missing = check_with(
        setup.path("missing.pmtiles").to_str().unwrap(),
        &StoreConfig::default(),
    );
    assert!(missing.is_err(), "no file to read is an error: {missing:?}");
}

// --- TileJSON beside a tree ----------------------------------------------------------------

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `tiles.json` changed by `change`.
fn damaged_tilejson(tilejson: &[u8], change: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut document: serde_json::Value = serde_json::from_slice(tilejson).unwrap();
    change(&mut document);
    serde_json::to_vec_pretty(&document).unwrap()
}

fn remove(key: &'static str) -> impl FnOnce(&mut serde_json::Value) {
    move |document| {
        document.as_object_mut().unwrap().remove(key);
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_tree_as_seeded_passes_and_each_damage_to_its_tilejson_is_named() {
    let setup = setup("vctree", "", &format!("tiles_url = \"{TILES_URL}\""));
    let seeded = setup.path("seeded");
    seed(&setup, &format!("dir:{}", seeded.display()), &[]);
    let dir = |path: &Path| PathBuf::from(format!("dir:{}", path.display()));
    assert_eq!(
        check(&dir(&seeded)),
        vec![],
        "the seeded tree has no findings"
    );

    let tilejson = std::fs::read(seeded.join("tiles.json")).unwrap();
    let damaged = |name: &str, document: Option<Vec<u8>>| {
        let tree = setup.path(name);
        copy_tree(&seeded, &tree);
        match document {
            Some(document) => std::fs::write(tree.join("tiles.json"), document).unwrap(),
            None => std::fs::remove_file(tree.join("tiles.json")).unwrap(),
        }
        check(&dir(&tree))
    };
    let findings = damaged(
        "layerless",
        Some(damaged_tilejson(&tilejson, remove("vector_layers"))),
    );
    assert_found(
        &findings,
        &["tiles.json has no `vector_layers`"],
        Some(None),
    );
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let relative = damaged_tilejson(&tilejson, |d| {
        d["tiles"] = serde_json::json!(["{z}/{x}/{y}.pbf"])
    });
    let findings = damaged("relative", Some(relative));
    assert_found(
        &findings,
        &["`{z}/{x}/{y}.pbf` is not an absolute URL"],
        Some(None),
    );
    let findings = damaged(
        "tileless",
        Some(damaged_tilejson(&tilejson, remove("tiles"))),
    );
    assert_found(&findings, &["tiles.json has no `tiles`"], Some(None));
    let findings = damaged("undescribed", None);
    assert_found(&findings, &["there is no tiles.json"], Some(None));

    // What a tree seeded without tiles_url names: the relative URL it warns about when seeding.
    let default = self::setup("vctreedefault", "", "");
    let unaddressed = default.path("unaddressed");
    seed(&default, &format!("dir:{}", unaddressed.display()), &[]);
    let findings = check(&dir(&unaddressed));
    assert_found(
        &findings,
        &["is not an absolute URL", "set tiles_url"],
        Some(None),
    );
    assert_eq!(findings.len(), 1, "{findings:#?}");

    let missing = check_with(
        &format!("dir:{}", setup.path("missing").display()),
        &StoreConfig::default(),
    );
    assert!(missing.is_err(), "no tree to read is an error: {missing:?}");
}

// --- S3: a prefix's TileJSON and an archive ------------------------------------------------

/// Set in the child process that runs an S3 test with the server's credentials.
const S3_CHILD: &str = "OAR_TILES_TEST_VALIDATE_S3_CHILD";

/// The library reads S3 credentials from the environment, as the binary does; a test must not
/// change its own process' environment while others run, so an S3 test runs itself again in a
/// child process of this test binary that has the test server's credentials. Returns whether the
/// caller is that child and should run the test's body.
fn in_child_with_credentials(test: &str) -> bool {
    if std::env::var_os(S3_CHILD).is_some() {
        return true;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--include-ignored", "--nocapture"])
        .env(S3_CHILD, "1")
        .envs([
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ])
        .output()
        .expect("run the test binary again");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} in its child process:\n{stdout}\n{stderr}"
    );
    false
}

fn s3_config(server: &S3Server) -> StoreConfig {
    StoreConfig {
        endpoint: Some(server.endpoint()),
        region: Some("us-east-1".into()),
        force_path_style: true,
        ..StoreConfig::default()
    }
}

fn put(server: &S3Server, key: &str, bytes: &[u8]) {
    let client = server.client();
    runtime()
        .block_on(
            client
                .put_object()
                .bucket(BUCKET)
                .key(key)
                .body(bytes.to_vec().into())
                .send(),
        )
        .unwrap();
}

fn get(server: &S3Server, key: &str) -> Vec<u8> {
    let client = server.client();
    runtime().block_on(async {
        let object = client
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        object.body.collect().await.unwrap().into_bytes().to_vec()
    })
}

#[test]
#[ignore = "needs PostGIS and the S3 test server: run scripts/test.sh"]
fn s3_outputs_as_seeded_pass_and_each_damage_is_named() {
    if !in_child_with_credentials(
        "validate_container::s3_outputs_as_seeded_pass_and_each_damage_is_named",
    ) {
        return;
    }
    let server = S3Server::start(BUCKET);
    let setup = setup("vcs3", &server.config_table(""), "");
    let config = s3_config(&server);
    // The archive's working copy goes into the test's own cache, not the user's.
    let cache = setup.path("cache");
    let mut env = server.env();
    env.push(("XDG_CACHE_HOME", cache.to_str().unwrap()));

    let prefix = format!("s3://{BUCKET}/sites");
    seed(&setup, &prefix, &env);
    assert_eq!(
        check_with(&prefix, &config).unwrap(),
        vec![],
        "the seeded prefix has no findings"
    );
    let tilejson = get(&server, "sites/tiles.json");
    put(
        &server,
        "sites/tiles.json",
        &damaged_tilejson(&tilejson, remove("vector_layers")),
    );
    let findings = check_with(&prefix, &config).unwrap();
    assert_found(
        &findings,
        &["tiles.json has no `vector_layers`"],
        Some(None),
    );
    let client = server.client();
    runtime()
        .block_on(
            client
                .delete_object()
                .bucket(BUCKET)
                .key("sites/tiles.json")
                .send(),
        )
        .unwrap();
    let findings = check_with(&prefix, &config).unwrap();
    assert_found(&findings, &["there is no tiles.json"], Some(None));
    let unreachable = check_with("s3://no-such-bucket/sites", &config);
    assert!(
        unreachable.is_err(),
        "a missing bucket is an error: {unreachable:?}"
    );

    let archive_url = format!("s3://{BUCKET}/maps/sites.pmtiles");
    seed(&setup, &archive_url, &env);
    assert_eq!(
        check_with(&archive_url, &config).unwrap(),
        vec![],
        "the seeded archive has no findings"
    );
    let archive = get(&server, "maps/sites.pmtiles");
    assert_pmtiles_damages_are_named(&archive, |name, bytes| {
        let key = format!("maps/{name}.pmtiles");
        put(&server, &key, bytes);
        check_with(&format!("s3://{BUCKET}/{key}"), &config).unwrap()
    });
    let missing = check_with(&format!("s3://{BUCKET}/maps/missing.pmtiles"), &config);
    assert!(
        missing.is_err(),
        "a missing object is an error: {missing:?}"
    );
}
