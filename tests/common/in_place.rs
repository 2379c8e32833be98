//! The rounds every store's in-place PMTiles test drives: seed an archive into the store, change
//! ten rows and reseed a few times, and check each time that the run sent a small share of the
//! archive, that the object is the one before it with the change in front (the store kept the old
//! bytes itself), that it validates, and at the end that a third-party reader finds the tiles of
//! a full seed in it. Each store's module says how it seeds, reads the object back and what it
//! must leave behind.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::common::fixture::Fixture;
use crate::common::pmtiles::seed;
use crate::common::pmtiles_reader::{assert_same_digests, read_archive};
use crate::common::run::{oar_tiles, problems, Run};

/// A PMTiles archive held by a store, as one store's test module reaches it: through a
/// counting proxy, from one machine (one cache folder) unless a test says otherwise.
pub trait ArchiveInStore: std::ops::DerefMut<Target = Fixture> {
    /// Reads the object back into `name` in the test directory; its path and bytes.
    fn download(&self, name: &str) -> (PathBuf, Vec<u8>);

    /// The archive's address as a command line names it (`gs://bucket/key`).
    fn address(&self) -> String;

    /// `args` run with the store's settings in the environment, reaching it through the proxy,
    /// from a machine whose cache is the test directory's folder `machine`.
    fn run_on_store_as(&self, machine: &str, args: &[&str]) -> Run;

    /// `args` run as [`ArchiveInStore::run_on_store_as`] from the one machine most tests use.
    fn run_on_store(&self, args: &[&str]) -> Run {
        self.run_on_store_as("machine-a", args)
    }

    /// The bytes sent to the store through the proxy so far.
    fn sent(&self) -> u64;

    /// The bytes the store answered through the proxy so far.
    fn received(&self) -> u64;

    /// Checks what the store holds beside the archive after a reseed (no piece left, say).
    fn after_reseed(&self) {}
}

/// Seeds zooms 0-10 into the archive in the store with `extra` arguments (`--dirty`); the run,
/// which must succeed, and the bytes it sent to the store.
pub fn seed_in_store(setup: &impl ArchiveInStore, extra: &[&str]) -> (Run, u64) {
    let target = setup.address();
    let args = setup.seed_args(&target, "0-10", extra);
    let before = setup.sent();
    let run = setup.run_on_store(&args);
    run.assert_success();
    (run, setup.sent() - before)
}

/// Changes the labels of the first `rows` facilities, differently each `round`.
pub fn change_labels(setup: &mut Fixture, rows: u32, round: u32) {
    setup.schema.execute(&format!(
        "UPDATE {{schema}}.sites SET label = md5(label || '{round}') WHERE site_id <= {rows}"
    ));
}

