//! What `scripts/test.sh` hands the tests in their environment: the addresses of the servers it
//! starts, the paths of the tools it installs, and a seed to replay a random failure. A test run
//! without what it needs fails, saying how to run it, rather than passing without checking.

const NEEDS: &str = "run scripts/test.sh, which starts the servers and sets OAR_TILES_TEST_*";

/// The value of the variable `name`, which `scripts/test.sh` sets.
pub fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!("{name} is not set: {NEEDS}"),
    }
}

/// The `strace` executable, from `scripts/test.sh`.
pub fn strace() -> String {
    const VARIABLE: &str = "OAR_TILES_TEST_STRACE";
    match std::env::var(VARIABLE) {
        Ok(path) if !path.is_empty() => path,
        _ => panic!(
            "{VARIABLE} is not set: the durability test runs through scripts/test.sh, which \
             installs strace and sets it"
        ),
    }
}

/// A seed number for a test's random moments: new each run, printed with every failure so that a
/// failure can be replayed by setting `OAR_TILES_TEST_SEED`.
pub fn fault_seed() -> u64 {
    std::env::var("OAR_TILES_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos(),
            ) | 1
        })
}
