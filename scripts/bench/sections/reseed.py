"""Section reseed: `seed --dirty` after a burst of changes, against a full seed, the no-op
reseed, the zoom bands, a floor (what any reseed of those tiles must spend) and a check against a
full seed of the changed data."""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

from bench import measure, samples

RESEED_ZOOM = "0-14"
RESEED_SEED = "0.42"
RESEED_BANDS = ("0-5", "6-14")


def section_reseed(b) -> None:
    """The reseed section (see the help text)."""
    n = b.opts.reseed_rows
    schema = f"bench_{n}"
    samples.ensure_sample(b, n)
    config = b.work / "reseed.toml"
    cfg = samples.make_config(b, n, "clustered", config)
    # Leftovers of an earlier run that could not clean up.
    b.tool("-q", "changes", "uninstall", "--config", str(config), stdout=sys.stderr)
    unregister = b.on_cleanup(lambda: restore_reseed_sample(b, n, config))
    load_before = b.load_average()
    b.log(f"reseed: installing change capture in schema {b.CHANGES_SCHEMA}")
    b.tool("-q", "changes", "install", "--config", str(config), stdout=sys.stderr)
    applied, logged = measured_reseeds(b, n, schema, config)
    floor = reseed_floor(b, schema, config, cfg)
    # The check aggregates clusters from rows: its config names a change schema that does not
    # exist, so it shares nothing with the reseed's maintained cluster cells.
    b.log("reseed: full seed of the changed data from rows, to check the reseed against")
    rows_config = b.work / "reseed-rows.toml"
    rows_config.write_text("".join(
        line.replace(f'"{b.CHANGES_SCHEMA}"', f'"{b.CHANGES_SCHEMA}_absent"', 1)
        for line in config.read_text().splitlines(keepends=True)))
    b.timed_seed("reseed-fresh", "--config", str(rows_config), "--zoom", RESEED_ZOOM,
                 "--output", str(b.work / "reseed-fresh.mbtiles"))
    load = f"{load_before} / {b.load_average()}"
    b.log("reseed: uninstalling change capture and reloading the sample")
    b.tool("-q", "changes", "uninstall", "--config", str(config), stdout=sys.stderr)
    samples.load_sample(b, n, schema)
    unregister()
    info = {
        "rows": str(n), "zoom": RESEED_ZOOM,
        "cluster": f"clustered (cluster_maxzoom {b.CLUSTER_MAXZOOM}, cluster_cell {b.CLUSTER_CELL},"
                   f" {b.opts.cluster_position})",
        "concurrency": str(b.opts.concurrency or f"{cfg.pool_size} (tool default)"),
        "applied": applied, "logged": logged, "seed": RESEED_SEED,
        "bands": " ".join(RESEED_BANDS), "load": load,
    }
    measure.report(b, lambda: reseed_report(b.work, info, floor))


def restore_reseed_sample(b, n: int, config: Path) -> None:
    """After an unfinished reseed section: change capture uninstalled (or its triggers and schema
    dropped) and the sample reloaded; if this fails too, the table's comment makes the next run
    reload it."""
    b.log(f"restoring bench_{n} after an unfinished reseed section")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if b.tool("-q", "changes", "uninstall", "--config", str(config), check=False, **quiet).returncode:
        b.psql(f"""DROP TRIGGER IF EXISTS oar_tiles_capture ON bench_{n}.facilities;
                   DROP TRIGGER IF EXISTS oar_tiles_capture_truncate ON bench_{n}.facilities;
                   DROP TRIGGER IF EXISTS oar_tiles_notify ON bench_{n}.facilities;
                   DROP SCHEMA IF EXISTS {b.CHANGES_SCHEMA} CASCADE""", check=False, **quiet)
    subprocess.run([str(b.scripts("load-sample.sh")), "--rows", str(n), "--schema", f"bench_{n}",
                    "--table", "facilities"], check=False)


