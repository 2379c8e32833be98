//! Incremental reseeds: change capture in PostGIS, dirty tiles, and results exactly equal to a full
//! seed of the same data, including changes committed late and runs that were interrupted.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::pg::{Rng, TestSchema};
use crate::common::reseed::{Setup, ZOOMS};
use crate::common::run::{
    assert_same_tiles, oar_tiles_command, read_mbtiles_raw, summary, Speaking, Tiles,
};

/// Random inserts, moves (some onto tile borders or onto another facility), attribute edits and deletes.
fn random_changes(schema: &mut TestSchema, rng: &mut Rng, round: i64) {
    let mut sql = String::new();
    for step in 0..25 {
        let id = 1 + (rng.next_f64() * 153.0) as i64;
        match step % 5 {
            0 => {
                let new_id = 1000 * round + step;
                sql.push_str(&format!(
                    "INSERT INTO {{schema}}.sites (site_id, label, kind, score, pt)
                     VALUES ({new_id}, 'new {new_id}', 'knit', {}, ST_SetSRID(ST_MakePoint({:.6}, {:.6}), 4326));",
                    step % 17,
                    rng.range(106.5, 106.9),
                    rng.range(10.6, 11.0)
                ));
            }
            1 => sql.push_str(&format!(
                "UPDATE {{schema}}.sites SET pt = ST_SetSRID(ST_MakePoint({:.6}, {:.6}), 4326) WHERE site_id = {id};",
                rng.range(-170.0, 170.0),
                rng.range(-60.0, 70.0)
            )),
            2 => sql.push_str(&format!(
                "UPDATE {{schema}}.sites SET pt = ST_SetSRID(ST_MakePoint(45.0, 0.0), 4326) WHERE site_id = {id};
                 UPDATE {{schema}}.sites SET pt = (SELECT pt FROM {{schema}}.sites WHERE site_id = 2) WHERE site_id = {};",
                id % 150 + 3
            )),
            3 => sql.push_str(&format!(
                "UPDATE {{schema}}.sites SET label = 'edited {round}-{step}', score = score + 1 WHERE site_id = {id};"
            )),
            _ => sql.push_str(&format!("DELETE FROM {{schema}}.sites WHERE site_id = {id};")),
        }
    }
    // An update that changes nothing rendered must not dirty anything.
    sql.push_str("UPDATE {schema}.sites SET seen_at = seen_at WHERE site_id = 5;");
    schema.execute(&sql);
}

