"""The watch section (change-to-tile latency of `oar-tiles watch`), and what the edge, live and
edge-cloudfront sections share with it: a free port, a changed sample restored at exit, the
watcher's start, wait and stop, the scripted changes, and the config edits."""
from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bench.measure import alive, fail, http_get, mbtiles_tiles, nearest_rank, prom_sum, report, watch_log
from bench.samples import ensure_sample, make_config

if TYPE_CHECKING:
    from bench.context import Bench

# The reseed section's seed and zooms; the sections built on it draw from the same seed.
RESEED_SEED = "0.42"
RESEED_ZOOM = "0-14"
WATCH_CHANGES = 300
WATCH_RATE = 10
# The watcher's debug lines per cycle carry the latencies the reports read.
WATCH_RUST_LOG = "info,oar_tiles::seed=warn,oar_tiles::state=warn,oar_tiles::watch=debug"
WAIT_SECONDS = 600


def say(line: str = "") -> None:
    """One line of the report on stdout, flushed so it stays in order with the subprocesses'."""
    print(line, flush=True)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_now() -> str:
    """The first three fields of /proc/loadavg."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def print_report(b: Bench, lines_and_status: Callable[[], tuple[list[str], int]]) -> None:
    """Prints a report's lines and fails the run with its status (1, logged, when it cannot be
    made: measure.ReportError)."""
    def emit() -> int:
        """Prints the lines; returns the status."""
        lines, status = lines_and_status()
        for line in lines:
            say(line)
        return status
    report(b, emit)


def env_int(b: Bench, name: str, default: int) -> int:
    """The environment variable NAME as a non-negative integer (DEFAULT when unset or empty)."""
    value = os.environ.get(name) or str(default)
    if not re.fullmatch(r"[0-9]+", value):
        b.die(f"{name} must be a non-negative integer, got '{value}'")
    return int(value)

# --- the sample under change capture ---------------------------------------------------------------

def id_range(b: Bench, schema: str, section: str | None = None) -> tuple[int, int]:
    """(lowest id, highest id) of SCHEMA.facilities; with SECTION, dies unless they are contiguous."""
    lo, hi, count = (int(v) for v in b.value(
        f"SELECT min(id) || ' ' || max(id) || ' ' || count(*) FROM {schema}.facilities").split())
    if section and hi - lo + 1 != count:
        b.die(f"{section}: {schema}.facilities ids are not contiguous")
    return lo, hi


def changes(b: Bench, verb: str, config: Path) -> None:
    """`changes install|uninstall --config CONFIG`, its output on stderr."""
    b.tool("-q", "changes", verb, "--config", str(config), stdout=sys.stderr)


def reload_sample(b: Bench, n: int, check: bool = True) -> None:
    """scripts/load-sample.sh: bench_N.facilities back to the unmodified sample."""
    sys.stdout.flush()
    subprocess.run([str(b.scripts("load-sample.sh")), "--rows", str(n), "--schema", f"bench_{n}",
                    "--table", "facilities"], check=check)


def guard_sample(b: Bench, n: int, config: Path) -> Callable[[], None]:
    """Registers the restore of bench_N (change capture off, the sample reloaded) for an unfinished
    section; returns the function that unregisters it."""
    def restore() -> None:
        """Change capture off (by the tool, else by dropping its triggers), the sample reloaded."""
        b.log(f"restoring bench_{n} after an unfinished reseed section")
        done = b.tool("-q", "changes", "uninstall", "--config", str(config), check=False,
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if done.returncode != 0:
            # Quietly, as bench.sh's fallback was: its notices named triggers already gone.
            b.psql(f"SET client_min_messages = warning;"
                   f" DROP TRIGGER IF EXISTS oar_tiles_capture ON bench_{n}.facilities;"
                   f" DROP TRIGGER IF EXISTS oar_tiles_capture_truncate ON bench_{n}.facilities;"
                   f" DROP TRIGGER IF EXISTS oar_tiles_notify ON bench_{n}.facilities;"
                   f" DROP SCHEMA IF EXISTS {b.CHANGES_SCHEMA} CASCADE", check=False,
                   out=subprocess.DEVNULL)
        # If this fails too, the table's comment makes the next run reload it.
        reload_sample(b, n, check=False)
    return b.on_cleanup(restore)


def capture_changes(b: Bench, n: int, config: Path, section: str | None = None
                    ) -> tuple[Callable[[], None], int, int]:
    """Change capture on bench_N as CONFIG names it, fresh (an earlier run's leftovers removed
    first), with the sample's restore registered: returns that restore's unregistering and the
    sample's (lowest id, highest id); with SECTION, dies unless the ids are contiguous."""
    changes(b, "uninstall", config)
    unguard = guard_sample(b, n, config)
    lo, hi = id_range(b, f"bench_{n}", section)
    changes(b, "install", config)
    return unguard, lo, hi