def measured_reseeds(b, n: int, schema: str, config: Path) -> tuple[str, str]:
    """The full seed, the band copies, five no-op reseeds, the changes, the measured reseed and
    the bands' reseeds; returns the changes applied (the script's line) and the change log rows."""
    out = b.work / "reseed.mbtiles"
    b.log(f"reseed: full seed, zoom {RESEED_ZOOM} (clustered)")
    b.timed_seed("reseed-full", "--config", str(config), "--zoom", RESEED_ZOOM, "--output", str(out))
    # Copies of the output, each reseeded over one zoom band after the measured reseed, show where
    # its time goes. A reseed with nothing to do registers each copy as a consumer of the change
    # log now, so that the measured reseed cannot prune the changes the copies still need.
    for band in RESEED_BANDS:
        copy = b.work / f"reseed-z{band}.mbtiles"
        copy.write_bytes(out.read_bytes())
        b.tool("-q", "seed", *b.concurrency_args(), "--config", str(config), "--zoom", band,
               "--dirty", "--output", str(copy), stdout=subprocess.DEVNULL)
    # A reseed with nothing to do, five times (the first registered the copies above).
    for round_ in range(1, 6):
        b.log(f"reseed: seed --dirty with no changes, round {round_} of 5")
        b.timed_seed(f"reseed-noop-{round_}", "--config", str(config), "--zoom", RESEED_ZOOM,
                     "--dirty", "--output", str(out))
    b.log(f"reseed: applying {b.opts.reseed_changes} changes in one transaction")
    applied = b.psql(file=b.scripts("bench_reseed_changes.sql"), tuples=True, variables={
        "schema": schema, "n": str(b.opts.reseed_changes), "seed": RESEED_SEED}).strip()
    logged = b.value(f"SELECT count(*) FROM {b.CHANGES_SCHEMA}.change_log")
    b.log("reseed: seed --dirty")
    b.timed_seed("reseed-dirty", "--config", str(config), "--zoom", RESEED_ZOOM, "--dirty",
                 "--output", str(out), "--changed-list", str(b.work / "reseed-changed.txt"))
    for band in RESEED_BANDS:
        b.log(f"reseed: seed --dirty of a copy, zoom {band} only")
        b.timed_seed(f"reseed-z{band}", "--config", str(config), "--zoom", band, "--dirty",
                     "--output", str(b.work / f"reseed-z{band}.mbtiles"))
    return applied, logged


# --- the floor -----------------------------------------------------------------------------------

def compression_level(config: Path) -> str | None:
    """The first `compression_level = N` of a config, as bench.sh's sed read it."""
    for line in config.read_text().splitlines():
        m = re.match(r"compression_level *= *([0-9]*)", line)
        if m:
            return m.group(1)
    return None


def floor_tiles(mbtiles: Path, changed_list: Path, maxzoom: int, extent: int, buffer: int,
                sessions: int, level: int, out: Path) -> dict[str, str]:
    """For the reseed's floor: writes OUT with the changed tiles the reseed stored above MAXZOOM
    (their tile list), and returns those tiles and their MVT bytes, all changed tiles it stored
    and theirs, and the CPU seconds zlib takes to compress the latter at LEVEL here, in one
    thread."""
    listed = {tuple(map(int, line.strip().split("/")))
              for line in Path(changed_list).read_text().splitlines() if line.strip()}
    changed = [(z, x, y, mvt) for z, x, y, mvt in measure.mbtiles_tiles(mbtiles) if (z, x, y) in listed]
    unclustered = [(z, x, y, len(mvt)) for z, x, y, mvt in changed if z > maxzoom]
    samples.write_tile_list(unclustered, out, buffer, extent, sessions)
    started = time.process_time()
    for *_, mvt in changed:
        compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
        compressor.compress(mvt)
        compressor.flush()
    zlib_seconds = time.process_time() - started
    return {"tiles": str(len(unclustered)), "mvt_bytes": str(sum(t[3] for t in unclustered)),
            "all_tiles": str(len(changed)), "all_mvt_bytes": str(sum(len(t[3]) for t in changed)),
            "zlib_seconds": f"{zlib_seconds:.4f}"}


def reseed_floor(b, schema: str, config: Path, cfg: samples.SampleConfig) -> dict[str, str]:
    """What re-rendering the tiles the reseed changed costs with nothing around it. The
    unclustered ones (above CLUSTER_MAXZOOM) are rendered by the baseline's tile_list_sql
    statement, split over as many sessions as the reseed had connections (at most the cores),
    best of two runs; and zlib's CPU time for compressing every changed tile is measured. Both
    are lower bounds: a reseed also starts up, reads changes, renders clustered tiles and
    writes."""
    level = compression_level(config) or "3"
    sessions = min(b.opts.concurrency or cfg.pool_size, b.cores)
    floor = floor_tiles(b.work / "reseed.mbtiles", b.work / "reseed-changed.txt",
                        b.CLUSTER_MAXZOOM, cfg.extent, cfg.buffer, sessions, int(level),
                        b.work / "floor.csv")
    table = f"{schema}.bench_floor_{os.getpid()}"
    unregister = b.on_cleanup(lambda: b.psql(f"DROP TABLE IF EXISTS {table}", check=False,
                                             out=subprocess.DEVNULL))
    samples.load_tile_list(b, table, b.work / "floor.csv")
    best: float | None = None
    for run in (1, 2):
        b.log(f"reseed: floor, PostGIS alone on the changed unclustered tiles, run {run} of 2")
        slowest = floor_run(b, table, schema, cfg, sessions)
        best = slowest if best is None else min(slowest, best)
    b.psql(f"DROP TABLE {table}", out=None)
    unregister()
    return {**floor, "level": level, "sessions": str(sessions),
            "cluster_maxzoom": str(b.CLUSTER_MAXZOOM), "postgis_seconds": f"{best:.6f}"}


