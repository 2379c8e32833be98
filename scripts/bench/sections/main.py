"""Section main: an end-to-end seed (the layer unclustered) next to PostGIS rendering the same
tiles server-side in one statement, split over sessions, and with the bytes shipped; throughput,
peak RSS, ratios, and the CPU of the tool and of PostgreSQL."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from bench import measure, samples


@dataclass
class Baselines:
    """The server-side baseline's figures (wall seconds, backends' CPU seconds)."""
    tiles: int
    bytes: int
    sessions: int
    one_secs: float
    split_secs: float
    split_cpu: float
    copy_secs: float
    copy_cpu: float


@dataclass
class Seed:
    """The measured seed's figures."""
    rows: int
    zoom: str
    concurrency: str
    cores: int
    server_cpu: float
    tool_cpu: float
    mvt_bytes: int
    load_before: str
    load_after: str


def section_main(b) -> None:
    """The main section (see the help text)."""
    rows = b.opts.rows
    schema = f"bench_{rows}"
    samples.ensure_sample(b, rows)
    config = b.work / "bench-config.toml"
    cfg = samples.make_config(b, rows, "unclustered", config)
    sessions = samples.default_sessions(b, cfg)
    seed_args = ["-q", "seed", "--config", str(config), "--zoom", b.opts.zoom, *b.concurrency_args()]
    # The first pass pays for cold shared buffers and page cache; only the second is measured.
    b.log("warm-up seed (discarded)")
    b.tool(*seed_args, "--output", str(b.work / "warmup.mbtiles"), stdout=subprocess.DEVNULL)
    load_before = b.load_average()
    b.log("measured seed")
    # The server's side of the same seed: the CPU of the backends that served it, read by
    # thread_cpu.py; the tool's CPU is the seed's own (time -v would add the reader's).
    subprocess.run(["/usr/bin/time", "-v", "-o", str(b.work / "time.txt"), "python3",
                    str(b.scripts("thread_cpu.py")), str(b.work / "threads.json"), "--", str(b.bin),
                    *seed_args, "--output", str(b.work / "bench.mbtiles"), "--summary-json",
                    str(b.work / "summary.json")], stdout=subprocess.DEVNULL, check=True)
    server_cpu, tool_cpu = measure.thread_cpu(b.work / "threads.json")
    # The server-side baseline, over the written tiles (samples.write_tile_list says how the list
    # is built); also the total uncompressed MVT bytes, so that the baseline's output can be
    # compared with the seed's.
    mvt_bytes = samples.tile_list(b.work / "bench.mbtiles", cfg.buffer, cfg.extent, sessions,
                                  b.work / "tiles.csv")
    # Unique per run so that concurrent benchmarks of the same size cannot collide.
    table = f"{schema}.bench_tiles_{os.getpid()}"
    b.on_cleanup(lambda: b.psql(f"DROP TABLE IF EXISTS {table}", out=subprocess.DEVNULL,
                                check=False))
    samples.load_tile_list(b, table, b.work / "tiles.csv")
    one_secs, _ = samples.run_baseline(b, table, schema, cfg, 1)
    split_secs, split_cpu = samples.run_baseline(b, table, schema, cfg, sessions)
    copy_secs, copy_cpu = samples.run_baseline(b, table, schema, cfg, sessions, "copy")
    load_after = b.load_average()
    tiles, nbytes = baseline_counts(b, sessions)
    one_tiles, one_bytes = baseline_counts(b, 1)
    if (one_tiles, one_bytes) != (tiles, nbytes):
        b.die(f"the one-statement baseline rendered other tiles ({one_tiles}, {one_bytes} bytes)"
              f" than the split one ({tiles}, {nbytes})")
    base = Baselines(tiles, nbytes, sessions, one_secs, split_secs, split_cpu, copy_secs, copy_cpu)
    concurrency = str(b.opts.concurrency or f"{cfg.pool_size} (tool default)")
    seed = Seed(rows, b.opts.zoom, concurrency, b.cores, server_cpu, tool_cpu, mvt_bytes,
                load_before, load_after)
    measure.report(b, lambda: main_report(measure.summary(b.work / "summary.json"),
                                          (b.work / "time.txt").read_text(), seed, base))


def baseline_counts(b, sessions: int) -> tuple[int, int]:
    """Non-empty tiles and MVT bytes the count baseline over SESSIONS sessions rendered, summed
    over its sessions' outputs (WORK/baseline.SESSIONS.K)."""
    tiles = nbytes = 0
    for k in range(sessions):
        for line in (b.work / f"baseline.{sessions}.{k}").read_text().splitlines():
            if line.strip():
                t, n = line.split("|")
                tiles, nbytes = tiles + int(t), nbytes + int(n)
    return tiles, nbytes


