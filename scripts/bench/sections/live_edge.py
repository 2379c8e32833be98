"""The live-edge section: commit -> both of the renamed facility's tiles (z14 and a low zoom that
carries the row's name: z10 unclustered, the first zoom past the clusters when clustered) fresh at a
Varnish edge, one rename at a time at LIVE_EDGE_RATES commits a second (default 2 and 10), per
layout of LIVE_EDGE_LAYOUTS (default unclustered, then clustered), with this build's `watch` and,
given --baseline-bin, the previous release's in the same run. The tree behind Varnish is seeded
once per layout; each binary's watcher gets the same schedule of renames."""
from __future__ import annotations

import gzip
import math
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from bench.measure import nearest_rank
from bench.samples import ensure_sample, make_config
from bench.sections.edge import http_cdn
from bench.sections.origin import Origin, install_varnish, warm
from bench.sections.watch import (capture_changes, edit_file, finish_sample, free_port,
                                  into_tree, load_now, say, start_watch, stop_watch, wait_for)

if TYPE_CHECKING:
    from bench.context import Bench

DEEP_ZOOM = 14
UNCLUSTERED_LOW_ZOOM = 10
GIVE_UP_SECONDS = 30.0
POLL_SECONDS = 0.02


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The XYZ column and row of the web-mercator tile holding LON, LAT at zoom Z."""
    n = 2 ** z
    x = int((lon + 180.0) / 360.0 * n)
    lat_r = math.radians(lat)
    y = int((1.0 - math.asinh(math.tan(lat_r)) / math.pi) / 2.0 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def zooms_of(cluster_maxzoom: int | None) -> tuple[int, int]:
    """The deep and the low zoom a rename is timed at. A clustered tile holds a row's name only
    when the row is alone in its cell, so a rename shows first past the clusters."""
    if cluster_maxzoom is None:
        return DEEP_ZOOM, UNCLUSTERED_LOW_ZOOM
    return DEEP_ZOOM, min(DEEP_ZOOM, max(UNCLUSTERED_LOW_ZOOM, cluster_maxzoom + 1))


def fetch(url: str) -> bytes:
    """The body of URL, gunzipped when gzip; empty when it fails."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read()
    except (urllib.error.URLError, OSError):
        return b""
    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body


def fresh_after(urls: list[str], marker: bytes, committed: float, out: dict, lock) -> None:
    """Polls URLS until every one holds MARKER; records under MARKER in OUT the seconds since
    COMMITTED (or None after GIVE_UP_SECONDS)."""
    waiting = list(urls)
    while waiting and time.time() - committed < GIVE_UP_SECONDS:
        waiting = [u for u in waiting if marker not in fetch(u)]
        if waiting:
            time.sleep(POLL_SECONDS)
    with lock:
        out[marker] = None if waiting else time.time() - committed


def facilities(b: Bench, schema: str, count: int) -> list[tuple[int, float, float]]:
    """COUNT facilities of SCHEMA spread over the table (id, lon, lat), the same every run."""
    rows = b.psql(f"SELECT id, ST_X(location), ST_Y(location) FROM \"{schema}\".facilities"
                  f" ORDER BY md5(id::text) LIMIT {count}", tuples=True)
    out = []
    for line in rows.splitlines():
        fid, lon, lat = line.split("|")
        out.append((int(fid), float(lon), float(lat)))
    return out


def stream(b: Bench, schema: str, picked, rate: float, cache: str, tag: str,
           zooms: tuple[int, int]) -> list:
    """Renames PICKED one at a time at RATE a second; returns each commit's latency to its tiles at
    ZOOMS fresh at CACHE (None: not within GIVE_UP_SECONDS), in the order they were committed."""
    out: dict = {}
    names = []
    lock = threading.Lock()
    threads = []
    argv = b.psql_argv() + ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    psql = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    started = time.monotonic()
    for i, (fid, lon, lat) in enumerate(picked):
        time.sleep(max(0.0, started + i / rate - time.monotonic()))
        name = f"LiveEdge{tag}{i:05d}"
        names.append(name.encode())
        psql.stdin.write(f"UPDATE \"{schema}\".facilities SET name = '{name}' WHERE id = {fid};\n"
                         "SELECT extract(epoch FROM clock_timestamp());\n")
        psql.stdin.flush()
        committed = float(psql.stdout.readline().strip())
        urls = [f"{cache}/{z}/{x}/{y}.pbf" for z in zooms for x, y in [tile_of(lon, lat, z)]]
        t = threading.Thread(target=fresh_after, args=(urls, name.encode(), committed, out, lock))
        t.start()
        threads.append(t)
    psql.stdin.close()
    psql.wait()
    for t in threads:
        t.join()
    in_order = [out[name] for name in names]
    b.log(f"live-edge {tag}: latencies in commit order: "
          + " ".join("-" if v is None else f"{v:.2f}" for v in in_order))
    return in_order


