"""Section growth: how cost grows with the data. Per --growth-rows size: the sample's load, a
clustered seed z0-14 (wall, tiles, peak RSS, table size, stored bytes and CPU per tile), then
with change capture one facility renamed and `seed --dirty` into a tree and an MBTiles file (the
time until the purges went out, against the smallest size's)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import measure, samples

ZOOM = "0-14"
RENAMED = " (renamed)"


def section_growth(b) -> None:
    """The growth section (see the help text)."""
    facts: dict[tuple[int, str], float] = {}
    for n in b.opts.growth_rows:
        started = time.time()
        samples.ensure_sample(b, n)
        config = b.work / f"growth-{n}.toml"
        samples.make_config(b, n, "clustered", config)
        # Without change capture the clustered top tiles group every row, which at 10M rows takes
        # longer than the sample config's statement timeout on a small machine: the timeout is not
        # what this section measures.
        config.write_text(re.sub(r"(?m)^statement_timeout = .*$", 'statement_timeout = "1h"',
                                 config.read_text()))
        facts[n, "load"] = time.time() - started
        b.log(f"growth: {n} facilities, seed z0-14 clustered")
        facts[n, "load-avg"] = float(b.load_average().split()[0])
        measured_seed(b, n, config, facts)
        (b.work / f"growth-{n}.mbtiles").unlink(missing_ok=True)
        one_change(b, n, facts)
    measure.report(b, lambda: growth_report(b.work, b.opts.growth_rows, facts))


def measured_seed(b, n: int, config: Path, facts: dict) -> None:
    """The size's seed under /usr/bin/time -v and thread_cpu.py: PostgreSQL's CPU beside the
    tool's shows whose work grows with the data (the CPU of the backends that served this seed,
    as main and capacity read it); and the table's size with its indexes."""
    done = subprocess.run(
        ["/usr/bin/time", "-v", "-o", str(b.work / f"growth-{n}.time"), "python3",
         str(b.scripts("thread_cpu.py")), str(b.work / f"growth-{n}-threads.json"), "--",
         str(b.bin), "-q", "seed", *b.concurrency_args(), "--config", str(config), "--zoom", ZOOM,
         "--output", str(b.work / f"growth-{n}.mbtiles"),
         "--summary-json", str(b.work / f"growth-{n}.json")], stdout=subprocess.DEVNULL)
    if done.returncode:
        b.die(f"growth: the seed of {n} facilities failed")
    # The seed's own CPU: time -v would add the reader's.
    facts[n, "server-cpu"], facts[n, "tool-cpu"] = measure.thread_cpu(
        b.work / f"growth-{n}-threads.json")
    facts[n, "bytes"] = float(b.value(f"SELECT pg_total_relation_size('bench_{n}.facilities')"))


def lag_config(b, n: int) -> Path:
    """The growth config with a change schema of its own (uninstalling drops it whole)."""
    config = b.work / f"growth-{n}-lag.toml"
    text = re.sub(rf'(?m)^schema = "{b.CHANGES_SCHEMA}"', f'schema = "{b.CHANGES_SCHEMA}_growth"',
                  (b.work / f"growth-{n}.toml").read_text(), count=0)
    config.write_text(text)
    if not re.search(rf'(?m)^schema = "{b.CHANGES_SCHEMA}_growth"', text):
        b.die(f"growth: no [changes] schema in {config}")
    return config


