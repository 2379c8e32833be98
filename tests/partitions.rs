//! Partitioned tilesets (`partition_by`): one pyramid per value of a column or of an array column,
//! each holding exactly what a whole tileset filtered to that value holds, listed in an index,
//! with hostile values kept inside the output, and reseeds across partitions equal to full seeds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::pg::TestSchema;
use crate::common::run::{
    assert_same_tiles, oar_tiles, oar_tiles_with, read_mbtiles_raw, read_tree, Run, Tiles,
};
use crate::common::s3::S3Server;

/// Countries include values that would leave the output as paths, and NULL and '' (no partition).
const MAKERS: &str = "
    CREATE TABLE {schema}.makers (id bigint PRIMARY KEY, country text, contributors int[],
                                  name text, pt geometry(Point, 4326) NOT NULL);
    CREATE INDEX ON {schema}.makers USING gist (pt);
    INSERT INTO {schema}.makers
    SELECT g,
           (ARRAY['BD', 'CN', 'VN', 'PK', '../x', 'a/b', NULL, ''])[1 + (g * 7919) % 8],
           ARRAY(SELECT c FROM unnest(ARRAY[1, 2, 3, 12]) c WHERE (g >> (c % 4)) & 1 = 1),
           'maker ' || g,
           ST_SetSRID(ST_MakePoint(80 + ((g * 37) % 400) / 10.0, 10 + ((g * 53) % 300) / 10.0), 4326)
    FROM generate_series(1, 600) g;";

const ZOOMS: &str = "0-7";

struct World {
    schema: TestSchema,
    dir: tempfile::TempDir,
    changes: String,
}

