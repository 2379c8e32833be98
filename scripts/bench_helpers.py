#!/usr/bin/env python3
"""Helpers of scripts/bench.sh (not meant to be run by hand).

  bench_helpers.py config SRC DST TABLE --changes-schema S (--unclustered | --cluster MAXZOOM,CELL,POSITION)
      Writes DST: SRC pointed at TABLE, with clustering set exactly as asked whatever SRC says, and
      `[changes] schema = S`. Prints "extent buffer layer pool_size size_budget".
  bench_helpers.py compare A.mbtiles B.mbtiles
      Prints "only_a only_b different same": tiles by z/x/y and stored bytes.
  bench_helpers.py reseed-report DIR
      The reseed section's report, from the files bench.sh leaves in DIR.
  bench_helpers.py tile-list OUTPUT.mbtiles BUFFER EXTENT SESSIONS CSV
      Writes CSV, the tile list of bench.sh's server-side baseline (see write_tile_list), for every
      tile of OUTPUT, and prints their total MVT bytes.
  bench_helpers.py reseed-floor OUTPUT.mbtiles CHANGED_LIST CLUSTER_MAXZOOM EXTENT BUFFER SESSIONS LEVEL CSV
      For the reseed's floor: writes CSV with the changed tiles the reseed stored above
      CLUSTER_MAXZOOM (z, x, y, buffered envelope in degrees, session), and prints
      "tiles mvt_bytes all_tiles all_mvt_bytes zlib_seconds": those tiles and their MVT bytes, all
      changed tiles it stored and theirs, and the CPU seconds zlib takes to compress the latter at
      LEVEL here, in one thread.
  bench_helpers.py cluster-report DIR ROWS ZOOMS BUDGET CLUSTER_DESC
      The clustering section's report, from the files bench.sh leaves in DIR.
  bench_helpers.py shards-report DIR ROWS ZOOMS "VARIANTS" "REAL_COUNTS" "PLANNERS" COUNTS...
      The shards section's report, from the files bench.sh leaves in DIR.
  bench_helpers.py shards-fit DIR "VARIANTS"
      The shard cost model's coefficients fitted on the full seeds the shards section leaves in DIR.
  bench_helpers.py partitions-report DIR ROWS ZOOMS COLUMN PARTITIONED_ROUNDS
      The partitions section's report, from the files bench.sh leaves in DIR.
  bench_helpers.py watch-partition-changes SCHEMA N RATE SEED LO HI
      The watch-partitions section's changes, an SQL script (see the function).
  bench_helpers.py watch-partitions-report LOG METRICS N RATE SEED_JSON SEED_TIME ZOOMS
      The watch-partitions section's report, from the watcher's log and metrics.
  bench_helpers.py same-partitions WATCHED.partitions.json FRESH.partitions.json
      Exit 3 unless both indexes and every partition's tiles are equal.
  bench_helpers.py reaped-cpu POSTMASTER_PID
      Prints the user+sys CPU seconds of the postmaster's exited children (its backends).
  bench_helpers.py parent-pid PID
      Prints the parent of process PID.
"""
import heapq
import json
import math
import os
import random
import re
import sqlite3
import statistics
import sys
import time
import urllib.error
import urllib.request
import zlib
import tomllib

DEFAULT_SIZE_BUDGET = 500 * 1024  # src/config.rs


def fail(message):
    sys.exit(f"bench: {message}")


# --- config -------------------------------------------------------------------------------------

HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?$")


def cmd_config(args):
    src, dst, table = args[:3]
    rest = args[3:]
    changes_schema = None
    cluster = None
    unclustered = False
    while rest:
        opt = rest.pop(0)
        if opt == "--changes-schema":
            changes_schema = rest.pop(0)
        elif opt == "--cluster":
            maxzoom, cell, position = rest.pop(0).split(",")
            cluster = (int(maxzoom), int(cell), position)
        elif opt == "--unclustered":
            unclustered = True
        else:
            fail(f"bench_helpers config: unknown option {opt}")
    if not changes_schema or (cluster is None) == (not unclustered):
        fail("bench_helpers config: needs --changes-schema and one of --cluster/--unclustered")

    text = open(src, encoding="utf-8").read()
    out = []
    section = None
    tables = 0
    has_changes = False
    for line in text.splitlines(keepends=True):
        m = HEADER.match(line)
        if m:
            section = m.group(1)
            out.append(line)
            if section == "changes":
                has_changes = True
                out.append(f'schema = "{changes_schema}"\n')
            continue
        if section == "tileset.layer" and re.match(r"\s*cluster_[A-Za-z_]*\s*=", line):
            continue  # set below, exactly as asked
        if section == "changes" and re.match(r"\s*schema\s*=", line):
            continue
        m = re.match(r'(\s*table\s*=\s*)"[^"]*"', line)
        if m and section == "tileset.layer":
            tables += 1
            out.append(f'{m.group(1)}"{table}"\n')
            if cluster:
                out.append(f"cluster_maxzoom = {cluster[0]}\n")
                out.append(f"cluster_cell = {cluster[1]}\n")
                out.append(f'cluster_position = "{cluster[2]}"\n')
            continue
        out.append(line)
    if tables != 1:
        fail(f"expected exactly one `table = ...` line in a [[tileset.layer]] of {src}, found {tables}")
    new = "".join(out)
    if not has_changes:
        new += f'\n[changes]\nschema = "{changes_schema}"\n'
    open(dst, "w", encoding="utf-8").write(new)

    # Check that the result says what was meant.
    cfg = tomllib.loads(new)
    if len(cfg.get("tileset", [])) != 1 or len(cfg["tileset"][0].get("layer", [])) != 1:
        fail(f"{src}: the benchmark expects one tileset with one layer")
    ts = cfg["tileset"][0]
    layer = ts["layer"][0]
    got = {k: v for k, v in layer.items() if k.startswith("cluster_")}
    want = {} if unclustered else {
        "cluster_maxzoom": cluster[0], "cluster_cell": cluster[1], "cluster_position": cluster[2]}
    if got != want or layer["table"] != table or cfg["changes"]["schema"] != changes_schema:
        fail(f"generated config {dst} is not what was meant ({got} vs {want})")
    print(ts.get("extent", 4096), ts.get("buffer", 64), layer["name"],
          cfg.get("database", {}).get("pool_size", os.cpu_count()),
          ts.get("size_budget", DEFAULT_SIZE_BUDGET))


# --- shared -------------------------------------------------------------------------------------

def time_v(path):
    """Wall seconds, CPU seconds and peak RSS (MB) from a `/usr/bin/time -v` report."""
    text = open(path).read()

    def field(label):
        m = re.search(r"^\s*" + re.escape(label) + r": (.+)$", text, re.M)
        if not m:
            fail(f"/usr/bin/time -v printed no '{label}' in {path}")
        return m.group(1).strip()

    wall = 0.0
    for part in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"):
        wall = wall * 60 + float(part)
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    rss = int(field("Maximum resident set size (kbytes)")) / 1024
    return wall, cpu, rss


def summary(path):
    s = json.load(open(path))
    if len(s) != 1:
        fail(f"expected one tileset in {path}, got {len(s)}")
    return s[0]


def tiles(path):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {(z, x, y): bytes(d) for z, x, y, d in db.execute(
            "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")}


