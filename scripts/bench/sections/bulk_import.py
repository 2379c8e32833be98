"""import: a contributor's import end to end (issue 76).

On the --import-rows sample (clustered as the sample config, --import-zoom, a tree with a changes
feed), per binary (this build, then --baseline-bin): three outputs seeded in full, one with no CDN,
one behind Varnish purged per tile (an `http` target, at the pace Varnish answers) and one behind
the tests' Cloudflare stand-in at Free's limits (tests/standins/cloudflare.rs); then one UPDATE
moving every facility a little, and `seed --dirty` of each output, the Varnish one first: the
change-log read, each reseed against its output's full seed, the purge time (from the run's start
to the last purge the target took), and commit -> the feed's last segment. Then the live section's
commit -> drawn p95 (unclustered, on the --reseed-rows sample) with each binary.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.measure import time_v
from bench.samples import ensure_sample, make_config
from bench.sections.changelog import read_seconds
from bench.sections.origin import Origin, install_varnish
from bench.sections.watch import (capture_changes, edit_file, finish_sample, into_tree, load_now,
                                  say, stop_quietly)

if TYPE_CHECKING:
    from bench.context import Bench

# The outputs, in the order their full seeds run; the reseeds run the Varnish one first, so that
# commit -> feed times the reseed a statement's commit starts.
TARGETS = ("none", "http", "cloudflare")
RESEED_ORDER = ("http", "cloudflare", "none")
# Degrees every facility moves (about 55 m): every tile holding one is dirty.
MOVE = 0.0005
CF_TOKEN_ENV = "OAR_BENCH_CF_TOKEN"
CF_ZONE = "023e105f4ecef8ad9ca31a8372d0c353"
POLL_SECONDS = 0.2
STAT = re.compile(r"^MAIN\.n_purges\s+([0-9]+)", re.M)


@dataclasses.dataclass
class Run:
    """One timed run of the tool: wall seconds, start and end (epoch), its summary and log."""
    wall: float
    start: float
    end: float
    summary: dict
    log: str


# --- what the report reads (pure) ---------------------------------------------------------------

def purges_stat(text: str) -> int | None:
    """MAIN.n_purges of `varnishstat -1` output, None when absent."""
    m = STAT.search(text)
    return int(m.group(1)) if m else None


def last_change(samples: list[tuple[float, int]], start: float, end: float) -> float | None:
    """Seconds from START to the first sample (time, count) within [START, END + 1 s] at which the
    count reached the window's last value; None when it did not change in the window."""
    window = [(t, c) for t, c in samples if start <= t <= end + 1.0]
    before = [c for t, c in samples if t < start]
    first = before[-1] if before else (window[0][1] if window else None)
    if not window or window[-1][1] == first:
        return None
    final = window[-1][1]
    return next(t for t, c in window if c == final) - start


def last_admitted(admitted: list[float], start: float, end: float) -> float | None:
    """Seconds from START to the last call admitted within [START, END], None without one."""
    within = [t for t in admitted if start <= t <= end]
    return max(within) - start if within else None


def newest_mtime(folder: Path) -> float | None:
    """The newest modification time of a file under FOLDER, None when it holds none."""
    times = [p.stat().st_mtime for p in folder.rglob("*") if p.is_file()]
    return max(times) if times else None


def ways_label(summary: dict) -> str:
    """Which zooms a reseed walked, from its summary's `ways` ('-' when it weighed none)."""
    ways = summary.get("ways") or []
    if not ways:
        return "-"
    walked = [str(w["zoom"]) for w in ways if w.get("walked")]
    return f"walked z{','.join(walked)}" if walked else "listed all"


def purge_label(summary: dict) -> str:
    """The run's purges: requests and paths per target, and any failure."""
    parts = []
    for p in summary.get("purges") or []:
        failed = f", FAILED: {p['failed']}" if p.get("failed") else ""
        parts.append(f"{p.get('requests', 0)} req / {p.get('paths', 0)} paths{failed}")
    return "; ".join(parts) or "-"


