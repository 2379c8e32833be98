//! The container image that `scripts/image.sh` builds, run as its users run it: `--help`, a seed
//! of PostGIS into a mounted volume, a change-capture reseed, and SIGTERM to the tool running as
//! the container's PID 1, plus what the image says of itself (labels, user, CA certificates).
//!
//! `scripts/test.sh` builds the image and names its OCI archive in `OAR_TILES_TEST_IMAGE`. The
//! tests run it with podman where podman can run containers on this machine, and otherwise as a
//! runtime would without one: the archive's layers unpacked into a root file system, the
//! entrypoint started in a chroot of it, in PID and mount namespaces of its own (so it is PID 1),
//! as the image's user, with its environment and working directory, and the volume bind-mounted.
//! `OAR_TILES_TEST_IMAGE_RUNTIME=podman|chroot` picks one. The test binary prints which one ran
//! (a line `image tests: … runs with podman` or `… in a chroot`), and so does every failure.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::fixture::{seed_args_for, Fixture};
use crate::common::pg::{hub_with_scatter, Point};
use crate::common::run::{
    assert_same_tiles, differences, oar_tiles, pixel, read_mbtiles_raw, run_from, signal_pid,
    single_layer_config, wait_for_progress, Run,
};

/// Variable naming the image's OCI archive, which `scripts/test.sh` sets.
const IMAGE_ENV: &str = "OAR_TILES_TEST_IMAGE";
/// Variable that picks the runtime (`podman` or `chroot`) instead of the first that works.
const RUNTIME_ENV: &str = "OAR_TILES_TEST_IMAGE_RUNTIME";
/// How long a stopped container may take to exit before it is killed, as `podman stop -t` does.
const STOP_GRACE: Duration = Duration::from_secs(60);
/// Rows cost a millisecond each in sessions that set `oar.slow`: a seed through such a session is
/// still running when it is stopped, and other seeds of the same data are fast.
const SLOW_FILTER: &str =
    "filter = \"current_setting('oar.slow', true) IS NULL OR pg_sleep(0.001) IS NOT NULL\"";

/// How the tests start containers of the image.
enum Runtime {
    /// `podman [GLOBAL…] run [RUN…] ID`, for the options this machine needs.
    Podman {
        id: String,
        global: Vec<&'static str>,
        run: Vec<&'static str>,
    },
    /// The unpacked root file system, entered by `unshare`.
    Chroot,
}

/// The image under test: its configuration, its unpacked root and how to run it.
struct Image {
    /// The image configuration's `config` object (User, Entrypoint, Cmd, Env, WorkingDir, Labels).
    config: Value,
    root: PathBuf,
    runtime: Runtime,
    /// Which runtime runs the tests, and why not the other: for the tests' output.
    described: String,
}

fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let archive = match std::env::var(IMAGE_ENV) {
            Ok(path) if Path::new(&path).is_file() => PathBuf::from(path),
            _ => panic!(
                "{IMAGE_ENV} is not set: the image tests run through scripts/test.sh, which \
                 builds the image with scripts/image.sh and sets it to the OCI archive"
            ),
        };
        let (config, root) = unpack(&archive);
        let choice = std::env::var(RUNTIME_ENV).unwrap_or_default();
        let (runtime, described) = match choice.as_str() {
            "chroot" => (
                Runtime::Chroot,
                format!("in a chroot ({RUNTIME_ENV}=chroot)"),
            ),
            "" | "podman" => match podman(&archive) {
                Ok((runtime, how)) => (runtime, format!("with podman{how}")),
                Err(why) if choice.is_empty() => (
                    Runtime::Chroot,
                    format!("in a chroot, since podman cannot run it here: {why}"),
                ),
                Err(why) => panic!("{RUNTIME_ENV}=podman, but podman cannot run the image: {why}"),
            },
            other => panic!("{RUNTIME_ENV} must be podman or chroot, not {other:?}"),
        };
        let described = format!("the image {} runs {described}", archive.display());
        // Once per test binary, past the test harness' capture: the log says which way ran.
        let _ = writeln!(std::io::stderr(), "image tests: {described}");
        Image {
            config,
            root,
            runtime,
            described,
        }
    })
}