def sizes_per_zoom(path):
    per = {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        for z, n in db.execute("SELECT zoom_level, length(tile_data) FROM tiles"):
            per.setdefault(z, []).append(n)
    for v in per.values():
        v.sort()
    return per


def nearest_rank(sorted_values, q):
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def human(n):
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def kib(n):
    return f"{n / 1024:.1f}"


# --- compare ------------------------------------------------------------------------------------

def compare(a, b):
    ta, tb = tiles(a), tiles(b)
    only_a = len(ta.keys() - tb.keys())
    only_b = len(tb.keys() - ta.keys())
    common = ta.keys() & tb.keys()
    different = sum(1 for k in common if ta[k] != tb[k])
    return only_a, only_b, different, len(common) - different


def cmd_compare(args):
    print(*compare(*args))


# --- reseed -------------------------------------------------------------------------------------

def cmd_reseed_report(args):
    d = args[0]
    full, dirty, fresh = (summary(f"{d}/reseed-{k}.json") for k in ("full", "dirty", "fresh"))
    full_wall, _, full_rss = time_v(f"{d}/reseed-full.time")
    dirty_wall, dirty_cpu, dirty_rss = time_v(f"{d}/reseed-dirty.time")
    fresh_wall, _, _ = time_v(f"{d}/reseed-fresh.time")
    info = dict(line.strip().split("=", 1) for line in open(f"{d}/reseed-info.txt") if "=" in line)
    applied = dict(kv.split("=") for kv in info["applied"].split())
    only_a, only_b, different, same = compare(f"{d}/reseed.mbtiles", f"{d}/reseed-fresh.mbtiles")
    changed_list = sum(1 for line in open(f"{d}/reseed-changed.txt") if line.strip())
    stored = dirty["stored"]
    total_changes = sum(int(v) for v in applied.values())
    best_full = min(full_wall, fresh_wall)

    print(f"== reseed: {info['rows']} facilities, zoom {info['zoom']}, {info['cluster']}, "
          f"concurrency {info['concurrency']} ==")
    print(f"  full seed (records the watermark): {full['tiles_written']} tiles written"
          f" ({full['tiles_queried']} queried) in {full_wall:.2f} s wall"
          f" (tool's timer {full['seconds']:.2f} s, peak RSS {full_rss:.1f} MB)")
    print(f"  changes applied in one transaction: {total_changes} ="
          f" {applied['moves']} moves within hub areas, {applied['edits']} name edits,"
          f" {applied['inserts']} inserts, {applied['deletes']} deletes"
          f" (setseed({info['seed']}); change log rows: {info['logged']})")
    print(f"  seed --dirty:  changes read {dirty['changes_read']} (the summary's changes_read counts"
          f" geometries: old and new of each UPDATE, one per INSERT or DELETE)")
    print(f"                 tiles re-rendered (queried) {dirty['tiles_queried']},"
          f" written {dirty['tiles_written']} (the rest came out empty)")
    print(f"                 stored: {stored['changed']} changed, {stored['unchanged']} unchanged"
          f" (bytes identical, not rewritten), {stored['deleted']} deleted;"
          f" --changed-list lines {changed_list}")
    print(f"                 {dirty_wall:.2f} s wall (tool's timer {dirty['seconds']:.2f} s,"
          f" oar-tiles CPU {dirty_cpu:.2f} s, peak RSS {dirty_rss:.1f} MB)")
    print(f"  reseed / full seed wall time: {dirty_wall:.2f} / {full_wall:.2f} s ="
          f" {dirty_wall / full_wall:.2%}   (target < 2%)")
    floor = dict(line.strip().split("=", 1) for line in open(f"{d}/reseed-floor.txt") if "=" in line)
    floor_secs, zlib_secs = float(floor["postgis_seconds"]), float(floor["zlib_seconds"])
    sessions = int(floor["sessions"])
    print(f"  floor, what re-rendering the changed tiles costs with nothing else (no start-up, cells,"
          f" planning, writes):")
    print(f"                 PostGIS alone renders the {floor['tiles']} changed tiles above zoom"
          f" {floor['cluster_maxzoom']} ({int(floor['mvt_bytes']) / 2**20:.2f} MiB of MVT) in"
          f" {floor_secs:.3f} s over {sessions} session(s) = {floor_secs / full_wall:.2%} of the full seed")
    print(f"                 zlib level {floor['level']} of all {floor['all_tiles']} changed tiles"
          f" ({int(floor['all_mvt_bytes']) / 2**20:.2f} MiB of MVT): {zlib_secs:.3f} s CPU in one thread"
          f" = {zlib_secs / sessions / full_wall:.2%} of the full seed spread over {sessions} core(s)")
    floor_total = floor_secs + zlib_secs / sessions
    print(f"                 together at least {floor_total / full_wall:.2%}"
          f" of the full seed, before any clustered tile")
    print(f"  reseed / floor: {dirty_wall:.3f} / {floor_total:.3f} s = {dirty_wall / floor_total:.2f}"
          f"   (target <= 1.5)")
    noop = sorted(time_v(f"{d}/reseed-noop-{r}.time")[:2] for r in range(1, 6))
    print(f"  seed --dirty with no changes: median {statistics.median(w for w, _ in noop) * 1000:.0f} ms"
          f" wall (min {noop[0][0] * 1000:.0f}, max {noop[-1][0] * 1000:.0f} ms of 5 runs), median"
          f" oar-tiles CPU {statistics.median(c for _, c in noop) * 1000:.0f} ms   (target <= 50 ms)")
    print(f"  full seed of the changed data, clusters from rows (check): {fresh['tiles_written']} tiles in {fresh_wall:.2f} s"
          f" wall; against the faster full seed the ratio is {dirty_wall / best_full:.2%}")
    bands = []
    for band in info["bands"].split():
        b = summary(f"{d}/reseed-z{band}.json")
        wall, _, _ = time_v(f"{d}/reseed-z{band}.time")
        bands.append(f"z{band}: {b['tiles_queried']} tiles in {wall:.2f} s")
    print(f"  by zoom band (copies of the full seed's output, each reseeded over one band alone):"
          f" {'; '.join(bands)}")
    verdict = "IDENTICAL to" if only_a == only_b == different == 0 else "DIFFERENT FROM"
    print(f"  reseeded output {verdict} the full seed of the changed data: {same} tiles equal,"
          f" {different} with other bytes, {only_a} only in the reseed, {only_b} only in the full seed")
    print(f"  load average at the start / end of the measurements: {info['load']}")
    per = {z["zoom"]: z for z in dirty["per_zoom"]}
    print("  per zoom of the measured reseed; ms are the summary's render_ms: server time per tile"
          " (clock_timestamp\n  between consecutive tiles of a batched statement)")
    print("  zoom  re-rendered  written  p50 ms  p95 ms  max ms")
    for z in sorted(per):
        row = per[z]
        print(f"  {z:>4} {row['queried']:>12} {row['written']:>8} {row['render_ms_p50']:>7.1f}"
              f" {row['render_ms_p95']:>7.1f} {row['render_ms_max']:>7.1f}")
    slow = ", ".join(f"{t['tile']} {t['ms']:.0f} ms" for t in dirty["slowest_tiles"][:5])
    print(f"  slowest re-rendered tiles: {slow or '-'}")
    sys.exit(0 if verdict.startswith("IDENTICAL") else 3)


def mbtiles_tiles(path):
    """(z, x, y, MVT bytes) of every tile of an MBTiles file, in XYZ rows, gzip undone."""
    with sqlite3.connect(path) as db:
        for z, col, row, data in db.execute(
                "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"):
            mvt = zlib.decompress(data, 31) if data[:2] == b"\x1f\x8b" else data
            yield z, col, (1 << z) - 1 - row, mvt  # MBTiles rows count from the south (TMS)


def write_tile_list(tiles, out, buffer, extent, sessions):
    """Writes the CSV bench.sh loads for its server-side statements: per tile z, x, y, the buffered
    envelope in degrees that the tool binds as $4..$7 (computed as src/tile.rs and
    src/render/mod.rs do; PostGIS cannot produce it directly: ST_TileEnvelope(margin => ...) clamps
    y to the Mercator square and ST_Transform wraps x at the antimeridian, both of which change edge
    tiles), and a session. Tiles are dealt to sessions largest first, each to the least loaded one,
    so no session idles while another finishes a z0 tile (MVT size stands in for render cost, plus
    512 bytes for a tile's fixed cost). `tiles` holds (z, x, y, mvt_size)."""
    half, radius = 20_037_508.342_789_244, 6_378_137.0
    margin = buffer / extent
    lon = lambda v: math.degrees(v / radius)
    lat = lambda v: math.degrees(math.atan(math.sinh(v / radius)))
    load = [(0, k) for k in range(sessions)]
    with open(out, "w") as f:
        for z, col, y, size_bytes in sorted(tiles, key=lambda t: -t[3]):
            size = 2 * half / (1 << z)
            west, north = -half + col * size, half - y * size
            e = [west - margin * size, north - size - margin * size,
                 west + size + margin * size, north + margin * size]
            dx, dy = (e[2] - e[0]) * 1e-9, (e[3] - e[1]) * 1e-9  # the tool's hair of slack
            env = [lon(e[0] - dx), lat(e[1] - dy), lon(e[2] + dx), lat(e[3] + dy)]
            total, k = heapq.heappop(load)
            heapq.heappush(load, (total + size_bytes + 512, k))
            f.write(",".join([str(z), str(col), str(y), *map(repr, env), str(k)]) + "\n")


def cmd_tile_list(args):
    mbtiles = args[0]
    buffer, extent, sessions = map(int, args[1:4])
    out = args[4]
    tiles = [(z, x, y, len(mvt)) for z, x, y, mvt in mbtiles_tiles(mbtiles)]
    write_tile_list(tiles, out, buffer, extent, sessions)
    print(sum(t[3] for t in tiles))


def cmd_reseed_floor(args):
    mbtiles, changed_list = args[:2]
    maxzoom, extent, buffer, sessions, level = map(int, args[2:7])
    out = args[7]
    listed = {tuple(map(int, line.strip().split("/"))) for line in open(changed_list) if line.strip()}
    changed = [(z, x, y, mvt) for z, x, y, mvt in mbtiles_tiles(mbtiles) if (z, x, y) in listed]
    unclustered = [(z, x, y, len(mvt)) for z, x, y, mvt in changed if z > maxzoom]
    write_tile_list(unclustered, out, buffer, extent, sessions)
    started = time.process_time()
    for *_, mvt in changed:
        compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
        compressor.compress(mvt)
        compressor.flush()
    zlib_seconds = time.process_time() - started
    print(len(unclustered), sum(t[3] for t in unclustered), len(changed),
          sum(len(t[3]) for t in changed), f"{zlib_seconds:.4f}")


# --- clustering ---------------------------------------------------------------------------------

def cmd_cluster_report(args):
    d, rows, zooms, budget, desc = args
    budget = int(budget)
    runs = {}
    for variant in ("clustered", "unclustered"):
        runs[variant] = {
            "summary": summary(f"{d}/cluster-{rows}-{variant}.json"),
            "time": time_v(f"{d}/cluster-{rows}-{variant}.time"),
            "sizes": sizes_per_zoom(f"{d}/cluster-{rows}-{variant}.mbtiles"),
        }
    lo, hi = (int(z) for z in zooms.split("-"))
    print(f"== clustering: {rows} facilities, zoom {zooms} seeded (zooms past cluster_maxzoom"
          f" render the same either way), {desc} ==")
    print("  stored tile size in KiB (gzip, length(tile_data) in the MBTiles; p99 by nearest rank);"
          " render ms from the summary\n  (server time per tile)")
    head = "tiles  median     p99     max   p50ms   p95ms   maxms"
    print(f"  {'':4} | {'clustered':^{len(head)}} | {'unclustered':^{len(head)}}")
    print(f"  zoom | {head} | {head}")
    for z in range(lo, hi + 1):
        cells = []
        for variant in ("clustered", "unclustered"):
            r = runs[variant]
            s = r["sizes"].get(z, [])
            pz = next((p for p in r["summary"]["per_zoom"] if p["zoom"] == z), None)
            if s:
                sizes = (f"{len(s):>5} {kib(statistics.median(s)):>7} {kib(nearest_rank(s, 0.99)):>7}"
                         f" {kib(s[-1]):>7}")
            else:
                sizes = f"{0:>5} {'-':>7} {'-':>7} {'-':>7}"
            if pz and pz["queried"]:
                ms = f"{pz['render_ms_p50']:>7.1f} {pz['render_ms_p95']:>7.1f} {pz['render_ms_max']:>7.1f}"
            else:
                ms = f"{'-':>7} {'-':>7} {'-':>7}"
            cells.append(f"{sizes} {ms}")
        print(f"  {z:>4} | {cells[0]} | {cells[1]}")
    status = 0
    print(f"  load average before / after the two seeds: {os.environ.get('BENCH_LOAD', '?')}")
    for variant in ("clustered", "unclustered"):
        r = runs[variant]
        s = r["summary"]
        wall, cpu, rss = r["time"]
        all_sizes = [n for v in r["sizes"].values() for n in v]
        over = sum(1 for n in all_sizes if n > budget)
        reported = len(s["over_budget"])
        largest = max(all_sizes) if all_sizes else 0
        print(f"  {variant:>11}: {s['tiles_written']} tiles, {human(s['bytes_written'])} stored,"
              f" {wall:.2f} s wall (tool's timer {s['seconds']:.2f} s, oar-tiles CPU {cpu:.2f} s,"
              f" peak RSS {rss:.1f} MB)")
        print(f"  {'':>11}  tiles over the {budget / 1024:.0f} KiB budget: {over}"
              f" (summary's over_budget lists {reported}); largest {kib(largest)} KiB")
        if over != reported:
            status = 3
        if sum(len(v) for v in r["sizes"].values()) != s["tiles_written"]:
            print(f"  {'':>11}  WARNING: the MBTiles holds {len(all_sizes)} tiles, the summary says"
                  f" {s['tiles_written']} written")
            status = 3
    sys.exit(status)


# --- watch: change-to-tile latency ---------------------------------------------------------------

def cmd_watch_changes(args):
    """An SQL script of N single-row changes to SCHEMA.facilities (ids LO..HI), each its own
    transaction, committed at RATE per second on a fixed schedule (pg_sleep_until, so the rate
    does not drift): 40% moves by up to 0.01 degrees, 30% name edits, 15% inserts, 15% deletes."""
    schema, n, rate, seed, lo, hi = args[0], int(args[1]), float(args[2]), args[3], int(args[4]), int(args[5])
    rng = random.Random(seed)
    ids = rng.sample(range(lo, hi + 1), n)
    t = f'"{schema}".facilities'
    out = ["\\set ON_ERROR_STOP on",
           f"COMMENT ON TABLE {t} IS 'modified by the watch benchmark';",
           "CREATE TEMP TABLE watch_start AS SELECT clock_timestamp() AS t0;"]
    for i, fid in enumerate(ids):
        out.append(f"SELECT pg_sleep_until((SELECT t0 FROM watch_start) + interval '1 second' * {i / rate:.3f}) \\g /dev/null")
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
    print("\n".join(out))


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return None, ""


def prom_sum(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, value = line.rsplit(" ", 1)
        if series.split("{")[0] == name:
            total += float(value)
    return total


def alive(pid):
    """Whether process PID runs (an exited child that its parent has not reaped yet does not)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmd_watch_wait(args):
    """Waits (at most 600 s) until the watcher at BASE answers /health 200 (`health`), or has
    applied at least N changes with none pending (`applied N`); saves /metrics to OUT if given.
    With WATCH_PID in the environment, fails as soon as that process has exited."""
    base, what = args[0], args[1]
    deadline = time.monotonic() + 600
    watcher = os.environ.get("WATCH_PID")
    while time.monotonic() < deadline:
        if watcher and not alive(int(watcher)):
            fail(f"watch: the watcher (pid {watcher}) exited while waiting for {what} at {base}")
        if what == "health":
            if http_get(base + "/health")[0] == 200:
                return
        elif what == "health-path":
            if http_get(base + args[2])[0] == 200:
                return
        else:
            status, text = http_get(base + "/metrics")
            if status == 200 and prom_sum(text, "oar_tiles_changes_applied_total") >= int(args[2]) \
                    and prom_sum(text, "oar_tiles_pending_changes") == 0:
                if len(args) > 3:
                    open(args[3], "w", encoding="utf-8").write(text)
                return
        time.sleep(0.2)
    fail(f"watch: gave up waiting for {what} at {base}")


def watch_log(log):
    """From a watcher's JSON log: every change-to-tile latency (its debug line per cycle), every
    change-to-edge latency (its debug line per edge check) and the number of cycles."""
    origin, edge, cycles = [], [], 0
    for line in open(log, encoding="utf-8"):
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


def cmd_watch_report(args):
    """Change-to-tile latency percentiles from the watcher's JSON log (its debug line per cycle)."""
    log, metrics, n, rate = args[0], args[1], int(args[2]), float(args[3])
    latencies, _, cycles = watch_log(log)
    text = open(metrics, encoding="utf-8").read()
    applied = prom_sum(text, "oar_tiles_changes_applied_total")
    latencies.sort()
    if not latencies:
        fail("watch: the log holds no latencies")
    p = lambda q: nearest_rank(latencies, q)
    print(f"watch: {n} single-row changes at {rate:g}/s, default debounce 1 s / max_delay 10 s")
    print(f"  changes applied {applied:.0f} (latencies measured {len(latencies)}), cycles {cycles},"
          f" tiles rendered {prom_sum(text, 'oar_tiles_tiles_rendered_total'):.0f}")
    print(f"  change-to-tile latency: p50 {p(0.50):.2f} s, p95 {p(0.95):.2f} s, max {latencies[-1]:.2f} s"
          f" (target p95 <= 3 s)")
    if len(latencies) != n or applied != n:
        print(f"  WARNING: expected {n} changes")
        sys.exit(3)


# --- edge: commit-to-edge latency through a real cache -------------------------------------------

def cmd_edge_warm(args):
    """Fetches every tile of the tree ROOT (z/x/y.EXT) through BASE (the cache, with the tileset's
    path), 8 at a time, so the cache holds the whole pyramid before the changes start."""
    import concurrent.futures
    root, ext, base = args[0], args[1], args[2]
    paths = []
    for z in os.listdir(root):
        if not z.isdigit():
            continue
        for x in os.listdir(os.path.join(root, z)):
            for name in os.listdir(os.path.join(root, z, x)):
                if name.endswith("." + ext):
                    paths.append(f"{z}/{x}/{name}")

    def fetch(path):
        try:
            with urllib.request.urlopen(f"{base}/{path}", timeout=30) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(fetch, paths))
    bad = sum(1 for s in statuses if s != 200)
    if bad:
        fail(f"edge: {bad} of {len(paths)} tiles did not come through {base}")
    print(len(paths))


def cmd_edge_zooms(args):
    """N renames of random facilities of SCHEMA.facilities (ids LO..HI), one at a time, a second
    apart, while `watch` purges a cache in front of the origin; per change, the time from just
    before its commit until the cache (CACHE) and the origin (ORIGIN) serve new bytes for the tile
    holding it at each zoom of ZOOMS ("10-14"). Prints p50/p95/max at the edge and the origin."""
    import math
    import subprocess
    schema, n, seed, lo, hi, cache, origin, zooms = (
        args[0], int(args[1]), args[2], int(args[3]), int(args[4]), args[5], args[6], args[7])
    zlo, zhi = (int(z) for z in zooms.split("-"))
    rng = random.Random(seed)
    table = f'"{schema}".facilities'

    def psql(sql):
        return subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                               "-d", os.environ["DATABASE_URL"], "-c", sql],
                              check=True, capture_output=True, text=True).stdout.strip()

    def tile(lon, lat, z):
        n2 = 2 ** z
        x = int((lon + 180.0) / 360.0 * n2)
        lat = max(min(lat, 85.0511), -85.0511)
        y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n2)
        return f"{z}/{min(x, n2 - 1)}/{min(y, n2 - 1)}.pbf"

    def get(url):
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            return ("status %d" % e.code).encode()
        except OSError:
            return None

    edge, at_origin, missed = {z: [] for z in range(zlo, zhi + 1)}, [], 0
    for i in range(n):
        fid = rng.randint(lo, hi)
        found = psql(f"SELECT ST_X(location) || ' ' || ST_Y(location) FROM {table} WHERE id = {fid}")
        if not found:
            continue
        lon, lat = (float(v) for v in found.split())
        paths = {z: tile(lon, lat, z) for z in range(zlo, zhi + 1)}
        before = {z: get(f"{cache}/{p}") for z, p in paths.items()}
        t0 = time.monotonic()
        psql(f"UPDATE {table} SET name = name || ' (z{i})' WHERE id = {fid}")
        waiting_edge, waiting_origin = dict(paths), dict(paths)
        while (waiting_edge or waiting_origin) and time.monotonic() - t0 < 60:
            for z, p in list(waiting_edge.items()):
                if get(f"{cache}/{p}") != before[z]:
                    edge[z].append(time.monotonic() - t0)
                    del waiting_edge[z]
            for z, p in list(waiting_origin.items()):
                if get(f"{origin}/{p}") != before[z]:
                    at_origin.append(time.monotonic() - t0)
                    del waiting_origin[z]
            time.sleep(0.02)
        missed += len(waiting_edge)
        time.sleep(1.0)

    def stats(values):
        values = sorted(values)
        if not values:
            return "none"
        pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]
        return f"p50 {pick(0.5):.2f} s, p95 {pick(0.95):.2f} s, max {values[-1]:.2f} s ({len(values)} tiles)"

    everything = [v for values in edge.values() for v in values]
    print(f"  commit -> edge, z{zlo}-z{zhi} tiles at each change: {stats(everything)}")
    for z, values in edge.items():
        print(f"    z{z}: {stats(values)}")
    print(f"  commit -> origin, the same tiles: {stats(at_origin)}")
    print(f"  tiles whose bytes at the edge did not change within 60 s: {missed}")
    print(f"  (target: commit -> edge p95 <= 1.5 s for z{zlo}-z{zhi} on an unclustered layer)")


