//! Geometries other than points in a clustered layer: a world-wide line and polygons cluster at a
//! representative point, seed, and reseed exactly like a full seed, in memory that does not grow
//! with a geometry's width.

use std::path::Path;
use std::process::Stdio;

use crate::common::reseed::{Setup, ZOOMS};
use crate::common::run::{assert_same_tiles, oar_tiles_command, read_mbtiles_raw, Run};

/// A seed's peak resident memory must stay under this (a few tens of MB in practice); summing every
/// cell a world-wide line's box covers took gigabytes.
const PEAK_RSS_LIMIT_KB: i64 = 500 * 1024;

/// The address space a seed may take, so that a run that would grow without bound fails at once
/// instead of filling the shared machine's memory. Far above what a seed needs (thread stacks and
/// allocator arenas reserve address space they never touch).
const ADDRESS_SPACE_LIMIT: u64 = 3 << 30;

/// Runs `oar-tiles seed` of [`ZOOMS`] into `output` with `extra` arguments under
/// [`ADDRESS_SPACE_LIMIT`], and returns how it ended and its peak resident memory in KiB.
#[allow(unsafe_code)] // setrlimit(2) and wait4(2) have no safe wrappers in libc.
#[allow(clippy::zombie_processes)] // wait4 reaps the child, out of std's sight.
fn measured_seed(setup: &Setup, output: &Path, extra: &[&str]) -> (Run, i64) {
    let mut args = vec![
        "seed",
        "--config",
        setup.config.to_str().unwrap(),
        "--zoom",
        ZOOMS,
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let stdout = setup.path("measured.stdout");
    let stderr = setup.path("measured.stderr");
    let mut command = oar_tiles_command(Some(&setup.schema.url), &args, &[]);
    command
        .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()));
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit(2), which
    // is async-signal-safe, on a limit value it owns.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            let limit = libc::rlimit {
                rlim_cur: ADDRESS_SPACE_LIMIT,
                rlim_max: ADDRESS_SPACE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let child = command.spawn().expect("start oar-tiles");
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4(2) writes only to the two pointers, which point at live locals; `child` is
    // reaped here, and never waited for again through std.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    let run = Run {
        code,
        stdout: std::fs::read_to_string(&stdout).unwrap(),
        stderr: std::fs::read_to_string(&stderr).unwrap(),
    };
    // Linux gives ru_maxrss in KiB.
    (run, usage.ru_maxrss)
}

/// A reseed (or full seed) that must succeed in bounded memory.
fn bounded_seed(setup: &Setup, output: &Path, extra: &[&str], what: &str) {
    let (run, peak) = measured_seed(setup, output, extra);
    assert_eq!(
        run.code, 0,
        "{what}: oar-tiles failed (peak RSS {peak} KiB)\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        peak < PEAK_RSS_LIMIT_KB,
        "{what}: peak RSS {peak} KiB, over {PEAK_RSS_LIMIT_KB} KiB"
    );
}

/// Makes the fixture's geometry column take any kind of geometry (and NULL) after a seed of it
/// as a point column, and checks that the same points still give the same bytes. Returns the
/// output seeded from the new column, which the steps reseed.
fn any_geometry(setup: &mut Setup) -> std::path::PathBuf {
    let typed = setup.path("typed.mbtiles");
    setup.seed(&typed, &[]);
    setup.schema.execute(
        "ALTER TABLE {schema}.sites ALTER COLUMN pt TYPE geometry(Geometry, 4326);
         ALTER TABLE {schema}.sites ALTER COLUMN pt DROP NOT NULL;",
    );
    setup.run(&["changes", "install"]).assert_success();
    let output = setup.path("reseeded.mbtiles");
    bounded_seed(setup, &output, &[], "full seed of points");
    assert_same_tiles(
        &read_mbtiles_raw(&typed),
        &read_mbtiles_raw(&output),
        "points in a geometry(Geometry) column against a geometry(Point) column",
    );
    output
}

