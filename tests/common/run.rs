//! Running the real `oar-tiles` binary and reading what it wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use super::mvt::{decode_tile, DecodedLayer};
use super::pg::Point;

/// The result of one run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// What a finished command's output says.
    pub fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the run succeeded.
    pub fn assert_success(&self) -> &Run {
        assert_eq!(
            self.code, 0,
            "oar-tiles failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `oar-tiles ARGS` with `DATABASE_URL` set to `url` (when given) and no config from the environment.
pub fn oar_tiles(url: Option<&str>, args: &[&str]) -> Run {
    oar_tiles_with(url, args, &[])
}

/// The command `oar_tiles` runs, for tests that start it in the background. Its output is captured
/// (read it with `wait_with_output`), so child processes never write between test results.
pub fn oar_tiles_command(url: Option<&str>, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oar-tiles"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("OAR_TILES_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("PGPASSWORD")
        .envs(envs.iter().copied());
    match url {
        Some(url) => command.env("DATABASE_URL", url),
        None => command.env_remove("DATABASE_URL"),
    };
    command
}

/// The command [`oar_tiles_command`] builds, started by `wrapper` (a program and its first
/// arguments, such as `strace` and its options, or `sh -c SCRIPT` that ends in `exec "$0" "$@"`)
/// with the binary and its arguments after them, in the same environment.
pub fn wrapped_command(
    wrapper: &[&str],
    url: Option<&str>,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Command {
    let inner = oar_tiles_command(url, args, envs);
    let mut command = Command::new(wrapper[0]);
    command
        .args(&wrapper[1..])
        .arg(inner.get_program())
        .args(inner.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in inner.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command
}

/// Runs `oar-tiles ARGS` as `oar_tiles` does, with extra environment variables.
pub fn oar_tiles_with(url: Option<&str>, args: &[&str], envs: &[(&str, &str)]) -> Run {
    Run::from(
        oar_tiles_command(url, args, envs)
            .output()
            .expect("run oar-tiles"),
    )
}

/// Sends `signal` (such as `libc::SIGTERM`) to a child, as an operator's `kill` or a container
/// runtime would; done here rather than with the `kill` program, which minimal images lack.
pub fn send_signal(child: &Child, signal: libc::c_int) {
    signal_pid(
        libc::pid_t::try_from(child.id()).expect("a pid fits pid_t"),
        signal,
    );
}

/// Sends `signal` to the process `pid`, which need not be a child (a container's first process).
#[allow(unsafe_code)] // kill(2) has no safe wrapper in libc; the crate itself forbids unsafe code.
pub fn signal_pid(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) only reads its two integer arguments.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        result,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// Tiles an MBTiles seed has durably journaled so far in its `.partial` file (0 when there is none
/// yet, or it is being committed at this moment).
pub fn journaled_tiles(output: &Path) -> u64 {
    let partial = std::path::PathBuf::from(format!("{}.partial", output.display()));
    // Opened for writing, never created: a seed killed mid-commit leaves a hot rollback journal,
    // which only a connection that may write rolls back (as the next run does); a read-only one
    // fails and would count nothing.
    rusqlite::Connection::open_with_flags(&partial, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .and_then(|c| c.query_row("SELECT count(*) FROM oar_tiles_journal", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// Waits until this run of the seeder has journaled tiles of its own, so an interruption lands
/// mid-walk with progress to resume from, however slow or loaded the machine.
pub fn wait_for_progress(child: &mut std::process::Child, output: &Path) {
    let before = journaled_tiles(output);
    let started = std::time::Instant::now();
    while journaled_tiles(output) <= before {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the seed journaled nothing new in two minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the seed ended before it could be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A started command whose standard error is read as it comes, so a test can wait for what the
/// process says (a state it reached) rather than for a length of time.
pub struct Speaking {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    heard: String,
}

impl Speaking {
    /// Starts `command` (its standard error piped, as [`oar_tiles_command`]'s is).
    pub fn start(mut command: Command) -> Speaking {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Speaking {
            child,
            lines,
            heard: String::new(),
        }
    }

    /// Waits until a line of its standard error holds `needle`; fails, with what it said, when
    /// the process ends first or says nothing of the kind within two minutes (a hang's bound).
    pub fn wait_for(&mut self, needle: &str) {
        let started = std::time::Instant::now();
        loop {
            let left = std::time::Duration::from_secs(120).saturating_sub(started.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.heard.push_str(&line);
                    self.heard.push('\n');
                    if found {
                        return;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "the process ended ({:?}) before it said {needle:?}:\n{}",
                    self.child.wait().unwrap(),
                    self.heard
                ),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "waited two minutes for {needle:?}; it said:\n{}",
                        self.heard
                    )
                }
            }
        }
    }

    /// The process, to signal it.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for it to end; what it wrote, whole.
    pub fn finish(mut self) -> Run {
        let output = self.child.wait_with_output().unwrap();
        // The reader ends with the stream: what is left in the channel is the rest of it.
        for line in self.lines.iter() {
            self.heard.push_str(&line);
            self.heard.push('\n');
        }
        Run::from(Output {
            stderr: self.heard.into_bytes(),
            ..output
        })
    }
}

/// Waits until the file system holding `dir` stamps a new file later than `instant`, so files
/// written from now on are told from those written before by their modification times (the
/// kernel stamps them from a clock coarser than [`std::time::SystemTime::now`]). Fails after ten
/// seconds (a hang's bound).
pub fn wait_for_file_clock_past(dir: &Path, instant: std::time::SystemTime) {
    let probe = dir.join(".file-clock-probe");
    let started = std::time::Instant::now();
    loop {
        std::fs::write(&probe, b"").unwrap();
        let stamped = std::fs::metadata(&probe).unwrap().modified().unwrap();
        std::fs::remove_file(&probe).unwrap();
        if stamped > instant {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the file system's clock stayed at or before {instant:?} for ten seconds"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Turns a finished process' output into a [`Run`].
pub fn run_from(output: Output) -> Run {
    Run::from(output)
}

/// `seed --config CONFIG --zoom ZOOM --output OUTPUT`, owned, for tests that build on it.
pub fn seed_args(config: &Path, zoom: &str, output: &str) -> Vec<String> {
    [
        "seed",
        "--config",
        config.to_str().unwrap(),
        "--zoom",
        zoom,
        "--output",
        output,
    ]
    .map(String::from)
    .to_vec()
}

/// Borrows owned arguments the way [`oar_tiles`] takes them.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A config with one tileset `sites` of one layer `sites` over `{schema}.{table}`.
pub fn single_layer_config(
    schema: &str,
    table: &str,
    extra_tileset: &str,
    extra_layer: &str,
) -> String {
    format!(
        r#"[database]
url = "postgresql://unused@127.0.0.1:1/unused"
pool_size = 2

[[tileset]]
name = "sites"
{extra_tileset}

[[tileset.layer]]
name = "sites"
table = "{schema}.{table}"
geometry_column = "pt"
id_column = "site_id"
attributes = ["label", "kind", "score", "seen_at"]
{extra_layer}
"#
    )
}

/// Tiles of an MBTiles file, keyed by XYZ `(z, x, y)`, decoded.
pub fn read_mbtiles(path: &Path) -> BTreeMap<(u8, u32, u32), Vec<DecodedLayer>> {
    read_mbtiles_raw(path)
        .into_iter()
        .map(|(key, data)| {
            let layers = decode_tile(&data).unwrap_or_else(|e| panic!("tile {key:?}: {e}"));
            (key, layers)
        })
        .collect()
}

/// Raw stored bytes of an MBTiles file, keyed by XYZ `(z, x, y)` (the TMS row flipped back).
pub fn read_mbtiles_raw(path: &Path) -> BTreeMap<(u8, u32, u32), Vec<u8>> {
    let connection = rusqlite::Connection::open(path).expect("open mbtiles");
    let mut statement = connection
        .prepare("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")
        .unwrap();
    let rows = statement
        .query_map([], |row| {
            let z: u8 = row.get(0)?;
            let x: u32 = row.get(1)?;
            let tms_row: u32 = row.get(2)?;
            let data: Vec<u8> = row.get(3)?;
            Ok(((z, x, (1u32 << z) - 1 - tms_row), data))
        })
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// MBTiles metadata as a map.
pub fn read_metadata(path: &Path) -> BTreeMap<String, String> {
    let connection = rusqlite::Connection::open(path).expect("open mbtiles");
    let mut statement = connection
        .prepare("SELECT name, value FROM metadata")
        .unwrap();
    let rows = statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

const R: f64 = 6_378_137.0;
const HALF: f64 = 20_037_508.342_789_244;

/// Where a point falls in a tile, in tile pixels (may lie outside 0..extent in the buffer).
pub fn pixel(point: &Point, z: u8, x: u32, y: u32, extent: u32) -> (f64, f64) {
    let mx = R * point.lon.to_radians();
    let my = R
        * (std::f64::consts::FRAC_PI_4 + point.lat.to_radians() / 2.0)
            .tan()
            .ln();
    let size = 2.0 * HALF / (1u64 << z) as f64;
    let west = -HALF + f64::from(x) * size;
    let north = HALF - f64::from(y) * size;
    (
        (mx - west) / size * f64::from(extent),
        (north - my) / size * f64::from(extent),
    )
}

/// Whether a point must (Some(true)), must not (Some(false)) or may (None, on the buffer's edge)
/// appear in a tile.
pub fn membership(point: &Point, z: u8, x: u32, y: u32, extent: u32, buffer: u32) -> Option<bool> {
    let (px, py) = pixel(point, z, x, y, extent);
    let lo = -f64::from(buffer);
    let hi = f64::from(extent + buffer);
    let edge = |v: f64| (v - lo).abs() < 0.01 || (v - hi).abs() < 0.01;
    if edge(px) || edge(py) {
        return None;
    }
    Some((lo..=hi).contains(&px) && (lo..=hi).contains(&py))
}

/// Tiles of zoom `z` that may show the point: its own tile and the eight around it.
pub fn candidate_tiles(point: &Point, z: u8) -> BTreeSet<(u32, u32)> {
    let n = 1i64 << z;
    let (px, py) = pixel(point, z, 0, 0, 1);
    let (cx, cy) = (px.floor() as i64, py.floor() as i64);
    let mut tiles = BTreeSet::new();
    for dx in -1..=1 {
        for dy in -1..=1 {
            let (x, y) = (cx + dx, cy + dy);
            if (0..n).contains(&x) && (0..n).contains(&y) {
                tiles.insert((x as u32, y as u32));
            }
        }
    }
    tiles
}

/// Stored tiles keyed by XYZ `(z, x, y)`.
pub type Tiles = BTreeMap<(u8, u32, u32), Vec<u8>>;

/// The `oar_tiles_digest` a tree or prefix names, written out here apart from the tool's own code:
/// the sum modulo 2^128 of, per tile, the MD5 of `z/x/y:` (XYZ row) and the MD5 of its bytes; in
/// upper-case hex.
pub fn expected_digest(tiles: &Tiles) -> String {
    use md5::{Digest, Md5};
    let sum = tiles.iter().fold(0u128, |sum, ((z, x, y), data)| {
        let mut term = Md5::new();
        term.update(format!("{z}/{x}/{y}:"));
        term.update(Md5::digest(data));
        sum.wrapping_add(u128::from_be_bytes(term.finalize().into()))
    });
    hex::encode_upper(sum.to_be_bytes())
}

/// Asserts that two sets of tiles are the same tiles with the same bytes. Tile maps are too big to
/// print, so a mismatch names the tiles only one side has and the first tiles whose bytes differ,
/// with their sizes.
#[track_caller]
pub fn assert_same_tiles(expected: &Tiles, actual: &Tiles, what: &str) {
    if expected == actual {
        return;
    }
    let name = |(z, x, y): &(u8, u32, u32)| format!("{z}/{x}/{y}");
    let only = |a: &Tiles, b: &Tiles| -> Vec<String> {
        a.keys()
            .filter(|k| !b.contains_key(k))
            .take(10)
            .map(name)
            .collect()
    };
    let changed: Vec<String> = expected
        .iter()
        .filter_map(|(key, bytes)| {
            let other = actual.get(key)?;
            (other != bytes)
                .then(|| format!("{} ({} vs {} bytes)", name(key), bytes.len(), other.len()))
        })
        .take(10)
        .collect();
    panic!(
        "{what}: {} tiles expected, {} found\n  only expected: {:?}\n  only found: {:?}\n  \
         other bytes: {:?}",
        expected.len(),
        actual.len(),
        only(expected, actual),
        only(actual, expected),
        changed
    );
}

/// `z/x/y` of every tile whose bytes differ between two states of an output (added, removed, changed).
pub fn differences(before: &Tiles, after: &Tiles) -> BTreeSet<String> {
    let keys: BTreeSet<_> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|key| before.get(key) != after.get(key))
        .map(|(z, x, y)| format!("{z}/{x}/{y}"))
        .collect()
}

/// Tiles of a `{z}/{x}/{y}.ext` tree; a temporary file beside them fails the test.
pub fn read_tree(root: &Path, extension: &str) -> Tiles {
    let (tiles, temporaries) = read_tree_after_a_kill(root, extension);
    assert!(
        temporaries.is_empty(),
        "temporary file(s) {temporaries:?} left behind"
    );
    tiles
}

/// Tiles of a tree a running writer (`watch`) may be writing meanwhile, as a reader gets them: a
/// tile being replaced is a temporary file beside its old bytes, which are what it reads.
pub fn read_tree_being_written(root: &Path, extension: &str) -> Tiles {
    read_tree_after_a_kill(root, extension).0
}

/// Tiles of a tree whose writer may just have been killed, and the names of the temporary files
/// it left beside them (`.Y.ext.PID.tmp`: never at a tile's name), which its next run removes.
pub fn read_tree_after_a_kill(root: &Path, extension: &str) -> (Tiles, Vec<String>) {
    let mut temporaries = Vec::new();
    let mut tiles = Tiles::new();
    for z in std::fs::read_dir(root).unwrap().map(|e| e.unwrap()) {
        let Ok(zoom) = z.file_name().to_string_lossy().parse::<u8>() else {
            continue;
        };
        for x in std::fs::read_dir(z.path()).unwrap().map(|e| e.unwrap()) {
            let column: u32 = x.file_name().to_string_lossy().parse().unwrap();
            for y in std::fs::read_dir(x.path()).unwrap().map(|e| e.unwrap()) {
                let name = y.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    temporaries.push(name);
                    continue;
                }
                let row: u32 = name
                    .strip_suffix(&format!(".{extension}"))
                    .unwrap()
                    .parse()
                    .unwrap();
                tiles.insert((zoom, column, row), std::fs::read(y.path()).unwrap());
            }
        }
    }
    (tiles, temporaries)
}

/// A `--summary-json` report, parsed.
pub fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The lines of a file (a changed-tile list), as a set.
pub fn lines(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every problem of a `validate --json` report as `(tile or "-", check, message)`.
pub fn problems(report: &serde_json::Value) -> Vec<(String, String, String)> {
    report["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| o["problems"]["listed"].as_array().unwrap().clone())
        .map(|p| {
            (
                p["tile"].as_str().unwrap_or("-").to_string(),
                p["check"].as_str().unwrap().to_string(),
                p["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
