#!/usr/bin/env python3
"""The capacity section's report (scripts/bench.sh --sections capacity).

    bench_capacity.py DIR ROWS LABEL...

For each LABEL (the binary measured, `ours` first) reads DIR/LABEL.threads.json (thread_cpu.py),
DIR/LABEL.summary.json (seed --summary-json), with the CPU of the PostgreSQL backends that served
the seed in the former, and DIR/baseline.pg (the CPU of the shipped baseline: the same tiles
rendered server-side and copied to a client). Prints per tile: PostgreSQL's CPU beside the
baseline's (target <= 1.10x), the tool's total CPU beside the first other label's (target <= +10%),
each thread role's CPU, and the capacity: PostgreSQL's CPU per tile over the busiest thread's
(target >= 16 database cores per process).
"""
import collections
import json
import os
import sys

# Thread names the tool gives (src/main.rs, src/db/io.rs, src/sink/writer.rs); `oar-tiles` is the
# main thread, which drives every render.
ROLES = {
    "oar-tiles": "render driver (main thread)",
    "oar-tiles-db": "connections (socket, TLS, protocol)",
    "oar-tiles-write": "writer (the output)",
    "oar-tiles-pool": "blocking pool (compression, hashing)",
}
# Roles one thread carries whatever the client's cores: they bound the capacity on any machine.
SERIAL = ("oar-tiles", "oar-tiles-write")


def load(directory, label):
    threads = json.load(open(os.path.join(directory, f"{label}.threads.json")))
    summary = json.load(open(os.path.join(directory, f"{label}.summary.json")))
    tiles = sum(s["tiles_written"] for s in summary)
    pg = threads["backends"]
    return threads, tiles, pg


def main():
    directory, rows, labels = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    baseline_pg = float(open(os.path.join(directory, "baseline.pg")).read())
    load_avg = os.environ.get("BENCH_LOAD", "?")
    print(f"== capacity: {rows} facilities, unclustered, {os.environ.get('BENCH_ZOOM', '?')};"
          f" load {load_avg} ==")
    figures = {}
    for label in labels:
        threads, tiles, pg = load(directory, label)
        if not tiles:
            sys.exit(f"capacity: {label} wrote no tiles")
        per_tile = lambda seconds: seconds / tiles * 1e6  # noqa: E731
        roles = collections.defaultdict(list)
        for t in threads["threads"]:
            roles[t["name"]].append(t["cpu"])
        busiest = threads["threads"][0] if threads["threads"] else {"name": "-", "cpu": 0.0}
        serial = max((max(roles[name]) for name in SERIAL if roles.get(name)), default=0.0)
        figures[label] = (tiles, pg, threads["total"], busiest, serial)
        print(f"  {label}: {tiles} tiles; PostgreSQL {pg:.2f} s = {per_tile(pg):.1f} us per tile;"
              f" tool {threads['total']:.2f} s = {per_tile(threads['total']):.1f} us per tile"
              f" ({threads['unseen']:.2f} s in threads that ended between samples)")
        for name, cpus in sorted(roles.items(), key=lambda kv: -sum(kv[1])):
            print(f"    {ROLES.get(name, name):<40} {len(cpus):>3} thread(s) {sum(cpus):7.2f} s,"
                  f" busiest {max(cpus):6.2f} s = {per_tile(max(cpus)):5.1f} us per tile")
        if busiest["cpu"]:
            print(f"    capacity, PostgreSQL CPU / busiest thread's ({busiest['name']}):"
                  f" {pg / busiest['cpu']:.1f} database cores per process   (target >= 16)")
        if serial:
            print(f"    capacity by the threads that cannot spread (main, writer):"
                  f" {pg / serial:.1f} database cores; the others grow with the client's cores")
    tiles, pg, total, _, _ = figures[labels[0]]
    if not baseline_pg:
        sys.exit("capacity: the shipped baseline's backends were not found")
    base_tiles = int(open(os.path.join(directory, "baseline.tiles")).read())
    print(f"  PostgreSQL CPU per tile, seed / shipped baseline ({base_tiles} tiles rendered and copied"
          f" to a client, {baseline_pg:.2f} s): {pg / tiles / (baseline_pg / base_tiles):.3f}"
          f"   (target <= 1.10)")
    for other in labels[1:]:
        o_tiles, o_pg, o_total, _, _ = figures[other]
        print(f"  tool CPU per tile, {labels[0]} / {other}: {total / tiles / (o_total / o_tiles):.3f}"
              f"   (target <= 1.10); PostgreSQL CPU per tile {pg / tiles / (o_pg / o_tiles):.3f}")


if __name__ == "__main__":
    main()
