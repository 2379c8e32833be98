//! `agg_tiles_hash`: every kind of output records the hash of its tiles, as martin's `mbtiles`
//! crate computes it; outputs holding the same tiles record the same hash, a reseed keeps it
//! current (a tree or prefix names the digest it keeps from the tiles a reseed changed instead),
//! and martin's own `mbtiles validate` agrees with ours.

use std::path::{Path, PathBuf};
use std::process::Command;

use md5::{Digest, Md5};
use oar_tiles::testing::agg_tiles_hash;
use oar_tiles::{OutputTarget, StoreConfig};

use crate::common::fixture::{wraps_fixture, Fixture};
use crate::common::pg::{hub_with_scatter, Point};
use crate::common::run::{
    expected_digest, oar_tiles_with, read_mbtiles_raw, read_metadata, read_tree,
    single_layer_config, Run, Tiles,
};
use crate::common::runtime;
use crate::common::s3::S3Server;

const BUCKET: &str = "tiles";
const PREFIX: &str = "facilities";
const ZOOMS: &str = "0-9";

fn points() -> Vec<Point> {
    hub_with_scatter(300, 17, 4, [-0.3, 51.3, 0.1, 51.7])
}

/// The hash as martin's SQL computes it, written out here apart from the tool's own code: MD5 over
/// `z`, `x`, TMS row (decimal, no separators) and the bytes, in numeric (z, x, TMS row) order.
fn expected_hash(tiles: &Tiles) -> String {
    let mut rows: Vec<(u8, u32, u32, &Vec<u8>)> = tiles
        .iter()
        .map(|((z, x, y), data)| (*z, *x, (1u32 << z) - 1 - y, data))
        .collect();
    rows.sort();
    let mut md5 = Md5::new();
    for (z, x, row, data) in rows {
        md5.update(format!("{z}{x}{row}"));
        md5.update(data);
    }
    hex::encode_upper(md5.finalize())
}

/// A fixture under change capture whose config also reaches an S3 server of its own.
struct Setup {
    base: Fixture,
    server: S3Server,
}

wraps_fixture!(Setup, base);

/// Where each kind's output of one test goes.
struct Outputs {
    mbtiles: PathBuf,
    tree: PathBuf,
    pmtiles: PathBuf,
    s3: String,
}

impl Setup {
    fn new(label: &str) -> Setup {
        let server = S3Server::start(BUCKET);
        let base = Fixture::new(label, &points(), "agg.toml", |schema| {
            let changes = schema.companion("cdc");
            format!(
                "[changes]\nschema = \"{changes}\"\n{}\n{}",
                server.config_table(""),
                single_layer_config(&schema.name, "sites", "", "")
            )
        });
        let setup = Setup { base, server };
        setup.run("a", &["changes", "install"]).assert_success();
        setup
    }

    fn outputs(&self) -> Outputs {
        Outputs {
            mbtiles: self.path("out.mbtiles"),
            tree: self.path("tree"),
            pmtiles: self.path("out.pmtiles"),
            s3: format!("s3://{BUCKET}/{PREFIX}"),
        }
    }

    /// `args` with the config, on `machine` (its own cache folder, where S3 outputs keep their
    /// journals and tile cache).
    fn run(&self, machine: &str, args: &[&str]) -> Run {
        self.run_env(machine, args, &[])
    }