def finish_sample(b: Bench, section: str, n: int, config: Path, unguard: Callable[[], None]) -> None:
    """Change capture off and the sample reloaded, as the section ends normally."""
    b.log(f"{section}: uninstalling change capture and reloading the sample")
    changes(b, "uninstall", config)
    reload_sample(b, n)
    unguard()


# --- config edits ----------------------------------------------------------------------------------

def edit_lines(text: str, edit: Callable[[str], list[str]]) -> str:
    """TEXT with each line (without its newline) replaced by the lines EDIT returns, as sed does."""
    out = []
    for line in text.splitlines():
        out.extend(edit(line))
    return "".join(f"{line}\n" for line in out)


def into_tree(text: str, tree: Path, check_edge: int | None = None) -> str:
    """The config writing into the folder TREE; with CHECK_EDGE, [watch] check_edge set to it."""
    def edit(line: str) -> list[str]:
        """One line of the config, edited."""
        if line.startswith("output = "):
            return [f'output = "dir:{tree}"']
        if check_edge is not None and re.match(r"check_edge\s*=", line):
            return []
        if check_edge is not None and re.fullmatch(r"\[watch\]\s*", line):
            return ["[watch]", f"check_edge = {check_edge}"]
        return [line]
    return edit_lines(text, edit)


def without_changes(text: str, changes_schema: str) -> str:
    """The config with its change schema renamed to one that does not exist (a seed from rows)."""
    return edit_lines(text, lambda line: [line.replace(f'"{changes_schema}"',
                                                       f'"{changes_schema}_absent"', 1)])


def edit_file(path: Path, edit: Callable[[str], str]) -> None:
    """Rewrites PATH through EDIT."""
    path.write_text(edit(path.read_text()))


# --- the scripted changes --------------------------------------------------------------------------

def paced(i: int, rate: float) -> str:
    """psql's wait until change I is due at RATE a second from the script's start (no drift)."""
    return (f"SELECT pg_sleep_until((SELECT t0 FROM watch_start) + interval '1 second' * {i / rate:.3f})"
            " \\g /dev/null")


def changes_sql(schema: str, n: int, rate: float, seed: str, lo: int, hi: int) -> str:
    """An SQL script of N single-row changes to SCHEMA.facilities (ids LO..HI), each its own
    transaction, committed at RATE per second on a fixed schedule: 40% moves by up to 0.01
    degrees, 30% name edits, 15% inserts, 15% deletes."""
    rng = random.Random(seed)
    ids = rng.sample(range(lo, hi + 1), n)
    t = f'"{schema}".facilities'
    out = ["\\set ON_ERROR_STOP on",
           f"COMMENT ON TABLE {t} IS 'modified by the watch benchmark';",
           "CREATE TEMP TABLE watch_start AS SELECT clock_timestamp() AS t0;"]
    for i, fid in enumerate(ids):
        out.append(paced(i, rate))
        kind = rng.random()
        if kind < 0.40:
            dx, dy = rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01)
            out.append(f"UPDATE {t} SET location = ST_Translate(location, {dx:.6f}, {dy:.6f}) WHERE id = {fid};")
        elif kind < 0.70:
            out.append(f"UPDATE {t} SET name = name || ' (edited)' WHERE id = {fid};")
        elif kind < 0.85:
            out.append(f"INSERT INTO {t} SELECT id + 100000000, os_id || '-w', name, address, country_code,"
                       f" contributors, created_at, updated_at, ST_Translate(location, 0.001, 0.001)"
                       f" FROM {t} WHERE id = {fid};")
        else:
            out.append(f"DELETE FROM {t} WHERE id = {fid};")
    return "\n".join(out) + "\n"


