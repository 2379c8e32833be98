"""partitions and watch-partitions: one pyramid per value against the whole tileset, and `watch`
keeping a partitioned tileset fresh (see the sections' entries in `python3 -m bench --help`).

Both run on bench_<rows>_contributors.facilities (samples.ensure_contributors) with the sample
config clustered at --partition-zoom, partitioned by --partition-by.
"""
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.measure import (alive, fail, http_get, mbtiles_tiles, nearest_rank, prom_sum, report,
                           seed_totals, time_v, watch_log)
from bench.samples import ensure_contributors, make_config
from bench.sections.watch import exit_code, free_port, id_range, paced

WATCH_PARTS_CHANGES = 300
WATCH_PARTS_RATE = 10
# The reseed section's seed, with a suffix of this section's: the changes are the same every run.
WATCH_PARTS_SEED = "0.42-partitions"


# --- configs ------------------------------------------------------------------------------------

def with_zooms(text, lo, hi):
    """A config's text with every `minzoom = ` and `maxzoom = ` line set to lo and hi."""
    text = re.sub(r"(?m)^minzoom = .*$", f"minzoom = {lo}", text)
    return re.sub(r"(?m)^maxzoom = .*$", f"maxzoom = {hi}", text)


def partitioned(text, column):
    """A config's text with `partition_by = "COLUMN"` right under its first `[[tileset]]` header."""
    return re.sub(r"(?m)^\[\[tileset\]\][ \t]*$", f'[[tileset]]\npartition_by = "{column}"', text, count=1)


def with_output(text, path):
    """A config's text with every `output = ` line pointing at path."""
    return re.sub(r"(?m)^output = .*$", lambda _: f'output = "{path}"', text)


def partition_configs(b, n):
    """whole.toml and partitioned.toml in the work directory: the sample config (clustered) on
    bench_<n>_contributors.facilities with its zooms set to --partition-zoom, the second
    partitioned by --partition-by. Returns make_config's figures."""
    lo, hi = b.opts.partition_zoom.split("-")
    whole = b.work / "whole.toml"
    figures = make_config(b, f"{n}_contributors", "clustered", whole)
    text = with_zooms(whole.read_text(encoding="utf-8"), lo, hi)
    whole.write_text(text, encoding="utf-8")
    if not re.search(rf"(?m)^maxzoom = {hi}$", text):
        b.die(f"could not set the zooms of {whole}")
    text = partitioned(text, b.opts.partition_by)
    (b.work / "partitioned.toml").write_text(text, encoding="utf-8")
    if not re.search(r"(?m)^partition_by", text):
        b.die(f"could not partition {whole}")
    return figures


# --- partitions ---------------------------------------------------------------------------------

def partitions_rounds(part_rounds):
    """(round, variant) of the measured seeds: the whole tileset three times, the partitioned one
    `part_rounds` times, alternately."""
    return [(r, v) for r in (1, 2, 3) for v in ("whole", "partitioned")
            if v == "whole" or r <= part_rounds]


def remove_work(b, pattern):
    """Every file and folder of the work directory matching pattern."""
    for path in b.work.glob(pattern):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def section_partitions(b):
    """The partitions section: warm-up, the measured seeds, the report."""
    started = time.time()
    rows = b.opts.rows
    ensure_contributors(b, rows)
    partition_configs(b, rows)
    b.log("partitions: warm-up seed (discarded)")
    b.tool("-q", "seed", *b.concurrency_args(), "--config", str(b.work / "whole.toml"),
           "--output", str(b.work / "part-warmup.mbtiles"), stdout=subprocess.DEVNULL)
    load_before = b.load_average()
    for round_, variant in partitions_rounds(b.opts.partition_rounds):
        b.log(f"partitions: round {round_}, {variant}, zoom {b.opts.partition_zoom}")
        remove_work(b, "part-out.*")
        remove_work(b, "part-out")
        b.timed_seed(f"part-{variant}-{round_}", "--config", str(b.work / f"{variant}.toml"),
                     "--output", str(b.work / "part-out.mbtiles"))
        if variant != "whole":
            shutil.copy(b.work / "part-out.partitions.json", b.work / "part-index.json")
    load = f"{load_before} / {b.load_average()}"
    report(b, partitions_report, b.work, rows, b.opts.partition_zoom, b.opts.partition_by,
           b.opts.partition_rounds, load, f"{time.time() - started:.0f}")
    sys.stdout.flush()
    remove_work(b, "part-*")