def cmd_edge_wait(args):
    """After the changes are applied, waits (at most 120 s) until the watcher at BASE has measured
    N changes at the edge or given up on some (unconfirmed tiles); saves /metrics to OUT."""
    base, n, out = args[0], int(args[1]), args[2]
    deadline = time.monotonic() + 120
    text = ""
    while time.monotonic() < deadline:
        status, text = http_get(base + "/metrics")
        if status == 200 and (prom_sum(text, "oar_tiles_change_to_edge_seconds_count") >= n
                              or prom_sum(text, "oar_tiles_edge_unconfirmed_total") > 0):
            break
        time.sleep(0.5)
    open(out, "w", encoding="utf-8").write(text)


def cmd_edge_report(args):
    """Commit-to-edge latencies from the watcher's JSON log (its debug line per edge check), beside
    the commit-to-origin ones of the same run, and the purges per change from its metrics."""
    log, metrics, n, rate = args[0], args[1], int(args[2]), float(args[3])
    origin, edge, cycles = watch_log(log)
    text = open(metrics, encoding="utf-8").read()
    applied = prom_sum(text, "oar_tiles_changes_applied_total")
    requests = prom_sum(text, "oar_tiles_purge_requests_total")
    paths = prom_sum(text, "oar_tiles_purge_paths_total")
    if not edge or not origin:
        fail("edge: the log holds no latencies")
    edge.sort()
    origin.sort()
    print(f"edge: {n} single-row changes at {rate:g}/s through `watch` to a tree served by"
          f" `oar-tiles serve` behind Varnish (every tile cached for a day, purged by PURGE)")
    print(f"  changes applied {applied:.0f}, cycles {cycles}, measured at the edge {len(edge)},"
          f" at the origin {len(origin)}")
    for what, values in (("commit-to-origin", origin), ("commit-to-edge", edge)):
        p = lambda q: nearest_rank(values, q)
        print(f"  {what} latency: p50 {p(0.50):.2f} s, p95 {p(0.95):.2f} s, max {values[-1]:.2f} s"
              + (" (target p95 <= 3 s)" if what == "commit-to-edge" else ""))
    per_change = requests / applied if applied else float("nan")
    print(f"  purge requests {requests:.0f} ({paths:.0f} paths): {per_change:.1f} per change;"
          f" edge requests {prom_sum(text, 'oar_tiles_edge_requests_total'):.0f},"
          f" stale answers {prom_sum(text, 'oar_tiles_edge_stale_answers_total'):.0f},"
          f" unconfirmed {prom_sum(text, 'oar_tiles_edge_unconfirmed_total'):.0f}")
    if applied != n:
        print(f"  WARNING: expected {n} changes")
        sys.exit(3)


