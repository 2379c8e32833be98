//! An operator's first hour: what a cron line prints, what a served tree needs, and the messages
//! that meet a first mistake.

use crate::common::reseed::Setup;

/// Cron mails whatever a job prints, so `-q seed --dirty` with nothing to do prints nothing on
/// stdout; once a row changed, the same line prints the summary.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_quiet_reseed_with_nothing_to_do_prints_nothing() {
    let mut setup = Setup::new("quietcron", "");
    let output = setup.path("quiet.mbtiles");
    setup.seed(&output, &[]);

    let idle = setup.seed(&output, &["-q", "--dirty"]);
    assert_eq!(idle.stdout, "", "stderr:\n{}", idle.stderr);
    let again = setup.seed(&output, &["-q", "--dirty"]);
    assert_eq!(again.stdout, "", "stderr:\n{}", again.stderr);

    setup
        .schema
        .execute("UPDATE {schema}.sites SET label = 'renamed' WHERE site_id = 3");
    let changed = setup.seed(&output, &["-q", "--dirty"]);
    assert!(
        changed.stdout.contains("changed"),
        "a reseed that changed tiles says so:\n{}",
        changed.stdout
    );
}