def variant_runs(d, variant, rounds):
    """The rounds' median wall and CPU, largest peak RSS, tiles and summary entries of one
    variant; fails when its rounds wrote different numbers of tiles."""
    measured = [time_v(f"{d}/part-{variant}-{r}.time") for r in range(1, rounds + 1)]
    tiles, _, entries = seed_totals(f"{d}/part-{variant}-{rounds}.json")
    counts = {seed_totals(f"{d}/part-{variant}-{r}.json")[0] for r in range(1, rounds + 1)}
    if len(counts) != 1:
        fail(f"partitions: the {variant} rounds wrote different numbers of tiles: {sorted(counts)}")
    return dict(rounds=rounds, wall=statistics.median(w for w, _, _ in measured),
                cpu=statistics.median(c for _, c, _ in measured),
                rss=max(r for _, _, r in measured), tiles=tiles, entries=entries)


def met(ok):
    """A target's verdict."""
    return "met" if ok else "NOT met"


def partitions_report(d, rows, zooms, column, part_rounds, load="?", seconds="?"):
    """The partitions section's report from the files the section leaves in d: per variant the
    rounds' median wall time, tiles written, wall time per tile and peak RSS, the ratio, the
    partitions' sizes and their fixed cost. Returns the exit status (3 when the index and the
    summary disagree)."""
    whole, part = variant_runs(d, "whole", 3), variant_runs(d, "partitioned", part_rounds)
    index = json.loads(Path(f"{d}/part-index.json").read_text(encoding="utf-8"))["partitions"]
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
          f" (target <= 1.5: {met(ratio <= 1.5)})")
    print(f"  peak RSS of the partitioned seed: {part['rss']:.1f} MB"
          f" (target <= 256 MB: {met(part['rss'] <= 256)})")
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
    seconds_each = sorted(e["seconds"] for e in part["entries"])
    excess = (part["wall"] - part["tiles"] * whole["wall"] / whole["tiles"]) / max(len(index), 1)
    print(f"  per partition (the tool's timer): median {statistics.median(seconds_each) * 1000:.0f} ms,"
          f" max {seconds_each[-1] * 1000:.0f} ms, sum {sum(seconds_each):.1f} s of {part['wall']:.1f} s wall;"
          f" beyond the whole tileset's time per tile: {excess * 1000:.0f} ms a partition")
    print(f"  load average before / after the measured seeds: {load}; the section took {seconds} s")
    return status


# --- watch-partitions: the changes ----------------------------------------------------------------

def insert_copy(t, fid):
    """An INSERT of a copy of row fid beside it, with its contributors."""
    return (f"INSERT INTO {t} (id, os_id, name, address, country_code, contributors, created_at,"
            f" updated_at, location, contributor_ids) SELECT id + 100000000, os_id || '-w', name,"
            f" address, country_code, contributors, created_at, updated_at,"
            f" ST_Translate(location, 0.001, 0.001), contributor_ids FROM {t} WHERE id = {fid};")


def one_change(rng, t, fid):
    """One change of row fid, drawn from rng (see watch_partition_changes)."""
    kind = rng.random()
    if kind < 0.35:
        dx, dy = rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01)
        return f"UPDATE {t} SET location = ST_Translate(location, {dx:.6f}, {dy:.6f}) WHERE id = {fid};"
    if kind < 0.50:
        return insert_copy(t, fid)
    if kind < 0.65:
        return f"DELETE FROM {t} WHERE id = {fid};"
    if kind < 0.85:
        # A facility that holds the contributor drawn gains one of its own instead (a new value,
        # so a new partition), so that every change logs and counts.
        gained = min(2000, math.floor(2001 ** rng.random()))
        return (f"UPDATE {t} SET contributor_ids = ARRAY(SELECT DISTINCT c FROM"
                f" unnest(contributor_ids || CASE WHEN {gained} = ANY(contributor_ids)"
                f" THEN {2001 + fid} ELSE {gained} END) c ORDER BY c) WHERE id = {fid};")
    # A facility of no contributor gains its own instead, for the same reason.
    return (f"UPDATE {t} SET contributor_ids = CASE WHEN cardinality(contributor_ids) > 0"
            f" THEN contributor_ids[1:cardinality(contributor_ids) - 1]"
            f" ELSE ARRAY[{2001 + fid}] END WHERE id = {fid};")