def cmd_edge_moves(args):
    """One transaction moving K facilities of SCHEMA (ids LO..HI, seeded) by up to 0.05 degrees."""
    schema, k, seed, lo, hi = args[0], int(args[1]), args[2], int(args[3]), int(args[4])
    rng = random.Random(seed + "-edge")
    t = f'"{schema}".facilities'
    out = ["BEGIN;", f"COMMENT ON TABLE {t} IS 'modified by the edge benchmark';"]
    for fid in rng.sample(range(lo, hi + 1), k):
        dx, dy = rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)
        out.append(f"UPDATE {t} SET location = ST_Translate(location, {dx:.6f}, {dy:.6f}) WHERE id = {fid};")
    out.append("COMMIT;")
    print("\n".join(out))


def cmd_edge_plan(args):
    """The CloudFront paths of a `seed --dirty --dry-run` summary: before and after folding."""
    summary = json.load(open(args[0], encoding="utf-8"))[0]
    plan = summary["plan"]
    dirty = sum(z["tiles"] for z in plan["dirty_tiles"])
    for target in plan["purges"]:
        folded = target["paths"]
        wildcards = sum(1 for p in folded if p.endswith("*"))
        print(f"  reseed after moving facilities ({summary.get('changes_read')} changes read): {dirty} dirty tiles;"
              f" CloudFront `{target['target']}`: {target['changed']} paths before folding,"
              f" {len(folded)} after ({wildcards} wildcards), {target['requests']} invalidation(s),"
              f" ${target['price_usd']:.2f} at $0.005 a path")


def cmd_same_tiles(args):
    """Exit 3 unless two MBTiles hold the same tiles with the same bytes."""
    a = {(z, x, y): mvt for z, x, y, mvt in mbtiles_tiles(args[0])}
    b = {(z, x, y): mvt for z, x, y, mvt in mbtiles_tiles(args[1])}
    if a != b:
        print(f"  WARNING: {args[0]} and {args[1]} differ ({len(a)} against {len(b)} tiles)")
        sys.exit(3)
    print(f"  the watched output equals a full seed of the changed data ({len(a)} tiles)")


# --- watch-partitions: watch keeping a partitioned tileset fresh -----------------------------------

