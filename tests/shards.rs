//! Sharded runs: the shard plan a real PostGIS table yields, balanced by data on a skewed data set
//! and on the project's sample facilities.

use std::collections::BTreeMap;

use oar_tiles::testing::{mercator, TileCoord, MERCATOR_HALF_WORLD};
use oar_tiles::testing::{CostModel, ShardPlan};
use oar_tiles::ZoomRange;

use crate::common::fixture::Fixture;
use crate::common::pg::{hub_with_scatter, Point, TestSchema};
use crate::common::run::{
    assert_same_tiles, oar_tiles, oar_tiles_with, read_mbtiles_raw, single_layer_config,
};
use crate::common::slow::slow_fixture;

/// Each shard's render work under a stored plan, measured from the points themselves: every
/// non-empty tile of every zoom costs what the planner's fitted model prices it at, given the rows
/// it holds and the features it carries, charged to the shard the plan says renders it; a shard's
/// work is that sum, or its dearest tile times [`CONNECTIONS`] when more (one connection renders
/// that tile while the others run out of work). A feature is a row, or, up to `cluster`'s maxzoom,
/// a non-empty cell of its grid of `cells` × `cells` per tile (clustered tiles aggregate rows: the
/// test schemas have no change capture).
fn measured_work(
    plan: &ShardPlan,
    points: &[Point],
    max_zoom: u8,
    cluster: Option<(u8, u32)>,
) -> Vec<u64> {
    let model = CostModel {
        zooms: ZoomRange::new(0, max_zoom).unwrap(),
        cluster: cluster.map(|(maxzoom, cells)| (maxzoom, u64::from(cells * cells))),
        maintained_cells: false,
    };
    let mut work = vec![0u64; plan.shards() as usize];
    let mut dearest = vec![0u64; plan.shards() as usize];
    for z in 0..=max_zoom {
        let (clustered, cells) = match cluster {
            Some((maxzoom, cells)) if z <= maxzoom => (true, cells),
            _ => (false, 1),
        };
        let side = (1u32 << z) * cells;
        let size = 2.0 * MERCATOR_HALF_WORLD / f64::from(side);
        let mut rows: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        for point in points {
            let (mx, my) = mercator(point.lon, point.lat);
            let x = (((mx + MERCATOR_HALF_WORLD) / size) as u32).min(side - 1);
            let y = (((MERCATOR_HALF_WORLD - my) / size) as u32).min(side - 1);
            *rows.entry((x, y)).or_default() += 1;
        }
        let mut tiles: BTreeMap<(u32, u32), (u64, u64)> = BTreeMap::new();
        for ((x, y), n) in rows {
            let tile = tiles.entry((x / cells, y / cells)).or_default();
            tile.0 += n;
            tile.1 += if clustered { 1 } else { n };
        }
        for ((x, y), (rows, features)) in tiles {
            let tile = TileCoord::new(z, x, y).unwrap();
            let (owner, cost) = (plan.owner(tile) as usize, model.tile(z, rows, features));
            work[owner] += cost;
            dearest[owner] = dearest[owner].max(cost);
        }
    }
    work.iter()
        .zip(dearest)
        .map(|(sum, dear)| (*sum).max(CONNECTIONS * dear))
        .collect()
}

/// The connections each shard renders on: `pool_size` of the configs these tests write.
const CONNECTIONS: u64 = 2;

