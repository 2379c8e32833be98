//! Sharded runs into one tree or S3 prefix: shards as separate processes (the index in the
//! environment, as Kubernetes gives it), `finalize` refusing while a shard is unfinished, and the
//! finalized output equal to a single run, stale tiles swept, and ready for `seed --dirty` even when
//! the data changed while the shards ran. Shards into a prefix of each remote store (S3, Azure) are
//! in `remote_stores.rs`.

use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::run::{
    assert_same_tiles, oar_tiles, oar_tiles_command, oar_tiles_with, read_mbtiles_raw, read_tree,
    send_signal, single_layer_config, Run,
};
use crate::common::s3::{tiles_of, S3Server};

/// Runs shard `index` of `count` as a Kubernetes Indexed Job's pod would: the same command, the
/// index and count in the environment.
fn run_shard(fixture: &Fixture, output: &str, index: u32, count: u32, env: &[(&str, &str)]) {
    let (index, count) = (index.to_string(), count.to_string());
    let mut env = env.to_vec();
    env.push(("JOB_COMPLETION_INDEX", &index));
    env.push(("OAR_TILES_SHARDS", &count));
    let args = fixture.seed_args(output, "0-12", &[]);
    oar_tiles_with(Some(&fixture.schema.url), &args, &env).assert_success();
}

fn finalize(fixture: &Fixture, output: &str, env: &[(&str, &str)]) -> Run {
    let config = fixture.config.to_str().unwrap();
    let args = ["finalize", "--config", config, "--output", output];
    oar_tiles_with(Some(&fixture.schema.url), &args, env)
}

/// A full single run of the fixture's data at z0-12 into a new MBTiles file.
fn single_run(fixture: &Fixture, name: &str, env: &[(&str, &str)]) -> crate::common::run::Tiles {
    let path = fixture.path(name);
    let args = fixture.seed_args(path.to_str().unwrap(), "0-12", &[]);
    oar_tiles_with(Some(&fixture.schema.url), &args, env).assert_success();
    read_mbtiles_raw(&path)
}

/// Moves, adds and deletes rows, so that some tiles change, appear and empty.
fn change_data(fixture: &mut Fixture, round: u32) {
    fixture.schema.execute(&format!(
        "UPDATE {{schema}}.sites SET pt = ST_SetSRID(ST_MakePoint(-70.5 + {round}, -33.4), 4326)
             WHERE site_id = {};
         INSERT INTO {{schema}}.sites (site_id, label, kind, score, pt)
             VALUES ({}, 'new', 'mill', 3, ST_SetSRID(ST_MakePoint(151.2, -33.9 + {round}), 4326));
         DELETE FROM {{schema}}.sites WHERE site_id % 17 = {round};",
        7 + round,
        9000 + round
    ));
}