def cmd_watch_partition_changes(args):
    """An SQL script of N single-row changes to SCHEMA.facilities (ids LO..HI, with contributor_ids),
    each its own transaction, committed at RATE per second on a fixed schedule as watch-changes
    does: 35% moves by up to 0.01 degrees, 15% inserts (a copy of a row beside it, with its
    contributors), 15% deletes, 20% a facility gaining a contributor (drawn as the sample draws
    them: floor(2001^u), so mostly large ones) and 15% losing its last one in id order (usually its
    smallest; a facility of one contributor then belongs to no partition). Every change changes
    its row, so each logs once and the watcher's applied count reaches N."""
    schema, n, rate, seed, lo, hi = args[0], int(args[1]), float(args[2]), args[3], int(args[4]), int(args[5])
    rng = random.Random(seed)
    ids = rng.sample(range(lo, hi + 1), n)
    t = f'"{schema}".facilities'
    out = ["\\set ON_ERROR_STOP on",
           f"COMMENT ON TABLE {t} IS 'modified by the watch-partitions benchmark';",
           "CREATE TEMP TABLE watch_start AS SELECT clock_timestamp() AS t0;"]
    for i, fid in enumerate(ids):
        out.append(f"SELECT pg_sleep_until((SELECT t0 FROM watch_start) + interval '1 second' * {i / rate:.3f}) \\g /dev/null")
        kind = rng.random()
        if kind < 0.35:
            dx, dy = rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01)
            out.append(f"UPDATE {t} SET location = ST_Translate(location, {dx:.6f}, {dy:.6f}) WHERE id = {fid};")
        elif kind < 0.50:
            out.append(f"INSERT INTO {t} (id, os_id, name, address, country_code, contributors, created_at,"
                       f" updated_at, location, contributor_ids) SELECT id + 100000000, os_id || '-w', name,"
                       f" address, country_code, contributors, created_at, updated_at,"
                       f" ST_Translate(location, 0.001, 0.001), contributor_ids FROM {t} WHERE id = {fid};")
        elif kind < 0.65:
            out.append(f"DELETE FROM {t} WHERE id = {fid};")
        elif kind < 0.85:
            # A facility that holds the contributor drawn gains one of its own instead (a new
            # value, so a new partition), so that every change logs and counts.
            gained = min(2000, math.floor(2001 ** rng.random()))
            out.append(f"UPDATE {t} SET contributor_ids = ARRAY(SELECT DISTINCT c FROM"
                       f" unnest(contributor_ids || CASE WHEN {gained} = ANY(contributor_ids)"
                       f" THEN {2001 + fid} ELSE {gained} END) c ORDER BY c) WHERE id = {fid};")
        else:
            # A facility of no contributor gains its own instead, for the same reason.
            out.append(f"UPDATE {t} SET contributor_ids = CASE WHEN cardinality(contributor_ids) > 0"
                       f" THEN contributor_ids[1:cardinality(contributor_ids) - 1]"
                       f" ELSE ARRAY[{2001 + fid}] END WHERE id = {fid};")
    print("\n".join(out))


def partitions_log(log):
    """From a watcher's JSON log: (partitions_rendered, partitions_total) of each cycle's debug
    event per partitioned tileset."""
    cycles = []
    for line in open(log, encoding="utf-8"):
        try:
            fields = json.loads(line).get("fields", {})
        except ValueError:
            continue
        if "partitions_rendered" in fields:
            cycles.append((int(fields["partitions_rendered"]), int(fields.get("partitions_total", 0))))
    return cycles


def cmd_watch_partitions_report(args):
    """Change-to-tile latency percentiles and partitions rendered per cycle from the watcher's JSON
    log, the metrics saved once every change was applied, and the full seed before the watcher."""
    log, metrics, n, rate, seed_json, seed_time, zooms = args[0], args[1], int(args[2]), float(args[3]), \
        args[4], args[5], args[6]
    latencies, _, cycles = watch_log(log)
    parts = partitions_log(log)
    text = open(metrics, encoding="utf-8").read()
    applied = prom_sum(text, "oar_tiles_changes_applied_total")
    tiles, _, entries = seed_totals(seed_json)
    wall, _, rss = time_v(seed_time)
    print(f"watch-partitions: {n} single-row changes at {rate:g}/s (moves, inserts, deletes, contributors"
          f" gained and lost), zoom {zooms}, default debounce 1 s / max_delay 10 s")
    print(f"  full seed before the watcher: {len(entries)} partitions, {tiles} tiles written in {wall:.1f} s"
          f" (peak RSS {rss:.1f} MB)")
    print(f"  changes applied {applied:.0f} (latencies measured {len(latencies)}), cycles {cycles},"
          f" tiles rendered {prom_sum(text, 'oar_tiles_tiles_rendered_total'):.0f}, partitions rendered"
          f" {prom_sum(text, 'oar_tiles_partitions_rendered_total'):.0f} (oar_tiles_partitions_rendered_total)")
    status = 0
    if parts:
        rendered = sorted(r for r, _ in parts)
        print(f"  partitions rendered per cycle ({len(parts)} cycle events): median"
              f" {statistics.median(rendered):.0f}, p95 {nearest_rank(rendered, 0.95)}, max {rendered[-1]},"
              f" of {max(t for _, t in parts)}")
    else:
        print("  WARNING: the log holds no partitions_rendered events")
        status = 3
    if latencies:
        latencies.sort()
        p = lambda q: nearest_rank(latencies, q)
        print(f"  change-to-tile latency: p50 {p(0.50):.2f} s, p95 {p(0.95):.2f} s, max {latencies[-1]:.2f} s"
              f" (target p95 <= 3 s: {'met' if p(0.95) <= 3 else 'NOT met'})")
    else:
        print("  WARNING: the log holds no latencies")
        status = 3
    if applied != n or len(latencies) < n:
        print(f"  WARNING: expected {n} changes applied and measured")
        status = 3
    sys.exit(status)


def partition_files(index_path):
    """value -> (index entry, MBTiles path) of a partition index beside NAME.mbtiles files."""
    base = index_path[:-len(".partitions.json")]
    index = json.load(open(index_path, encoding="utf-8"))
    return {p["value"]: (p, f"{base}.{p['path']}.mbtiles") for p in index["partitions"]}


def cmd_same_partitions(args):
    """Exit 3 unless two partition indexes list the same values with the same entries, and each
    value's two MBTiles hold the same tiles with the same bytes (same-tiles per partition)."""
    a, b = partition_files(args[0]), partition_files(args[1])
    problems = []
    for value in sorted(a.keys() - b.keys()):
        problems.append(f"{value!r} only in the watched index")
    for value in sorted(b.keys() - a.keys()):
        problems.append(f"{value!r} only in the fresh index")
    tiles = 0
    for value in sorted(a.keys() & b.keys()):
        (entry_a, path_a), (entry_b, path_b) = a[value], b[value]
        if entry_a != entry_b:
            problems.append(f"{value!r}: index entries differ ({entry_a} against {entry_b})")
        ta = {(z, x, y): mvt for z, x, y, mvt in mbtiles_tiles(path_a)}
        tb = {(z, x, y): mvt for z, x, y, mvt in mbtiles_tiles(path_b)}
        if ta != tb:
            different = sum(1 for k in ta.keys() & tb.keys() if ta[k] != tb[k])
            problems.append(f"{value!r}: {len(ta)} against {len(tb)} tiles, {different} with other bytes")
        tiles += len(ta)
    if problems:
        print(f"  WARNING: the watched partitions differ from a fresh partitioned seed of the changed data"
              f" in {len(problems)} way(s):")
        for line in problems[:10]:
            print(f"    {line}")
        sys.exit(3)
    print(f"  the watched partitions equal a fresh partitioned seed of the changed data"
          f" ({len(a)} partitions, {tiles} tiles, index entries equal)")


# --- partitions ---------------------------------------------------------------------------------

def seed_totals(path):
    """Tiles written and summed tool seconds over every tileset of a seed's summary (a partitioned
    tileset's summary holds one entry per partition), and the entries."""
    entries = json.load(open(path))
    return sum(e["tiles_written"] for e in entries), sum(e["seconds"] for e in entries), entries