def watch_partition_changes(schema, n, rate, seed, lo, hi):
    """An SQL script of n single-row changes to SCHEMA.facilities (ids lo..hi, with
    contributor_ids), each its own transaction, committed at `rate` per second on a fixed
    schedule: 35% moves by up to 0.01 degrees, 15% inserts (a copy of a row beside it, with its
    contributors), 15% deletes, 20% a facility gaining a contributor (drawn as the sample draws
    them: floor(2001^u), so mostly large ones) and 15% losing its last one in id order (usually
    its smallest; a facility of one contributor then belongs to no partition). Every change
    changes its row, so each logs once and the watcher's applied count reaches n."""
    rng = random.Random(seed)
    ids = rng.sample(range(lo, hi + 1), n)
    t = f'"{schema}".facilities'
    out = ["\\set ON_ERROR_STOP on",
           f"COMMENT ON TABLE {t} IS 'modified by the watch-partitions benchmark';",
           "CREATE TEMP TABLE watch_start AS SELECT clock_timestamp() AS t0;"]
    for i, fid in enumerate(ids):
        out.append(paced(i, rate))
        out.append(one_change(rng, t, fid))
    return "\n".join(out) + "\n"


# --- watch-partitions: the report and the check -----------------------------------------------

def partitions_log(log):
    """From a watcher's JSON log: (partitions_rendered, partitions_total) of each cycle's debug
    event per partitioned tileset."""
    cycles = []
    for line in Path(log).read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            fields = json.loads(line).get("fields", {})
        except ValueError:
            continue
        if "partitions_rendered" in fields:
            cycles.append((int(fields["partitions_rendered"]), int(fields.get("partitions_total", 0))))
    return cycles


def watch_partitions_report(log, metrics, n, rate, seed_json, seed_time, zooms):
    """Change-to-tile latency percentiles and partitions rendered per cycle from the watcher's
    JSON log, the metrics saved once every change was applied, and the full seed before the
    watcher. Returns the exit status (3 when events or changes are missing)."""
    latencies, _, cycles = watch_log(log)
    parts = partitions_log(log)
    text = Path(metrics).read_text(encoding="utf-8")
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
        p95 = nearest_rank(latencies, 0.95)
        print(f"  change-to-tile latency: p50 {nearest_rank(latencies, 0.50):.2f} s, p95 {p95:.2f} s,"
              f" max {latencies[-1]:.2f} s (target p95 <= 3 s: {met(p95 <= 3)})")
    else:
        print("  WARNING: the log holds no latencies")
        status = 3
    if applied != n or len(latencies) < n:
        print(f"  WARNING: expected {n} changes applied and measured")
        status = 3
    return status


def partition_files(index_path):
    """value -> (index entry, MBTiles path) of a partition index beside NAME.mbtiles files."""
    index_path = str(index_path)
    base = index_path[:-len(".partitions.json")]
    index = json.loads(Path(index_path).read_text(encoding="utf-8"))
    return {p["value"]: (p, f"{base}.{p['path']}.mbtiles") for p in index["partitions"]}


def partition_problems(a, b):
    """(problems, tiles of the watched side): how two partition indexes (partition_files) and
    their partitions' tiles differ."""
    problems = [f"{value!r} only in the watched index" for value in sorted(a.keys() - b.keys())]
    problems += [f"{value!r} only in the fresh index" for value in sorted(b.keys() - a.keys())]
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
    return problems, tiles


def same_partitions(watched, fresh):
    """3 unless two partition indexes list the same values with the same entries and each value's
    two MBTiles hold the same tiles with the same bytes, else 0; prints the verdict."""
    a = partition_files(watched)
    problems, tiles = partition_problems(a, partition_files(fresh))
    if problems:
        print(f"  WARNING: the watched partitions differ from a fresh partitioned seed of the changed data"
              f" in {len(problems)} way(s):")
        for line in problems[:10]:
            print(f"    {line}")
        return 3
    print(f"  the watched partitions equal a fresh partitioned seed of the changed data"
          f" ({len(a)} partitions, {tiles} tiles, index entries equal)")
    return 0


# --- watch-partitions: the section --------------------------------------------------------------