def run_sql_file(b: Bench, path: Path, text: str) -> None:
    """Writes TEXT to PATH and runs it with psql -f."""
    path.write_text(text)
    b.psql(file=path, out=subprocess.DEVNULL)


# --- the watcher -----------------------------------------------------------------------------------

def applied(text: str, n: int) -> bool:
    """Whether metrics TEXT show at least N changes applied and none pending."""
    return (prom_sum(text, "oar_tiles_changes_applied_total") >= n
            and prom_sum(text, "oar_tiles_pending_changes") == 0)


def wait_for(b: Bench, base: str, what: str, n: int = 0, metrics: Path | None = None,
             path: str = "/health", watcher: subprocess.Popen | None = None) -> None:
    """Waits (at most 600 s) until BASE answers PATH 200 (`health`), or its watcher has applied at
    least N changes with none pending (`applied`), saving /metrics to METRICS; dies as soon as
    WATCHER (if given) has exited."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if watcher is not None and not alive(watcher.pid):
            b.die(f"watch: the watcher (pid {watcher.pid}) exited while waiting for {what} at {base}")
        if what == "health":
            if http_get(base + path)[0] == 200:
                return
        else:
            status, text = http_get(base + "/metrics")
            if status == 200 and applied(text, n):
                if metrics is not None:
                    metrics.write_text(text)
                return
        time.sleep(0.2)
    b.die(f"watch: gave up waiting for {what} at {base}")


def start_watch(b: Bench, config: Path, port: int, log: Path, *, json_log: bool = True,
                env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Callable[[], None]]:
    """`oar-tiles watch` on CONFIG listening on PORT, its stderr in LOG (JSON with the debug lines
    of the reports when JSON_LOG); returns it and the unregistering of its stop at exit."""
    run_env = dict(env if env is not None else os.environ)
    argv = [str(b.bin)]
    if json_log:
        run_env["RUST_LOG"] = WATCH_RUST_LOG
        argv += ["--log-format", "json"]
    argv += ["watch", *b.concurrency_args(), "--config", str(config), "--listen", f"127.0.0.1:{port}"]
    sys.stdout.flush()
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, stderr=err, env=run_env)
    return proc, b.on_cleanup(lambda: stop_quietly(proc))


def stop_quietly(proc: subprocess.Popen) -> None:
    """Stops PROC (SIGTERM) and reaps it, whatever it answers."""
    if proc.poll() is None:
        proc.terminate()
    proc.wait()


def exit_code(returncode: int) -> int:
    """A Popen return code as the shell reports it (128 + N for a death by signal N)."""
    return 128 - returncode if returncode < 0 else returncode


def stop_watch(b: Bench, section: str, proc: subprocess.Popen, unregister: Callable[[], None]) -> None:
    """SIGTERM to the watcher; the run fails with 3 unless it ends as SIGTERM asks (143)."""
    proc.send_signal(signal.SIGTERM)
    code = exit_code(proc.wait())
    unregister()
    if code != 143:
        b.log(f"{section}: the watcher exited {code} on SIGTERM, not 143")
        b.failed(3)


# --- the report ------------------------------------------------------------------------------------

def watch_report(log: Path, metrics: str, n: int, rate: float) -> tuple[list[str], int]:
    """Change-to-tile latency percentiles from the watcher's JSON log (its debug line per cycle)."""
    latencies, _, cycles = watch_log(log)
    done = prom_sum(metrics, "oar_tiles_changes_applied_total")
    latencies.sort()
    if not latencies:
        fail("watch: the log holds no latencies")
    p = lambda q: nearest_rank(latencies, q)  # noqa: E731
    lines = [f"watch: {n} single-row changes at {rate:g}/s, default debounce 1 s / max_delay 10 s",
             f"  changes applied {done:.0f} (latencies measured {len(latencies)}), cycles {cycles},"
             f" tiles rendered {prom_sum(metrics, 'oar_tiles_tiles_rendered_total'):.0f}",
             f"  change-to-tile latency: p50 {p(0.50):.2f} s, p95 {p(0.95):.2f} s, max {latencies[-1]:.2f} s"
             f" (target p95 <= 3 s)"]
    if len(latencies) != n or done != n:
        return lines + [f"  WARNING: expected {n} changes"], 3
    return lines, 0