def cmd_partitions_report(args):
    """The partitions section's report, from the files bench.sh leaves in DIR: per variant the
    rounds' median wall time, tiles written, wall time per tile and peak RSS."""
    d, rows, zooms, column, part_rounds = args[0], int(args[1]), args[2], args[3], int(args[4])
    runs = {}
    for variant, rounds in (("whole", 3), ("partitioned", part_rounds)):
        measured = [time_v(f"{d}/part-{variant}-{r}.time") for r in range(1, rounds + 1)]
        tiles, _, entries = seed_totals(f"{d}/part-{variant}-{rounds}.json")
        counts = {seed_totals(f"{d}/part-{variant}-{r}.json")[0] for r in range(1, rounds + 1)}
        if len(counts) != 1:
            fail(f"partitions: the {variant} rounds wrote different numbers of tiles: {sorted(counts)}")
        wall = statistics.median(w for w, _, _ in measured)
        runs[variant] = dict(rounds=rounds, wall=wall, cpu=statistics.median(c for _, c, _ in measured),
                             rss=max(r for _, _, r in measured), tiles=tiles, entries=entries)
    index = json.load(open(f"{d}/part-index.json"))["partitions"]
    whole, part = runs["whole"], runs["partitioned"]
    print(f"partitions: {rows} facilities (bench_{rows}_contributors), zoom {zooms}, clustered;"
          f" {len(index)} partitions by {column}")
    print(f"  {'':12} {'rounds':>6} {'tiles written':>14} {'wall s':>9} {'µs/tile':>9} {'tool CPU s':>11}"
          f" {'peak RSS':>10}")
    for name, r in (("whole", whole), ("partitioned", part)):
        print(f"  {name:12} {r['rounds']:>6} {r['tiles']:>14} {r['wall']:9.2f}"
              f" {r['wall'] / max(r['tiles'], 1) * 1e6:9.1f} {r['cpu']:11.2f} {r['rss']:7.1f} MB")
    print("  (wall and CPU: the median of the rounds; peak RSS: the largest)")
    ratio = (part["wall"] / max(part["tiles"], 1)) / (whole["wall"] / max(whole["tiles"], 1))
    status = 0
    print(f"  wall time per tile written, partitioned / whole: {ratio:.2f}"
          f" (target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})")
    print(f"  peak RSS of the partitioned seed: {part['rss']:.1f} MB"
          f" (target <= 256 MB: {'met' if part['rss'] <= 256 else 'NOT met'})")
    features = sorted(p["features"] for p in index)
    tiles = sorted(p["tiles"] for p in index)
    members = sum(features)
    print(f"  partitions: rows per partition min {features[0]}, median {statistics.median(features):.0f},"
          f" max {features[-1]} ({members} memberships of {rows} rows, {members / rows:.2f} a row);"
          f" tiles per partition min {tiles[0]}, median {statistics.median(tiles):.0f}, max {tiles[-1]}")
    if sum(tiles) != part["tiles"]:
        print(f"  WARNING: the index counts {sum(tiles)} tiles, the summary {part['tiles']} written")
        status = 3
    # What a partition costs beyond its tiles at the whole tileset's rate: its fixed cost.
    seconds = sorted(e["seconds"] for e in part["entries"])
    excess = (part["wall"] - part["tiles"] * whole["wall"] / whole["tiles"]) / max(len(index), 1)
    print(f"  per partition (the tool's timer): median {statistics.median(seconds) * 1000:.0f} ms,"
          f" max {seconds[-1] * 1000:.0f} ms, sum {sum(seconds):.1f} s of {part['wall']:.1f} s wall;"
          f" beyond the whole tileset's time per tile: {excess * 1000:.0f} ms a partition")
    print(f"  load average before / after the measured seeds: {os.environ.get('BENCH_LOAD', '?')};"
          f" the section took {os.environ.get('BENCH_SECONDS', '?')} s")
    sys.exit(status)


# --- shards -------------------------------------------------------------------------------------

PLAN_HEAD = re.compile(r"^tileset (\S+): (\d+) shards, split zoom (\d+), heaviest shard ([\d.]+) x mean$")
PLAN_SHARD = re.compile(r"^shard (\d+): weight (\d+) ")


def shard_plan(path):
    """(split zoom, weights) from `shard-plan` output of one tileset."""
    split, weights = None, []
    for line in open(path):
        if m := PLAN_HEAD.match(line.strip()):
            if split is not None:
                fail(f"{path}: expected one tileset")
            split = int(m.group(3))
        elif m := PLAN_SHARD.match(line.strip()):
            weights.append(int(m.group(2)))
    if split is None or not weights:
        fail(f"{path}: no shard plan printed")
    return split, weights


def tile_digests(path):
    """Every tile of an MBTiles file as (z, x, y) -> a digest of its stored bytes."""
    import hashlib
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {(z, x, y): hashlib.blake2b(d, digest_size=16).digest() for z, x, y, d in db.execute(
            "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")}


def census(path, deepest=14, cluster_maxzoom=11, cell_depth=3):
    """Per zoom from the section's census (rows per non-empty tile of zoom `deepest`): non-empty
    tiles, rows, and where clustered the non-empty cells (tiles `cell_depth` zooms deeper) and the
    rows its tiles read: their own and those of the neighbours' cells in their one-cell margin (as
    src/plan/shard/cost.rs estimates them)."""
    cells = {}
    for line in open(path):
        if line.strip():
            x, y, n = (int(v) for v in line.split())
            cells[(x, y)] = cells.get((x, y), 0) + n
    levels = {deepest: cells}
    for z in range(deepest - 1, -1, -1):
        up = {}
        for (x, y), n in levels[z + 1].items():
            up[(x >> 1, y >> 1)] = up.get((x >> 1, y >> 1), 0) + n
        levels[z] = up
    out = {}
    for z in range(deepest + 1):
        rows = sum(levels[z].values())
        tiles_ = len(levels[z])
        if z <= cluster_maxzoom and z + cell_depth <= deepest:
            side, span = 1 << (z + cell_depth), 1 << cell_depth
            n_cells = len(levels[z + cell_depth])
            read = 0
            for (cx, cy), n in levels[z + cell_depth].items():
                tx = {cx >> cell_depth} | {(cx + d) >> cell_depth for d in (-1, 1) if 0 <= cx + d < side}
                ty = {cy >> cell_depth} | {(cy + d) >> cell_depth for d in (-1, 1) if 0 <= cy + d < side}
                read += n * sum(1 for a in tx for b in ty if (a, b) in levels[z])
            out[z] = (tiles_, rows, n_cells, read)
        else:
            out[z] = (tiles_, rows, rows, rows)
    return out


