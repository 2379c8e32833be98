"""The edge-zooms section: the tiles at a change, through Varnish, on a layer whose low zooms are
heavy (the sample unclustered), timed per zoom from just before each commit until the cache and
the origin serve new bytes."""
from __future__ import annotations

import math
import random
import subprocess
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from bench.samples import ensure_sample, make_config
from bench.sections.origin import Origin, install_varnish, warm
from bench.sections.watch import (RESEED_SEED, RESEED_ZOOM, capture_changes, changes, edit_file,
                                  env_int, finish_sample, free_port, into_tree, load_now, say,
                                  start_watch, stop_watch, wait_for)

if TYPE_CHECKING:
    from bench.context import Bench

ZOOMS = (10, 14)
PATIENCE = 60.0


def tile_path(lon: float, lat: float, z: int) -> str:
    """z/x/y.pbf of the tile holding LON, LAT at zoom Z (latitudes clamped to Web Mercator's)."""
    n = 2 ** z
    x = int((lon + 180.0) / 360.0 * n)
    lat = max(min(lat, 85.0511), -85.0511)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return f"{z}/{min(x, n - 1)}/{min(y, n - 1)}.pbf"


def body(url: str) -> bytes | None:
    """The body at URL ("status N" for an HTTP error, None when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        return ("status %d" % e.code).encode()
    except OSError:
        return None


def stats(values: list[float]) -> str:
    """p50, p95 and max of VALUES (the index int(q * len), as the old helper picked them)."""
    values = sorted(values)
    if not values:
        return "none"
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return f"p50 {pick(0.5):.2f} s, p95 {pick(0.95):.2f} s, max {values[-1]:.2f} s ({len(values)} tiles)"


def zooms_lines(edge: dict[int, list[float]], at_origin: list[float], missed: int) -> list[str]:
    """The report of the renames' times per zoom at the edge and at the origin."""
    zlo, zhi = min(edge), max(edge)
    everything = [v for values in edge.values() for v in values]
    lines = [f"  commit -> edge, z{zlo}-z{zhi} tiles at each change: {stats(everything)}"]
    lines += [f"    z{z}: {stats(values)}" for z, values in edge.items()]
    return lines + [f"  commit -> origin, the same tiles: {stats(at_origin)}",
                    f"  tiles whose bytes at the edge did not change within 60 s: {missed}",
                    f"  (target: commit -> edge p95 <= 1.5 s for z{zlo}-z{zhi} on an unclustered layer)"]


def time_renames(b: Bench, schema: str, n: int, seed: str, lo: int, hi: int, cache: str,
                 origin: str) -> list[str]:
    """N renames of random facilities (ids LO..HI), one at a time, a second apart; per change, the
    time from just before its commit until CACHE and ORIGIN serve new bytes for its tile at each
    zoom of ZOOMS. Returns the report's lines."""
    rng = random.Random(seed)
    table = f'"{schema}".facilities'
    edge: dict[int, list[float]] = {z: [] for z in range(ZOOMS[0], ZOOMS[1] + 1)}
    at_origin: list[float] = []
    missed = 0
    for i in range(n):
        fid = rng.randint(lo, hi)
        found = b.value(f"SELECT ST_X(location) || ' ' || ST_Y(location) FROM {table} WHERE id = {fid}")
        if not found:
            continue
        lon, lat = (float(v) for v in found.split())
        paths = {z: tile_path(lon, lat, z) for z in edge}
        before = {z: body(f"{cache}/{p}") for z, p in paths.items()}
        t0 = time.monotonic()
        b.value(f"UPDATE {table} SET name = name || ' (z{i})' WHERE id = {fid}")
        waiting_edge, waiting_origin = dict(paths), dict(paths)
        while (waiting_edge or waiting_origin) and time.monotonic() - t0 < PATIENCE:
            for z, p in list(waiting_edge.items()):
                if body(f"{cache}/{p}") != before[z]:
                    edge[z].append(time.monotonic() - t0)
                    del waiting_edge[z]
            for z, p in list(waiting_origin.items()):
                if body(f"{origin}/{p}") != before[z]:
                    at_origin.append(time.monotonic() - t0)
                    del waiting_origin[z]
            time.sleep(0.02)
        missed += len(waiting_edge)
        # The renames a second apart: each its own watch cycle, not a fixed synchronisation.
        time.sleep(1.0)
    return zooms_lines(edge, at_origin, missed)


def section_edge_zooms(b: Bench) -> None:
    """edge-zooms: EDGE_ZOOM_CHANGES renames on the unclustered sample behind Varnish, each timed
    at z10-z14 through the cache and at the origin."""
    changes_n = env_int(b, "EDGE_ZOOM_CHANGES", 20)
    n = b.opts.reseed_rows
    schema, tree = f"bench_{n}", b.work / "zooms-tree"
    ensure_sample(b, n)
    install_varnish(b)
    config = b.work / "zooms.toml"
    make_config(b, n, "unclustered", config)
    edit_file(config, lambda text: into_tree(text, tree, 0))
    unguard, lo, hi = capture_changes(b, n, config)
    b.log("edge-zooms: full seed into a tree (unclustered)")
    b.tool("-q", "seed", *b.concurrency_args(), "--config", str(config), stdout=subprocess.DEVNULL)
    origin = Origin(b, tree, b.work / "zooms-serve.log")
    cache = f"http://127.0.0.1:{origin.cache()}/{origin.name}"
    with open(config, "a") as f:
        f.write(f'\n[[tileset.cdn]]\nkind = "http"\nname = "varnish"\nurl = "{cache}/{{path}}"\n')
    b.log("edge-zooms: warming Varnish with every tile of the tree")
    warmed = warm(b, "edge", tree, "pbf", cache)
    port = free_port()
    watcher, unwatch = start_watch(b, config, port, b.work / "zooms-watch.log", json_log=False)
    wait_for(b, f"http://127.0.0.1:{port}", "health")
    load_before = load_now()
    say(f"edge-zooms: {n} facilities unclustered ({RESEED_ZOOM}) into a tree behind Varnish (PURGE per tile),"
        f" {changes_n} renames one at a time, watch with its default settings")
    b.log(f"edge-zooms: {changes_n} renames, each timed at z10-z14 through Varnish and at the origin")
    b.psql(f"COMMENT ON TABLE {schema}.facilities IS 'modified by the edge-zooms benchmark'",
           out=subprocess.DEVNULL)
    try:
        lines = time_renames(b, schema, changes_n, f"{RESEED_SEED}-zooms", lo, hi, cache,
                             f"{origin.url}/{origin.name}")
    except subprocess.CalledProcessError as e:
        b.log(f"edge-zooms: {e}")
        b.failed(1)
    else:
        for line in lines:
            say(line)
    say(f"  {warmed} tiles cached before the changes; load={load_before} / {load_now()}")
    stop_watch(b, "edge-zooms", watcher, unwatch)
    origin.stop()
    finish_sample(b, "edge-zooms", n, config, unguard)
    subprocess.run(["rm", "-rf", str(tree)], check=True)
