//! Statements of thousands of rows under change capture, as registries import contributors'
//! lists: the reseed reads each statement's log row once, not once per row it logged, and its
//! tiles equal a full seed's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::reseed::Setup;
use crate::common::run::{assert_same_tiles, oar_tiles_with, read_mbtiles_raw, read_tree, summary};

/// Rows of each bulk statement: enough that reading a log row's arrays once per logged geometry
/// (6,000 × 2 geometries, each read of the arrays some 50 TOAST pages) would touch millions of
/// pages.
const BULK_ROWS: i64 = 6_000;

/// Blocks of the relation `oid` read or found in shared buffers, as the server's statistics count
/// them once every backend that read it has reported.
fn blocks_fetched(setup: &mut Setup, oid: u32) -> i64 {
    setup
        .schema
        .client()
        .query_one("SELECT pg_stat_get_blocks_fetched($1)", &[&oid])
        .unwrap()
        .get(0)
}

/// Waits until no backend of the query `where_clause` (over `pg_stat_activity`, with `$1`) is
/// left: a backend reports its block counts when it exits, before it leaves the activity view.
fn wait_until_gone(
    setup: &mut Setup,
    where_clause: &str,
    value: &(dyn postgres::types::ToSql + Sync),
) {
    let query = format!("SELECT count(*) FROM pg_stat_activity WHERE {where_clause}");
    let started = std::time::Instant::now();
    loop {
        let left: i64 = setup
            .schema
            .client()
            .query_one(&query, &[value])
            .unwrap()
            .get(0);
        if left == 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "a backend of `{where_clause}` never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs PostgreSQL + PostGIS (scripts/test.sh)"]
fn a_bulk_statement_is_read_from_the_change_log_once_not_once_per_row() {
    let mut setup = Setup::new("bulk_log", "");
    let reseeded = setup.path("reseeded.mbtiles");
    setup.seed(&reseeded, &[]);

    // An import of a contributor's list, an edit of all its names, a move of half its points:
    // three statements, each one log row holding thousands of geometries in arrays.
    setup.schema.execute(&format!(
        "INSERT INTO {{schema}}.sites (site_id, label, kind, score, pt)
           SELECT 100000 + i, 'bulk ' || i, 'knit', i % 17,
                  ST_SetSRID(ST_MakePoint(100 + (i % 80) * 0.125, 5 + (i / 80) * 0.125), 4326)
           FROM generate_series(1, {BULK_ROWS}) i;
         UPDATE {{schema}}.sites SET label = label || ' (2)' WHERE site_id > 100000;
         UPDATE {{schema}}.sites SET pt = ST_Translate(pt, 0.01, 0.01)
           WHERE site_id > 100000 AND site_id % 2 = 0;"
    ));
    // A COPY logs like a statement; a transaction of many single-row statements, a log row each.
    let table = format!("\"{}\".sites", setup.schema.name);
    let mut copy = setup
        .schema
        .client()
        .copy_in(&format!(
            "COPY {table} (site_id, label, kind, score, pt) FROM STDIN"
        ))
        .unwrap();
    for i in 1..=BULK_ROWS / 3 {
        let (lon, lat) = (
            -60.0 + (i % 80) as f64 * 0.125,
            -30.0 + (i / 80) as f64 * 0.125,
        );
        let line = format!(
            "{}\tcopied {i}\tsew\t{}\tSRID=4326;POINT({lon} {lat})\n",
            200_000 + i,
            i % 5
        );
        std::io::Write::write_all(&mut copy, line.as_bytes()).unwrap();
    }
    copy.finish().unwrap();
    let singles: String = (1..=200)
        .map(|i| {
            format!(
                "UPDATE {{schema}}.sites SET score = score + 1 WHERE site_id = {};",
                200_000 + i
            )
        })
        .collect();
    setup.schema.execute(&format!("BEGIN; {singles} COMMIT;"));
    let changes_schema = setup.changes_schema.clone();
    let toast: u32 = setup
        .schema
        .client()
        .query_one(
            "SELECT c.reltoastrelid::int8 FROM pg_class c
             WHERE c.oid = to_regclass(format('%I.change_log', $1::text))",
            &[&changes_schema],
        )
        .map(|row| u32::try_from(row.get::<_, i64>(0)).unwrap())
        .unwrap();
    assert_ne!(toast, 0, "the change log has a TOAST table");
    // The statements' own writes to the TOAST table are counted when their session ends.
    let writer: i32 = setup
        .schema
        .client()
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    setup.schema.reconnect();
    wait_until_gone(&mut setup, "pid = $1", &writer);
    let before = blocks_fetched(&mut setup, toast);

    let application = format!("oar-tiles-bulk-{}", std::process::id());
    let summary_path = setup.path("summary.json");
    let run = oar_tiles_with(
        Some(&setup.schema.url),
        &[
            "seed",
            "--config",
            setup.config.to_str().unwrap(),
            "--zoom",
            crate::common::reseed::ZOOMS,
            "--output",
            reseeded.to_str().unwrap(),
            "--dirty",
            "--summary-json",
            summary_path.to_str().unwrap(),
        ],
        &[("PGAPPNAME", application.as_str())],
    );
    run.assert_success();
    wait_until_gone(&mut setup, "application_name = $1", &application);
    let fetched = blocks_fetched(&mut setup, toast) - before;

    let pages: i64 = setup
        .schema
        .client()
        .query_one(
            "SELECT (pg_relation_size($1::oid) / current_setting('block_size')::int8)",
            &[&toast],
        )
        .unwrap()
        .get(0);
    // Each bulk log row's arrays are read a few times (the geometries, the pairs of the
    // move); read once per logged geometry they cost thousands of times the table.
    assert!(
        fetched <= 20 * pages + 200,
        "the reseed fetched {fetched} blocks of the change log's TOAST table of {pages} pages: \
         its arrays were read again for every geometry they hold"
    );
    let json = summary(&summary_path);
    assert!(
        json[0]["tiles_queried"].as_u64().unwrap() > 0,
        "the reseed rendered the bulk statements' tiles: {json}"
    );
    let full = setup.full("full.mbtiles");
    assert_same_tiles(
        &full,
        &read_mbtiles_raw(&reseeded),
        "a reseed after bulk statements against a full seed",
    );
}

/// A statement of more changed geometries than the cluster cells find one by one (50,000: past it
/// they sum every cell again from the rows), under change capture: the cells learn it from the
/// first 50,001 geometries they read, and the reseed's clusters still equal a full seed's.
#[test]
#[ignore = "needs PostgreSQL + PostGIS (scripts/test.sh)"]
fn a_statement_past_the_cells_limit_sums_every_cell_again_and_equals_a_full_seed() {
    let mut setup = Setup::new("bulk_cells", "cluster_maxzoom = 8\ncluster_cell = 256");
    let reseeded = setup.path("reseeded.mbtiles");
    setup.seed(&reseeded, &[]);
    // 26,000 rows moved in one statement: 52,000 geometries, old and new sides.
    setup.schema.execute(
        "INSERT INTO {schema}.sites (site_id, label, kind, score, pt)
           SELECT 300000 + i, 'moved ' || i, 'knit', i % 7,
                  ST_SetSRID(ST_MakePoint(-20 + (i % 200) * 0.2, -10 + (i / 200) * 0.2), 4326)
           FROM generate_series(1, 26000) i;",
    );
    setup.seed(&reseeded, &["--dirty"]);
    setup.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.05, 0.03) WHERE site_id > 300000;",
    );
    let run = setup.seed(&reseeded, &["--dirty"]);
    assert!(
        run.stderr.contains("summing every cluster cell"),
        "past 50,000 changed geometries the cells are summed again: {}",
        run.stderr
    );
    assert_same_tiles(
        &setup.full("full.mbtiles"),
        &read_mbtiles_raw(&reseeded),
        "a reseed after a statement past the cells' limit against a full seed",
    );
}