fn assert_reseeds_equal_full_seeds(setup: &mut Setup) {
    let reseeded = setup.path("reseeded.mbtiles");
    setup.seed(&reseeded, &[]);
    let mut rng = Rng::new(3);
    for round in 1..=4 {
        random_changes(&mut setup.schema, &mut rng, round);
        let summary_path = setup.path("summary.json");
        let changed_list = setup.path("changed.txt");
        let before = read_mbtiles_raw(&reseeded);
        setup.seed(
            &reseeded,
            &[
                "--dirty",
                "--summary-json",
                summary_path.to_str().unwrap(),
                "--changed-list",
                changed_list.to_str().unwrap(),
            ],
        );
        let full = setup.full("full.mbtiles");
        let after = read_mbtiles_raw(&reseeded);
        assert_same_tiles(
            &full,
            &after,
            &format!("round {round}: the reseed against a full seed"),
        );
        let json = summary(&summary_path);
        let queried = json[0]["tiles_queried"].as_u64().unwrap();
        assert!(
            queried > 0 && queried < full.len() as u64 * 2,
            "round {round}: {queried} tiles re-rendered"
        );
        assert!(json[0]["changes_read"].as_u64().unwrap() >= 25);
        let listed: std::collections::BTreeSet<String> = std::fs::read_to_string(&changed_list)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let expected: std::collections::BTreeSet<String> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(k) != after.get(k))
            .map(|(z, x, y)| format!("{z}/{x}/{y}"))
            .collect();
        assert_eq!(
            listed, expected,
            "round {round}: the changed list names every changed tile"
        );
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn reseeding_random_changes_gives_exactly_what_a_full_seed_gives() {
    let mut setup = Setup::new("reseed", "");
    assert_reseeds_equal_full_seeds(&mut setup);
    // Applied changes are pruned from the log once the only output has seen them.
    let status = setup.run(&["changes", "status"]);
    status.assert_success();
    assert!(
        status.stdout.contains(": 0 change(s) in the log"),
        "{}",
        status.stdout
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn reseeding_clustered_zooms_gives_exactly_what_a_full_seed_gives() {
    let mut setup = Setup::new("reseedcluster", "cluster_maxzoom = 6\ncluster_cell = 256");
    assert_reseeds_equal_full_seeds(&mut setup);
    // The reseeds read maintained cluster cells, one row per occupied cell at each zoom 0-6.
    let changes_schema = setup.changes_schema.clone();
    let tables = setup.cell_tables();
    assert_eq!(
        tables.len(),
        1,
        "one cell table for the one clustered layer"
    );
    let table = tables[0].clone();
    let levels: i64 = setup
        .schema
        .client()
        .query_one(
            &format!("SELECT count(DISTINCT __oar_z) FROM \"{changes_schema}\".\"{table}\""),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(levels, 7);
    // A full seed from the cells and one from rows agree byte for byte.
    let from_cells = setup.path("from-cells.mbtiles");
    setup.seed(&from_cells, &[]);
    assert_same_tiles(
        &setup.full("from-rows.mbtiles"),
        &read_mbtiles_raw(&from_cells),
        "tiles from cell tables against tiles from rows",
    );
    // Another grid makes another table; the old one goes, and no longer holds back pruning.
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace("cluster_cell = 256", "cluster_cell = 512"),
    )
    .unwrap();
    setup.seed(&setup.path("regridded.mbtiles"), &[]);
    let tables_now = setup.cell_tables();
    assert_eq!(tables_now.len(), 1);
    assert_ne!(tables_now[0], table);
    let consumers: Vec<String> = setup
        .schema
        .client()
        .query(
            &format!("SELECT output FROM \"{changes_schema}\".consumers"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        !consumers.iter().any(|c| c.contains(&table)),
        "{consumers:?}"
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_change_committed_late_with_a_smaller_sequence_number_is_not_missed() {
    let mut setup = Setup::new("latecommit", "");
    let output = setup.path("late.mbtiles");
    setup.seed(&output, &[]);

    // The slow transaction logs its change first (smaller id), but commits after a reseed ran.
    let mut slow = postgres::Client::connect(&setup.schema.url, postgres::NoTls).unwrap();
    let mut slow_tx = slow.transaction().unwrap();
    slow_tx
        .batch_execute(&format!(
            "INSERT INTO \"{}\".sites (site_id, label, kind, score, pt)
             VALUES (9001, 'late', 'knit', 1, ST_SetSRID(ST_MakePoint(-58.4, -34.6), 4326))",
            setup.schema.name
        ))
        .unwrap();
    setup.schema.execute(
        "INSERT INTO {schema}.sites (site_id, label, kind, score, pt)
         VALUES (9002, 'early', 'knit', 1, ST_SetSRID(ST_MakePoint(151.2, -33.9), 4326))",
    );
    setup.seed(&output, &["--dirty"]);
    slow_tx.commit().unwrap();
    setup.seed(&output, &["--dirty"]);
    let full = setup.full("full.mbtiles");
    assert_same_tiles(
        &read_mbtiles_raw(&output),
        &full,
        "the late change reached the output",
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn an_interrupted_reseed_is_completed_by_the_next_run() {
    let mut setup = Setup::new("interrupted", "");
    let output = setup.path("out.mbtiles");
    setup.seed(&output, &[]);
    let mut rng = Rng::new(8);
    random_changes(&mut setup.schema, &mut rng, 1);

    // Out of time after the first tile: the watermark must stay where it was.
    let stopped = setup.seed(&output, &["--dirty", "--max-duration", "1ns"]);
    assert!(
        stopped.stderr.contains("--max-duration"),
        "{}",
        stopped.stderr
    );
    // Killed at some point once it began: the output must still open and hold a consistent state.
    let mut run = Speaking::start(oar_tiles_command(
        Some(&setup.schema.url),
        &[
            "seed",
            "--config",
            setup.config.to_str().unwrap(),
            "--zoom",
            ZOOMS,
            "--output",
            output.to_str().unwrap(),
            "--dirty",
        ],
        &[],
    ));
    run.wait_for("reseeding what changed in");
    // It may have finished meanwhile: then the kill finds nothing to end.
    let _ = run.child().kill();
    let _ = run.child().wait();

    setup.seed(&output, &["--dirty"]);
    let full = setup.full("full.mbtiles");
    assert_same_tiles(
        &read_mbtiles_raw(&output),
        &full,
        "the final output equals a full seed",
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_directory_output_reseeds_like_mbtiles() {
    let mut setup = Setup::new("reseeddir", "");
    let tree = setup.path("tree");
    let tree_arg = format!("dir:{}", tree.display());
    let mut args = vec!["seed", "--zoom", ZOOMS, "--output", tree_arg.as_str()];
    setup.run(&args).assert_success();
    let mut rng = Rng::new(13);
    random_changes(&mut setup.schema, &mut rng, 1);
    args.push("--dirty");
    setup.run(&args).assert_success();
    let full = setup.full("full.mbtiles");
    let mut tree_tiles = Tiles::new();
    for key in full.keys() {
        let path = tree.join(format!("{}/{}/{}.pbf", key.0, key.1, key.2));
        tree_tiles.insert(*key, std::fs::read(path).unwrap());
    }
    assert_same_tiles(&full, &tree_tiles, "the reseeded tree against a full seed");
    let files = walk_files(&tree);
    assert_eq!(files, full.len(), "no stale tile remains in the tree");
}

fn walk_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            if p.is_dir() {
                walk_files(&p)
            } else if p.extension().is_some_and(|e| e == "pbf") {
                1
            } else {
                0
            }
        })
        .sum()
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn truncating_a_source_reseeds_everything_and_tile_lists_render_just_their_tiles() {
    let mut setup = Setup::new("truncate", "");
    let output = setup.path("out.mbtiles");
    setup.seed(&output, &[]);
    let before = read_mbtiles_raw(&output);

    // A tile list re-renders only what it names, even when more changed.
    setup
        .schema
        .execute("UPDATE {schema}.sites SET label = 'renamed' WHERE site_id IN (1, 2, 3)");
    let list = setup.path("tiles.txt");
    std::fs::write(&list, "# expire list\n0/0/0\n\n0/0/0\n").unwrap();
    setup.seed(&output, &["--tiles-from", list.to_str().unwrap()]);
    let listed = read_mbtiles_raw(&output);
    assert_ne!(listed[&(0, 0, 0)], before[&(0, 0, 0)]);
    let others_unchanged = listed
        .iter()
        .filter(|(k, _)| **k != (0, 0, 0))
        .all(|(k, v)| before.get(k) == Some(v));
    assert!(others_unchanged);
    std::fs::write(&list, "0/0/0\n3/9/1\n").unwrap();
    let bad = setup.run(&[
        "seed",
        "--zoom",
        ZOOMS,
        "--output",
        output.to_str().unwrap(),
        "--tiles-from",
        list.to_str().unwrap(),
    ]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("tiles.txt:2"), "{}", bad.stderr);

    setup.schema.execute("TRUNCATE {schema}.sites");
    setup.seed(&output, &["--dirty"]);
    assert!(
        read_mbtiles_raw(&output).is_empty(),
        "every tile of a truncated source is gone"
    );

    setup.run(&["changes", "install"]).assert_success();
    setup.run(&["changes", "uninstall"]).assert_success();
    let gone = setup.run(&[
        "seed",
        "--zoom",
        ZOOMS,
        "--output",
        output.to_str().unwrap(),
        "--dirty",
    ]);
    assert_eq!(gone.code, 2, "{}", gone.stderr);
    assert!(gone.stderr.contains("changes install"), "{}", gone.stderr);
}

/// Facilities a hair outside a child tile's buffered envelope, far from Greenwich where the index's
/// single-precision boxes are a metre wide: whether the walk visits the child must not depend on
/// whether clusters come from maintained cells or from rows.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn cluster_cells_steer_the_walk_like_rows_at_tile_edges() {
    let mut setup = Setup::new("celledge", "cluster_maxzoom = 8\ncluster_cell = 256");
    setup.schema.execute("DELETE FROM {schema}.sites");
    let half = 20_037_508.342_789_244_f64;
    let radius = 6_378_137.0_f64;
    // The children of the deepest clustered zoom (8) are the first unclustered tiles, whose
    // buffer is narrower than a cell: their flags come from the parent's cells.
    let z = 9u32;
    let size = 2.0 * half / f64::from(1u32 << z);
    let margin = 64.0 / 4096.0 * size;
    let mut points = Vec::new();
    for (k, lon) in [100.0_f64, -120.0, 150.0, 60.0, -70.0].iter().enumerate() {
        let column = ((lon.to_radians() * radius + half) / size).floor();
        let west = -half + column * size - margin;
        let y = half * (0.1 + 0.1 * k as f64);
        let lat = (y / radius).sinh().atan().to_degrees();
        for (i, outside) in [0.05, 0.2, 0.3, 0.45, 0.7, 1.5].iter().enumerate() {
            let id = k as i64 * 10 + i as i64 + 1;
            points.push(format!(
                "({id}, 'edge {id}', ST_SetSRID(ST_MakePoint({:?}, {lat:?}), 4326))",
                ((west - outside) / radius).to_degrees()
            ));
        }
    }
    setup.schema.execute(&format!(
        "INSERT INTO {{schema}}.sites (site_id, label, pt) VALUES {}",
        points.join(", ")
    ));
    let from_cells = setup.path("edges-cells.mbtiles");
    setup.seed(&from_cells, &[]);
    let from_cells = read_mbtiles_raw(&from_cells);
    let from_rows = setup.full("edges-rows.mbtiles");
    assert!(from_rows.len() > 30, "{} tiles", from_rows.len());
    let missing: Vec<_> = from_rows
        .keys()
        .filter(|k| !from_cells.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from the cells' walk: {missing:?}"
    );
    assert_same_tiles(
        &from_rows,
        &from_cells,
        "clusters from cells against clusters from rows",
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_reseed_under_changed_layer_settings_redoes_every_tile() {
    let mut setup = Setup::new("reseed_settings", "");
    let reseeded = setup.path("reseeded.mbtiles");
    setup.seed(&reseeded, &[]);
    // The operator drops an attribute and moves one facility.
    for config in [&setup.config, &setup.from_rows] {
        let text = std::fs::read_to_string(config).unwrap();
        let changed = text.replace(
            r#"attributes = ["label", "kind", "score", "seen_at"]"#,
            r#"attributes = ["label", "kind", "score"]"#,
        );
        assert_ne!(text, changed);
        std::fs::write(config, changed).unwrap();
    }
    setup.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(106.71, 10.81), 4326) WHERE site_id = 7;",
    );
    let run = setup.seed(&reseeded, &["--dirty"]);
    assert!(
        run.stderr.contains("reseeding everything"),
        "{}",
        run.stderr
    );
    assert_same_tiles(
        &setup.full("full.mbtiles"),
        &read_mbtiles_raw(&reseeded),
        "the reseed against a full seed",
    );
    // Under unchanged settings, the next reseed is incremental again.
    let run = setup.seed(&reseeded, &["--dirty"]);
    assert!(
        !run.stderr.contains("reseeding everything"),
        "{}",
        run.stderr
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_reseed_of_some_zooms_leaves_the_changes_for_the_others_to_the_next_run() {
    let mut setup = Setup::new("reseed_band", "");
    let reseeded = setup.path("reseeded.mbtiles");
    setup.seed(&reseeded, &[]);
    setup.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(106.61, 10.71), 4326) WHERE site_id = 9;
         DELETE FROM {schema}.sites WHERE site_id = 12;",
    );
    // The low zooms first, as a frequent cron job would, then everything.
    let output = reseeded.to_str().unwrap();
    setup
        .run(&["seed", "--zoom", "0-5", "--dirty", "--output", output])
        .assert_success();
    let status = setup.run(&["changes", "status"]);
    assert!(
        !status.stdout.contains(": 0 change(s) in the log"),
        "the changes were pruned while zooms 6-10 still need them: {}",
        status.stdout
    );
    setup.seed(&reseeded, &["--dirty"]);
    assert_same_tiles(
        &setup.full("full.mbtiles"),
        &read_mbtiles_raw(&reseeded),
        "the reseed against a full seed",
    );
}

/// What the change log holds now: `(old positions, new positions)` as `x y` text, sorted. A
/// statement of many rows logs arrays, one of a single row `old_geom` and `new_geom`; rows whose
/// geometry alone changed are logged as pairs, `moved_from` and `moved_to`.
fn logged(setup: &mut Setup) -> (Vec<String>, Vec<String>) {
    let schema = setup.changes_schema.clone();
    let rows = setup
        .schema
        .client()
        .query(
            &format!(
                "SELECT ST_X(g) || ' ' || ST_Y(g), NULL
                 FROM \"{schema}\".change_log, unnest(array_append(old_geoms, old_geom) || moved_from) g
                 UNION ALL
                 SELECT NULL, ST_X(g) || ' ' || ST_Y(g)
                 FROM \"{schema}\".change_log, unnest(array_append(new_geoms, new_geom) || moved_to) g"
            ),
            &[],
        )
        .unwrap();
    let mut old: Vec<String> = rows.iter().filter_map(|r| r.get(0)).collect();
    let mut new: Vec<String> = rows.iter().filter_map(|r| r.get(1)).collect();
    old.sort();
    new.sort();
    (old, new)
}

fn clear_log(setup: &mut Setup) {
    let schema = setup.changes_schema.clone();
    setup
        .schema
        .execute(&format!("DELETE FROM \"{schema}\".change_log"));
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn change_capture_logs_exactly_the_rows_whose_rendered_columns_changed() {
    let mut setup = Setup::new("capturelog", "");
    setup
        .schema
        .execute("ALTER TABLE {schema}.sites ADD COLUMN note text");
    clear_log(&mut setup);

    // Columns no layer renders: nothing to reseed.
    setup
        .schema
        .execute("UPDATE {schema}.sites SET note = 'x' WHERE site_id <= 50");
    // Rendered columns set to the values they had: nothing either.
    setup
        .schema
        .execute("UPDATE {schema}.sites SET label = label, pt = pt WHERE site_id <= 50");
    assert_eq!(logged(&mut setup), (vec![], vec![]));

    // One statement over many rows, of which only some change what is rendered: each of those is
    // logged at its old and its new position, the others not at all.
    setup.schema.execute(
        "UPDATE {schema}.sites SET label = CASE WHEN site_id % 2 = 0 THEN 'renamed' ELSE label END,
                                    pt = CASE WHEN site_id = 3 THEN ST_SetSRID(ST_MakePoint(1.5, 2.5), 4326) ELSE pt END
         WHERE site_id <= 10",
    );
    let (old, new) = logged(&mut setup);
    assert_eq!(old.len(), 6, "ids 2, 3, 4, 6, 8, 10: {old:?}");
    assert_eq!(new.len(), 6, "{new:?}");
    assert!(new.contains(&"1.5 2.5".to_string()), "{new:?}");
    assert!(!old.contains(&"1.5 2.5".to_string()), "{old:?}");
    let schema = setup.changes_schema.clone();
    // Site 3 alone kept its rendered attributes: it is logged as a pair of positions, which a
    // reseed compares; the renamed rows are not.
    let pairs: Vec<String> = setup
        .schema
        .client()
        .query(
            &format!(
                "SELECT ST_X(g) || ' ' || ST_Y(g) FROM \"{schema}\".change_log, unnest(moved_to) g"
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(pairs, vec!["1.5 2.5".to_string()]);
    let rows: i64 = setup
        .schema
        .client()
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".change_log"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "one log row for the statement, not one per row");
    clear_log(&mut setup);

    // Statements sent together are logged each by its own rows: those that change nothing
    // rendered, before or after one that does, log nothing.
    setup.schema.execute(
        "UPDATE {schema}.sites SET note = 'v' WHERE site_id <= 50;
         UPDATE {schema}.sites SET label = label || '!' WHERE site_id IN (11, 12, 13);
         UPDATE {schema}.sites SET note = 'u' WHERE site_id <= 50",
    );
    let (old, new) = logged(&mut setup);
    assert_eq!((old.len(), new.len()), (3, 3), "{old:?} {new:?}");
    clear_log(&mut setup);

    // Statements of one row take a path of their own, by the same rule: an unrendered column or
    // a rendered one set to its value logs nothing; a moved or renamed row, or one whose id
    // changed, its old and new position.
    setup
        .schema
        .execute("UPDATE {schema}.sites SET note = 'z' WHERE site_id = 20");
    setup
        .schema
        .execute("UPDATE {schema}.sites SET label = label, pt = pt WHERE site_id = 20");
    assert_eq!(logged(&mut setup), (vec![], vec![]));
    setup.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(3.5, 4.5), 4326) WHERE site_id = 20;
         UPDATE {schema}.sites SET label = 'single' WHERE site_id = 21;
         UPDATE {schema}.sites SET site_id = 3000 WHERE site_id = 22",
    );
    let (old, new) = logged(&mut setup);
    assert_eq!((old.len(), new.len()), (3, 3), "{old:?} {new:?}");
    assert!(new.contains(&"3.5 4.5".to_string()), "{new:?}");
    assert!(!old.contains(&"3.5 4.5".to_string()), "{old:?}");
    clear_log(&mut setup);
    setup.schema.execute(
        "INSERT INTO {schema}.sites (site_id, label, pt) VALUES (2000, 'n', ST_SetSRID(ST_MakePoint(7, -7), 4326));
         DELETE FROM {schema}.sites WHERE site_id = 2000",
    );
    assert_eq!(
        logged(&mut setup),
        (vec!["7 -7".to_string()], vec!["7 -7".to_string()])
    );
    clear_log(&mut setup);

    // Inserts log the new rows, deletes the old ones, in a single statement each.
    setup.schema.execute(
        "INSERT INTO {schema}.sites (site_id, label, pt)
         SELECT 1000 + g, 'n', ST_SetSRID(ST_MakePoint(g, -g), 4326) FROM generate_series(1, 4) g;
         DELETE FROM {schema}.sites WHERE site_id IN (1001, 1002)",
    );
    assert_eq!(
        logged(&mut setup),
        (
            vec!["1 -1".to_string(), "2 -2".to_string()],
            vec![
                "1 -1".to_string(),
                "2 -2".to_string(),
                "3 -3".to_string(),
                "4 -4".to_string()
            ]
        )
    );
    clear_log(&mut setup);

    // A layer with a filter may depend on any column, so then any change counts.
    let filtered = setup.path("filtered.toml");
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("seen_at\"]", "seen_at\"]\nfilter = \"note IS NULL\"");
    std::fs::write(&filtered, text).unwrap();
    setup
        .run_with(&filtered, &["changes", "install"])
        .assert_success();
    setup
        .schema
        .execute("UPDATE {schema}.sites SET note = 'y' WHERE site_id IN (5, 7)");
    let (old, new) = logged(&mut setup);
    assert_eq!((old.len(), new.len()), (2, 2), "{old:?} {new:?}");
    clear_log(&mut setup);
    setup
        .schema
        .execute("UPDATE {schema}.sites SET note = 'w' WHERE site_id = 9");
    setup
        .schema
        .execute("UPDATE {schema}.sites SET note = note WHERE site_id = 9");
    let (old, new) = logged(&mut setup);
    assert_eq!((old.len(), new.len()), (1, 1), "{old:?} {new:?}");
    clear_log(&mut setup);

    // Rows of a child table changed through the parent are compared like the parent's own (with
    // the filter still installed, any changed column counts).
    setup.schema.execute(
        "CREATE TABLE {schema}.child_sites () INHERITS ({schema}.sites);
         INSERT INTO {schema}.child_sites (site_id, label, pt)
         SELECT 5000 + g, 'c', ST_SetSRID(ST_MakePoint(g, 50), 4326) FROM generate_series(1, 3) g",
    );
    clear_log(&mut setup);
    setup
        .schema
        .execute("UPDATE {schema}.sites SET note = note WHERE site_id > 5000");
    assert_eq!(logged(&mut setup), (vec![], vec![]));
    setup
        .schema
        .execute("UPDATE {schema}.sites SET note = 'c' WHERE site_id IN (5001, 5002)");
    let (old, new) = logged(&mut setup);
    assert_eq!((old.len(), new.len()), (2, 2), "{old:?} {new:?}");
}

/// Sums the `value:count` pairs of a breakdown property into `totals`; returns their sum.
fn add_breakdown(text: &str, totals: &mut BTreeMap<String, i64>) -> i64 {
    text.split(',')
        .map(|pair| {
            let (value, count) = pair.rsplit_once(':').expect("value:count");
            let count: i64 = count.parse().unwrap();
            *totals.entry(value.to_string()).or_default() += count;
            count
        })
        .sum()
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn cluster_breakdowns_count_every_member_by_value_and_reseed_like_full_seeds() {
    use crate::common::mvt::PropValue;
    let mut setup = Setup::new(
        "breakdown",
        "cluster_maxzoom = 6\ncluster_breakdown = \"kind\"",
    );
    // Reseeds read the maintained cells; the full seeds they are held to aggregate rows.
    assert_reseeds_equal_full_seeds(&mut setup);
    setup
        .schema
        .execute("UPDATE {schema}.sites SET kind = 'weave' WHERE site_id % 7 = 0");
    let reseeded = setup.path("reseeded.mbtiles");
    setup.seed(&reseeded, &["--dirty"]);
    let full_path = setup.path("full-kinds.mbtiles");
    let full = setup.full("full-kinds.mbtiles");
    assert_same_tiles(
        &full,
        &read_mbtiles_raw(&reseeded),
        "a reseed after kinds changed",
    );

    let decoded = crate::common::run::read_mbtiles(&full_path);
    let mut clusters = 0;
    let mut world = BTreeMap::new();
    for (&(z, x, y), layers) in &decoded {
        if z > 6 {
            continue;
        }
        for feature in layers.iter().flat_map(|l| &l.features) {
            let count = match &feature.props["count"] {
                PropValue::Int(n) => *n,
                PropValue::UInt(n) => *n as i64,
                other => panic!("count {other:?}"),
            };
            let PropValue::String(breakdown) = &feature.props["count_by_kind"] else {
                panic!("{z}/{x}/{y}: no breakdown in {:?}", feature.props);
            };
            let mut totals = BTreeMap::new();
            let summed = add_breakdown(breakdown, &mut totals);
            assert_eq!(
                summed, count,
                "{z}/{x}/{y}: {breakdown} against count {count}"
            );
            if z == 0 {
                for (value, n) in totals {
                    *world.entry(value).or_insert(0) += n;
                }
            }
            clusters += 1;
        }
    }
    assert!(clusters > 50, "{clusters} clusters checked");
    // Zoom 0 shows every row once: its breakdowns add up to the table's counts per kind (NULL
    // counted under the empty value).
    let sites = format!("\"{}\".sites", setup.schema.name);
    let expected: BTreeMap<String, i64> = setup
        .schema
        .client()
        .query(
            &format!("SELECT coalesce(kind, ''), count(*) FROM {sites} GROUP BY 1"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(world, expected);
    assert!(
        expected.len() >= 3,
        "several kinds, NULL among them: {expected:?}"
    );
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn change_capture_installs_over_names_holding_dollar_quotes() {
    // The trigger bodies are dollar-quoted and hold the table's names: a name containing the
    // quote's tag must neither break `changes install` nor end a body early.
    let mut setup = Setup::new("capturequote", "");
    let column = "la$f$bel$q$";
    setup.schema.execute(&format!(
        "ALTER TABLE {{schema}}.sites RENAME COLUMN label TO \"{column}\""
    ));
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace("\"label\"", &format!("\"{column}\"")),
    )
    .unwrap();
    setup.run(&["changes", "install"]).assert_success();
    clear_log(&mut setup);

    setup.schema.execute(&format!(
        "UPDATE {{schema}}.sites SET \"{column}\" = 'one' WHERE site_id = 5"
    ));
    setup.schema.execute(&format!(
        "UPDATE {{schema}}.sites SET \"{column}\" = 'many' WHERE site_id BETWEEN 10 AND 12"
    ));
    setup
        .schema
        .execute("UPDATE {schema}.sites SET kind = kind WHERE site_id BETWEEN 10 AND 12");
    let (old, new) = logged(&mut setup);
    assert_eq!((old.len(), new.len()), (4, 4), "{old:?} {new:?}");
}
