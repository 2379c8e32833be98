//! Sharded runs on a real batch engine: SLURM (Debian's slurm-wlm, one node on this machine,
//! started by `scripts/test.sh` through `scripts/slurm.sh`). `sbatch --array=0-3` runs the shards,
//! each taking its index from SLURM's own variables; task 2 is killed mid-run by
//! `scontrol requeue` on its first try and SLURM runs it again; `finalize` is a job of its own
//! with `--dependency=afterok`. The finalized output equals one unsharded run, tile for tile.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::run::{
    assert_same_tiles, oar_tiles_with, read_mbtiles_raw, single_layer_config,
};
use crate::common::s3::S3Server;

/// Variable naming the cluster's config file, which `scripts/test.sh` sets.
const SLURM_CONF_ENV: &str = "OAR_TILES_TEST_SLURM_CONF";
/// The longest any wait on SLURM may take before the test gives up.
const PATIENCE: Duration = Duration::from_secs(600);
/// Each row costs 10 ms in sessions that set `oar.slow`: the first try of task 2 is still running
/// when it is killed.
const SLOW_FILTER: &str =
    "filter = \"current_setting('oar.slow', true) IS NULL OR pg_sleep(0.01) IS NOT NULL\"";

fn slurm_conf() -> String {
    match std::env::var(SLURM_CONF_ENV) {
        Ok(conf) if Path::new(&conf).exists() => conf,
        _ => panic!(
            "{SLURM_CONF_ENV} is not set: the SLURM tests run through scripts/test.sh, which \
             starts a one-node cluster (scripts/slurm.sh) and sets it"
        ),
    }
}