    /// [`Setup::run`] with more environment.
    fn run_env(&self, machine: &str, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let mut full = vec![args[0], "--config", self.config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        let cache = self.path(machine);
        let mut env = self.server.env();
        env.push(("XDG_CACHE_HOME", cache.to_str().unwrap()));
        env.extend_from_slice(extra);
        oar_tiles_with(Some(&self.schema.url), &full, &env)
    }

    fn seed(&self, machine: &str, output: &str, extra: &[&str]) {
        let mut args = vec!["seed", "--zoom", ZOOMS, "--output", output];
        args.extend_from_slice(extra);
        self.run(machine, &args).assert_success();
    }

    fn seed_all(&self, outputs: &Outputs, machine: &str, extra: &[&str]) {
        self.seed(machine, outputs.mbtiles.to_str().unwrap(), extra);
        self.seed(machine, &format!("dir:{}", outputs.tree.display()), extra);
        self.seed(machine, outputs.pmtiles.to_str().unwrap(), extra);
        self.seed(machine, &outputs.s3, extra);
    }

    fn get(&self, key: &str) -> Vec<u8> {
        let client = self.server.client();
        runtime().block_on(async {
            let object = client.get_object().bucket(BUCKET).key(key).send().await;
            let object = object.unwrap_or_else(|e| panic!("reading {key}: {e:?}"));
            object.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    /// The S3 prefix's tiles, read with the test's own client.
    fn s3_tiles(&self) -> Tiles {
        let client = self.server.client();
        let keys: Vec<String> = runtime().block_on(async {
            let mut keys = Vec::new();
            let mut pages = client
                .list_objects_v2()
                .bucket(BUCKET)
                .prefix(format!("{PREFIX}/"))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for object in page.unwrap().contents() {
                    keys.push(object.key().unwrap().to_string());
                }
            }
            keys
        });
        keys.iter()
            .filter_map(|key| {
                let path = key
                    .strip_prefix(&format!("{PREFIX}/"))?
                    .strip_suffix(".pbf")?;
                let parts: Vec<u32> = path.split('/').map(|p| p.parse().unwrap()).collect();
                Some(((parts[0] as u8, parts[1], parts[2]), self.get(key)))
            })
            .collect()
    }

    /// What each output records, with the hash the tool's reader-side function computes for the
    /// local ones, and the hash of the tiles as read independently.
    fn hashes(&self, outputs: &Outputs) -> Vec<Recorded> {
        // Only local outputs are read through the tool's reader here, so no S3 settings.
        let store_settings = StoreConfig::default();
        let reader_hash = |output: &str| {
            let target = OutputTarget::parse(output).unwrap();
            runtime().block_on(async {
                let reader =
                    oar_tiles::testing::OutputReader::open(output, &target, &store_settings, "pbf")
                        .await
                        .unwrap();
                let metadata = reader.metadata().await.unwrap();
                let recorded = metadata["agg_tiles_hash"].as_str().map(str::to_string);
                let digest = metadata["oar_tiles_digest"].as_str().map(str::to_string);
                (recorded, digest, agg_tiles_hash(&reader).await.unwrap())
            })
        };
        let mbtiles = outputs.mbtiles.to_str().unwrap();
        let tree = format!("dir:{}", outputs.tree.display());
        let pmtiles = outputs.pmtiles.to_str().unwrap();
        let mut recorded = Vec::new();
        for (name, output, tiles) in [
            ("mbtiles", mbtiles, read_mbtiles_raw(&outputs.mbtiles)),
            ("tree", tree.as_str(), read_tree(&outputs.tree, "pbf")),
            // The archive holds the store's tiles byte for byte (tests/pmtiles.rs).
            (
                "pmtiles",
                pmtiles,
                read_mbtiles_raw(&PathBuf::from(format!("{pmtiles}.store.mbtiles"))),
            ),
        ] {
            let (stored, digest, computed) = reader_hash(output);
            recorded.push(Recorded {
                name,
                stored,
                computed,
                independent: expected_hash(&tiles),
                digest: (name == "tree").then(|| (digest, expected_digest(&tiles))),
            });
        }
        let tilejson: serde_json::Value =
            serde_json::from_slice(&self.get(&format!("{PREFIX}/tiles.json"))).unwrap();
        let s3_tiles = self.s3_tiles();
        let s3 = expected_hash(&s3_tiles);
        recorded.push(Recorded {
            name: "s3",
            stored: tilejson["agg_tiles_hash"].as_str().map(str::to_string),
            computed: s3.clone(),
            independent: s3,
            digest: Some((
                tilejson["oar_tiles_digest"].as_str().map(str::to_string),
                expected_digest(&s3_tiles),
            )),
        });
        assert_eq!(
            read_metadata(&outputs.mbtiles).get("agg_tiles_hash"),
            recorded[0].stored.as_ref(),
            "the reader shows the MBTiles metadata row"
        );
        recorded
    }
}

/// One output's hashes: recorded in the output, computed by `agg_tiles_hash` through its reader,
/// and computed by this test from the tiles.
#[derive(Debug)]
struct Recorded {
    name: &'static str,
    stored: Option<String>,
    computed: String,
    independent: String,
    /// A tree's or prefix's digest: named, and of the tiles it holds.
    digest: Option<(Option<String>, String)>,
}

/// Asserts every output records the same, right hash (a tree or prefix that a run changed
/// without reading every tile names its right digest instead), and returns it.
#[track_caller]
fn assert_one_right_hash(recorded: &[Recorded], what: &str) -> String {
    let hash = recorded[0].independent.clone();
    for output in recorded {
        if let Some((named, digest)) = &output.digest {
            assert_eq!(
                named.as_ref(),
                Some(digest),
                "{what}: {} names another digest than its tiles'",
                output.name
            );
        }
        let stored = match (&output.stored, &output.digest) {
            (None, Some(_)) => Some(hash.clone()),
            (stored, _) => stored.clone(),
        };
        let output = &Recorded {
            stored,
            digest: None,
            name: output.name,
            computed: output.computed.clone(),
            independent: output.independent.clone(),
        };
        assert_eq!(
            (
                output.stored.as_deref(),
                output.computed.as_str(),
                output.independent.as_str()
            ),
            (Some(hash.as_str()), hash.as_str(), hash.as_str()),
            "{what}: {} records, computes or holds another hash than the MBTiles file's tiles \
             ({recorded:#?})",
            output.name
        );
    }
    assert_eq!(hash.len(), 32);
    assert_eq!(
        hash,
        hash.to_uppercase(),
        "upper-case hex, as martin writes it"
    );
    hash
}

/// Runs martin's `mbtiles validate` on `file`.
fn mbtiles_validate(file: &Path) -> std::process::Output {
    let cli = match std::env::var("OAR_TILES_TEST_MBTILES_CLI") {
        Ok(cli) if !cli.is_empty() => cli,
        _ => panic!(
            "OAR_TILES_TEST_MBTILES_CLI is not set: run scripts/test.sh, which installs martin's \
             mbtiles CLI"
        ),
    };
    Command::new(cli)
        .args(["validate", "--agg-hash", "verify"])
        .arg(file)
        .output()
        .expect("run mbtiles validate")
}

#[track_caller]
fn assert_validates(file: &Path, what: &str) {
    let output = mbtiles_validate(file);
    assert!(
        output.status.success(),
        "{what}: mbtiles validate refused {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "needs PostGIS, the S3 test server, the Python pmtiles reader and martin's mbtiles CLI: run scripts/test.sh"]
fn every_kind_records_one_hash_of_the_same_tiles_and_a_reseed_keeps_it_current() {
    let mut setup = Setup::new("agghash");
    let outputs = setup.outputs();
    setup.seed_all(&outputs, "a", &[]);
    let first = assert_one_right_hash(&setup.hashes(&outputs), "after a full seed");
    assert_validates(&outputs.mbtiles, "after a full seed");

    // Rows move, vanish and change; each output is reseeded from its watermark.
    setup.schema.execute(
        "DELETE FROM {schema}.sites WHERE site_id % 5 = 0;
         UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(2.35, 48.85), 4326) WHERE site_id = 1;
         UPDATE {schema}.sites SET label = 'Renamed' WHERE site_id = 2;",
    );
    // A machine that has never seen the S3 prefix fetches what it does not hold.
    setup.seed_all(&outputs, "b", &["--dirty"]);
    let reseeded = assert_one_right_hash(&setup.hashes(&outputs), "after a reseed");
    assert_ne!(reseeded, first, "the tiles changed, and so did the hash");
    assert_validates(&outputs.mbtiles, "after a reseed");

    let fresh = setup.path("fresh.mbtiles");
    setup.seed("a", fresh.to_str().unwrap(), &[]);
    assert_eq!(
        read_metadata(&fresh).get("agg_tiles_hash"),
        Some(&reseeded),
        "a reseed records what a full seed of the same rows records"
    );

    // The first machine again, its tile cache now stale for some tiles; then a run that changes
    // nothing.
    setup
        .schema
        .execute("UPDATE {schema}.sites SET label = 'Again' WHERE site_id = 3;");
    setup.seed_all(&outputs, "a", &["--dirty"]);
    let again = assert_one_right_hash(&setup.hashes(&outputs), "after a second reseed");
    assert_ne!(again, reseeded);
    setup.seed_all(&outputs, "a", &["--dirty"]);
    assert_eq!(
        assert_one_right_hash(
            &setup.hashes(&outputs),
            "after a reseed that changed nothing"
        ),
        again
    );
    assert_validates(&outputs.mbtiles, "after reseeds");
}

#[test]
#[ignore = "needs PostGIS, the S3 test server and martin's mbtiles CLI: run scripts/test.sh"]
fn martins_mbtiles_validate_accepts_our_files_and_refuses_one_with_a_changed_tile() {
    let setup = Setup::new("aggcheck");
    let file = setup.path("out.mbtiles");
    setup.seed("a", file.to_str().unwrap(), &[]);
    assert_validates(&file, "a seeded file");

    let corrupted = setup.path("corrupted.mbtiles");
    std::fs::copy(&file, &corrupted).unwrap();
    let connection = rusqlite::Connection::open(&corrupted).unwrap();
    let changed = connection
        .execute(
            "UPDATE tiles SET tile_data = tile_data || x'00'
             WHERE rowid = (SELECT max(rowid) FROM tiles)",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(connection);
    let output = mbtiles_validate(&corrupted);
    assert!(
        !output.status.success(),
        "mbtiles validate accepted a file whose tile changed after its hash was recorded:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "needs PostGIS, the S3 test server, the Python pmtiles reader and martin's mbtiles CLI: run scripts/test.sh"]
fn sharded_runs_finalize_into_the_hash_of_a_single_run() {
    let setup = Setup::new("aggshards");
    let outputs = setup.outputs();
    let single = setup.path("single.mbtiles");
    setup.seed("a", single.to_str().unwrap(), &[]);
    let expected = read_metadata(&single)["agg_tiles_hash"].clone();
    let tree = format!("dir:{}", outputs.tree.display());
    let mbtiles = outputs.mbtiles.to_str().unwrap();
    let pmtiles = outputs.pmtiles.to_str().unwrap();
    for output in [mbtiles, tree.as_str(), outputs.s3.as_str(), pmtiles] {
        // Each shard on a machine of its own, as pods are; finalize on a third.
        for index in 0..2 {
            let machine = format!("shard{index}");
            let index = index.to_string();
            let env = [
                ("JOB_COMPLETION_INDEX", index.as_str()),
                ("OAR_TILES_SHARDS", "2"),
            ];
            let args = ["seed", "--zoom", ZOOMS, "--output", output];
            setup.run_env(&machine, &args, &env).assert_success();
        }
        setup
            .run("finalizer", &["finalize", "--output", output])
            .assert_success();
    }
    let hash = assert_one_right_hash(&setup.hashes(&outputs), "after finalize");
    assert_eq!(hash, expected, "the sharded outputs hash as the single run");
    assert_validates(&outputs.mbtiles, "a merged file");
}