def one_change(b, n: int, facts: dict) -> None:
    """Change capture on the size's sample, full seeds into a tree and an MBTiles file, one
    facility renamed, and `seed --dirty` into each, timed, with the seconds its log says the hash
    took after the purges; then the rename undone and change capture uninstalled, so the sample
    is as it was."""
    config = lag_config(b, n)
    tree, mbtiles = b.work / f"growth-{n}-tree", b.work / f"growth-{n}-lag.mbtiles"
    outputs = {"tree": f"dir:{tree}", "mbtiles": str(mbtiles)}
    # The sample's comment, set before the rename, makes the next run reload it.
    unregister = b.on_cleanup(lambda: b.tool(
        "-q", "changes", "uninstall", "--config", str(config), check=False,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    b.tool("-q", "changes", "install", "--config", str(config), stdout=sys.stderr)
    b.log(f"growth: {n} facilities, full seeds into a tree and an MBTiles file for one change")
    for out in outputs.values():
        if b.tool("-q", "seed", *b.concurrency_args(), "--config", str(config), "--zoom", ZOOM,
                  "--output", out, check=False, stdout=subprocess.DEVNULL).returncode:
            b.die(f"growth: the seed of {n} facilities into {out} failed")
    fid = b.value(f"SELECT min(id) FROM bench_{n}.facilities")
    b.psql(f"COMMENT ON TABLE bench_{n}.facilities IS 'growth: one facility renamed'", out=None)
    b.psql(f"UPDATE bench_{n}.facilities SET name = name || '{RENAMED}' WHERE id = {int(fid)}",
           out=None)
    # The full seeds' writes go to disk first: a tree's finish syncs its file system (syncfs),
    # which would otherwise time the writeback of every file just seeded (0.5 s at 1M rows, 7 ms
    # once flushed), not the change; a watch cycle follows cycles whose writes are long flushed.
    os.sync()
    for kind, out in outputs.items():
        dirty_run(b, n, kind, out, config, facts)
    b.psql(f"UPDATE bench_{n}.facilities SET name = left(name, -length('{RENAMED}'))"
           f" WHERE id = {int(fid)}", out=None)
    b.tool("-q", "changes", "uninstall", "--config", str(config), stdout=sys.stderr)
    b.psql(f"COMMENT ON TABLE bench_{n}.facilities IS NULL", out=None)
    unregister()
    shutil.rmtree(tree, ignore_errors=True)
    mbtiles.unlink(missing_ok=True)


def dirty_run(b, n: int, kind: str, out: str, config: Path, facts: dict) -> None:
    """One timed `seed --dirty` into OUT: its wall time, the hash's seconds after the purges
    (from its log) and the tiles the output then holds."""
    log = b.work / f"growth-{n}-{kind}-dirty.log"
    started = time.time()
    with open(log, "w") as err:
        done = b.tool("seed", "--dirty", *b.concurrency_args(), "--config", str(config),
                      "--zoom", ZOOM, "--output", out, "--summary-json",
                      str(b.work / f"growth-{n}-{kind}-dirty.json"), check=False,
                      stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "RUST_LOG": "info"})
    if done.returncode:
        b.die(f"growth: seed --dirty into {out} failed")
    facts[n, f"{kind}-run"] = time.time() - started
    facts[n, f"{kind}-hash"] = hash_seconds(log.read_text())
    inspected = b.tool("-q", "inspect", "--json", out, stdout=subprocess.PIPE, text=True)
    facts[n, f"{kind}-tiles"] = float(json.loads(inspected.stdout)["tiles"])


def hash_seconds(log: str) -> float:
    """The seconds of the last 'after the purges in N s' of a seed's log, 0 without one."""
    found = re.findall(r"after the purges in ([0-9.]*) s", log)
    return float(found[-1]) if found and found[-1] else 0.0


def growth_report(work: Path, sizes: list[int], facts: dict) -> int:
    """Prints the growth section's report from the seeds in WORK and the FACTS gathered."""
    print("growth: the sample config (clustered), z0-14, per sample size")
    print(f"  {'rows':>10} {'load s':>8} {'seed s':>8} {'tiles':>9} {'tiles/s':>9} {'s/tile vs first':>16} {'peak RSS':>10} {'table+indexes':>14}")
    first = None
    worst_rss = 0.0
    costs = []
    for n in sizes:
        wall, _, rss = measure.time_v(work / f"growth-{n}.time")
        cpu = facts[n, "tool-cpu"]
        summary = measure.summary(work / f"growth-{n}.json")
        tiles = summary["tiles_written"]
        per_tile = wall / max(tiles, 1)
        first = first or per_tile
        worst_rss = max(worst_rss, rss)
        costs.append((n, tiles, summary["bytes_written"], cpu, facts[n, "server-cpu"]))
        print(f"  {n:>10} {facts[n, 'load']:8.1f} {wall:8.1f} {tiles:>9} {tiles / wall:9.0f} {per_tile / first:16.2f} "
              f"{rss:8.1f} MB {facts[n, 'bytes'] / 2**20:11.1f} MB")
    # Where the time per tile goes: a tile holds more features as the rows grow, which costs
    # PostGIS (per feature) more than the tool (per tile and per stored byte).
    print(f"  {'rows':>10} {'stored B/tile':>14} {'tool CPU s':>11} {'µs/tile':>8} {'PostgreSQL CPU s':>17} {'µs/tile':>8}")
    for n, tiles, stored, cpu, server in costs:
        t = max(tiles, 1)
        print(f"  {n:>10} {stored / t:14.0f} {cpu:11.1f} {cpu / t * 1e6:8.1f} {server:17.1f} {server / t * 1e6:8.1f}")
    print(f"  peak RSS {worst_rss:.1f} MB (target <= 256 MB: {'met' if worst_rss <= 256 else 'NOT met'})")
    print_one_change(sizes, facts)
    return 0


def print_one_change(sizes: list[int], facts: dict) -> None:
    """The one-change rows: the purges go out before the run reads every tile for
    agg_tiles_hash; before that change the hash came first, so the purge waited for the whole run
    ("hash first")."""
    print("  one change, seed --dirty (purges as soon as the tiles are stored; agg_tiles_hash read after)")
    print(f"  {'rows':>10} {'output':>8} {'tiles':>9} {'run s':>7} {'hash s':>7} {'to purge s':>11} {'hash first s':>13} {'vs first':>9}")
    smallest: dict[str, float] = {}
    for n in sizes:
        for kind in ("tree", "mbtiles"):
            if (n, f"{kind}-run") not in facts:
                continue
            run, hashed, tiles = facts[n, f"{kind}-run"], facts[n, f"{kind}-hash"], facts[n, f"{kind}-tiles"]
            purge = run - hashed
            smallest.setdefault(kind, purge)
            print(f"  {n:>10} {kind:>8} {tiles:9.0f} {run:7.2f} {hashed:7.2f} {purge:11.2f} {run:13.2f} "
                  f"{purge / smallest[kind]:8.2f}x")
    print("  (target: the largest output's commit-to-purge within 1.2x of the smallest's)")