def summary(label: str, rate: float, latencies: list,
            zooms: tuple[int, int] = (DEEP_ZOOM, UNCLUSTERED_LOW_ZOOM)) -> str:
    """One report line: p50, p95, max and how many never turned fresh."""
    done = sorted(v for v in latencies if v is not None)
    missed = len(latencies) - len(done)
    if not done:
        return f"  {label}, {rate:g} commits/s: nothing turned fresh within {GIVE_UP_SECONDS:g} s"
    return (f"  {label}, {rate:g} commits/s: commit -> z{zooms[0]} and z{zooms[1]} fresh at the edge p50"
            f" {nearest_rank(done, 0.5):.2f} s, p95 {nearest_rank(done, 0.95):.2f} s, max {done[-1]:.2f} s"
            f" ({len(done)} commits{f', {missed} never fresh' if missed else ''}; load {load_now()})")


def binaries(b: Bench) -> list[tuple[str, str]]:
    """(label, path) of the watchers measured: this build, then --baseline-bin."""
    found = [("this build", str(b.bin))]
    return found + ([("baseline-bin", b.opts.baseline_bin)] if b.opts.baseline_bin else [])


def one_layout(b: Bench, layout: str, rates: list[float], seconds: float) -> None:
    """The layout's tree, seeded and cached, then each binary's watcher under each rate."""
    n = b.opts.reseed_rows
    schema, tree = f"bench_{n}", b.work / f"live-edge-{layout}"
    ensure_sample(b, n)
    config = b.work / f"live-edge-{layout}.toml"
    make_config(b, n, layout, config)
    edit_file(config, lambda text: into_tree(text, tree))
    unguard, _, _ = capture_changes(b, n, config, "live-edge")
    b.log(f"live-edge: full seed of {n} facilities ({layout}) into a tree")
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    b.tool("-q", "seed", *b.concurrency_args(), "--config", str(config), stdout=subprocess.DEVNULL)
    origin = Origin(b, tree, b.work / f"live-edge-{layout}-serve.log")
    cache = f"http://127.0.0.1:{origin.cache()}/{origin.name}"
    with open(config, "a") as f:
        f.write(http_cdn(cache, public=False))
    warm(b, "live-edge", tree, "pbf", cache)
    picked = facilities(b, schema, int(max(rates) * seconds))
    zooms = zooms_of(b.CLUSTER_MAXZOOM if layout == "clustered" else None)
    say(f"live-edge: {n} facilities {layout} into a tree behind Varnish (every tile cached for a"
        f" day, PURGE per tile), `watch` with its defaults; renames one at a time for {seconds:g} s")
    for label, binary in binaries(b):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        saved, b.bin = b.bin, Path(binary)
        try:
            watcher, unwatch = start_watch(b, config, port, b.work / f"live-edge-{layout}-{port}.log")
        finally:
            b.bin = saved
        wait_for(b, base, "health", watcher=watcher)
        for rate in rates:
            count = int(rate * seconds)
            tag = f"{layout[0]}{label[0]}{int(rate)}"
            # A first rename whose cycle finds the slow zooms, outside the figures.
            stream(b, schema, picked[:1], 1.0, cache, tag + "w", zooms)
            latencies = stream(b, schema, picked[:count], rate, cache, tag, zooms)
            say(summary(label, rate, latencies, zooms))
        stop_watch(b, "live-edge", watcher, unwatch)
    origin.stop()
    finish_sample(b, "live-edge", n, config, unguard)
    subprocess.run(["rm", "-rf", str(tree)], check=True)


def section_live_edge(b: Bench) -> None:
    """live-edge: commit -> fresh at a Varnish edge under a stream of renames, per layout and
    rate, this build beside --baseline-bin."""
    install_varnish(b)
    rates = [float(r) for r in (os.environ.get("LIVE_EDGE_RATES") or "2 10").split()]
    seconds = float(os.environ.get("LIVE_EDGE_SECONDS") or "20")
    layouts = (os.environ.get("LIVE_EDGE_LAYOUTS") or "unclustered clustered").split()
    for layout in layouts:
        if layout not in ("unclustered", "clustered"):
            b.die(f"LIVE_EDGE_LAYOUTS: '{layout}' is not clustered or unclustered")
        one_layout(b, layout, rates, seconds)
        say()