/// The shards' weights as `shard-plan` prints them.
fn weights(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("shard "))
        .map(|rest| {
            let weight = rest.split("weight ").nth(1).unwrap();
            weight.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect()
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS (scripts/test.sh)"]
fn a_shard_plan_of_skewed_data_is_balanced_and_stored_beside_the_output() {
    // Nine of ten points in one small hub, the rest anywhere: area-based cuts would put nearly all
    // the work on one shard.
    let points = hub_with_scatter(4_000, 5, 10, [8.30, 47.10, 8.80, 47.60]);
    let fixture = Fixture::new("shard_plan", &points, "oar.toml", |schema| {
        single_layer_config(&schema.name, "sites", "", "")
    });
    let output = fixture.path("out.mbtiles");
    let config = fixture.config.to_str().unwrap();
    // Not 16 on paper: the z0 tile reads all 4,000 rows on one connection, more than a 16th of
    // the whole, and the plan says so (its estimate counts a shard's dearest tile once per
    // connection); the stored 16-shard plan's measured work below is still held to the limit.
    for shards in [1u32, 3, 4] {
        let count = shards.to_string();
        let args = [
            "shard-plan",
            "--config",
            config,
            "--zoom",
            "0-14",
            "--output",
            output.to_str().unwrap(),
            "--shards",
            &count,
            "--dry-run",
        ];
        let run = oar_tiles(Some(&fixture.schema.url), &args);
        run.assert_success();
        let weights = weights(&run.stdout);
        assert_eq!(weights.len(), shards as usize, "{}", run.stdout);
        let mean = weights.iter().sum::<u64>() as f64 / f64::from(shards);
        let heaviest = *weights.iter().max().unwrap() as f64;
        assert!(
            heaviest <= 1.25 * mean,
            "{shards} shards: heaviest {heaviest} > 1.25 × mean {mean}\n{}",
            run.stdout
        );
    }
    let plan_file = format!("{}.shard-plan.json", output.display());
    assert!(
        !std::path::Path::new(&plan_file).exists(),
        "a dry run stores nothing"
    );
    for shards in ["3", "4", "16"] {
        let args = [
            "shard-plan",
            "--config",
            config,
            "--zoom",
            "0-14",
            "--output",
            output.to_str().unwrap(),
            "--shards",
            shards,
        ];
        let run = oar_tiles(Some(&fixture.schema.url), &args);
        run.assert_success();
        let stored = std::fs::read_to_string(&plan_file).unwrap();
        let plan = ShardPlan::from_json(&stored, &plan_file).unwrap();
        assert_eq!(plan.shards().to_string(), shards);
        assert!(!plan.settings_digest.is_empty());
        // The real work, not the plan's own estimate, is what must be balanced; at 16 shards the
        // shard of the z0 tile is left out: its load is that one tile's floor, above any cut.
        let work = measured_work(&plan, &points, 14, None);
        let z0 = plan.owner(TileCoord::new(0, 0, 0).unwrap()) as usize;
        let others: Vec<u64> = (0..work.len())
            .filter(|i| shards != "16" || *i != z0)
            .map(|i| work[i])
            .collect();
        let mean = work.iter().sum::<u64>() as f64 / work.len() as f64;
        let heaviest = *others.iter().max().unwrap() as f64;
        assert!(
            heaviest <= 1.25 * mean,
            "{shards} shards: measured work {work:?}, split zoom {}",
            plan.split_zoom
        );
    }
    let pmtiles = fixture.path("tiles.pmtiles").display().to_string();
    let args = [
        "shard-plan",
        "--config",
        config,
        "--output",
        &pmtiles,
        "--shards",
        "2",
    ];
    // A PMTiles archive keeps its plan in its shard folder beside it.
    oar_tiles(Some(&fixture.schema.url), &args).assert_success();
    let plan = fixture.path("tiles.pmtiles.oar-tiles-shards/plan.json");
    assert!(plan.is_file(), "{} is stored", plan.display());
}

/// The project's sample facilities, as `scripts/load-sample.sh` generates them (its default size),
/// loaded into `schema` as `facilities`; returns their points.
fn load_sample(schema: &mut TestSchema) -> Vec<Point> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/load-sample.sh");
    let output = std::process::Command::new(script)
        .args(["--schema", &schema.name, "--table", "facilities"])
        .env("DATABASE_URL", &schema.url)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run scripts/load-sample.sh");
    assert!(
        output.status.success(),
        "scripts/load-sample.sh failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let query = format!(
        "SELECT id, ST_X(location), ST_Y(location) FROM \"{}\".facilities ORDER BY id",
        schema.name
    );
    schema
        .client()
        .query(&query, &[])
        .unwrap()
        .iter()
        .map(|row| Point::new(row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// `sample-config.toml` pointed at the sample in `schema`, and its clustering as `measured_work`
/// takes it: `(cluster_maxzoom, cells across a tile)`.
fn sample_config(schema: &str) -> (String, Option<(u8, u32)>) {
    let text = include_str!("../sample-config.toml");
    let table = "table = \"public.facilities\"";
    assert_eq!(
        text.matches(table).count(),
        1,
        "sample-config.toml names its table once"
    );
    let config: toml::Value = toml::from_str(text).unwrap();
    let tileset = &config["tileset"][0];
    let layers = tileset["layer"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "the sample config has one layer");
    let extent = tileset
        .get("extent")
        .map_or(4096, |e| e.as_integer().unwrap());
    let cluster = layers[0].get("cluster_maxzoom").map(|maxzoom| {
        let cell = layers[0]["cluster_cell"].as_integer().unwrap();
        (
            u8::try_from(maxzoom.as_integer().unwrap()).unwrap(),
            u32::try_from(extent / cell).unwrap(),
        )
    });
    // A change schema of its own, never installed: capture installed in the server's default one
    // (by an operator or another tool) would make the plan price clustered tiles as cell reads,
    // which `measured_work` does not model.
    let changes = "schema = \"oar_tiles\"";
    assert_eq!(
        text.matches(changes).count(),
        1,
        "sample-config.toml names its change schema once"
    );
    let text = text
        .replace(table, &format!("table = \"{schema}.facilities\""))
        .replace(changes, &format!("schema = \"{schema}_changes\""));
    (text, cluster)
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS (scripts/test.sh)"]
fn a_shard_plan_of_the_sample_facilities_balances_the_measured_work() {
    let mut schema = TestSchema::create("shard_sample");
    let points = load_sample(&mut schema);
    assert!(!points.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sample.toml");
    let (text, cluster) = sample_config(&schema.name);
    std::fs::write(&config, text).unwrap();
    let output = dir.path().join("facilities.mbtiles");
    let plan_file = format!("{}.shard-plan.json", output.display());
    for shards in ["3", "4", "16"] {
        let args = [
            "shard-plan",
            "--config",
            config.to_str().unwrap(),
            "--zoom",
            "0-14",
            "--output",
            output.to_str().unwrap(),
            "--shards",
            shards,
        ];
        let run = oar_tiles(Some(&schema.url), &args);
        run.assert_success();
        let stored = std::fs::read_to_string(&plan_file).unwrap();
        let plan = ShardPlan::from_json(&stored, &plan_file).unwrap();
        assert_eq!(plan.shards().to_string(), shards);
        // The work the points really cause at every zoom, charged by the stored plan.
        let work = measured_work(&plan, &points, 14, cluster);
        let mean = work.iter().sum::<u64>() as f64 / work.len() as f64;
        let heaviest = *work.iter().max().unwrap() as f64;
        assert!(
            heaviest <= 1.25 * mean,
            "{shards} shards: heaviest {:.3} × mean; measured work {work:?}, split zoom {}\n{}",
            heaviest / mean,
            plan.split_zoom,
            run.stdout
        );
    }
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS (scripts/test.sh)"]
fn shards_run_as_separate_processes_and_merge_into_exactly_the_single_run() {
    let points = hub_with_scatter(1_500, 9, 7, [2.20, 48.70, 2.60, 49.00]);
    let fixture = Fixture::new("shard_runs", &points, "oar.toml", |schema| {
        single_layer_config(&schema.name, "sites", "", "")
    });
    let config = fixture.config.to_str().unwrap();
    let url = fixture.schema.url.clone();
    let single = fixture.path("single.mbtiles");
    let args = fixture.seed_args(single.to_str().unwrap(), "0-12", &[]);
    oar_tiles(Some(&url), &args).assert_success();
    let expected = read_mbtiles_raw(&single);
    // 16 shards: the hub's z0-z4 tiles each outweigh an eighth of a shard's share, so the plan
    // deals them to shards by size (issue 65), and shards pass through blocks not their own.
    for shards in [1u32, 3, 4, 16] {
        let out = fixture.path(&format!("sharded-{shards}.mbtiles"));
        let out_text = out.to_str().unwrap().to_string();
        let count = shards.to_string();
        let mut parts = Vec::new();
        for index in 0..shards {
            let index_text = index.to_string();
            // As a Kubernetes Indexed Job starts each pod: the same command, the index in the
            // environment.
            let args = fixture.seed_args(&out_text, "0-12", &[]);
            let run = oar_tiles_with(
                Some(&url),
                &args,
                &[
                    ("JOB_COMPLETION_INDEX", index_text.as_str()),
                    ("OAR_TILES_SHARDS", count.as_str()),
                ],
            );
            run.assert_success();
            parts.push(fixture.path(&format!(
                "sharded-{shards}.part-{index}-of-{shards}.mbtiles"
            )));
        }
        let mut merge = vec!["merge", out_text.as_str()];
        merge.extend(parts.iter().map(|p| p.to_str().unwrap()));
        oar_tiles(None, &merge).assert_success();
        assert_same_tiles(
            &expected,
            &read_mbtiles_raw(&out),
            &format!("{shards} shards"),
        );
        if shards == 16 {
            let plan = std::fs::read_to_string(format!("{out_text}.shard-plan.json")).unwrap();
            assert!(plan.contains("\"dealt\""), "16 shards deal the top: {plan}");
        }
        if shards == 3 {
            // A shard of another number of shards does not run into this plan.
            let args = fixture.seed_args(&out_text, "0-12", &["--shard", "0/4"]);
            let run = oar_tiles(Some(&url), &args);
            assert_eq!(run.code, 2, "{}", run.stderr);
            assert!(run.stderr.contains("plan of 3 shards"), "{}", run.stderr);
            // Two copies of one part overlap.
            let twice = [
                "merge",
                config,
                parts[0].to_str().unwrap(),
                parts[0].to_str().unwrap(),
            ];
            let run = oar_tiles(None, &twice);
            assert_ne!(run.code, 0, "{}", run.stderr);
        }
    }
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS (scripts/test.sh)"]
fn a_merged_output_takes_a_dirty_reseed_of_what_changed_after_the_shards() {
    let points = hub_with_scatter(600, 13, 5, [13.30, 52.40, 13.50, 52.60]);
    let mut fixture = Fixture::new("shard_dirty", &points, "oar.toml", |schema| {
        let changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(&schema.name, "sites", "", "")
        )
    });
    let url = fixture.schema.url.clone();
    let config = fixture.config.to_str().unwrap();
    oar_tiles(Some(&url), &["changes", "install", "--config", config]).assert_success();
    let out = fixture.path("merged.mbtiles");
    let out_text = out.to_str().unwrap().to_string();
    let mut parts = Vec::new();
    for index in 0..3 {
        let shard = format!("{index}/3");
        let args = fixture.seed_args(&out_text, "0-10", &["--shard", &shard]);
        oar_tiles(Some(&url), &args).assert_success();
        parts.push(fixture.path(&format!("merged.part-{index}-of-3.mbtiles")));
    }
    let mut merge = vec!["merge", out_text.as_str()];
    merge.extend(parts.iter().map(|p| p.to_str().unwrap()));
    oar_tiles(None, &merge).assert_success();
    // Changes after the shards: a moved point, a new one far away, a deleted one.
    fixture.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(-70.5, -33.4), 4326) WHERE site_id = 7;
         INSERT INTO {schema}.sites (site_id, label, kind, score, pt)
             VALUES (9001, 'new', 'mill', 3, ST_SetSRID(ST_MakePoint(151.2, -33.9), 4326));
         DELETE FROM {schema}.sites WHERE site_id = 11;",
    );
    let dirty = fixture.seed_args(&out_text, "0-10", &["--dirty"]);
    oar_tiles(Some(&url), &dirty).assert_success();
    let fresh = fixture.path("fresh.mbtiles");
    let args = fixture.seed_args(fresh.to_str().unwrap(), "0-10", &[]);
    oar_tiles(Some(&url), &args).assert_success();
    assert_same_tiles(
        &read_mbtiles_raw(&fresh),
        &read_mbtiles_raw(&out),
        "the merged output after --dirty",
    );
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS (scripts/test.sh)"]
fn a_killed_shard_resumes_and_an_unfinished_part_is_not_merged() {
    use crate::common::run::wait_for_progress;
    use crate::common::run::{oar_tiles_command, send_signal};

    let fixture = slow_fixture("shard_kill");
    let url = fixture.schema.url.clone();
    let single = fixture.path("single.mbtiles");
    let args = fixture.seed_args(single.to_str().unwrap(), "0-13", &[]);
    oar_tiles(Some(&url), &args).assert_success();
    let out = fixture.path("out.mbtiles");
    let out_text = out.to_str().unwrap().to_string();
    let part = |index: u32| fixture.path(&format!("out.part-{index}-of-2.mbtiles"));
    let args = fixture.seed_args(&out_text, "0-13", &["--shard", "0/2"]);
    oar_tiles(Some(&url), &args).assert_success();
    let args = fixture.seed_args(&out_text, "0-13", &["--shard", "1/2"]);
    let mut child = oar_tiles_command(Some(&url), &args, &[]).spawn().unwrap();
    wait_for_progress(&mut child, &part(1));
    send_signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    // The killed shard left no finished part: merging now refuses and names it.
    let (p0, p1) = (part(0), part(1));
    let merge = [
        "merge",
        out_text.as_str(),
        p0.to_str().unwrap(),
        p1.to_str().unwrap(),
    ];
    let run = oar_tiles(None, &merge);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stderr.contains("part-1-of-2"), "{}", run.stderr);
    assert!(!out.exists());
    // The engine starts the same index again: it resumes from its journal.
    let resumed = oar_tiles(Some(&url), &args);
    resumed.assert_success();
    assert!(resumed.stderr.contains("resuming:"), "{}", resumed.stderr);
    oar_tiles(None, &merge).assert_success();
    assert_same_tiles(
        &read_mbtiles_raw(&single),
        &read_mbtiles_raw(&out),
        "2 shards, one killed and resumed",
    );
}

/// The shard lines (`shard I: ...`) of `shard-plan`'s output.
fn shard_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|line| line.starts_with("shard "))
        .collect()
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS (scripts/test.sh)"]
fn a_dry_run_shard_plan_of_clustered_data_cuts_as_the_stored_plan_does() {
    let points = hub_with_scatter(3_000, 6, 10, [103.7, 1.25, 104.0, 1.45]);
    let fixture = Fixture::new("shard_plan_cells", &points, "oar.toml", |schema| {
        let changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(&schema.name, "sites", "", "cluster_maxzoom = 9\n")
        )
    });
    let config = fixture.config.to_str().unwrap();
    let url = Some(fixture.schema.url.as_str());
    oar_tiles(url, &["changes", "install", "--config", config]).assert_success();
    let output = fixture.path("out.mbtiles");
    let plan = |extra: &[&str]| {
        let mut args = vec![
            "shard-plan",
            "--config",
            config,
            "--zoom",
            "0-12",
            "--output",
            output.to_str().unwrap(),
            "--shards",
            "4",
        ];
        args.extend_from_slice(extra);
        let run = oar_tiles(url, &args);
        run.assert_success();
        run.stdout
    };
    // The stored plan's clustered tiles read maintained cells (one row per cell), which the dry
    // run creates no table for: it must price them the same.
    let dry = plan(&["--dry-run"]);
    let stored = plan(&[]);
    assert_eq!(shard_lines(&dry).len(), 4, "{dry}");
    assert_eq!(
        shard_lines(&dry),
        shard_lines(&stored),
        "dry run:\n{dry}\nstored:\n{stored}"
    );
}
