//! Gaps in change capture never leave an output (or its cluster cells) silently stale: triggers
//! disabled and enabled again around writes, writes in replica sessions, a trigger left
//! disabled, a trigger dropped and put back by `changes install`, and a deleted `captured` row.
//! Each output is held to a fresh seed whose cluster cells are summed from the rows.

use crate::common::capture::{CaptureWorld, ZOOMS};

/// Moves of five sites across the world, as `(id, lon, lat)`.
const MOVES: [(i64, f64, f64); 5] = [
    (3, -70.0, 40.0),
    (4, 20.0, -30.0),
    (5, 100.0, 50.0),
    (6, -120.0, -40.0),
    (7, 10.0, 60.0),
];

/// Capture installed, then a full seed of `sites.mbtiles`.
fn installed_and_seeded(label: &str) -> (CaptureWorld, std::path::PathBuf) {
    let world = CaptureWorld::new(label);
    world.run(&["changes", "install"]).assert_success();
    let output = world.path("sites.mbtiles");
    world.seed(&output, &[]);
    (world, output)
}

/// A bulk load's routine: `DISABLE TRIGGER USER`, writes, `ENABLE TRIGGER USER`. Nothing in
/// `tgenabled` shows it afterwards; the rewritten trigger rows do, and the next reseed renders
/// the output (and its cluster cells) whole, once, saying why.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn triggers_disabled_and_enabled_again_reseed_whole_once() {
    let (mut world, output) = installed_and_seeded("gap_disable_enable");
    world.execute("ALTER TABLE {schema}.sites DISABLE TRIGGER USER");
    for (id, lon, lat) in MOVES {
        world.move_site(id, lon, lat);
    }
    world.execute("DELETE FROM {schema}.sites WHERE site_id IN (1, 2)");
    world.execute("ALTER TABLE {schema}.sites ENABLE TRIGGER USER");

    let first = world.seed(&output, &["--dirty"]);
    assert!(
        first.stderr.contains("disabled and enabled again")
            && first.stderr.contains("reseeding everything"),
        "the reseed says why it renders everything: {}",
        first.stderr
    );
    world.assert_fresh(&output, "the reseed after a disable and enable");

    world.move_site(9, -50.0, -10.0);
    let second = world.seed(&output, &["--dirty"]);
    assert!(
        !second.stderr.contains("reseeding everything"),
        "once: {}",
        second.stderr
    );
    world.assert_fresh(&output, "a later reseed");
}

/// Writes in a session with `session_replication_role = replica` (logical replication's apply,
/// some bulk loaders) are captured: the install's triggers fire always.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn writes_of_replica_sessions_are_captured() {
    let (mut world, output) = installed_and_seeded("gap_replica_role");
    let moves: Vec<String> = MOVES
        .iter()
        .map(|(id, lon, lat)| {
            format!(
                "UPDATE {{schema}}.sites SET pt = ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326) \
                 WHERE site_id = {id};"
            )
        })
        .collect();
    world.execute(&format!(
        "SET session_replication_role = replica; {} DELETE FROM {{schema}}.sites WHERE site_id = 1;
         RESET session_replication_role;",
        moves.join(" ")
    ));
    let reseed = world.seed(&output, &["--dirty"]);
    assert!(
        !reseed.stderr.contains("reseeding everything"),
        "the log holds the writes, so the reseed renders only what they touched: {}",
        reseed.stderr
    );
    world.assert_fresh(&output, "the reseed after writes in a replica session");
}

/// One trigger left disabled: the reseed refuses (exit 2) naming the table and the fix,
/// `changes status` shows it, and once `changes install` enabled it again the next reseed
/// renders whole and is fresh.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_trigger_left_disabled_stops_the_reseed_and_shows_in_status() {
    let (mut world, output) = installed_and_seeded("gap_left_disabled");
    let update = world.trigger("update");
    world.execute(&format!(
        "ALTER TABLE {{schema}}.sites DISABLE TRIGGER \"{update}\""
    ));
    let (id, lon, lat) = MOVES[0];
    world.move_site(id, lon, lat);

    let refused = world.run(&[
        "seed",
        "--zoom",
        ZOOMS,
        "--output",
        output.to_str().unwrap(),
        "--dirty",
    ]);
    assert_eq!(refused.code, 2, "exit 2: {}", refused.stderr);
    assert!(
        refused.stderr.contains(".\"sites\"")
            && refused.stderr.contains("disabled")
            && refused.stderr.contains("oar-tiles changes install"),
        "the error names the table, what is wrong and the fix: {}",
        refused.stderr
    );
    let status = world.run(&["changes", "status"]);
    status.assert_success();
    assert!(
        status.stdout.contains("NOT captured") && status.stdout.contains("disabled"),
        "status shows the disabled trigger: {}",
        status.stdout
    );

    world.run(&["changes", "install"]).assert_success();
    let status = world.run(&["changes", "status"]);
    assert!(
        !status.stdout.contains("NOT captured"),
        "the install enabled it again: {}",
        status.stdout
    );
    let reseed = world.seed(&output, &["--dirty"]);
    assert!(
        reseed.stderr.contains("reseeding everything"),
        "{}",
        reseed.stderr
    );
    world.assert_fresh(&output, "the reseed after the install");
}

/// A trigger dropped, rows deleted, `changes install`, `seed --dirty`: the reseed renders whole,
/// and its clustered zooms must not keep the deleted rows from the cluster cells, which missed
/// the same deletes.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_dropped_trigger_put_back_rebuilds_the_cluster_cells() {
    let (mut world, output) = installed_and_seeded("gap_dropped_trigger");
    let delete = world.trigger("delete");
    world.execute(&format!("DROP TRIGGER \"{delete}\" ON {{schema}}.sites"));
    world.execute("DELETE FROM {schema}.sites WHERE site_id IN (1, 2, 3, 5, 6)");
    world.run(&["changes", "install"]).assert_success();

    let reseed = world.seed(&output, &["--dirty"]);
    assert!(
        reseed.stderr.contains("reseeding everything"),
        "{}",
        reseed.stderr
    );
    world.assert_fresh(&output, "the clustered zooms after the install");
}

/// The `captured` row of a table deleted by hand: the next reseed says so at WARN, records it
/// again and renders whole once; the one after trusts the log again. `changes install` records
/// a deleted row from its own snapshot too.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_deleted_captured_row_reseeds_whole_once() {
    let (mut world, output) = installed_and_seeded("gap_deleted_record");
    world.execute("DELETE FROM {changes}.captured");
    let (id, lon, lat) = MOVES[0];
    world.move_site(id, lon, lat);

    let first = world.seed(&output, &["--dirty"]);
    assert!(
        first.stderr.contains("WARN")
            && first.stderr.contains("was deleted")
            && first.stderr.contains("reseeding everything"),
        "the reseed warns and renders whole: {}",
        first.stderr
    );
    world.assert_fresh(&output, "the reseed after the record was deleted");
    let second = world.seed(&output, &["--dirty"]);
    assert!(
        !second.stderr.contains("reseeding everything"),
        "once: {}",
        second.stderr
    );

    world.execute("DELETE FROM {changes}.captured");
    world.run(&["changes", "install"]).assert_success();
    let third = world.seed(&output, &["--dirty"]);
    assert!(
        third.stderr.contains("reseeding everything") && !third.stderr.contains("was deleted"),
        "the install recorded it from its own snapshot: {}",
        third.stderr
    );
    let fourth = world.seed(&output, &["--dirty"]);
    assert!(
        !fourth.stderr.contains("reseeding everything"),
        "once: {}",
        fourth.stderr
    );
}