/// Seeds the archive, then `rounds` times changes ten rows and reseeds: each reseed sends at most
/// a twentieth of the archive and leaves the old object whole at its end; the last archive
/// holds a full seed's tiles as the Python reader reads them, and `validate --against-db --all`
/// finds it equal to the database, read from the store. `at_least` is the size the first
/// archive must pass for the share to mean something (the store's part size, say).
pub fn reseeds_append_the_change(setup: &mut impl ArchiveInStore, rounds: u32, at_least: u64) {
    let started = Instant::now();
    seed_in_store(setup, &[]);
    eprintln!("seeded in {:?}", started.elapsed());
    let (_, mut previous) = setup.download("first.pmtiles");
    eprintln!("seeded and read back in {:?}", started.elapsed());
    let first = previous.len() as u64;
    assert!(
        first > at_least,
        "the archive is {first} bytes, too small to show what a reseed sends"
    );
    let mut last = PathBuf::new();
    for round in 1..=rounds {
        let started = Instant::now();
        change_labels(setup, 10, round);
        let (run, sent) = seed_in_store(setup, &["--dirty"]);
        let reseeded = Instant::now();
        let (path, bytes) = setup.download(&format!("round-{round}.pmtiles"));
        let size = bytes.len() as u64;
        eprintln!(
            "round {round}: a 10-row change sent {sent} bytes in {:?}; the archive is {size}, read back in {:?}",
            reseeded - started,
            reseeded.elapsed()
        );
        assert!(
            sent * 20 <= size,
            "round {round}: a 10-row change sent {sent} bytes of a {size}-byte archive: {}",
            run.stderr
        );
        assert!(
            bytes.ends_with(&previous),
            "round {round}: the {size}-byte archive does not end with the {}-byte one before it: {}",
            previous.len(),
            run.stderr
        );
        assert_eq!(
            bytes[96], 0,
            "round {round}: an update in place is not clustered"
        );
        let validating = Instant::now();
        oar_tiles(None, &["validate", path.to_str().unwrap()]).assert_success();
        eprintln!("round {round}: validated in {:?}", validating.elapsed());
        setup.after_reseed();
        previous = bytes;
        last = path;
    }
    let started = Instant::now();
    let what = format!("the archive rebuilt in place {rounds} times");
    assert_equals_a_full_seed(setup, &last, &what);
    eprintln!("compared with a full seed in {:?}", started.elapsed());
    let started = Instant::now();
    let config = setup.config.to_str().unwrap().to_string();
    let target = setup.address();
    let checked = setup.run_on_store(&[
        "validate",
        "--json",
        "--config",
        &config,
        "--tileset",
        "sites",
        "--against-db",
        "--all",
        &target,
    ]);
    let report: serde_json::Value = serde_json::from_str(&checked.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", checked.stdout, checked.stderr));
    assert_eq!(checked.code, 0, "{report:#}\n{}", checked.stderr);
    assert_eq!(problems(&report), [], "{report:#}");
    eprintln!("validated against the database in {:?}", started.elapsed());
}

/// Fails unless the archive at `archive` holds, as the Python reader reads it, the tiles of a full
/// seed into a local file made now; `what` names the archive in the failure.
pub fn assert_equals_a_full_seed(setup: &Fixture, archive: &Path, what: &str) {
    let full = setup.path("full.pmtiles");
    seed(setup, &full, &[]);
    assert_same_digests(
        &read_archive(&full).tiles,
        &read_archive(archive).tiles,
        &format!("{what} against a full seed"),
    );
}

/// Seeds the archive from one machine, then twice changes ten rows and reseeds from another that
/// never held it: each reseed reads at most a tenth of the archive (its header and directories,
/// not its tiles), sends at most a twentieth, and leaves an archive that holds a full seed's
/// tiles and validates, declaring its hash pending.
pub fn reseeds_from_an_empty_cache_read_the_directories(setup: &mut impl ArchiveInStore) {
    seed_in_store(setup, &[]);
    let target = setup.address();
    for round in 1..=2 {
        change_labels(setup, 10, round);
        let args = setup.seed_args(&target, "0-10", &["--dirty"]);
        let (sent, received) = (setup.sent(), setup.received());
        let run = setup.run_on_store_as("machine-b", &args);
        run.assert_success();
        let (sent, received) = (setup.sent() - sent, setup.received() - received);
        let (path, bytes) = setup.download(&format!("round-{round}.pmtiles"));
        let size = bytes.len() as u64;
        eprintln!("round {round}: sent {sent}, received {received} of a {size}-byte archive");
        assert!(
            received * 10 <= size && sent * 20 <= size,
            "round {round}: a reseed from an empty cache received {received} and sent {sent} \
             bytes of a {size}-byte archive: {}",
            run.stderr
        );
        // The first time from its directories; then from the working copy that left.
        assert!(
            !run.stderr.contains("downloading")
                && (round > 1
                    || run
                        .stderr
                        .contains("read the archive's header and directories")),
            "round {round}: {}",
            run.stderr
        );
        let archive = read_archive(&path);
        assert!(
            archive.metadata["oar_tiles_hash_pending"].is_string(),
            "{}",
            archive.metadata
        );
        oar_tiles(None, &["validate", path.to_str().unwrap()]).assert_success();
        setup.after_reseed();
        let what = format!("round {round}: the archive updated from a skeleton");
        assert_equals_a_full_seed(setup, &path, &what);
    }
}