def solve(a, b):
    """x of the square system a x = b (Gaussian elimination with partial pivoting)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        if abs(m[c][c]) < 1e-12:
            return None
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    return [m[i][n] / m[i][i] for i in range(n)]


def nnls(xs, ys, names):
    """Least squares with coefficients >= 0: solve, drop the most negative, again."""
    active = list(range(len(names)))
    while active:
        a = [[sum(x[i] * x[j] for x in xs) for j in active] for i in active]
        b = [sum(x[i] * y for x, y in zip(xs, ys)) for i in active]
        sol = solve(a, b)
        if sol is None:
            active.pop()
            continue
        worst = min(range(len(sol)), key=lambda k: sol[k])
        if sol[worst] >= 0:
            coef = [0.0] * len(names)
            for k, i in enumerate(active):
                coef[i] = sol[k]
            return coef
        active.pop(worst)
    return [0.0] * len(names)


FIT_NAMES = ("TILE_MICROS", "CLUSTER_TILE_MICROS", "ROW_MICROS", "CLUSTER_ROW_MICROS",
             "CELL_MICROS", "BYTE_MICROS")


def fit_rows(d, variants):
    """Per variant and zoom of the full seeds: (tiles rendered, clustered tiles, rows drawn, rows
    a clustered tile aggregates, cells, stored bytes) and the measured render time in
    microseconds. Clustered tiles aggregate the rows under them (no change capture in the bench
    schema, so no maintained cell tables)."""
    cen = census(f"{d}/shards-census.txt")
    xs, ys, labels = [], [], []
    for v in variants:
        for z in summary(f"{d}/shards-{v}-full.json")["per_zoom"]:
            zoom = z["zoom"]
            if zoom not in cen:
                continue
            _, rows, cells, read = cen[zoom]
            t = z["queried"]
            if v == "clustered" and zoom <= 11:
                xs.append((t, t, 0, read, cells, z["bytes"]))
            else:
                xs.append((t, 0, rows, 0, 0, z["bytes"]))
            ys.append(z["render_ms_total"] * 1000)
            labels.append(f"{v[:2]} z{zoom}")
    return xs, ys, labels


def cmd_shards_fit(args):
    """The cost model's coefficients (src/plan/shard/cost.rs), fitted on the full seeds' per-zoom
    render times: `shards-fit DIR VARIANTS` on the files the shards section leaves in DIR."""
    d, variants = args[0], args[1].split()
    xs, ys, labels = fit_rows(d, variants)
    coef = nnls(xs, ys, FIT_NAMES)
    print("  cost model fitted on the full seeds' per-zoom render times (least squares, >= 0):")
    print("    " + ", ".join(f"{n} = {c:.4g}" for n, c in zip(FIT_NAMES, coef)))
    # Bytes per tile at plan time come from the features: stored bytes = a tile's fixed part plus
    # a part per point feature or per cluster.
    bx = [(x[0], x[2], x[4]) for x in xs]
    by = [x[5] for x in xs]
    bcoef = nnls(bx, by, ("TILE_BYTES", "ROW_BYTES", "CELL_BYTES"))
    print("    " + ", ".join(f"{n} = {c:.4g}" for n, c in zip(("TILE_BYTES", "ROW_BYTES", "CELL_BYTES"), bcoef))
          + " (stored bytes, fitted the same way)")
    print(f"    {'zoom':<7} {'tiles':>8} {'rows':>8} {'cells':>8} {'MB':>8} {'render s':>9} {'fitted s':>9}")
    for label, x, y in zip(labels, xs, ys):
        fitted = sum(c * v for c, v in zip(coef, x))
        print(f"    {label:<7} {x[0]:>8} {x[2] + x[3]:>8} {x[4]:>8} {x[5] / 1e6:8.2f} {y / 1e6:9.2f} {fitted / 1e6:9.2f}")


def render_seconds(s, below=None):
    return sum(z["render_ms_total"] for z in s["per_zoom"]
               if below is None or z["zoom"] < below) / 1000


def shards_real(d, v, real, label, full, full_wall, dearest, rows, results):
    """One planner's real shards of one variant and count: the table, the balance and the check
    against the full seed; notes (wall ratio, seeding ratio, tiles/s, PG CPU/tile) in `results`."""
    status = 0
    base = f"{d}/shards-{v}-{real}-{label}"
    plan_wall, _, _ = time_v(f"{d}/shards-{v}-real-{real}-{label}.time")
    split, planned = shard_plan(f"{d}/shards-{v}-real-{real}-{label}.txt")
    print(f"  {v}, {real} real shards one after another, {label} planner (plan {plan_wall:.2f} s, split "
          f"zoom {split}); start = wall - seeding (process start, plan read, finish); "
          f"render above = render s of zooms < {split}:")
    print(f"    {'shard':>5} {'wall s':>7} {'seed s':>7} {'start':>6} {'tool CPU':>8} {'PG CPU':>7} "
          f"{'tiles':>8} {'tiles/s':>8} {'MB':>7} {'render':>7} {'above':>6} {'planned':>8} {'real':>6}")
    walls, seeds, rends, cpus, pgs, shard_tiles = [], [], [], [], [], 0
    parts = []
    for k in range(real):
        wall, cpu, _ = time_v(f"{base}-part-{k}.time")
        s = summary(f"{base}-part-{k}.json")
        pg = float(open(f"{base}-part-{k}.pgcpu").read())
        parts.append((k, wall, cpu, pg, s))
        cpus.append(cpu + pg)
        pgs.append(pg)
        walls.append(wall)
        seeds.append(s["seconds"])
        rends.append(render_seconds(s))
        shard_tiles += s["tiles_written"]
    for k, wall, cpu, pg, s in parts:
        rate = s["tiles_written"] / s["seconds"] if s["seconds"] else 0
        print(f"    {k:>5} {wall:7.2f} {s['seconds']:7.2f} {wall - s['seconds']:6.2f} {cpu:8.2f} {pg:7.2f} "
              f"{s['tiles_written']:>8} {rate:8.0f} {s['bytes_written'] / 1e6:7.1f} {render_seconds(s):7.2f} "
              f"{render_seconds(s, split):6.2f} {planned[k] / max(sum(planned), 1):8.1%} "
              f"{wall / sum(walls):6.1%}")
    merge_wall, _, _ = time_v(f"{base}-merge.time")
    ratio = lambda xs: max(xs) * len(xs) / sum(xs) if sum(xs) else float("nan")
    floor = lambda xs: max(xs) / max(sum(xs) / len(xs), dearest)
    results[(v, real, label)] = (floor(walls), floor(seeds), shard_tiles / sum(seeds),
                                 sum(pgs) / max(shard_tiles, 1), shard_tiles)
    print(f"    slowest / max(mean, dearest tile {dearest:.2f} s): wall {floor(walls):.3f}, seeding "
          f"{floor(seeds):.3f} (target <= 1.10); max/mean: wall {ratio(walls):.3f} (planned "
          f"{ratio(planned):.3f}), seeding {ratio(seeds):.3f}, render {ratio(rends):.3f}, tool + PG CPU "
          f"{ratio(cpus):.3f} (PG CPU: the backends the postmaster reaped during the shard, other "
          f"clients' included); merge {merge_wall:.2f} s")
    print(f"    shards' total / full seed {sum(walls) / full_wall:.3f}; full seed / heaviest shard "
          f"{full_wall / max(walls):.2f} (the speed-up {real} machines would give, merge left out); "
          f"{shard_tiles / sum(seeds):.0f} tiles/s per shard, PG CPU {1e3 * sum(pgs) / max(shard_tiles, 1):.3f} "
          "ms/tile")
    a, b = tile_digests(f"{d}/shards-{v}-full.mbtiles"), tile_digests(f"{base}.mbtiles")
    if a != b or shard_tiles != full["tiles_written"]:
        print(f"    WARNING: the merged shards differ from the full seed ({len(b)} against {len(a)} "
              f"tiles, {sum(1 for t in a.keys() & b.keys() if a[t] != b[t])} with other bytes; "
              f"{shard_tiles} tiles written by the shards against {full['tiles_written']})")
        status = 3
    else:
        print(f"    the merged shards equal the full seed tile for tile ({len(a)} tiles)")
    return status


def capacity_figure(results, rows, variants, points=100_000_000, seconds=600, cores=32):
    """Shards a `points`-row registry needs for z0-14 within `seconds` on one PostgreSQL of `cores`
    cores, from the new planner's most sharded run of each variant: tiles and PG CPU scaled
    linearly in rows from this sample (a rough figure: dense places add fewer tiles than rows)."""
    for v in variants:
        runs = sorted(k for k in results if k[0] == v and k[2] == "new")
        if not runs:
            continue
        _, real, _ = runs[-1]
        _, _, rate, pg_per_tile, tiles_ = results[runs[-1]]
        scale = points / rows
        tiles_big = tiles_ * scale
        pg_big = pg_per_tile * tiles_big
        shards = tiles_big / (rate * seconds) if rate else float("inf")
        print(f"  {v}: {points / 1e6:.0f}M points, z0-14 in {seconds / 60:.0f} min: about {tiles_big / 1e6:.1f}M "
              f"tiles, {shards:.0f} shards at {rate:.0f} tiles/s each ({real}-shard run), PG CPU "
              f"{pg_big / 3600:.1f} core-hours = {pg_big / seconds:.0f} cores busy for {seconds / 60:.0f} min "
              f"against {cores}: {'fits' if pg_big / seconds <= cores else 'does not fit'} one "
              f"{cores}-core PostgreSQL (linear in rows from {rows}; a rough figure)")


def cmd_shards_report(args):
    d, rows, zooms, variants, reals = args[0], int(args[1]), args[2], args[3].split(), args[4].split()
    planners = args[5].split()
    counts = [int(c) for c in args[6:]]
    results = {}
    print(f"shards: {rows} facilities, sample config clustered as shipped and unclustered, z{zooms}; "
          "load averages (1, 5, 15 min):")
    for line in open(f"{d}/shards-loads.txt"):
        print(f"    {line.rstrip()}")
    status = 0
    for v in variants:
        print(f"  {v}: shard plans (dry run); weights are estimated render times (s); speed-up with N "
              "replicas = total / heaviest shard")
        print(f"  {'N':>3} {'plan s':>7} {'split z':>7} {'min':>9} {'mean':>9} {'max':>9} {'max/mean':>9} "
              f"{'speed-up':>9} {'/N':>6}")
        for n in counts:
            plan_wall, _, _ = time_v(f"{d}/shards-{v}-plan-{n}.time")
            split, weights = shard_plan(f"{d}/shards-{v}-plan-{n}.txt")
            if len(weights) != n:
                fail(f"shard-plan --shards {n} printed {len(weights)} shards")
            total, heaviest = sum(weights), max(weights)
            mean = total / n
            speedup = total / heaviest if heaviest else float("nan")
            print(f"  {n:>3} {plan_wall:7.2f} {split:>7} {min(weights) / 1e6:9.2f} {mean / 1e6:9.2f} "
                  f"{heaviest / 1e6:9.2f} {heaviest / mean:9.3f} {speedup:9.2f} {speedup / n:6.1%}")
        full_wall, full_cpu, full_rss = time_v(f"{d}/shards-{v}-full.time")
        full = summary(f"{d}/shards-{v}-full.json")
        full_pg = float(open(f"{d}/shards-{v}-full.pgcpu").read())
        print(f"  {v}: full seed (the baseline) {full_wall:.2f} s wall, {full['seconds']:.2f} s seeding, "
              f"tool CPU {full_cpu:.2f} s, PG CPU {full_pg:.2f} s, {full['tiles_written']} tiles, "
              f"render {render_seconds(full):.1f} s")
        # The dearest tile's real time: the longest render one tile (or the statement it rode in)
        # took in the full seed.
        dearest = max(z["render_ms_max"] for z in full["per_zoom"]) / 1000
        print(f"  {v}: dearest tile {dearest:.2f} s (the full seed's largest render_ms_max)")
        for real in (int(r) for r in reals):
            for label in planners:
                status = max(status, shards_real(d, v, real, label, full, full_wall, dearest, rows, results))
    for v in variants:
        for real in (int(r) for r in reals):
            cells = [f"{label} {results[(v, real, label)][0]:.3f} wall / {results[(v, real, label)][1]:.3f} seeding"
                     for label in planners if (v, real, label) in results]
            print(f"  slowest unit / max(mean, dearest tile), {v}, {real} shards: {'; '.join(cells)} "
                  "(target <= 1.10)")
    capacity_figure(results, rows, variants)
    cmd_shards_fit([d, " ".join(variants)])
    sys.exit(status)


# --- the server's CPU beside the tool's -----------------------------------------------------------

def cmd_reaped_cpu(args):
    """The CPU of the postmaster's exited children (cutime + cstime of PID, the postmaster): the
    difference over a run is what the backends that ended within it used, counted by the kernel
    to the last tick, with no poller beside them competing for the cores."""
    fields = open(f"/proc/{int(args[0])}/stat").read().rsplit(")", 1)[1].split()
    print(f"{(int(fields[13]) + int(fields[14])) / os.sysconf('SC_CLK_TCK'):.2f}")


def cmd_parent_pid(args):
    """The parent of process PID."""
    print(open(f"/proc/{int(args[0])}/stat").read().rsplit(")", 1)[1].split()[1])


# --- edge-cloudfront: CloudFront's propagation and quotas on moto's server ---------------------

def cmd_cf_changes(args):
    """An SQL script of N single-row changes to SCHEMA.facilities (ids LO..HI), each its own
    transaction, at RATE per second on a fixed schedule: 60% moves by up to 0.01 degrees, 40%
    renames. No inserts or deletes, so runs with other seeds can follow on the same table."""
    schema, n, rate, seed, lo, hi = args[0], int(args[1]), float(args[2]), args[3], int(args[4]), int(args[5])
    rng = random.Random(seed)
    t = f'"{schema}".facilities'
    out = ["\\set ON_ERROR_STOP on",
           f"COMMENT ON TABLE {t} IS 'modified by the edge-cloudfront benchmark';",
           "CREATE TEMP TABLE watch_start AS SELECT clock_timestamp() AS t0;"]
    for i in range(n):
        fid = rng.randint(lo, hi)
        out.append(f"SELECT pg_sleep_until((SELECT t0 FROM watch_start) + interval '1 second' * {i / rate:.3f}) \\g /dev/null")
        if rng.random() < 0.6:
            dx, dy = rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01)
            out.append(f"UPDATE {t} SET location = ST_Translate(location, {dx:.6f}, {dy:.6f}) WHERE id = {fid};")
        else:
            out.append(f"UPDATE {t} SET name = name || ' (renamed)' WHERE id = {fid};")
    print("\n".join(out))


def prom_value(text, name):
    """The first sample of series NAME (with its labels), or None."""
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return None


def cmd_cf_settle(args):
    """Waits (at most SECONDS) until the watcher at BASE has no CloudFront purge in flight and its
    outbox is empty; saves /metrics to OUT either way."""
    base, seconds, out = args[0], float(args[1]), args[2]
    deadline = time.monotonic() + seconds
    text = ""
    while time.monotonic() < deadline:
        status, text = http_get(base + "/metrics")
        if status == 200 and prom_sum(text, "oar_tiles_purge_in_flight") == 0 \
                and prom_sum(text, "oar_tiles_outbox_entries") == 0:
            break
        time.sleep(0.5)
    open(out, "w", encoding="utf-8").write(text)


def cf_watch_log(log):
    """From a watcher's JSON log: each cycle with changes (its seconds), the commit-to-completed
    times, and the max_delay warnings."""
    cycles, completed, warnings = [], [], 0
    for line in open(log, encoding="utf-8"):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        fields = event.get("fields", {})
        message = str(fields.get("message", ""))
        if "purge_completed" in fields:
            completed.extend(json.loads(fields["purge_completed"]))
        if message.startswith("cycle:") and not message.startswith("cycle: 0 change"):
            try:
                cycles.append(float(message.split(" in ", 1)[1].split(" s", 1)[0]))
            except (IndexError, ValueError):
                pass
        if "over max_delay" in message:
            warnings += 1
    return sorted(cycles), sorted(completed), warnings


def cmd_cf_watch_report(args):
    """One `watch` run of the edge-cloudfront section: changes missed, cycle time, commit →
    invalidation completed, spend and the projected daily price."""
    label, log, metrics, n, seconds = args[0], args[1], args[2], int(args[3]), float(args[4])
    text = open(metrics, encoding="utf-8").read()
    cycles, completed, warnings = cf_watch_log(log)
    applied = prom_sum(text, "oar_tiles_changes_applied_total")
    spend = prom_sum(text, "oar_tiles_purge_spend_usd_total")
    paths = prom_sum(text, "oar_tiles_purge_paths_total")
    requests = prom_sum(text, "oar_tiles_purge_requests_total")
    p = lambda values, q: nearest_rank(values, q) if values else float("nan")
    print(f"  watch `{label}`: {n} changes at {n / seconds:g}/s for {seconds:g} s: applied {applied:.0f},"
          f" missed {n - applied:.0f}; cycles with changes {len(cycles)}: p50 {p(cycles, 0.5):.2f} s,"
          f" max {cycles[-1] if cycles else float('nan'):.2f} s; max_delay warnings {warnings}")
    if requests or label != "no-cdn":
        waiting = prom_sum(text, "oar_tiles_outbox_entries")
        in_flight = prom_sum(text, "oar_tiles_purge_in_flight")
        print(f"    purges: {requests:.0f} invalidation(s), {paths:.0f} path(s), {paths / max(applied, 1):.2f} per change,"
              f" ${spend:.3f}: about ${spend / seconds * 86400:,.0f} a day at this rate;"
              f" no room {prom_sum(text, 'oar_tiles_purge_no_room_total'):.0f} time(s),"
              f" over budget {prom_sum(text, 'oar_tiles_purge_over_budget_total'):.0f} time(s);"
              f" left: {waiting:.0f} outbox entries, {in_flight:.0f} purge(s) in flight")
        print(f"    commit -> invalidation completed ({len(completed)} changes): p50 {p(completed, 0.5):.1f} s,"
              f" p95 {p(completed, 0.95):.1f} s, max {completed[-1] if completed else float('nan'):.1f} s")
        interval = prom_value(text, "oar_tiles_budget_path_interval_seconds")
        if interval is not None:
            # A new ledger starts with an hour's allowance, which a short run spends first: the
            # rate above overstates the day, which the ledger caps at the budget.
            print(f"    budget: ${prom_sum(text, 'oar_tiles_budget_spent_today_usd'):.3f} spent today"
                  f" (from a fresh ledger's first hour's allowance; the day is capped at the budget);"
                  f" it buys one path every {interval:.0f} s")


def cmd_cf_purge_line(args):
    """A purge's line from a summary: invalidations, paths, price, and whether it waited."""
    label, path = args[0], args[1]
    summary = json.load(open(path, encoding="utf-8"))[0]
    for purge in summary["purges"]:
        print(f"  {label}: {summary.get('changes_read')} change(s) read, {purge['requests']} invalidation(s),"
              f" {purge['paths']} path(s), ${purge.get('price_usd') or 0:.3f}"
              f" (evicting ~{purge.get('evicted', 0)} unchanged tiles){'; NO ROOM: waits in the outbox' if purge.get('no_room') else ''}")