/// Applies each step's SQL, then reseeds `output` and checks it against a full seed from rows,
/// and a full seed from cells against it too; every seed in bounded memory.
fn reseed_steps(setup: &mut Setup, output: &Path, steps: &[(&str, &str)]) {
    for (round, (what, sql)) in steps.iter().enumerate() {
        setup.schema.execute(sql);
        bounded_seed(setup, output, &["--dirty"], what);
        let full = setup.full(&format!("full-{round}.mbtiles"));
        assert_same_tiles(
            &full,
            &read_mbtiles_raw(output),
            &format!("{what}: the reseed against a full seed from rows"),
        );
        let from_cells = setup.path(&format!("cells-{round}.mbtiles"));
        bounded_seed(setup, &from_cells, &[], what);
        assert_same_tiles(
            &full,
            &read_mbtiles_raw(&from_cells),
            &format!("{what}: a full seed from cells against one from rows"),
        );
    }
}

/// Every zoom clustered, on a fine grid: a line across the world's box once put all of its cells
/// (16,384 × 16,384 at zoom 10) into one set.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_world_wide_line_in_a_clustered_layer_reseeds_in_bounded_memory() {
    let mut setup = Setup::new("wideline", "cluster_maxzoom = 10\ncluster_cell = 256");
    let output = any_geometry(&mut setup);
    reseed_steps(
        &mut setup,
        &output,
        &[
            (
                "a world-wide line",
                "INSERT INTO {schema}.sites (site_id, label, kind, score, pt) VALUES
                 (9001, 'pipeline', 'knit', 3, 'SRID=4326;LINESTRING(-179 -80, 179 80)')",
            ),
            (
                "a world-wide polygon",
                "INSERT INTO {schema}.sites (site_id, label, kind, score, pt) VALUES
                 (9002, 'ocean', 'woven', 4,
                  'SRID=4326;POLYGON((-179 -80, 179 -80, 179 80, -179 80, -179 -80))')",
            ),
            (
                "the line moved",
                "UPDATE {schema}.sites SET pt = 'SRID=4326;LINESTRING(179 -75, 0 0, -179 82)'
                 WHERE site_id = 9001",
            ),
            (
                "the line and the polygon deleted",
                "DELETE FROM {schema}.sites WHERE site_id IN (9001, 9002)",
            ),
        ],
    );
}

/// Clustered zooms place a line or a polygon at a point of it; the zooms above draw it whole.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn lines_and_polygons_cluster_at_a_point_of_them_and_are_drawn_whole_above() {
    let mut setup = Setup::new("widepoly", "cluster_maxzoom = 6\ncluster_cell = 256");
    let output = any_geometry(&mut setup);
    reseed_steps(
        &mut setup,
        &output,
        &[
            (
                "a polygon, a line, an empty geometry and a NULL",
                "INSERT INTO {schema}.sites (site_id, label, kind, score, pt) VALUES
                 (9001, 'estate', 'woven', 4,
                  'SRID=4326;POLYGON((106.5 10.5, 107.5 10.5, 107.5 11.5, 106.5 11.5, 106.5 10.5))'),
                 (9002, 'canal', 'knit', 3, 'SRID=4326;LINESTRING(105 9, 106.75 10.8, 108 12)'),
                 (9003, 'nowhere', NULL, 5, 'SRID=4326;LINESTRING EMPTY'),
                 (9004, 'unknown', NULL, 6, NULL)",
            ),
            (
                "the polygon and the line moved, the empty one became a point",
                "UPDATE {schema}.sites
                     SET pt = 'SRID=4326;POLYGON((89.5 23, 91 23, 91 24.5, 89.5 24.5, 89.5 23))'
                     WHERE site_id = 9001;
                 UPDATE {schema}.sites SET pt = 'SRID=4326;LINESTRING(-1 -1, 1 1)'
                     WHERE site_id = 9002;
                 UPDATE {schema}.sites SET pt = 'SRID=4326;POINT(106.7 10.8)' WHERE site_id = 9003",
            ),
            (
                "a point became a line",
                "UPDATE {schema}.sites SET pt = 'SRID=4326;LINESTRING(106.70 10.80, 106.75 10.85)'
                 WHERE site_id = 4",
            ),
            (
                "the polygon and the line deleted",
                "DELETE FROM {schema}.sites WHERE site_id IN (9001, 9002)",
            ),
        ],
    );
}
