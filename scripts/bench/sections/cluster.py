"""Section cluster: per --cluster-rows size, clustered against unclustered seeds of
--cluster-zoom: stored tile sizes per zoom (median, p99, max), render times and tiles over the
size budget."""
from __future__ import annotations

import statistics
import subprocess
from pathlib import Path

from bench import measure, samples

VARIANTS = ("clustered", "unclustered")


def section_cluster(b) -> None:
    """The cluster section (see the help text)."""
    sizes = b.opts.cluster_rows
    zooms = b.opts.cluster_zoom
    for n in sizes:
        samples.ensure_sample(b, n)
        samples.make_config(b, n, "unclustered", b.work / f"cluster-{n}-unclustered.toml")
        cfg = samples.make_config(b, n, "clustered", b.work / f"cluster-{n}-clustered.toml")
        # Reads every row once (clustered low zooms are cheap), so neither measured seed pays for
        # a cold cache.
        b.log(f"cluster: {n} facilities, warm-up seed z0-2 clustered (discarded)")
        b.tool("-q", "seed", *b.concurrency_args(), "--config",
               str(b.work / f"cluster-{n}-clustered.toml"), "--zoom", "0-2", "--output",
               str(b.work / "cluster-warmup.mbtiles"), stdout=subprocess.DEVNULL)
        load_before = b.load_average()
        for variant in VARIANTS:
            b.log(f"cluster: {n} facilities, {variant} seed, zoom {zooms}")
            b.timed_seed(f"cluster-{n}-{variant}", "--config",
                         str(b.work / f"cluster-{n}-{variant}.toml"), "--zoom", zooms,
                         "--output", str(b.work / f"cluster-{n}-{variant}.mbtiles"))
        if n != sizes[0]:
            print()
        load = f"{load_before} / {b.load_average()}"
        desc = (f"cluster_maxzoom {b.CLUSTER_MAXZOOM}, cluster_cell {b.CLUSTER_CELL}/{cfg.extent},"
                f" {b.opts.cluster_position}")
        measure.report(b, lambda: cluster_report(b.work, n, zooms, cfg.size_budget, desc, load))
        for variant in VARIANTS:
            (b.work / f"cluster-{n}-{variant}.mbtiles").unlink(missing_ok=True)
        (b.work / "cluster-warmup.mbtiles").unlink(missing_ok=True)


def zoom_cells(sizes: list[int], pz: dict | None) -> str:
    """One variant's columns of a zoom's row: tiles, median, p99 and max KiB, render ms."""
    if sizes:
        cells = (f"{len(sizes):>5} {measure.kib(statistics.median(sizes)):>7}"
                 f" {measure.kib(measure.nearest_rank(sizes, 0.99)):>7} {measure.kib(sizes[-1]):>7}")
    else:
        cells = f"{0:>5} {'-':>7} {'-':>7} {'-':>7}"
    if pz and pz["queried"]:
        ms = f"{pz['render_ms_p50']:>7.1f} {pz['render_ms_p95']:>7.1f} {pz['render_ms_max']:>7.1f}"
    else:
        ms = f"{'-':>7} {'-':>7} {'-':>7}"
    return f"{cells} {ms}"


def cluster_report(d: Path, rows: int, zooms: str, budget: int, desc: str, load: str) -> int:
    """Prints one size's clustering report from the runs in D; returns 3 when the tiles over
    budget or the tiles written disagree with the summary, else 0."""
    runs = {}
    for variant in VARIANTS:
        runs[variant] = {
            "summary": measure.summary(d / f"cluster-{rows}-{variant}.json"),
            "time": measure.time_v(d / f"cluster-{rows}-{variant}.time"),
            "sizes": measure.sizes_per_zoom(d / f"cluster-{rows}-{variant}.mbtiles"),
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
        cells = [zoom_cells(runs[v]["sizes"].get(z, []),
                            next((p for p in runs[v]["summary"]["per_zoom"] if p["zoom"] == z), None))
                 for v in VARIANTS]
        print(f"  {z:>4} | {cells[0]} | {cells[1]}")
    print(f"  load average before / after the two seeds: {load}")
    return max(variant_lines(variant, runs[variant], budget) for variant in VARIANTS)


def variant_lines(variant: str, r: dict, budget: int) -> int:
    """A variant's totals and tiles over budget; 3 when they disagree with its summary."""
    s = r["summary"]
    wall, cpu, rss = r["time"]
    all_sizes = [n for v in r["sizes"].values() for n in v]
    over = sum(1 for n in all_sizes if n > budget)
    reported = len(s["over_budget"])
    largest = max(all_sizes) if all_sizes else 0
    status = 0
    print(f"  {variant:>11}: {s['tiles_written']} tiles, {measure.human(s['bytes_written'])} stored,"
          f" {wall:.2f} s wall (tool's timer {s['seconds']:.2f} s, oar-tiles CPU {cpu:.2f} s,"
          f" peak RSS {rss:.1f} MB)")
    print(f"  {'':>11}  tiles over the {budget / 1024:.0f} KiB budget: {over}"
          f" (summary's over_budget lists {reported}); largest {measure.kib(largest)} KiB")
    if over != reported:
        status = 3
    if len(all_sizes) != s["tiles_written"]:
        print(f"  {'':>11}  WARNING: the MBTiles holds {len(all_sizes)} tiles, the summary says"
              f" {s['tiles_written']} written")
        status = 3
    return status