def cmd_cf_seed_report(args):
    """A full seed behind CloudFront: its purge, how long seed took, and whether its
    invalidations were still in progress when it returned (run with the moto venv's python)."""
    import boto3
    path, seconds, url, dist = args[0], float(args[1]), args[2], args[3]
    summary = json.load(open(path, encoding="utf-8"))[0]
    cf = boto3.client("cloudfront", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id="bench", aws_secret_access_key="bench")
    items = (cf.list_invalidations(DistributionId=dist)["InvalidationList"].get("Items") or [])
    running = sum(1 for i in items if i["Status"] == "InProgress")
    for purge in summary["purges"]:
        print(f"  full seed behind CloudFront: {seconds:.1f} s, {purge['requests']} invalidation(s),"
              f" {purge['paths']} path(s), ${purge.get('price_usd') or 0:.3f};"
              f" {running} of {len(items)} invalidation(s) still in progress when seed returned"
              f" ({'seed did not wait for propagation' if running else 'seed waited'})")


COMMANDS = {
    "cf-changes": cmd_cf_changes,
    "cf-settle": cmd_cf_settle,
    "cf-watch-report": cmd_cf_watch_report,
    "cf-purge-line": cmd_cf_purge_line,
    "cf-seed-report": cmd_cf_seed_report,
    "reaped-cpu": cmd_reaped_cpu,
    "parent-pid": cmd_parent_pid,
    "watch-changes": cmd_watch_changes,
    "watch-wait": cmd_watch_wait,
    "watch-report": cmd_watch_report,
    "same-tiles": cmd_same_tiles,
    "watch-partition-changes": cmd_watch_partition_changes,
    "watch-partitions-report": cmd_watch_partitions_report,
    "same-partitions": cmd_same_partitions,
    "edge-warm": cmd_edge_warm,
    "edge-wait": cmd_edge_wait,
    "edge-zooms": cmd_edge_zooms,
    "edge-report": cmd_edge_report,
    "edge-moves": cmd_edge_moves,
    "edge-plan": cmd_edge_plan,
    "config": cmd_config,
    "compare": cmd_compare,
    "reseed-report": cmd_reseed_report,
    "reseed-floor": cmd_reseed_floor,
    "tile-list": cmd_tile_list,
    "cluster-report": cmd_cluster_report,
    "shards-report": cmd_shards_report,
    "shards-fit": cmd_shards_fit,
    "partitions-report": cmd_partitions_report,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        fail(f"bench_helpers.py: expected one of {', '.join(COMMANDS)}")
    COMMANDS[sys.argv[1]](sys.argv[2:])