/// A SLURM client command against the test cluster.
fn slurm(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(program)
        .args(args)
        .env("SLURM_CONF", slurm_conf())
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Polls until `done` holds, failing with `what` and the logs in `dir` after [`PATIENCE`].
fn wait_until(what: &str, dir: &Path, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > PATIENCE {
            let mut logs = String::new();
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                if entry.path().extension().is_some_and(|e| e == "log") {
                    logs += &format!(
                        "--- {}\n{}\n",
                        entry.path().display(),
                        std::fs::read_to_string(entry.path()).unwrap_or_default()
                    );
                }
            }
            panic!(
                "waited {PATIENCE:?} for {what}; the jobs' logs:\n{logs}\n{}",
                cluster_state()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the cluster says of its queue and node, and the last lines of its daemons' logs, for a
/// failure to name why a job did not run.
fn cluster_state() -> String {
    let conf = slurm_conf();
    let mut state = String::new();
    for (program, args) in [
        ("squeue", &["-a", "-r", "-o", "%i %T %r %S"][..]),
        ("sinfo", &["-N", "-o", "%N %T %E"][..]),
        ("scontrol", &["show", "job"][..]),
    ] {
        let output = Command::new(program)
            .args(args)
            .env("SLURM_CONF", &conf)
            .output();
        state += &match output {
            Ok(o) => format!(
                "--- {program} {args:?}\n{}{}\n",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("--- {program}: {e}\n"),
        };
    }
    let logs = Path::new(&conf).parent().unwrap().join("log");
    for daemon in ["slurmctld.log", "slurmd.log"] {
        let text = std::fs::read_to_string(logs.join(daemon)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(60)..];
        state += &format!("--- the last lines of {daemon}\n{}\n", tail.join("\n"));
    }
    state
}

/// The state of array task `task` of `job` as squeue shows it, empty once it left the queue.
fn task_state(job: &str, task: u32) -> String {
    slurm(
        "squeue",
        &["-h", "-r", "-j", &format!("{job}_{task}"), "-o", "%T"],
        &[],
    )
}

/// Runs a sharded seed of the fixture into `output` as SLURM jobs (with `env` for the tool), task
/// 2 requeued on its first try, then `finalize` after all; returns when `finalize` ended.
fn sharded_on_slurm(fixture: &Fixture, output: &str, label: &str, env: &[(&str, &str)]) {
    let bin = env!("CARGO_BIN_EXE_oar-tiles");
    let config = fixture.config.to_str().unwrap();
    let dir = fixture.dir.path();
    let script = dir.join(format!("{label}-shard.sh"));
    // Task 2's first try reads through slow sessions and, whatever its shard's size (a shard may
    // own few rows), never ends by itself: only the requeue ends it, so the kill always lands on a
    // running task, and a kill that never comes fails the test's wait for the requeue. Its second
    // try is at full speed. Each start is logged with SLURM's restart count.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             echo \"start task=$SLURM_ARRAY_TASK_ID restart=${{SLURM_RESTART_COUNT:-0}}\"\n\
             if [ \"$SLURM_ARRAY_TASK_ID\" = 2 ] && [ -z \"$SLURM_RESTART_COUNT\" ]; then\n\
               DATABASE_URL=$SLOW_URL '{bin}' seed --config '{config}' --output '{output}' --zoom 0-9 &\n\
               wait\n\
               echo \"first try's seed ended; held until the requeue\"\n\
               exec tail -f /dev/null\n\
             fi\n\
             DATABASE_URL=$FAST_URL exec '{bin}' seed --config '{config}' --output '{output}' --zoom 0-9\n"
        ),
    )
    .unwrap();
    let slow = format!("{}?options=-c%20oar.slow%3D1", fixture.schema.url);
    let mut job_env: Vec<(&str, &str)> = vec![
        ("FAST_URL", fixture.schema.url.as_str()),
        ("SLOW_URL", slow.as_str()),
    ];
    job_env.extend_from_slice(env);
    let logs = format!("{}/{label}-%a.log", dir.display());
    let job = slurm(
        "sbatch",
        &[
            "--parsable",
            "--array=0-3",
            "--requeue",
            "--open-mode=append",
            &format!("--job-name=oar-{label}"),
            &format!("--output={logs}"),
            script.to_str().unwrap(),
        ],
        &job_env,
    );
    let finalize_log = format!("{}/{label}-finalize.log", dir.display());
    let wrap = format!(
        "DATABASE_URL=$FAST_URL '{bin}' finalize --config '{config}' --output '{output}'; echo \"finalize exit $?\""
    );
    slurm(
        "sbatch",
        &[
            "--parsable",
            &format!("--dependency=afterok:{job}"),
            &format!("--output={finalize_log}"),
            "--wrap",
            &wrap,
        ],
        &job_env,
    );
    // Task 2's first try: killed once its seed is at work, then SLURM runs it again.
    let task_log = dir.join(format!("{label}-2.log"));
    wait_until("task 2's first seed to begin", dir, || {
        std::fs::read_to_string(&task_log)
            .is_ok_and(|log| log.contains("restart=0") && log.contains("seeding tileset"))
    });
    assert_eq!(
        task_state(&job, 2),
        "RUNNING",
        "only the requeue ends the first try"
    );
    slurm("scontrol", &["requeue", &format!("{job}_2")], &[]);
    // SLURM itself holds a requeued job back until its begin time, the requeue plus the cluster's
    // credential lifetime and a second (`cred_expire`, which scripts/slurm.sh sets short): a start
    // in the second its first try's credential was revoked in would be killed by slurmd ("Job
    // credential revoked"). So the test forces no start time and waits for the cluster's state.
    wait_until("task 2 to wait in the queue again", dir, || {
        task_state(&job, 2) == "PENDING"
    });
    wait_until("finalize to end", dir, || {
        std::fs::read_to_string(&finalize_log).is_ok_and(|log| log.contains("finalize exit"))
    });
    let finalized = std::fs::read_to_string(&finalize_log).unwrap();
    assert!(finalized.contains("finalize exit 0"), "{finalized}");
    let task = std::fs::read_to_string(&task_log).unwrap();
    assert!(
        task.contains("restart=0") && task.contains("restart=1"),
        "task 2 ran twice: {task}"
    );
}

fn fixture(label: &str, extra: &str) -> Fixture {
    let points = hub_with_scatter(400, 5, 4, [-74.1, 40.6, -73.8, 40.9]);
    Fixture::new(label, &points, "slurm.toml", |schema| {
        format!(
            "{extra}\n{}",
            single_layer_config(&schema.name, "sites", "", SLOW_FILTER)
        )
    })
}

fn single_run(fixture: &Fixture, env: &[(&str, &str)]) -> crate::common::run::Tiles {
    let path = fixture.path("single.mbtiles");
    let args = fixture.seed_args(path.to_str().unwrap(), "0-9", &[]);
    oar_tiles_with(Some(&fixture.schema.url), &args, env).assert_success();
    read_mbtiles_raw(&path)
}

#[test]
#[ignore = "needs PostGIS and SLURM: run scripts/test.sh"]
fn slurm_array_shards_into_mbtiles_with_a_requeued_task_finalize_equal_to_one_run() {
    let fixture = fixture("slurm_mbtiles", "");
    let output = fixture.path("sharded.mbtiles");
    sharded_on_slurm(&fixture, output.to_str().unwrap(), "mbtiles", &[]);
    assert_same_tiles(
        &single_run(&fixture, &[]),
        &read_mbtiles_raw(&output),
        "the finalized MBTiles of 4 SLURM tasks and one unsharded run",
    );
}

#[test]
#[ignore = "needs PostGIS, SLURM and the S3 test server: run scripts/test.sh"]
fn slurm_array_shards_into_an_s3_prefix_with_a_requeued_task_finalize_equal_to_one_run() {
    let server = S3Server::start("slurm");
    let fixture = fixture("slurm_s3", &server.config_table(""));
    let env = server.env();
    sharded_on_slurm(&fixture, "s3://slurm/tiles", "s3", &env);
    assert_same_tiles(
        &single_run(&fixture, &env),
        &server.stored_tiles("slurm", "tiles"),
        "the finalized S3 prefix of 4 SLURM tasks and one unsharded run",
    );
}