def seconds(value: float | None) -> str:
    """VALUE as '12.3 s', or '-'."""
    return "-" if value is None else f"{value:.1f} s"


def target_lines(target: str, full: Run, dirty: Run, purge_full: float | None,
                 purge_dirty: float | None, no_cdn: float) -> list[str]:
    """The report's lines for one output: the full seed (against NO_CDN, the full seed's wall
    time without a CDN), the reseed and their ratio."""
    ratio = dirty.wall / full.wall if full.wall else float("nan")
    against = f" = {full.wall / no_cdn:.2f} x no CDN" if no_cdn and target != "none" else ""
    return [f"    {target:<10} full seed {full.wall:7.1f} s{against} (purges done {seconds(purge_full)};"
            f" {purge_label(full.summary)})",
            f"    {'':<10} seed --dirty {dirty.wall:5.1f} s = {ratio:.2f} x full"
            f" (change log read {read_seconds(dirty.log)} s; purges done {seconds(purge_dirty)};"
            f" {dirty.summary.get('tiles_written', '?')} tiles written; {ways_label(dirty.summary)};"
            f" {purge_label(dirty.summary)})"]


# --- the targets ---------------------------------------------------------------------------------

class Standin:
    """The tests' Cloudflare stand-in (tests/standins/cloudflare.rs), stopped at exit."""

    def __init__(self, b: Bench, binary: Path):
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self._unregister = b.on_cleanup(lambda: stop_quietly(self.proc))
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            b.die(f"import: the Cloudflare stand-in {binary} printed no port (got '{line}')")
        self.port = int(line)

    def seen(self) -> dict:
        """What it saw so far: admitted (epoch seconds), refused, urls."""
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        """Closes its stdin, which ends it."""
        self.proc.stdin.close()
        self.proc.wait()
        self._unregister()