/// A statement that moves every row (an import replacing each facility's position): past the
/// changes of an update of three rows in four, the reseed walks the whole pyramid as a seed does,
/// without working out its dirty tiles, keeps the cluster cells it brought up to date from the log
/// (no second sum from the rows), and leaves what a full seed leaves, on MBTiles and a tree.
#[test]
#[ignore = "needs PostgreSQL + PostGIS (scripts/test.sh)"]
fn a_statement_moving_every_row_is_walked_whole_and_equals_a_full_seed() {
    let mut setup = Setup::new("bulk_walk", "cluster_maxzoom = 6\ncluster_cell = 256");
    // 8,000 rows more, so an update of all of them (16,000 geometries, old and new sides) is past
    // the least a whole walk is taken for (10,000); analysed, as autovacuum would.
    setup.schema.execute(
        "INSERT INTO {schema}.sites (site_id, label, kind, score, pt)
           SELECT 400000 + i, 'walked ' || i, 'knit', i % 7,
                  ST_SetSRID(ST_MakePoint(95 + (i % 100) * 0.1, 5 + (i / 100) * 0.1), 4326)
           FROM generate_series(1, 8000) i;
         ANALYZE {schema}.sites;",
    );
    let outputs = [
        setup.path("reseeded.mbtiles"),
        PathBuf::from(format!("dir:{}", setup.path("tree").display())),
    ];
    for output in &outputs {
        setup.seed(output, &[]);
    }
    setup
        .schema
        .execute("UPDATE {schema}.sites SET pt = ST_Translate(pt, 0.05, 0.03);");
    let full = setup.full("full.mbtiles");
    for output in &outputs {
        let run = setup.seed(output, &["--dirty"]);
        assert!(
            run.stderr
                .contains("the whole pyramid is walked as a seed walks it"),
            "{}: a statement moving every row is walked whole: {}",
            output.display(),
            run.stderr
        );
        assert!(
            !run.stderr.contains("summing every cluster cell"),
            "{}: the cells, up to date from the log, are not summed again: {}",
            output.display(),
            run.stderr
        );
        let tiles = match output.to_str().unwrap().strip_prefix("dir:") {
            Some(root) => read_tree(Path::new(root), "pbf"),
            None => read_mbtiles_raw(output),
        };
        assert_same_tiles(
            &full,
            &tiles,
            &format!(
                "{}: a reseed walked whole against a full seed",
                output.display()
            ),
        );
    }
}