/// A file of the archive's OCI layout, parsed.
fn blob(layout: &Path, digest: &str) -> Value {
    let path = layout.join("blobs").join(digest.replace(':', "/"));
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

/// Runs `tar` with `args`, to its end.
fn tar(args: &[&OsStr]) -> Output {
    Command::new("tar")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("tar: {e}"))
}

/// Unpacks the archive's image into a root file system, as a runtime does: the layers in order,
/// each a gzipped tar, owners and modes kept. Returns the image configuration and the root.
/// The root is kept in the target folder per manifest, so each image is unpacked once.
fn unpack(archive: &Path) -> (Value, PathBuf) {
    let layout = tempfile::tempdir().unwrap();
    let out = tar(&[
        "-xf".as_ref(),
        archive.as_ref(),
        "-C".as_ref(),
        layout.path().as_ref(),
    ]);
    assert!(out.status.success(), "tar -xf {archive:?}: {out:?}");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"]
        .as_array()
        .expect("index.json lists manifests");
    assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
    let manifest_digest = manifests[0]["digest"].as_str().unwrap();
    let manifest = blob(layout.path(), manifest_digest);
    let config = blob(
        layout.path(),
        manifest["config"]["digest"].as_str().unwrap(),
    );
    assert_eq!(config["os"], "linux", "{config}");

    let parent = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let name = format!("image-root-{}", &manifest_digest["sha256:".len()..][..16]);
    let root = parent.join(&name);
    if !root.join(".unpacked").exists() {
        // Roots of older images are of no further use.
        for entry in std::fs::read_dir(parent).unwrap().flatten() {
            let other = entry.file_name().to_string_lossy().into_owned();
            if other.starts_with("image-root-") && other != name {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let partial = parent.join(format!("{name}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).unwrap();
        for layer in manifest["layers"].as_array().unwrap() {
            let media = layer["mediaType"].as_str().unwrap();
            assert!(media.ends_with("tar+gzip"), "a gzipped layer: {layer}");
            let path = layout
                .path()
                .join("blobs")
                .join(layer["digest"].as_str().unwrap().replace(':', "/"));
            // This unpacker applies no whiteouts (deletions by a later layer), so it refuses them.
            let list = tar(&["-tzf".as_ref(), path.as_ref()]);
            assert!(list.status.success(), "tar -tzf {path:?}: {list:?}");
            let whiteouts = String::from_utf8_lossy(&list.stdout)
                .lines()
                .filter(|entry| entry.rsplit('/').next().unwrap_or("").starts_with(".wh."))
                .count();
            assert_eq!(
                whiteouts, 0,
                "layer {layer} deletes files: not unpacked here"
            );
            let out = tar(&[
                "-xzf".as_ref(),
                path.as_ref(),
                "-C".as_ref(),
                partial.as_ref(),
                "--numeric-owner".as_ref(),
                "--same-owner".as_ref(),
                "--same-permissions".as_ref(),
            ]);
            assert!(out.status.success(), "unpacking layer {layer}: {out:?}");
        }
        std::fs::write(partial.join(".unpacked"), b"").unwrap();
        if std::fs::rename(&partial, &root).is_err() {
            // Another test binary unpacked the same image meanwhile.
            let _ = std::fs::remove_dir_all(&partial);
        }
    }
    (config["config"].clone(), root)
}

/// Whether podman can run the image here, and with which options: plain first, then with open-file
/// and process limits below the machine's (a root without CAP_SYS_RESOURCE cannot raise them to
/// podman's defaults), then with runc (crun refuses a cgroup v1/v2 hybrid).
fn podman(archive: &Path) -> Result<(Runtime, String), String> {
    let pulled = Command::new("podman")
        .args(["pull", "-q"])
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .map_err(|e| format!("podman: {e}"))?;
    if !pulled.status.success() {
        return Err(format!(
            "podman pull: {}",
            String::from_utf8_lossy(&pulled.stderr).trim()
        ));
    }
    let id = String::from_utf8_lossy(&pulled.stdout).trim().to_string();
    let limits = vec![
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
    ];
    let mut failures = Vec::new();
    for (global, run, how) in [
        (vec![], vec![], ""),
        (vec![], limits.clone(), " (lower ulimits)"),
        (vec!["--runtime", "runc"], limits, " (runc, lower ulimits)"),
    ] {
        let tried = Command::new("podman")
            .args(&global)
            .args(["run", "--rm", "--network", "host"])
            .args(&run)
            .arg(&id)
            .arg("--version")
            .output()
            .map_err(|e| format!("podman: {e}"))?;
        if tried.status.success() {
            return Ok((Runtime::Podman { id, global, run }, how.to_string()));
        }
        failures.push(
            String::from_utf8_lossy(&tried.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("")
                .to_string(),
        );
    }
    Err(failures.join("; "))
}

/// A container of the image, running in the background.
struct Container {
    child: Option<Child>,
    /// podman's name for it; the chroot has none.
    name: Option<String>,
}

impl Image {
    /// The image's user as `(uid, gid)`; numeric, as `scripts/image.sh` writes it.
    fn user(&self) -> (u32, u32) {
        let user = self.config["User"]
            .as_str()
            .expect("the image names a user");
        let (uid, gid) = user.split_once(':').unwrap_or((user, user));
        (
            uid.parse().expect("a numeric uid"),
            gid.parse().expect("a numeric gid"),
        )
    }

    fn workdir(&self) -> &str {
        self.config["WorkingDir"]
            .as_str()
            .expect("the image has a WORKDIR")
    }

    fn label(&self, name: &str) -> &str {
        self.config["Labels"][format!("org.opencontainers.image.{name}")]
            .as_str()
            .unwrap_or("")
    }

    /// The command that runs the image with `args` (none: the image's Cmd), `volume` mounted at
    /// its working directory and `env` added to its environment, in the host's network.
    fn command(
        &self,
        volume: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> (Command, Option<String>) {
        // The container writes into the volume as the image's user, who owns nothing here.
        std::fs::set_permissions(volume, std::fs::Permissions::from_mode(0o777)).unwrap();
        match &self.runtime {
            Runtime::Podman { id, global, run } => {
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let name = format!(
                    "oar-tiles-test-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                let mut command = Command::new("podman");
                command
                    .args(global)
                    .args(["run", "--rm", "--name", &name, "--network", "host"])
                    .args(run)
                    .arg("-v")
                    .arg(format!("{}:{}", volume.display(), self.workdir()));
                for (key, value) in env {
                    command.arg("-e").arg(format!("{key}={value}"));
                }
                command.arg(id).args(args);
                (command, Some(name))
            }
            Runtime::Chroot => {
                let entrypoint: Vec<&str> = self.config["Entrypoint"]
                    .as_array()
                    .expect("the image has an entrypoint")
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                let cmd: Vec<&str> = self.config["Cmd"]
                    .as_array()
                    .map(|c| c.iter().map(|a| a.as_str().unwrap()).collect())
                    .unwrap_or_default();
                let (uid, gid) = self.user();
                // A mount namespace for the volume, /dev and a private /tmp; a PID namespace
                // whose first process execs the entrypoint, so the tool is PID 1; inside, the
                // second unshare enters the root, the working directory, a /proc of that PID
                // namespace and the user. Dying, the outer unshare kills the container. The host's
                // sh, mount and unshare are found on the image's PATH, a standard one.
                let script = r#"set -e
root=$1 volume=$2 workdir=$3 uid=$4 gid=$5
shift 5
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mount --bind "$volume" "$root$workdir"
exec unshare --mount-proc --root="$root" --wd="$workdir" --setgid="$gid" --setuid="$uid" -- "$@""#;
                let mut command = Command::new("unshare");
                command
                    .args([
                        "--mount",
                        "--propagation",
                        "private",
                        "--pid",
                        "--fork",
                        "--kill-child",
                        "sh",
                        "-c",
                        script,
                        "sh",
                    ])
                    .arg(&self.root)
                    .arg(volume)
                    .args([self.workdir(), &uid.to_string(), &gid.to_string()])
                    .args(&entrypoint)
                    .args(if args.is_empty() { &cmd[..] } else { args })
                    .env_clear()
                    .envs(
                        self.config["Env"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|pair| pair.as_str().and_then(|pair| pair.split_once('='))),
                    )
                    .envs(env.iter().copied());
                (command, None)
            }
        }
    }

    /// Runs the image to its end.
    fn run(&self, volume: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
        let (mut command, _) = self.command(volume, env, args);
        let output = command.stdin(Stdio::null()).output().unwrap();
        let run = run_from(output);
        Run {
            stderr: format!("[{}]\n{}", self.described, run.stderr),
            ..run
        }
    }

    /// Starts the image in the background.
    fn start(&self, volume: &Path, env: &[(&str, &str)], args: &[&str]) -> Container {
        let (mut command, name) = self.command(volume, env, args);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Container {
            child: Some(child),
            name,
        }
    }

    /// The host's PID of the container's first process, once it runs.
    fn first_process(&self, container: &mut Container) -> libc::pid_t {
        let started = Instant::now();
        loop {
            let pid = match &container.name {
                Some(name) => Command::new("podman")
                    .args(["inspect", "--format", "{{.State.Pid}}", name])
                    .output()
                    .ok()
                    .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
                    .filter(|&pid: &libc::pid_t| pid > 0),
                None => {
                    // The outer unshare's one child is the namespace's first process.
                    let outer = container.child.as_ref().unwrap().id();
                    std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
                        .ok()
                        .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
                }
            };
            if let Some(pid) = pid {
                return pid;
            }
            assert!(
                container
                    .child
                    .as_mut()
                    .unwrap()
                    .try_wait()
                    .unwrap()
                    .is_none(),
                "the container ended before it was seen running"
            );
            // Not a limit on the image: a guard against a runtime that never starts it.
            assert!(
                started.elapsed() < STOP_GRACE,
                "the container did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops a container as its runtime does: its stop signal (SIGTERM) to its first process,
    /// SIGKILL after [`STOP_GRACE`]; returns how it ended.
    fn stop(&self, mut container: Container) -> Run {
        assert_eq!(
            self.config["StopSignal"].as_str().unwrap_or("SIGTERM"),
            "SIGTERM"
        );
        let mut killed = false;
        match &container.name {
            Some(name) => {
                let stopped = Command::new("podman")
                    .args(["stop", "-t", &STOP_GRACE.as_secs().to_string(), name])
                    .output()
                    .unwrap();
                assert!(stopped.status.success(), "podman stop: {stopped:?}");
            }
            None => {
                let pid = self.first_process(&mut container);
                signal_pid(pid, libc::SIGTERM);
                let child = container.child.as_mut().unwrap();
                let asked = Instant::now();
                while child.try_wait().unwrap().is_none() {
                    if asked.elapsed() > STOP_GRACE {
                        signal_pid(pid, libc::SIGKILL);
                        killed = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let child = container.child.take().unwrap();
        let run = run_from(child.wait_with_output().unwrap());
        Run {
            // As podman reports a container it had to kill (unshare cannot re-raise SIGKILL).
            code: if killed {
                128 + libc::SIGKILL
            } else {
                run.code
            },
            stderr: format!("[{}]\n{}", self.described, run.stderr),
            ..run
        }
    }
}

impl Container {
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }
}

impl Drop for Container {
    /// A failed test leaves no container behind.
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            if let Some(name) = &self.name {
                let _ = Command::new("podman").args(["rm", "-f", name]).output();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `(uid, state)` of a process from /proc, and its PID in its own PID namespace (NSpid's last).
fn process_status(pid: libc::pid_t) -> (u32, libc::pid_t, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let uid = field("Uid:")[0].parse().unwrap();
    let inner_pid = field("NSpid:").last().unwrap().parse().unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap()
        .trim()
        .to_string();
    (uid, inner_pid, comm)
}

fn fixture(label: &str, count: i64, extra: &str) -> Fixture {
    let points = hub_with_scatter(count, 11, 4, [-0.3, 51.3, 0.3, 51.7]);
    Fixture::new(label, &points, "image.toml", |schema| {
        format!(
            "{extra}\n{}",
            single_layer_config(&schema.name, "sites", "", SLOW_FILTER)
        )
    })
}

#[test]
#[ignore = "needs the image of scripts/image.sh: run scripts/test.sh"]
fn the_image_prints_its_help_with_and_without_arguments() {
    let image = image();
    let volume = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &[]] {
        let run = image.run(volume.path(), &[], args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(
            run.stdout.contains("Usage: oar-tiles"),
            "{args:?}: {}",
            run.stdout
        );
    }
}

#[test]
#[ignore = "needs the image of scripts/image.sh: run scripts/test.sh"]
fn the_image_runs_as_a_user_of_its_own_and_carries_labels_and_ca_certificates() {
    let image = image();
    let (uid, gid) = image.user();
    assert_ne!(uid, 0, "the image runs as root: {}", image.config);
    let passwd = std::fs::read_to_string(image.root.join("etc/passwd")).unwrap();
    let entry = passwd
        .lines()
        .find(|l| l.split(':').nth(2) == Some(&uid.to_string()))
        .unwrap_or_else(|| panic!("uid {uid} is not in the image's /etc/passwd:\n{passwd}"));
    assert_eq!(
        entry.split(':').nth(3),
        Some(gid.to_string().as_str()),
        "{entry}"
    );
    let workdir = std::fs::metadata(image.root.join(image.workdir().trim_start_matches('/')))
        .expect("the working directory exists in the image");
    assert_eq!(
        (workdir.uid(), workdir.mode() & 0o200),
        (uid, 0o200),
        "the working directory is the user's to write"
    );
    assert_eq!(
        image.config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/oar-tiles"])
    );

    assert_eq!(image.label("title"), "oar-tiles");
    assert_eq!(image.label("version"), env!("CARGO_PKG_VERSION"));
    assert!(!image.label("source").is_empty(), "{}", image.config);
    let revision = image.label("revision");
    let commit = revision.strip_suffix("-dirty").unwrap_or(revision);
    assert!(
        commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "the revision label is a commit: {revision:?}"
    );
    let known = Command::new("git")
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(
        known.success(),
        "{commit} is not a commit of this repository"
    );

    // What TLS to managed PostgreSQL and to S3 verifies against (rustls-native-certs reads it).
    let bundle = std::fs::read_to_string(image.root.join("etc/ssl/certs/ca-certificates.crt"))
        .expect("the image has Debian's CA bundle");
    assert!(
        bundle.matches("BEGIN CERTIFICATE").count() > 50,
        "the CA bundle holds the public roots"
    );
}

#[test]
#[ignore = "needs PostGIS and the image of scripts/image.sh: run scripts/test.sh"]
fn the_image_seeds_postgis_into_mbtiles_on_a_mounted_volume_as_the_host_binary_does() {
    let image = image();
    let fixture = fixture("image_seed", 400, "");
    let run = image.run(
        fixture.dir.path(),
        &[("DATABASE_URL", &fixture.schema.url)],
        &seed_args_for("image.toml", "out.mbtiles", "0-9", &[]),
    );
    run.assert_success();
    let output = fixture.path("out.mbtiles");
    let (uid, _) = image.user();
    assert_eq!(
        std::fs::metadata(&output)
            .expect("the seed wrote out.mbtiles")
            .uid(),
        uid,
        "written by the image's user"
    );
    let tiles = read_mbtiles_raw(&output);
    let host = fixture.path("host.mbtiles");
    oar_tiles(
        Some(&fixture.schema.url),
        &fixture.seed_args(host.to_str().unwrap(), "0-9", &[]),
    )
    .assert_success();
    assert_same_tiles(
        &read_mbtiles_raw(&host),
        &tiles,
        "the image's seed and the host binary's",
    );
}

#[test]
#[ignore = "needs PostGIS and the image of scripts/image.sh: run scripts/test.sh"]
fn the_image_reseeds_a_changed_row_with_seed_dirty() {
    let image = image();
    let mut fixture = fixture("image_dirty", 300, "");
    // Change capture in a schema of this test's own.
    let changes = fixture.schema.companion("cdc");
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    std::fs::write(
        &fixture.config,
        format!("[changes]\nschema = \"{changes}\"\n{text}"),
    )
    .unwrap();
    let url = fixture.schema.url.clone();
    let env = [("DATABASE_URL", url.as_str())];
    let volume = fixture.dir.path().to_path_buf();
    image
        .run(
            &volume,
            &env,
            &["changes", "install", "--config", "image.toml"],
        )
        .assert_success();
    image
        .run(
            &volume,
            &env,
            &seed_args_for("image.toml", "out.mbtiles", "0-10", &[]),
        )
        .assert_success();
    let before = read_mbtiles_raw(&fixture.path("out.mbtiles"));

    let moved = Point::new(1, 151.2, -33.8);
    fixture.schema.execute(&format!(
        "UPDATE {{schema}}.sites SET pt = ST_SetSRID(ST_MakePoint({}, {}), 4326) WHERE site_id = 1",
        moved.lon, moved.lat
    ));
    let reseed = image.run(
        &volume,
        &env,
        &seed_args_for("image.toml", "out.mbtiles", "0-10", &["--dirty"]),
    );
    reseed.assert_success();
    let after = read_mbtiles_raw(&fixture.path("out.mbtiles"));
    let (px, py) = pixel(&moved, 10, 0, 0, 1);
    let landed = format!("10/{}/{}", px.floor(), py.floor());
    let changed = differences(&before, &after);
    assert!(
        changed.contains(&landed),
        "the reseed drew the row where it moved ({landed}); it changed {changed:?}\n{}",
        reseed.stderr
    );
    image
        .run(
            &volume,
            &env,
            &seed_args_for("image.toml", "full.mbtiles", "0-10", &[]),
        )
        .assert_success();
    assert_same_tiles(
        &read_mbtiles_raw(&fixture.path("full.mbtiles")),
        &after,
        "the image's reseed and its full seed of the changed data",
    );
}

#[test]
#[ignore = "needs PostGIS and the image of scripts/image.sh: run scripts/test.sh"]
fn sigterm_to_the_image_s_first_process_stops_a_seed_with_143_and_keeps_the_output() {
    let image = image();
    let fixture = fixture("image_sigterm", 3000, "");
    let fast = [("DATABASE_URL", fixture.schema.url.as_str())];
    image
        .run(
            fixture.dir.path(),
            &fast,
            &seed_args_for("image.toml", "out.mbtiles", "0-6", &[]),
        )
        .assert_success();
    let output = fixture.path("out.mbtiles");
    let before = std::fs::read(&output).expect("the first seed wrote out.mbtiles");

    let slow_url = format!("{}?options=-c%20oar.slow%3D1", fixture.schema.url);
    let slow = [("DATABASE_URL", slow_url.as_str())];
    let mut container = image.start(
        fixture.dir.path(),
        &slow,
        &seed_args_for("image.toml", "out.mbtiles", "0-16", &[]),
    );
    wait_for_progress(container.child(), &output);
    let first = image.first_process(&mut container);
    let (uid, pid_inside, comm) = process_status(first);
    assert_eq!(
        (pid_inside, comm.as_str()),
        (1, "oar-tiles"),
        "the tool is the container's PID 1 ({})",
        image.described
    );
    assert_eq!(uid, image.user().0, "the tool runs as the image's user");

    let stopped = image.stop(container);
    assert_eq!(stopped.code, 143, "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("stopped by SIGTERM"),
        "{}",
        stopped.stderr
    );
    assert_eq!(
        std::fs::read(&output).unwrap(),
        before,
        "the output is as it was before the stopped run"
    );
    assert!(
        fixture.path("out.mbtiles.partial").exists(),
        "the progress is kept for a resume"
    );
    assert!(
        !fixture.path("out.mbtiles.oar-tiles.lock").exists(),
        "the lock is released"
    );
    assert!(!read_mbtiles_raw(&output).is_empty());
}