class PurgeCounter:
    """Varnish's MAIN.n_purges sampled every POLL_SECONDS in a thread while it runs."""

    def __init__(self, vport: int):
        self.argv = ["varnishstat", "-n", f"/tmp/oar-tiles-varnish-{vport}/n", "-1", "-f", "MAIN.n_purges"]
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            done = subprocess.run(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            count = purges_stat(done.stdout)
            if count is not None:
                self.samples.append((time.time(), count))
            self._stop.wait(POLL_SECONDS)

    def stop(self) -> None:
        """Ends the sampling."""
        self._stop.set()
        self._thread.join()


def cdn_table(target: str, cache: str, cf_port: int) -> str:
    """The [[tileset.cdn]] table of TARGET (none: ''), then the feed's table."""
    feed = "\n[tileset.feed]\n"
    if target == "http":
        return f'\n[[tileset.cdn]]\nkind = "http"\nname = "varnish"\nurl = "{cache}/{{path}}"\n' + feed
    if target == "cloudflare":
        return (f'\n[[tileset.cdn]]\nkind = "cloudflare"\nname = "cloudflare"\nplan = "free"\n'
                f'zone_id = "{CF_ZONE}"\napi_url = "http://127.0.0.1:{cf_port}/client/v4"\n'
                f'public_url = "https://tiles.example.org/facilities"\ntoken_env = "{CF_TOKEN_ENV}"\n' + feed)
    return feed


def standin_binary(b: Bench) -> Path:
    """Builds tests/standins/cloudflare.rs beside the profiling binary; returns its path. Under
    OAR_TILES_BENCH_BIN (nothing built), it is looked up beside that binary, in examples/."""
    if os.environ.get("OAR_TILES_BENCH_BIN"):
        found = b.bin.parent / "examples" / "cloudflare_standin"
        if not os.access(found, os.X_OK):
            b.die(f"import: OAR_TILES_BENCH_BIN is set but {found} is not an executable")
        return found
    b.log("import: building the Cloudflare stand-in (tests/standins/cloudflare.rs)")
    subprocess.run(["cargo", "build", "--profile", "profiling", "--locked", "-q", "--example", "cloudflare_standin"],
                   cwd=b.root, check=True)
    return b.bin.parent / "examples" / "cloudflare_standin"


# --- the runs ------------------------------------------------------------------------------------

def timed(b: Bench, binary: str, name: str, args: list[str]) -> Run:
    """`BINARY seed ARGS` under /usr/bin/time -v, its log and summary kept in WORK/NAME.*; a
    failed run fails the bench (status 1) and is reported with its last log lines."""
    w = b.work
    env = {**os.environ, CF_TOKEN_ENV: "bench"}
    start = time.time()
    with open(w / f"{name}.log", "wb") as err:
        code = subprocess.run(["/usr/bin/time", "-v", "-o", str(w / f"{name}.time"), binary, "seed",
                               *b.concurrency_args(), *args, "--summary-json", str(w / f"{name}.json")],
                              stdout=subprocess.DEVNULL, stderr=err, env=env).returncode
    end = time.time()
    log = (w / f"{name}.log").read_text(encoding="utf-8", errors="replace")
    if code != 0:
        b.log(f"import: {name} failed: " + "\n".join(log.splitlines()[-3:]))
        b.failed(1)
    found = w / f"{name}.json"
    summary = json.loads(found.read_text())[0] if code == 0 and found.exists() else {}
    return Run(time_v(w / f"{name}.time")[0], start, end, summary, log)


def purge_done(target: str, run: Run, counter: PurgeCounter, standin: Standin) -> float | None:
    """Seconds from RUN's start to its target's last purge."""
    if target == "http":
        return last_change(counter.samples, run.start, run.end)
    if target == "cloudflare":
        return last_admitted(standin.seen()["admitted"], run.start, run.end)
    return None


def one_binary(b: Bench, label: str, binary: str, setup: dict, sign: int) -> list[str]:
    """Full seeds of the three outputs, the UPDATE, the reseeds; returns the report's lines."""
    zoom, schema = b.opts.import_zoom, setup["schema"]
    full, dirty, done = {}, {}, {}
    for target in TARGETS:
        tree = b.work / f"import-{label}-{target}"
        subprocess.run(["rm", "-rf", str(tree)], check=True)
        b.log(f"import: {label}: full seed, {target}")
        run = timed(b, binary, f"import-{label}-{target}-full",
                    ["--config", str(setup["configs"][target]), "--zoom", zoom])
        full[target] = (run, purge_done(target, run, setup["counter"], setup["standin"]))
    b.log(f"import: {label}: one UPDATE moving every facility of {schema}.facilities")
    started = time.time()
    b.psql(f"UPDATE {schema}.facilities SET location = ST_Translate(location, {sign * MOVE}, {sign * MOVE})",
           out=subprocess.DEVNULL)
    committed = time.time()
    feed = None
    for target in RESEED_ORDER:
        b.log(f"import: {label}: seed --dirty, {target}")
        run = timed(b, binary, f"import-{label}-{target}-dirty",
                    ["--config", str(setup["configs"][target]), "--zoom", zoom, "--dirty"])
        dirty[target], done[target] = run, purge_done(target, run, setup["counter"], setup["standin"])
        if feed is None:
            newest = newest_mtime(b.work / f"import-{label}-{target}" / "changes")
            feed = None if newest is None else newest - committed
    lines = [f"  {label} ({binary}): the UPDATE took {committed - started:.1f} s;"
             f" commit -> the feed's last segment (Varnish output, its reseed started at once) {seconds(feed)}"]
    for target in TARGETS:
        lines += target_lines(target, full[target][0], dirty[target], full[target][1], done[target],
                              full["none"][0].wall)
    return lines


def binaries(b: Bench) -> list[tuple[str, str]]:
    """(label, path) of the binaries measured: this build, then --baseline-bin."""
    found = [("ours", str(b.bin))]
    return found + ([("baseline-bin", b.opts.baseline_bin)] if b.opts.baseline_bin else [])


def prepare(b: Bench, n: int) -> tuple[dict, object, Origin]:
    """The sample under change capture, Varnish in front of serve, the stand-in, the configs."""
    schema = f"bench_{n}"
    base = b.work / "import.toml"
    make_config(b, n, "clustered", base)
    unguard, _, _ = capture_changes(b, n, base)
    b.psql(f"COMMENT ON TABLE {schema}.facilities IS 'modified by the import benchmark'", out=subprocess.DEVNULL)
    # serve needs a tileset to front: a small tree of the sample's zooms 0-2.
    served = b.work / "import-served"
    edit_file(base, lambda text: into_tree(text, served))
    b.tool("-q", "seed", "--config", str(base), "--zoom", "0-2", stdout=subprocess.DEVNULL)
    origin = Origin(b, served, b.work / "import-serve.log")
    vport = origin.cache()
    standin = Standin(b, standin_binary(b))
    configs = {}
    for label, _ in binaries(b):
        for target in TARGETS:
            config = b.work / f"import-{label}-{target}.toml"
            tree = b.work / f"import-{label}-{target}"
            text = into_tree(base.read_text(), tree)
            cache = f"http://127.0.0.1:{vport}/{origin.name}"
            config.write_text(text + cdn_table(target, cache, standin.port))
            configs.setdefault(label, {})[target] = config
    setup = {"schema": schema, "configs": configs, "counter": PurgeCounter(vport), "standin": standin,
             "config": base}
    return setup, unguard, origin


def live_p95(b: Bench) -> None:
    """The live section's commit -> drawn, unclustered, with each binary (serve, seed and watch
    are that binary's); IMPORT_LIVE=0 skips it."""
    if os.environ.get("IMPORT_LIVE") == "0":
        say("  live: skipped (IMPORT_LIVE=0)")
        return
    from bench.sections import live
    from bench.sections.live_page import chromium_paths
    knobs = dataclasses.replace(live.Knobs.from_env(b), layouts=["unclustered"],
                                idle_seconds=float(os.environ.get("LIVE_IDLE_SECONDS") or 5))
    chromium, chromedriver = chromium_paths(b)
    ours = b.bin
    try:
        for label, binary in binaries(b):
            b.bin = Path(binary)
            say(f"import: the live section's commit -> drawn with {label} ({binary})")
            live.live_case(b, "unclustered", knobs, chromium, chromedriver)
    finally:
        b.bin = ours


def section_import(b: Bench) -> None:
    """import: the full seeds, one bulk UPDATE and the reseeds per binary (each binary's lines
    printed as soon as it is done: a run stopped later keeps them), then live's p95."""
    n = b.opts.import_rows
    ensure_sample(b, n)
    install_varnish(b)
    load_before = load_now()
    setup, unguard, origin = prepare(b, n)
    say(f"import: one UPDATE of all {n} facilities (moved {MOVE} degrees), clustered, z{b.opts.import_zoom}"
        " tree with a changes feed; outputs: no CDN, Varnish (PURGE per tile), the Cloudflare stand-in"
        " (plan = \"free\": 800 URLs/s; prefixes, the default)")
    for i, (label, binary) in enumerate(binaries(b)):
        lines = one_binary(b, label, binary, {**setup, "configs": setup["configs"][label]}, 1 if i % 2 == 0 else -1)
        for line in lines:
            say(line)
        say(f"    load={load_before} / {load_now()}")
        for path in b.work.glob(f"import-{label}-*"):
            if path.is_dir():
                subprocess.run(["rm", "-rf", str(path)], check=True)
    setup["counter"].stop()
    setup["standin"].stop()
    origin.stop()
    finish_sample(b, "import", n, setup["config"], unguard)
    live_p95(b)