impl World {
    fn new(label: &str) -> World {
        let mut schema = TestSchema::create(label);
        schema.execute(MAKERS);
        let changes = schema.companion("cdc");
        World {
            schema,
            dir: tempfile::tempdir().unwrap(),
            changes,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config of one tileset over `makers`, clustered up to zoom 3, with `extra` tileset keys
    /// (`partition_by`, `output`) and an optional layer filter.
    fn config(&self, name: &str, extra: &str, filter: Option<&str>) -> PathBuf {
        let filter = filter
            .map(|f| format!("filter = {}\n", toml_string(f)))
            .unwrap_or_default();
        let text = format!(
            "[database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\npool_size = 2\n\
             [changes]\nschema = \"{}\"\n\
             [[tileset]]\nname = \"makers\"\n{extra}\n\
             [[tileset.layer]]\nname = \"makers\"\ntable = \"{}.makers\"\ngeometry_column = \"pt\"\n\
             attributes = [\"name\", \"country\", \"contributors\"]\ncluster_maxzoom = 3\n{filter}",
            self.changes, self.schema.name
        );
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A config partitioning the tileset by `column` into `output`, written to `name`.
    fn partitioned(&self, name: &str, column: &str, output: &str) -> PathBuf {
        let extra = format!(
            "partition_by = \"{column}\"\noutput = {}",
            toml_string(output)
        );
        self.config(name, &extra, None)
    }

    fn run(&self, config: &Path, args: &[&str]) -> Run {
        let mut full = vec![args[0], "--config", config.to_str().unwrap()];
        full.extend_from_slice(&args[1..]);
        oar_tiles(Some(&self.schema.url), &full)
    }

    /// The tiles of a whole (unpartitioned) tileset whose layer keeps only `filter`'s rows.
    fn filtered_seed(&mut self, filter: &str) -> Tiles {
        let config = self.config("reference.toml", "", Some(filter));
        let output = self.path("reference.mbtiles");
        let _ = std::fs::remove_file(&output);
        let output_arg = output.to_str().unwrap().to_string();
        self.run(&config, &["seed", "--zoom", ZOOMS, "--output", &output_arg])
            .assert_success();
        read_mbtiles_raw(&output)
    }

    /// `(value, rows)` of the column over the table now: what the index must list.
    fn values(&mut self, sql_value: &str) -> BTreeMap<String, i64> {
        let sql = format!(
            "SELECT v, count(*) FROM (SELECT {sql_value} AS v FROM \"{}\".makers) s
             WHERE v IS NOT NULL AND v <> '' GROUP BY v",
            self.schema.name
        );
        self.schema
            .client()
            .query(&sql, &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// SQL literal for a value in a reference filter.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn read_index(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `value -> (path, features)` of an index.
fn indexed(index: &Value) -> BTreeMap<String, (String, i64)> {
    index["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["value"].as_str().unwrap().to_string(),
                (
                    p["path"].as_str().unwrap().to_string(),
                    p["features"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Every file under `root`, relative to it.
fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn each_partition_holds_exactly_its_rows_and_hostile_values_stay_inside_the_output() {
    let mut world = World::new("partitions");
    // By country, into a tree: one subdirectory per value.
    let out = world.path("out");
    std::fs::create_dir(&out).unwrap();
    let tree = out.join("tiles");
    let by_country = world.config(
        "by-country.toml",
        &format!(
            "partition_by = \"country\"\noutput = {}\ntiles_url = \"https://cdn.example.org/makers/{{z}}/{{x}}/{{y}}.pbf\"",
            toml_string(&format!("dir:{}", tree.display()))
        ),
        None,
    );
    let seeded = world.run(&by_country, &["seed", "--zoom", ZOOMS]);
    seeded.assert_success();
    assert!(
        seeded.stdout.contains("tileset `makers`: 6 partition(s)"),
        "the summary totals the partitions: {}",
        seeded.stdout
    );
    let countries = world.values("country");
    let index = read_index(&tree.join("partitions.json"));
    assert_eq!(index["partition_by"], "country");
    let listed = indexed(&index);
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        countries.keys().collect::<Vec<_>>(),
        "the index lists exactly the values present (not NULL, not '')"
    );
    for (value, rows) in &countries {
        let (path, features) = &listed[value];
        assert_eq!(features, rows, "{value}: features");
        let expected = world.filtered_seed(&format!("country = {}", literal(value)));
        assert!(!expected.is_empty(), "{value} has tiles");
        let partition = tree.join(path);
        assert_same_tiles(&expected, &read_tree(&partition, "pbf"), value);
        let entry = index["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["value"] == value.as_str())
            .unwrap();
        assert_eq!(entry["tiles"].as_u64().unwrap(), expected.len() as u64);
        // Its TileJSON names the value and its tiles under the value's own prefix.
        let tilejson = read_index(&partition.join("tiles.json"));
        assert_eq!(tilejson["name"], format!("makers[{value}]"));
        assert_eq!(
            tilejson["tiles"][0],
            format!("https://cdn.example.org/makers/{path}/{{z}}/{{x}}/{{y}}.pbf")
        );
    }
    // `../x` and `a/b` got escaped subdirectories; nothing was written beside the tree.
    assert!(tree.join("~2E~2E~2Fx/tiles.json").is_file());
    assert!(tree.join("a~2Fb/tiles.json").is_file());
    assert!(files_under(&out).iter().all(|f| f.starts_with("tiles/")));
    assert_eq!(
        std::fs::read_dir(world.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !name.ends_with(".toml") && !name.starts_with("reference"))
            .collect::<Vec<_>>(),
        ["out"]
    );

    // By contributor, an array: a row is in the pyramid of each of its contributors.
    let file = world.path("makers.mbtiles");
    let by_contributor = world.partitioned(
        "by-contributor.toml",
        "contributors",
        file.to_str().unwrap(),
    );
    world
        .run(&by_contributor, &["changes", "install"])
        .assert_success();
    world
        .run(&by_contributor, &["seed", "--zoom", ZOOMS])
        .assert_success();
    let mut contributors = BTreeMap::new();
    // Seeded in full, then reseeded after arrays changed (change capture logs the elements).
    for round in 0..2 {
        if round == 1 {
            world.schema.execute(
                "UPDATE {schema}.makers SET contributors = '{12}' WHERE id % 10 = 1;
                 UPDATE {schema}.makers SET contributors = contributors || 5 WHERE id % 10 = 2;",
            );
            world
                .run(&by_contributor, &["seed", "--zoom", ZOOMS, "--dirty"])
                .assert_success();
        }
        contributors = world.values("unnest(contributors)::text");
        let listed = indexed(&read_index(&world.path("makers.partitions.json")));
        assert_eq!(
            listed.keys().collect::<Vec<_>>(),
            contributors.keys().collect::<Vec<_>>()
        );
        for (value, rows) in &contributors {
            assert_eq!(listed[value].1, *rows, "contributor {value}: features");
            let expected = world.filtered_seed(&format!("{value} = ANY(contributors)"));
            let partition = world.path(&format!("makers.{value}.mbtiles"));
            assert_same_tiles(&expected, &read_mbtiles_raw(&partition), value);
        }
    }
    assert!(contributors.contains_key("5"), "a new contributor");

    // `--partition` seeds only the values named, and keeps the others in the index.
    std::fs::remove_file(world.path("makers.12.mbtiles")).unwrap();
    std::fs::remove_file(world.path("makers.1.mbtiles")).unwrap();
    world
        .run(
            &by_contributor,
            &["seed", "--zoom", ZOOMS, "--partition", "12"],
        )
        .assert_success();
    assert!(world.path("makers.12.mbtiles").is_file());
    assert!(!world.path("makers.1.mbtiles").exists());
    assert_eq!(
        indexed(&read_index(&world.path("makers.partitions.json"))).len(),
        contributors.len()
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_reseed_that_moves_rows_between_partitions_empties_one_and_creates_another_equals_a_full_seed()
{
    let mut world = World::new("partitions_reseed");
    let file = world.path("live.mbtiles");
    let live = world.partitioned("live.toml", "country", file.to_str().unwrap());
    world.run(&live, &["changes", "install"]).assert_success();
    world
        .run(&live, &["seed", "--zoom", ZOOMS])
        .assert_success();
    assert!(world.path("live.VN.mbtiles").is_file());

    // BD rows move to CN (some also move on the map), every VN row goes, KH appears, and PK's
    // rows are left alone.
    world.schema.execute(
        "UPDATE {schema}.makers SET country = 'CN' WHERE country = 'BD' AND id % 3 = 0;
         UPDATE {schema}.makers SET pt = ST_Translate(pt, 1.5, -0.5) WHERE country = 'CN' AND id % 5 = 0;
         DELETE FROM {schema}.makers WHERE country = 'VN';
         INSERT INTO {schema}.makers
         SELECT 10000 + g, 'KH', '{7}', 'new ' || g, ST_SetSRID(ST_MakePoint(104 + g / 10.0, 12), 4326)
         FROM generate_series(1, 20) g;",
    );
    let summary = world.path("summary.json");
    let changed = world.path("changed.txt");
    // `seed --dirty` with its summary (and extra arguments), returning the summary.
    let reseed = |extra: &[&str]| -> Value {
        let mut args = vec!["seed", "--zoom", ZOOMS, "--dirty"];
        args.extend(["--summary-json", summary.to_str().unwrap()]);
        args.extend_from_slice(extra);
        world.run(&live, &args).assert_success();
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap()
    };
    let runs = reseed(&["--changed-list", changed.to_str().unwrap()]);
    // The changed-tile list names each tile under its partition's path.
    let listed = std::fs::read_to_string(&changed).unwrap();
    let partitions_listed: std::collections::BTreeSet<&str> = listed
        .lines()
        .map(|line| {
            let (partition, tile) = line.split_once('/').unwrap();
            assert_eq!(tile.split('/').count(), 3, "{line}");
            partition
        })
        .collect();
    assert!(
        ["BD", "CN", "VN", "KH"]
            .iter()
            .all(|p| partitions_listed.contains(p)),
        "{partitions_listed:?}"
    );
    assert!(!partitions_listed.contains("PK"), "{partitions_listed:?}");

    // The same data seeded in full, into other files.
    let fresh = world.path("fresh.mbtiles");
    let full = world.partitioned("full.toml", "country", fresh.to_str().unwrap());
    world
        .run(&full, &["seed", "--zoom", ZOOMS])
        .assert_success();
    let expected = indexed(&read_index(&world.path("fresh.partitions.json")));
    let reseeded = indexed(&read_index(&world.path("live.partitions.json")));
    assert_eq!(reseeded, expected, "the index after the reseed");
    assert!(expected.contains_key("KH") && !expected.contains_key("VN"));
    for (path, _) in expected.values() {
        assert_same_tiles(
            &read_mbtiles_raw(&world.path(&format!("fresh.{path}.mbtiles"))),
            &read_mbtiles_raw(&world.path(&format!("live.{path}.mbtiles"))),
            path,
        );
    }
    assert!(
        !world.path("live.VN.mbtiles").exists(),
        "the emptied partition is removed"
    );

    // Only partitions whose rows changed were opened: PK's rows were never touched.
    let summary = |name: &str| {
        runs.as_array()
            .unwrap()
            .iter()
            .find(|s| s["tileset"] == name)
            .cloned()
    };
    assert!(
        summary("makers[PK]").is_none(),
        "an untouched partition is not opened: {runs}"
    );
    let queried = |name: &str| {
        summary(name).unwrap_or_else(|| panic!("no summary for {name}: {runs}"))["tiles_queried"]
            .as_u64()
            .unwrap()
    };
    assert!(queried("makers[BD]") > 0 && queried("makers[CN]") > 0);

    // Nothing changed since: a second reseed renders nothing at all.
    for run in reseed(&[]).as_array().unwrap() {
        assert_eq!(run["tiles_queried"], 0, "{run}");
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn partitions_on_s3_are_prefixes_holding_the_same_tiles_as_a_tree_with_the_index_beside_them() {
    let world = World::new("partitions_s3");
    let server = S3Server::start("tiles");
    let tree = world.path("tree");
    std::fs::create_dir(&tree).unwrap();
    let config = world.config(
        "s3.toml",
        "partition_by = \"country\"\noutput = \"s3://tiles/makers\"",
        None,
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&server.config_table(""));
    std::fs::write(&config, text).unwrap();
    let config_arg = config.to_str().unwrap();
    let env = server.env();
    for output in [None, Some(format!("dir:{}", tree.display()))] {
        let mut args = vec!["seed", "--config", config_arg, "--zoom", ZOOMS];
        if let Some(output) = &output {
            args.extend(["--output", output.as_str()]);
        }
        oar_tiles_with(Some(&world.schema.url), &args, &env).assert_success();
    }
    let objects = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = server.client();
            let mut objects = BTreeMap::new();
            let mut pages = client
                .list_objects_v2()
                .bucket("tiles")
                .prefix("makers/")
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for object in page.unwrap().contents() {
                    let key = object.key().unwrap().to_string();
                    let body = client
                        .get_object()
                        .bucket("tiles")
                        .key(&key)
                        .send()
                        .await
                        .unwrap();
                    let bytes = body.body.collect().await.unwrap().into_bytes().to_vec();
                    objects.insert(key, bytes);
                }
            }
            objects
        });
    let index: Value = serde_json::from_slice(&objects["makers/partitions.json"]).unwrap();
    assert_eq!(
        indexed(&index),
        indexed(&read_index(&tree.join("partitions.json")))
    );
    assert!(objects.contains_key("makers/~2E~2E~2Fx/tiles.json"));
    // Every tile object is the tree's file of the same path, and every tree tile has its object.
    let tiles: BTreeMap<String, Vec<u8>> = objects
        .iter()
        .filter(|(key, _)| key.ends_with(".pbf"))
        .map(|(key, bytes)| (key["makers/".len()..].to_string(), bytes.clone()))
        .collect();
    let files: BTreeMap<String, Vec<u8>> = files_under(&tree)
        .into_iter()
        .filter(|path| path.ends_with(".pbf"))
        .map(|path| {
            let bytes = std::fs::read(tree.join(&path)).unwrap();
            (path, bytes)
        })
        .collect();
    assert!(files.len() > 100, "{} tiles", files.len());
    assert!(tiles == files, "S3 and tree partitions differ");
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn validate_checks_every_partition_through_its_index_and_against_the_database() {
    let world = World::new("partvalidate");
    let output = world.path("makers.mbtiles");
    let output_arg = output.to_str().unwrap().to_string();
    let config = world.partitioned("partitioned.toml", "country", &output_arg);
    world
        .run(&config, &["seed", "--zoom", ZOOMS])
        .assert_success();
    let index: Value =
        serde_json::from_slice(&std::fs::read(world.path("makers.partitions.json")).unwrap())
            .unwrap();
    let partitions = index["partitions"].as_array().unwrap().len();
    assert!(partitions >= 4, "{index}");
    let validate = |extra: &[&str]| {
        let mut args = vec!["validate", "--json", output_arg.as_str()];
        args.extend_from_slice(extra);
        let run = world.run(&config, &args);
        let report: Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{e}\n{}\n{}", run.stdout, run.stderr));
        (run, report)
    };
    let (run, report) = validate(&["--against-db", "--all"]);
    assert_eq!(run.code, 0, "{report:#}\n{}", run.stderr);
    // Every partition the index lists, and the index itself.
    assert_eq!(
        report["outputs"].as_array().unwrap().len(),
        partitions + 1,
        "{report:#}"
    );

    // One partition loses a tile behind the index's back.
    let entry = index["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["value"] == "BD")
        .unwrap();
    let file = world.path(&format!(
        "makers.{}.mbtiles",
        entry["path"].as_str().unwrap()
    ));
    let db = rusqlite::Connection::open(&file).unwrap();
    let (z, x, row): (u32, u32, u32) = db
        .query_row(
            "SELECT zoom_level, tile_column, tile_row FROM tiles ORDER BY zoom_level DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    db.execute(
        "DELETE FROM tiles WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3",
        [z, x, row],
    )
    .unwrap();
    drop(db);
    let (run, report) = validate(&["--against-db", "--all"]);
    assert_eq!(run.code, 1, "{report:#}");
    let problems = crate::common::run::problems(&report);
    let tile = format!("{z}/{x}/{}", (1u32 << z) - 1 - row);
    assert!(
        problems
            .iter()
            .any(|(t, _, m)| t == &tile && m.contains("missing")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|(_, _, m)| m.contains("partition `BD`") && m.contains("the index says")),
        "{problems:#?}"
    );
}
