"""Generic measuring and reading helpers shared by the sections:
/usr/bin/time -v reports, seed summaries, MBTiles contents, percentiles, Prometheus text, the
postmaster's reaped CPU, HTTP probes and the watcher's log."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sqlite3
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Callable, Iterator


class ReportError(Exception):
    """A report or helper cannot go on: within report() it fails the run
    with status 1 and the next section runs; elsewhere it stops the run as die() does."""


def fail(message: str):
    """Raises ReportError(message)."""
    raise ReportError(message)


def report(b, fn: Callable[..., int | None], *args) -> None:
    """Runs the report FN(*ARGS) as bench.sh ran its report scripts (`python3 ... || failed $?`):
    a returned status (3: a cross-check failed) or a ReportError (1, logged) fails the run; the
    run goes on either way."""
    try:
        status = fn(*args)
    except ReportError as e:
        b.log(str(e))
        status = 1
    if status:
        b.failed(status)


# --- /usr/bin/time -v and seed summaries ---------------------------------------------------------

def time_field(text: str, label: str, path: str = "") -> str:
    """The value of LABEL in a `/usr/bin/time -v` report."""
    m = re.search(r"^\s*" + re.escape(label) + r": (.+)$", text, re.M)
    if not m:
        fail(f"/usr/bin/time -v printed no '{label}'" + (f" in {path}" if path else ""))
    return m.group(1).strip()


def clock_seconds(value: str) -> float:
    """Seconds of an h:mm:ss or m:ss clock."""
    seconds = 0.0
    for part in value.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def time_v(path: str | Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) from a `/usr/bin/time -v`
    report."""
    text = Path(path).read_text()
    wall = clock_seconds(time_field(text, "Elapsed (wall clock) time (h:mm:ss or m:ss)", str(path)))
    cpu = (float(time_field(text, "User time (seconds)", str(path)))
           + float(time_field(text, "System time (seconds)", str(path))))
    rss = int(time_field(text, "Maximum resident set size (kbytes)", str(path))) / 1024
    return wall, cpu, rss


def summary(path: str | Path) -> dict:
    """The one tileset of a seed's --summary-json."""
    s = json.loads(Path(path).read_text())
    if len(s) != 1:
        fail(f"expected one tileset in {path}, got {len(s)}")
    return s[0]


def seed_totals(path: str | Path) -> tuple[int, float, list]:
    """Tiles written and summed tool seconds over every tileset of a seed's summary (a partitioned
    tileset's summary holds one entry per partition), and the entries."""
    entries = json.loads(Path(path).read_text())
    return sum(e["tiles_written"] for e in entries), sum(e["seconds"] for e in entries), entries


def thread_cpu(path: str | Path) -> tuple[float, float]:
    """(backends, total) CPU seconds from scripts/thread_cpu.py's JSON, each to 2 decimals: the
    server's backends that served the measured command, and the command's own."""
    d = json.loads(Path(path).read_text())
    return round(d["backends"], 2), round(d["total"], 2)


# --- MBTiles -------------------------------------------------------------------------------------

def read_only(path: str | Path):
    """A read-only connection to an SQLite file, closed at the end of a `with` block (sqlite3's
    own context manager only ends the transaction)."""
    return contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True))


def tiles(path: str | Path) -> dict[tuple[int, int, int], bytes]:
    """Every tile of an MBTiles file: (z, column, TMS row) -> stored bytes."""
    with read_only(path) as db:
        return {(z, x, y): bytes(d) for z, x, y, d in db.execute(
            "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")}


def sizes_per_zoom(path: str | Path) -> dict[int, list[int]]:
    """Stored tile sizes per zoom of an MBTiles file, each list sorted."""
    per: dict[int, list[int]] = {}
    with read_only(path) as db:
        for z, n in db.execute("SELECT zoom_level, length(tile_data) FROM tiles"):
            per.setdefault(z, []).append(n)
    for v in per.values():
        v.sort()
    return per


def mbtiles_tiles(path: str | Path) -> Iterator[tuple[int, int, int, bytes]]:
    """(z, x, y, MVT bytes) of every tile of an MBTiles file, in XYZ rows, gzip undone."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        for z, col, row, data in db.execute(
                "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"):
            mvt = zlib.decompress(data, 31) if data[:2] == b"\x1f\x8b" else data
            yield z, col, (1 << z) - 1 - row, mvt  # MBTiles rows count from the south (TMS)


def tile_digests(path: str | Path) -> dict[tuple[int, int, int], bytes]:
    """Every tile of an MBTiles file as (z, x, y) -> a digest of its stored bytes."""
    with read_only(path) as db:
        return {(z, x, y): hashlib.blake2b(d, digest_size=16).digest() for z, x, y, d in db.execute(
            "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")}


def compare(a: str | Path, b: str | Path) -> tuple[int, int, int, int]:
    """(only in A, only in B, different, same): tiles of two MBTiles by z/x/y and stored bytes."""
    ta, tb = tiles(a), tiles(b)
    only_a = len(ta.keys() - tb.keys())
    only_b = len(tb.keys() - ta.keys())
    common = ta.keys() & tb.keys()
    different = sum(1 for k in common if ta[k] != tb[k])
    return only_a, only_b, different, len(common) - different


# --- figures -------------------------------------------------------------------------------------

def nearest_rank(sorted_values: list, q: float):
    """The q-quantile of sorted values by nearest rank."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def human(n: float) -> str:
    """Bytes as MiB from 1 MiB on, else KiB, one decimal."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def kib(n: float) -> str:
    """Bytes as KiB, one decimal, no unit."""
    return f"{n / 1024:.1f}"


# --- processes -----------------------------------------------------------------------------------

def proc_stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first)."""
    return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Whether process PID runs (an exited child that its parent has not reaped yet does not)."""
    try:
        return proc_stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def reaped_cpu(pid: int) -> float:
    """The CPU of process PID's exited children (cutime + cstime; for the postmaster, its
    backends), to 2 decimals: counted by the kernel to the last tick, with no poller beside them
    competing for the cores."""
    fields = proc_stat_fields(pid)
    return round((int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK"), 2)


def parent_pid(pid: int) -> int:
    """The parent of process PID."""
    return int(proc_stat_fields(pid)[1])


# --- HTTP and Prometheus -------------------------------------------------------------------------

def http_get(url: str) -> tuple[int | None, str]:
    """(status, body) of a GET with a 10 s timeout; (code, '') on an HTTP error, (None, '') when
    nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return None, ""


def prom_sum(text: str, name: str) -> float:
    """The sum of every sample of metric NAME (any labels) in Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, value = line.rsplit(" ", 1)
        if series.split("{")[0] == name:
            total += float(value)
    return total


def prom_value(text: str, name: str) -> float | None:
    """The first sample of series NAME (with its labels), or None."""
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return None


# --- the watcher's log ---------------------------------------------------------------------------

def watch_log(log: str | Path) -> tuple[list[float], list[float], int]:
    """From a watcher's JSON log: every change-to-tile latency (its debug line per cycle), every
    change-to-edge latency (its debug line per edge check) and the number of cycles."""
    origin: list[float] = []
    edge: list[float] = []
    cycles = 0
    for line in Path(log).read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        fields = event.get("fields", {})
        if "latencies" in fields:
            origin.extend(json.loads(fields["latencies"]))
        if "edge_latencies" in fields:
            edge.extend(json.loads(fields["edge_latencies"]))
        if str(fields.get("message", "")).startswith("cycle:"):
            cycles += 1
    return origin, edge, cycles