def watch_wait(base, what, n=0, metrics=None, pid=None, seconds=600):
    """None once the watcher at BASE answers /health 200 (`health`), or has applied at least N
    changes with none pending (`applied`, saving /metrics to METRICS); else why it gave up (after
    SECONDS, or as soon as process PID has exited): the section outlives a watcher that
    refuses to start, where edge's wait_for dies."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pid is not None and not alive(pid):
            return f"watch: the watcher (pid {pid}) exited while waiting for {what} at {base}"
        if what == "health":
            if http_get(base + "/health")[0] == 200:
                return None
        else:
            status, text = http_get(base + "/metrics")
            if status == 200 and prom_sum(text, "oar_tiles_changes_applied_total") >= n \
                    and prom_sum(text, "oar_tiles_pending_changes") == 0:
                if metrics is not None:
                    metrics.write_text(text, encoding="utf-8")
                return None
        time.sleep(0.2)
    return f"watch: gave up waiting for {what} at {base}"


def restore_contributors(b, parts_config):
    """Change capture off the contributors copy, and the copy dropped (the next
    ensure_contributors rebuilds it)."""
    sys.stdout.flush()
    if b.tool("-q", "changes", "uninstall", "--config", str(parts_config), check=False,
              stdout=sys.stderr).returncode != 0:
        b.psql(f"DROP SCHEMA IF EXISTS {b.CHANGES_SCHEMA} CASCADE")
    b.psql(f"DROP TABLE IF EXISTS bench_{int(b.opts.rows)}_contributors.facilities")


def guard_contributors(b, parts_config):
    """Registers the copy's restoration at exit, for a section that does not finish; returns the
    unregistering."""
    def restore():
        """Drops the copy, saying why."""
        b.log(f"dropping bench_{int(b.opts.rows)}_contributors after an unfinished watch-partitions"
              " section")
        restore_contributors(b, parts_config)
    return b.on_cleanup(restore)


def start_watcher(b, parts_config, port):
    """`oar-tiles watch` on the partitioned tileset, its JSON log in wp-watch.log; stopped at
    exit unless the section stops it. Returns it and the unregistering of that stop."""
    env = dict(os.environ, RUST_LOG="info,oar_tiles::seed=warn,oar_tiles::state=warn,oar_tiles::watch=debug")
    sys.stdout.flush()
    with open(b.work / "wp-watch.log", "wb") as log:
        proc = subprocess.Popen([str(b.bin), "--log-format", "json", "watch", *b.concurrency_args(),
                                 "--config", str(parts_config), "--listen", f"127.0.0.1:{port}"],
                                stderr=log, env=env)

    def stop():
        """Stops the watcher (SIGTERM) and reaps it, whatever it answers."""
        if proc.poll() is None:
            proc.terminate()
        proc.wait()
    return proc, b.on_cleanup(stop)


def watcher_refused(b, proc, unregister):
    """The watcher exited instead of starting (as while `watch` refused partitioned tilesets):
    its exit status and the end of its log, and the run fails with 3."""
    code = exit_code(proc.wait())
    unregister()
    b.log("watch-partitions: ERROR: oar-tiles watch did not start on the partitioned tileset"
          f" (exit {code}); the end of its log:")
    lines = (b.work / "wp-watch.log").read_text(encoding="utf-8", errors="replace").splitlines()
    for line in lines[-5:]:
        print(line, file=sys.stderr)
    b.failed(3)


def stop_watcher(b, proc, unregister):
    """SIGTERM to the watcher; the run fails with 3 unless it ends as SIGTERM asks (143)."""
    proc.terminate()
    code = exit_code(proc.wait())
    unregister()
    if code != 143:
        b.log(f"watch-partitions: the watcher exited {code} on SIGTERM, not 143")
        b.failed(3)


def fresh_config(b, parts_config):
    """The config of a fresh partitioned seed of the changed data into wp-fresh/, sharing nothing
    with the watcher's state (its change schema does not exist)."""
    lines = parts_config.read_text(encoding="utf-8").split("\n")
    text = "\n".join(line.replace(f'"{b.CHANGES_SCHEMA}"', f'"{b.CHANGES_SCHEMA}_absent"', 1)
                     for line in lines)
    path = b.work / "wp-rows.toml"
    path.write_text(with_output(text, b.work / "wp-fresh" / "facilities.mbtiles"), encoding="utf-8")
    return path