FLOOR_WARM_UP = """SET jit = off;
SELECT ST_AsMVT(q, 'warm-up') FROM (SELECT ST_AsMVTGeom(
    ST_Transform('SRID=4326;POINT(0 0)'::geometry, 3857), ST_TileEnvelope(0, 0, 0)) AS geom) q \\g /dev/null
"""


def floor_run(b, table: str, schema: str, cfg: samples.SampleConfig, sessions: int) -> float:
    """One run of the floor's sessions; returns the slowest session's server-side seconds. Each
    session first loads PostGIS and PROJ (a new session's fixed cost, which the reseed pays too
    but a floor should not), then times its share server-side."""
    procs = []
    for k in range(sessions):
        script = FLOOR_WARM_UP + samples.tile_list_sql(
            table, schema, f"b.session = {k}",
            "extract(epoch FROM clock_timestamp() - statement_timestamp()), count(*), sum(length(m.mvt))",
            cfg)
        out = open(b.work / f"floor.{k}", "w")
        proc = b.spawn([*b.psql_argv(), "-At"], stdin=subprocess.PIPE, stdout=out, cwd="/",
                       text=True)
        out.close()
        proc.stdin.write(script)
        proc.stdin.close()
        procs.append(proc)
    codes = [p.wait() for p in procs]
    if any(codes):
        raise subprocess.CalledProcessError(max(codes), "psql (reseed floor)")
    return max(float(line.split("|")[0]) for k in range(sessions)
               for line in (b.work / f"floor.{k}").read_text().splitlines() if line.strip())


# --- the report ----------------------------------------------------------------------------------

def reseed_report(d: Path, info: dict[str, str], floor: dict[str, str]) -> int:
    """Prints the reseed section's report from the runs in D; returns 3 when the reseeded output
    differs from the full seed of the changed data, else 0."""
    full, dirty, fresh = (measure.summary(d / f"reseed-{k}.json") for k in ("full", "dirty", "fresh"))
    full_wall, _, full_rss = measure.time_v(d / "reseed-full.time")
    dirty_wall, dirty_cpu, dirty_rss = measure.time_v(d / "reseed-dirty.time")
    fresh_wall, _, _ = measure.time_v(d / "reseed-fresh.time")
    applied = dict(kv.split("=") for kv in info["applied"].split())
    only_a, only_b, different, same = measure.compare(d / "reseed.mbtiles", d / "reseed-fresh.mbtiles")
    changed_list = sum(1 for line in (d / "reseed-changed.txt").read_text().splitlines() if line.strip())
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
    print_floor(floor, full_wall, dirty_wall)
    noop = sorted(measure.time_v(d / f"reseed-noop-{r}.time")[:2] for r in range(1, 6))
    print(f"  seed --dirty with no changes: median {statistics.median(w for w, _ in noop) * 1000:.0f} ms"
          f" wall (min {noop[0][0] * 1000:.0f}, max {noop[-1][0] * 1000:.0f} ms of 5 runs), median"
          f" oar-tiles CPU {statistics.median(c for _, c in noop) * 1000:.0f} ms   (target <= 50 ms)")
    print(f"  full seed of the changed data, clusters from rows (check): {fresh['tiles_written']} tiles in {fresh_wall:.2f} s"
          f" wall; against the faster full seed the ratio is {dirty_wall / best_full:.2%}")
    bands = []
    for band in info["bands"].split():
        s = measure.summary(d / f"reseed-z{band}.json")
        wall, _, _ = measure.time_v(d / f"reseed-z{band}.time")
        bands.append(f"z{band}: {s['tiles_queried']} tiles in {wall:.2f} s")
    print(f"  by zoom band (copies of the full seed's output, each reseeded over one band alone):"
          f" {'; '.join(bands)}")
    identical = only_a == only_b == different == 0
    verdict = "IDENTICAL to" if identical else "DIFFERENT FROM"
    print(f"  reseeded output {verdict} the full seed of the changed data: {same} tiles equal,"
          f" {different} with other bytes, {only_a} only in the reseed, {only_b} only in the full seed")
    print(f"  load average at the start / end of the measurements: {info['load']}")
    print_reseed_per_zoom(dirty)
    return 0 if identical else 3


def print_floor(floor: dict[str, str], full_wall: float, dirty_wall: float) -> None:
    """The floor's lines of the reseed report."""
    floor_secs, zlib_secs = float(floor["postgis_seconds"]), float(floor["zlib_seconds"])
    sessions = int(floor["sessions"])
    print("  floor, what re-rendering the changed tiles costs with nothing else (no start-up, cells,"
          " planning, writes):")
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


def print_reseed_per_zoom(dirty: dict) -> None:
    """The measured reseed's per-zoom table and its slowest tiles."""
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
