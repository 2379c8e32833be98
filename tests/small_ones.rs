//! What a new user types and pipes, each answered right: a reader of stdout that goes away
//! (`| head`), and an S3 output without credentials.

use std::process::Stdio;

use crate::common::capture::CaptureWorld;
use crate::common::run::oar_tiles_command;

/// Runs `oar-tiles ARGS` with its stdout a pipe whose reader is already gone, as after `| head`
/// once head has its lines; returns the exit code and stderr.
fn run_into_closed_pipe(url: Option<&str>, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = oar_tiles_command(url, args, &[])
        .stdout(Stdio::from(writer))
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

/// `config schema | head`: no panic, no error, exit 0 as for a reader that read it all.
#[test]
fn a_reader_gone_from_config_schema_is_no_error() {
    let (code, stderr) = run_into_closed_pipe(None, &["config", "schema"]);
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    assert!(!stderr.contains("error"), "no error line: {stderr}");
    assert_eq!(code, Some(0), "the documented exit code: {stderr}");
}

/// `changes status | head`: no panic, exit 0.
#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn a_reader_gone_from_changes_status_is_no_error() {
    let world = CaptureWorld::new("gone_reader");
    world.run(&["changes", "install"]).assert_success();
    let config = world.fixture.config.to_str().unwrap();
    let (code, stderr) = run_into_closed_pipe(
        Some(&world.fixture.schema.url),
        &["changes", "--config", config, "status"],
    );
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    assert_eq!(code, Some(0), "the documented exit code: {stderr}");
}

/// An S3 output with no credentials anywhere: one line saying so and where the chain looked, at
/// once (no retries of an answer that cannot change).
#[test]
fn s3_without_credentials_says_so_in_one_line_at_once() {
    let home = tempfile::tempdir().unwrap();
    let mut command = oar_tiles_command(None, &["inspect", "s3://no-credentials-here/v1/"], &[]);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
        .env("HOME", home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let began = std::time::Instant::now();
    let output = command.output().unwrap();
    let took = began.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no AWS credentials found"), "{stderr}");
    assert!(
        stderr.contains("~/.aws/credentials"),
        "where it looked: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(took.as_secs() < 3, "at once, not after retries: {took:?}");
}