fn changes_config(schema: &mut crate::common::pg::TestSchema, extra: &str) -> String {
    let changes = schema.companion("cdc");
    format!(
        "{extra}\n[changes]\nschema = \"{changes}\"\n{}",
        single_layer_config(&schema.name, "sites", "", "")
    )
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS (scripts/test.sh)"]
fn tree_shards_finalize_into_exactly_the_single_run_and_take_a_dirty_reseed() {
    let points = hub_with_scatter(1_200, 9, 7, [2.20, 48.70, 2.60, 49.00]);
    let mut fixture = Fixture::new("shard_tree", &points, "oar.toml", |schema| {
        changes_config(schema, "")
    });
    let config = fixture.config.to_str().unwrap();
    let url = fixture.schema.url.clone();
    oar_tiles(Some(&url), &["changes", "install", "--config", config]).assert_success();
    let tree = fixture.path("tree");
    let output = format!("dir:{}", tree.display());
    // An earlier single run leaves tiles that the data no longer has once it changes.
    oar_tiles(Some(&url), &fixture.seed_args(&output, "0-12", &[])).assert_success();
    let earlier = read_tree(&tree, "pbf");
    change_data(&mut fixture, 1);

    run_shard(&fixture, &output, 0, 3, &[]);
    run_shard(&fixture, &output, 1, 3, &[]);
    let early = finalize(&fixture, &output, &[]);
    assert_eq!(early.code, 2, "{}", early.stderr);
    assert!(
        early.stderr.contains("shard(s) 2/3 have not finished"),
        "{}",
        early.stderr
    );
    run_shard(&fixture, &output, 2, 3, &[]);
    let done = finalize(&fixture, &output, &[]);
    done.assert_success();
    let expected = single_run(&fixture, "single.mbtiles", &[]);
    let stale = earlier.keys().filter(|k| !expected.contains_key(k)).count();
    assert!(stale > 0, "the change must empty some tiles");
    assert!(
        done.stdout.contains(&format!(
            "3 shard(s), {} tiles, {stale} stale",
            expected.len()
        )),
        "{}",
        done.stdout
    );
    assert_same_tiles(&expected, &read_tree(&tree, "pbf"), "the finalized tree");
    for document in ["tiles.json", "metadata.json", ".oar-tiles-state.json"] {
        assert!(tree.join(document).is_file(), "{document} is written");
    }
    assert!(
        !tree.join(".oar-tiles-shards").exists(),
        "the plan and parts are removed"
    );
    let again = finalize(&fixture, &output, &[]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("no shard plan"), "{}", again.stderr);

    // A second sharded run into the finalized tree plans afresh, and data changes while it runs:
    // shard 0 renders before the change, shards 1 and 2 after it. The finalized watermark sees
    // only what every shard saw, so `seed --dirty` re-renders what shard 0 missed.
    run_shard(&fixture, &output, 0, 3, &[]);
    change_data(&mut fixture, 2);
    run_shard(&fixture, &output, 1, 3, &[]);
    run_shard(&fixture, &output, 2, 3, &[]);
    finalize(&fixture, &output, &[]).assert_success();
    oar_tiles(
        Some(&url),
        &fixture.seed_args(&output, "0-12", &["--dirty"]),
    )
    .assert_success();
    assert_same_tiles(
        &single_run(&fixture, "fresh.mbtiles", &[]),
        &read_tree(&tree, "pbf"),
        "the finalized tree after --dirty",
    );
}

/// Every object under `bucket/prefix` (tiles and documents) with its body, by key below the prefix.
#[test]
#[ignore = "needs PostgreSQL with PostGIS (scripts/test.sh)"]
fn a_cdn_is_purged_of_every_tile_a_sharded_run_changed_the_swept_ones_included() {
    let cache = crate::common::recorder::Recorder::start("purged", 0);
    let points = hub_with_scatter(1_200, 9, 7, [2.20, 48.70, 2.60, 49.00]);
    let mut fixture = Fixture::new("shard_purge", &points, "oar.toml", |schema| {
        let config = changes_config(schema, "");
        let cdn = format!(
            "\n[[tileset.cdn]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/t/{{path}}\"\n",
            cache.port
        );
        config + &cdn
    });
    let config = fixture.config.to_str().unwrap();
    let url = fixture.schema.url.clone();
    oar_tiles(Some(&url), &["changes", "install", "--config", config]).assert_success();
    let tree = fixture.path("tree");
    let output = format!("dir:{}", tree.display());
    oar_tiles(Some(&url), &fixture.seed_args(&output, "0-12", &[])).assert_success();
    let earlier = read_tree(&tree, "pbf");
    change_data(&mut fixture, 1);
    cache.requests.lock().unwrap().clear();

    for index in 0..3 {
        run_shard(&fixture, &output, index, 3, &[]);
    }
    let done = finalize(&fixture, &output, &[]);
    done.assert_success();
    let now = read_tree(&tree, "pbf");
    let purged = cache.paths_under("/t/");
    let swept: Vec<_> = earlier.keys().filter(|k| !now.contains_key(k)).collect();
    assert!(!swept.is_empty(), "the change must empty some tiles");
    for key in earlier.keys().chain(now.keys()) {
        if earlier.get(key) != now.get(key) {
            let (z, x, y) = key;
            let path = format!("{z}/{x}/{y}.pbf");
            assert!(
                purged.contains(&path),
                "{path} changed and was never purged"
            );
        }
    }
    assert!(
        done.stdout.contains("cdn `http`"),
        "finalize names its purge: {}",
        done.stdout
    );
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS (scripts/test.sh)"]
fn mbtiles_shards_finalize_by_merging_their_part_files() {
    let points = hub_with_scatter(600, 5, 5, [13.30, 52.40, 13.50, 52.60]);
    let fixture = Fixture::new("shard_mbtiles", &points, "oar.toml", |schema| {
        single_layer_config(&schema.name, "sites", "", "")
    });
    let out = fixture.path("merged.mbtiles");
    let output = out.to_str().unwrap();
    run_shard(&fixture, output, 1, 2, &[]);
    let early = finalize(&fixture, output, &[]);
    assert_eq!(early.code, 2, "{}", early.stderr);
    assert!(
        early.stderr.contains("shard(s) 0/2 have not finished"),
        "{}",
        early.stderr
    );
    run_shard(&fixture, output, 0, 2, &[]);
    finalize(&fixture, output, &[]).assert_success();
    assert_same_tiles(
        &single_run(&fixture, "single.mbtiles", &[]),
        &read_mbtiles_raw(&out),
        "the finalized MBTiles file",
    );
    let mut left: Vec<String> = std::fs::read_dir(fixture.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("merged"))
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["merged.mbtiles"],
        "the part files and the plan are removed"
    );
}

/// Tiles a tree shard has durably journaled so far (0 before its journal exists).
fn journaled(journal: &std::path::Path) -> u64 {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    rusqlite::Connection::open_with_flags(journal, flags)
        .and_then(|c| c.query_row("SELECT count(*) FROM done", [], |r| r.get(0)))
        .unwrap_or(0)
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS (scripts/test.sh)"]
fn a_killed_tree_shard_resumes_from_its_own_journal() {
    use crate::common::run::{oar_tiles_command, send_signal};
    use std::time::{Duration, Instant};

    let fixture = crate::common::slow::slow_fixture("shard_tree_kill");
    let url = fixture.schema.url.clone();
    let tree = fixture.path("tree");
    let output = format!("dir:{}", tree.display());
    run_shard(&fixture, &output, 0, 2, &[]);
    let args = fixture.seed_args(&output, "0-12", &["--shard", "1/2"]);
    let mut child = oar_tiles_command(Some(&url), &args, &[]).spawn().unwrap();
    let journal = tree.join(".oar-tiles-journal.part-1-of-2.sqlite");
    let started = Instant::now();
    while journaled(&journal) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "nothing journaled"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the shard ended too soon"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    send_signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let early = finalize(&fixture, &output, &[]);
    assert_eq!(early.code, 2, "{}", early.stderr);
    assert!(
        early.stderr.contains("1/2 have not finished"),
        "{}",
        early.stderr
    );
    // The engine starts the same index again: it resumes from its own journal, not shard 0's.
    let resumed = oar_tiles(Some(&url), &args);
    resumed.assert_success();
    assert!(resumed.stderr.contains("resuming:"), "{}", resumed.stderr);
    assert!(!journal.exists(), "a finished shard removes its journal");
    finalize(&fixture, &output, &[]).assert_success();
    assert_same_tiles(
        &single_run(&fixture, "single.mbtiles", &[]),
        &read_tree(&tree, "pbf"),
        "2 tree shards, one killed and resumed",
    );
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS (scripts/test.sh)"]
fn one_and_four_tree_shards_finalize_into_exactly_the_single_run() {
    let points = hub_with_scatter(800, 11, 6, [-58.6, -34.8, -58.3, -34.5]);
    let fixture = Fixture::new("shard_tree_counts", &points, "oar.toml", |schema| {
        single_layer_config(&schema.name, "sites", "", "")
    });
    let expected = single_run(&fixture, "single.mbtiles", &[]);
    for count in [1, 4] {
        let tree = fixture.path(&format!("tree-{count}"));
        let output = format!("dir:{}", tree.display());
        for index in 0..count {
            run_shard(&fixture, &output, index, count, &[]);
        }
        finalize(&fixture, &output, &[]).assert_success();
        let what = format!("{count} tree shard(s)");
        assert_same_tiles(&expected, &read_tree(&tree, "pbf"), &what);
    }
}

/// Runs `finalize` and kills it with SIGKILL after a random moment, up to three times, then once
/// more to the end; returns what was killed, for failure messages.
fn finalize_through_kills(
    fixture: &Fixture,
    output: &str,
    env: &[(&str, &str)],
    rng: &mut crate::common::pg::Rng,
) -> String {
    let config = fixture.config.to_str().unwrap();
    let args = ["finalize", "--config", config, "--output", output];
    let mut story = String::new();
    for _ in 0..3 {
        let moment = std::time::Duration::from_secs_f64(rng.range(0.0, 0.2));
        let child = oar_tiles_command(Some(&fixture.schema.url), &args, env)
            .spawn()
            .unwrap();
        std::thread::sleep(moment);
        send_signal(&child, libc::SIGKILL);
        let ended = child.wait_with_output().unwrap();
        story.push_str(&format!("killed after {moment:?}: {:?}; ", ended.status));
        if ended.status.success() {
            return story;
        }
    }
    let last = finalize(fixture, output, env);
    story.push_str(&format!("then exit {}", last.code));
    // A finalize killed after it finished its work leaves nothing for the next one to do.
    assert!(
        last.code == 0 || last.stderr.contains("no shard plan"),
        "{story}\n{}",
        last.stderr
    );
    story
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS (scripts/test.sh)"]
fn finalize_and_an_s3_shard_killed_at_random_moments_end_equal_to_a_single_run() {
    let server = S3Server::start("tiles");
    let points = hub_with_scatter(1_000, 11, 9, [-58.6, -34.8, -58.2, -34.4]);
    let fixture = Fixture::new("shard_faults", &points, "oar.toml", |schema| {
        changes_config(schema, &server.config_table(""))
    });
    let env = server.env();
    let config = fixture.config.to_str().unwrap();
    oar_tiles_with(
        Some(&fixture.schema.url),
        &["changes", "install", "--config", config],
        &env,
    )
    .assert_success();
    let expected = single_run(&fixture, "single.mbtiles", &env);
    let seed_number = crate::common::env::fault_seed();
    let mut rng = crate::common::pg::Rng::new(seed_number);

    let tree = fixture.path("tree");
    let merged = fixture.path("merged.mbtiles");
    let outputs = [
        format!("dir:{}", tree.display()),
        "s3://tiles/killed/v1".to_string(),
        merged.to_str().unwrap().to_string(),
    ];
    for output in &outputs {
        if output.starts_with("s3://") {
            // A shard killed mid-upload resumes from its journal on the rerun.
            let moment = std::time::Duration::from_secs_f64(rng.range(0.0, 1.5));
            let args = fixture.seed_args(output, "0-12", &[]);
            let mut shard_env = env.clone();
            shard_env.push(("JOB_COMPLETION_INDEX", "0"));
            shard_env.push(("OAR_TILES_SHARDS", "3"));
            let mut child = oar_tiles_command(Some(&fixture.schema.url), &args, &shard_env)
                .spawn()
                .unwrap();
            std::thread::sleep(moment);
            send_signal(&child, libc::SIGKILL);
            child.wait().unwrap();
        }
        for index in 0..3 {
            run_shard(&fixture, output, index, 3, &env);
        }
        let story = finalize_through_kills(&fixture, output, &env, &mut rng);
        let context = format!("{output}, OAR_TILES_TEST_SEED={seed_number}: {story}");
        eprintln!("{context}");
        let finished = if output.starts_with("dir:") {
            read_tree(&tree, "pbf")
        } else if output.starts_with("s3://") {
            tiles_of(&server.read_prefix("tiles", "killed/v1"))
        } else {
            read_mbtiles_raw(&merged)
        };
        assert_same_tiles(&expected, &finished, &context);
        // Finished like any seed: a --dirty reseed is accepted and changes nothing.
        let summary = fixture.path("summary.json");
        let args = fixture.seed_args(
            output,
            "0-12",
            &["--dirty", "--summary-json", summary.to_str().unwrap()],
        );
        oar_tiles_with(Some(&fixture.schema.url), &args, &env).assert_success();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        assert_eq!(
            json[0]["stored"]["changed"].as_u64(),
            Some(0),
            "{context}: {json}"
        );
    }
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS and the Python pmtiles reader (scripts/test.sh)"]
fn pmtiles_shards_finalize_into_the_single_runs_archive_and_take_a_dirty_reseed() {
    // No worldwide scatter: a point in a tile's buffer beyond the covered bounds makes even a
    // single run's archive fail `validate` (see the report of this change).
    let points = hub_with_scatter(1_000, 9, 1_000_000, [90.30, 23.70, 90.50, 23.90]);
    let mut fixture = Fixture::new("shard_pmtiles", &points, "oar.toml", |schema| {
        changes_config(schema, "")
    });
    let config = fixture.config.to_str().unwrap();
    let url = fixture.schema.url.clone();
    oar_tiles(Some(&url), &["changes", "install", "--config", config]).assert_success();
    let archive = fixture.path("sharded.pmtiles");
    let output = archive.to_str().unwrap().to_string();
    // An earlier single run leaves tiles that the data no longer has once it changes.
    oar_tiles(Some(&url), &fixture.seed_args(&output, "0-12", &[])).assert_success();
    change_data(&mut fixture, 1);

    run_shard(&fixture, &output, 0, 3, &[]);
    run_shard(&fixture, &output, 2, 3, &[]);
    let shards = fixture.path("sharded.pmtiles.oar-tiles-shards");
    for kept in ["plan.json", "part-0-of-3.json", "part-2-of-3.mbtiles"] {
        assert!(
            shards.join(kept).is_file(),
            "{kept} is in {}",
            shards.display()
        );
    }
    let early = finalize(&fixture, &output, &[]);
    assert_eq!(early.code, 2, "{}", early.stderr);
    assert!(
        early.stderr.contains("shard(s) 1/3 have not finished"),
        "{}",
        early.stderr
    );
    run_shard(&fixture, &output, 1, 3, &[]);
    let done = finalize(&fixture, &output, &[]);
    done.assert_success();
    let single = fixture.path("single.pmtiles");
    oar_tiles(
        Some(&url),
        &fixture.seed_args(single.to_str().unwrap(), "0-12", &[]),
    )
    .assert_success();
    crate::common::pmtiles_reader::assert_same_archive(
        &single,
        &archive,
        "3 PMTiles shards, finalized",
    );
    let mut left: Vec<String> = std::fs::read_dir(fixture.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("sharded"))
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["sharded.pmtiles", "sharded.pmtiles.store.mbtiles"],
        "the parts and the plan are removed"
    );
    let again = finalize(&fixture, &output, &[]);
    assert!(again.stderr.contains("no shard plan"), "{}", again.stderr);

    // Finished like any seed: a --dirty reseed after a change renders what changed, and the
    // archive is again the single run's.
    change_data(&mut fixture, 2);
    oar_tiles(
        Some(&url),
        &fixture.seed_args(&output, "0-12", &["--dirty"]),
    )
    .assert_success();
    let fresh = fixture.path("fresh.pmtiles");
    oar_tiles(
        Some(&url),
        &fixture.seed_args(fresh.to_str().unwrap(), "0-12", &[]),
    )
    .assert_success();
    crate::common::pmtiles_reader::assert_same_archive(
        &fresh,
        &archive,
        "the finalized archive after --dirty",
    );
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS, the S3 test server and the Python pmtiles reader (scripts/test.sh)"]
fn pmtiles_shards_on_separate_machines_finalize_into_one_s3_archive() {
    let server = S3Server::start("tiles");
    let points = hub_with_scatter(800, 11, 1_000_000, [-58.6, -34.8, -58.3, -34.5]);
    let fixture = Fixture::new("shard_pmtiles_s3", &points, "oar.toml", |schema| {
        format!(
            "{}\n{}",
            server.config_table(""),
            single_layer_config(&schema.name, "sites", "", "")
        )
    });
    let output = "s3://tiles/maps/sites.pmtiles";
    // Each shard, and finalize, on a machine of its own: nothing is shared but the store.
    let names = [
        "shard-0", "shard-1", "shard-2", "finalize", "single", "validate",
    ];
    let caches: Vec<String> = names
        .iter()
        .map(|name| {
            let cache = fixture.path(name);
            std::fs::create_dir_all(&cache).unwrap();
            cache.display().to_string()
        })
        .collect();
    let machine = |name: &str| {
        let index = names.iter().position(|n| *n == name).unwrap();
        let mut env: Vec<(&str, &str)> = server.env();
        env.push(("XDG_CACHE_HOME", caches[index].as_str()));
        env
    };
    for index in 0..3 {
        run_shard(
            &fixture,
            output,
            index,
            3,
            &machine(&format!("shard-{index}")),
        );
    }
    let done = finalize(&fixture, output, &machine("finalize"));
    done.assert_success();
    assert_eq!(
        server.stored_files("tiles", "maps/.oar-tiles/sites.pmtiles.shards"),
        0,
        "the plan and the parts are removed"
    );
    let single = fixture.path("single.pmtiles");
    let env = machine("single");
    let args = fixture.seed_args(single.to_str().unwrap(), "0-12", &[]);
    oar_tiles_with(Some(&fixture.schema.url), &args, &env).assert_success();
    let finished = fixture.path("finished.pmtiles");
    let object = server.data.join("tiles").join("maps/sites.pmtiles");
    std::fs::copy(&object, &finished).unwrap();
    crate::common::pmtiles_reader::assert_same_archive(
        &single,
        &finished,
        "3 PMTiles shards into S3, finalized",
    );
    let config = fixture.config.to_str().unwrap();
    let args = ["validate", "--config", config, output];
    let remote = oar_tiles_with(None, &args, &machine("validate"));
    remote.assert_success();
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS and the Python pmtiles reader (scripts/test.sh)"]
fn a_killed_pmtiles_shard_resumes_from_its_own_journal() {
    let mut fixture = crate::common::slow::slow_fixture("shard_pmtiles_kill");
    // More slow rows: a part commits its journal with its tiles every two seconds at most, so the
    // shard must walk for longer than that to be killed with progress to resume.
    fixture.schema.execute(
        "INSERT INTO {schema}.sites (site_id, label, pt)
         SELECT 20000 + g, 'extra', ST_SetSRID(ST_MakePoint(-0.3 + (g % 97) * 0.006, 51.3 + (g % 89) * 0.0045), 4326)
         FROM generate_series(1, 6000) g; ANALYZE {schema}.sites;",
    );
    let url = fixture.schema.url.clone();
    let archive = fixture.path("killed.pmtiles");
    let output = archive.to_str().unwrap();
    run_shard(&fixture, output, 0, 2, &[]);
    let args = fixture.seed_args(output, "0-12", &["--shard", "1/2"]);
    let mut child = oar_tiles_command(Some(&url), &args, &[]).spawn().unwrap();
    let part = fixture.path("killed.pmtiles.oar-tiles-shards/part-1-of-2.mbtiles");
    crate::common::run::wait_for_progress(&mut child, &part);
    send_signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let early = finalize(&fixture, output, &[]);
    assert_eq!(early.code, 2, "{}", early.stderr);
    assert!(
        early.stderr.contains("1/2 have not finished"),
        "{}",
        early.stderr
    );
    // The engine starts the same index again: it resumes from its part's journal.
    let resumed = oar_tiles(Some(&url), &args);
    resumed.assert_success();
    assert!(resumed.stderr.contains("resuming:"), "{}", resumed.stderr);
    let partial = fixture.path("killed.pmtiles.oar-tiles-shards/part-1-of-2.mbtiles.partial");
    assert!(!partial.exists(), "a finished shard leaves no partial part");
    finalize(&fixture, output, &[]).assert_success();
    let single = fixture.path("single.mbtiles");
    let single_args = fixture.seed_args(single.to_str().unwrap(), "0-12", &[]);
    oar_tiles(Some(&url), &single_args).assert_success();
    crate::common::pmtiles_reader::assert_same_digests(
        &crate::common::pmtiles_reader::digests_of_mbtiles(&single),
        &crate::common::pmtiles_reader::read_archive(&archive).tiles,
        "2 PMTiles shards, one killed and resumed",
    );
}