def same_tiles(a: Path, b: Path) -> tuple[list[str], int]:
    """Status 3 unless two MBTiles hold the same tiles with the same bytes."""
    ta = {(z, x, y): mvt for z, x, y, mvt in mbtiles_tiles(a)}
    tb = {(z, x, y): mvt for z, x, y, mvt in mbtiles_tiles(b)}
    if ta != tb:
        return [f"  WARNING: {a} and {b} differ ({len(ta)} against {len(tb)} tiles)"], 3
    return [f"  the watched output equals a full seed of the changed data ({len(ta)} tiles)"], 0


def concurrency_label(b: Bench, pool_size: object) -> str:
    """The concurrency the seeds ran with: --concurrency, else the config's pool size."""
    return str(b.opts.concurrency) if b.opts.concurrency else str(pool_size)


# --- the section -----------------------------------------------------------------------------------

def section_watch(b: Bench) -> None:
    """watch: change-to-tile latency of `oar-tiles watch` with its default settings while 300
    single-row changes are committed at 10 a second, checked against a full seed of the result."""
    n = b.opts.reseed_rows
    schema = f"bench_{n}"
    ensure_sample(b, n)
    config = b.work / "watch.toml"
    derived = make_config(b, n, "clustered", config)
    unguard, lo, hi = capture_changes(b, n, config, "watch")
    b.log("watch: full seed of the configured zooms (clustered)")
    b.tool("-q", "seed", *b.concurrency_args(), "--config", str(config), stdout=subprocess.DEVNULL)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    b.log(f"watch: starting oar-tiles watch (default debounce, max_delay, poll_interval) on {base}")
    watcher, unwatch = start_watch(b, config, port, b.work / "watch.log")
    wait_for(b, base, "health")
    script = changes_sql(schema, WATCH_CHANGES, WATCH_RATE, RESEED_SEED, lo, hi)
    load_before = load_now()
    b.log(f"watch: committing {WATCH_CHANGES} changes at {WATCH_RATE} per second")
    run_sql_file(b, b.work / "watch-changes.sql", script)
    metrics = b.work / "watch-metrics.txt"
    wait_for(b, base, "applied", WATCH_CHANGES, metrics)
    stop_watch(b, "watch", watcher, unwatch)
    print_report(b, lambda: watch_report(b.work / "watch.log", metrics.read_text(), WATCH_CHANGES,
                                         WATCH_RATE))
    say(f"  load={load_before} / {load_now()}, concurrency {concurrency_label(b, derived.pool_size)}")
    rows = b.work / "watch-rows.toml"
    rows.write_text(without_changes(config.read_text(), b.CHANGES_SCHEMA))
    b.tool("-q", "seed", *b.concurrency_args(), "--config", str(rows), "--output",
           str(b.work / "watch-fresh.mbtiles"), stdout=subprocess.DEVNULL)
    print_report(b, lambda: same_tiles(b.work / "facilities.mbtiles", b.work / "watch-fresh.mbtiles"))
    finish_sample(b, "watch", n, config, unguard)