def main_report(s: dict, time_text: str, seed: Seed, base: Baselines) -> int:
    """Prints the main section's report; returns 3 when the baseline rendered another tile set
    (the ratios would be meaningless), else 0."""
    wall = measure.clock_seconds(
        measure.time_field(time_text, "Elapsed (wall clock) time (h:mm:ss or m:ss)"))
    rss_mb = int(measure.time_field(time_text, "Maximum resident set size (kbytes)")) / 1024
    # The tool's own CPU time tells whether the client side or the database limits throughput.
    cpu = seed.tool_cpu
    written = s["tiles_written"]
    e2e_rate = written / wall
    base_rate = base.tiles / base.split_secs
    print(f"== main: oar-tiles benchmark: {seed.rows} facilities, zoom {seed.zoom}, "
          f"concurrency {seed.concurrency}, {seed.cores} cores, layer unclustered ==")
    print(f"  end-to-end seed:   {written} tiles written in {wall:.2f} s = {e2e_rate:.0f} tiles/s"
          f"  (queried {s['tiles_queried']}, peak RSS {rss_mb:.1f} MB)")
    print(f"                     probed {s['tiles_probed']}; oar-tiles CPU {cpu:.2f} s ="
          f" {cpu / wall:.0%} of one core; tool's own timer {s['seconds']:.2f} s")
    server_cpu = seed.server_cpu
    per_tile = f"{cpu / written * 1e6:.1f}" if written else "-"
    print(f"  CPU, client beside server: oar-tiles {cpu:.2f} s user+sys ({per_tile} us per tile written),"
          f" PostgreSQL {server_cpu:.2f} s in the backends that served this seed;"
          f" client / server {cpu / server_cpu if server_cpu else float('inf'):.0%}   (target <= 25%)")
    one_rate = base.tiles / base.one_secs
    print(f"  PostGIS alone:     {base.tiles} tiles in {base.one_secs:.2f} s = {one_rate:.0f} tiles/s"
          f" (server-side, one SQL statement over the tile list; faster of 2 runs)")
    print(f"  ratio end-to-end / server-side tiles/s: {e2e_rate / one_rate:.2f}")
    print(f"  split sessions:    {base.tiles} tiles in {base.split_secs:.2f} s = {base_rate:.0f} tiles/s"
          f" split over {base.sessions} concurrent sessions, as many as the seed uses (all cores rendering,"
          f" nothing left for the client)")
    print(f"                     PostgreSQL CPU {base.split_cpu:.2f} s in its {base.sessions} backends, the results"
          f" counted server-side, no bytes shipped")
    print(f"  ratio end-to-end / split sessions, no bytes shipped: {e2e_rate / base_rate:.2f}")
    copy_rate = base.tiles / base.copy_secs
    print(f"  split, bytes shipped: {base.tiles} tiles in {base.copy_secs:.2f} s = {copy_rate:.0f} tiles/s over"
          f" {base.sessions} sessions, each a binary COPY of (x, y, mvt) read by psql into /dev/null;"
          f" PostgreSQL CPU {base.copy_cpu:.2f} s")
    print(f"  ratio end-to-end / split-session baseline with bytes shipped (issue 14's definition):"
          f" {e2e_rate / copy_rate:.2f}   (target >= 0.85)")
    if base.copy_cpu:
        print(f"  where the seed's CPU goes, against the shipped baseline: PostgreSQL {server_cpu:.2f} s"
              f" = baseline {base.copy_cpu:.2f} s + {server_cpu - base.copy_cpu:.2f} s of the tool's statements"
              f" ({server_cpu / base.copy_cpu - 1:+.0%}); oar-tiles {cpu:.2f} s; on {seed.cores} cores"
              f" the seed cannot take less than {(server_cpu + cpu) / seed.cores:.2f} s")
    print(f"  peak RSS target (< 256 MB at 1,000,000 facilities): {rss_mb:.1f} MB at {seed.rows}")
    same_tiles = base.tiles == written
    print(f"  baseline tiles {'match' if same_tiles else 'DIFFER FROM'} tiles_written"
          f" ({base.tiles} vs {written}); uncompressed MVT bytes"
          f" {'identical' if base.bytes == seed.mvt_bytes else 'DIFFERENT'}"
          f" (baseline {base.bytes}, seed {seed.mvt_bytes}); stored gzip {s['bytes_written']}")
    print(f"  load average before seed / after baseline: {seed.load_before} / {seed.load_after}")
    print()
    print_per_zoom(s)
    # A different tile set makes the ratio meaningless: say so through the exit status too.
    return 0 if same_tiles else 3


def print_per_zoom(s: dict) -> None:
    """The seed's per-zoom table and its slowest tiles."""
    print("  zoom   queried   written   stored KB  p95 ms  largest tile")
    for z in s["per_zoom"]:
        big = z.get("largest_tile")
        big = f"{big['tile']} ({big['bytes'] / 1024:.1f} KB)" if big else "-"
        print(f"  {z['zoom']:>4} {z['queried']:>9} {z['written']:>9} {z['bytes'] / 1024:>11.1f}"
              f" {z['render_ms_p95']:>7.1f}  {big}")
    slow = ", ".join(f"{t['tile']} {t['ms']:.0f} ms" for t in s["slowest_tiles"][:3])
    print(f"  slowest tiles: {slow or '-'}")