def watched_config(b):
    """watch-partitioned.toml: partitioned.toml writing into wp-watched/ (the outputs
    facilities.VALUE.mbtiles and their index in a folder of their own)."""
    path = b.work / "watch-partitioned.toml"
    for folder in ("wp-watched", "wp-fresh"):
        (b.work / folder).mkdir(parents=True, exist_ok=True)
    text = with_output((b.work / "partitioned.toml").read_text(encoding="utf-8"),
                       b.work / "wp-watched" / "facilities.mbtiles")
    path.write_text(text, encoding="utf-8")
    if f'output = "{b.work}/wp-watched/' not in text:
        b.die(f"could not set the output of {path}")
    return path


def commit_changes(b, schema, lo, hi):
    """The changes' script written and run by psql (at WATCH_PARTS_RATE a second)."""
    sql = watch_partition_changes(schema, WATCH_PARTS_CHANGES, WATCH_PARTS_RATE, WATCH_PARTS_SEED, lo, hi)
    (b.work / "wp-changes.sql").write_text(sql, encoding="utf-8")
    b.log(f"watch-partitions: committing {WATCH_PARTS_CHANGES} changes at {WATCH_PARTS_RATE} per second")
    b.psql(file=b.work / "wp-changes.sql", out=subprocess.DEVNULL)


def check_against_fresh(b, parts_config):
    """A fresh partitioned seed of the changed data, compared partition by partition."""
    b.log("watch-partitions: fresh partitioned seed of the changed data, to check the watched outputs")
    b.tool("-q", "seed", *b.concurrency_args(), "--config", str(fresh_config(b, parts_config)),
           stdout=subprocess.DEVNULL)
    report(b, same_partitions, b.work / "wp-watched" / "facilities.partitions.json",
           b.work / "wp-fresh" / "facilities.partitions.json")
    sys.stdout.flush()


def section_watch_partitions(b):
    """The watch-partitions section: change capture, a full partitioned seed, watch while the
    changes commit, the report, and the check against a fresh partitioned seed."""
    n, zooms = b.opts.rows, b.opts.partition_zoom
    schema = f"bench_{int(n)}_contributors"
    ensure_contributors(b, n)
    figures = partition_configs(b, n)
    parts_config = watched_config(b)
    b.tool("-q", "changes", "uninstall", "--config", str(parts_config), stdout=sys.stderr)
    unguard = guard_contributors(b, parts_config)
    lo, hi = id_range(b, schema, "watch-partitions")
    b.tool("-q", "changes", "install", "--config", str(parts_config), stdout=sys.stderr)
    b.log(f"watch-partitions: full seed partitioned by {b.opts.partition_by}, zoom {zooms} (clustered)")
    b.timed_seed("wp-full", "--config", str(parts_config))
    base = f"http://127.0.0.1:{free_port()}"
    b.log(f"watch-partitions: starting oar-tiles watch on the partitioned tileset ({base})")
    proc, unregister = start_watcher(b, parts_config, base.rsplit(":", 1)[1])
    # Fails at once when the watcher exits instead (as while watch refused partitioned tilesets).
    if (why := watch_wait(base, "health", pid=proc.pid)) is not None:
        b.log(why)
        watcher_refused(b, proc, unregister)
    else:
        load_before = b.load_average()
        commit_changes(b, schema, lo, hi)
        metrics = b.work / "wp-metrics.txt"
        if (why := watch_wait(base, "applied", WATCH_PARTS_CHANGES, metrics, pid=proc.pid)) is not None:
            b.log(why)
            b.failed(3)
        stop_watcher(b, proc, unregister)
        if metrics.exists() and metrics.stat().st_size:
            report(b, watch_partitions_report, b.work / "wp-watch.log", metrics, WATCH_PARTS_CHANGES,
                   WATCH_PARTS_RATE, b.work / "wp-full.json", b.work / "wp-full.time", zooms)
            print(f"  load={load_before} / {b.load_average()}, concurrency"
                  f" {b.opts.concurrency or figures.pool_size}", flush=True)
        check_against_fresh(b, parts_config)
        b.log("watch-partitions: uninstalling change capture and dropping the modified copy")
    restore_contributors(b, parts_config)
    unguard()
    remove_work(b, "wp-*")
