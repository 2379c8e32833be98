"""shards: shard plans on paper, and sharded runs for real (see the section's entry in
`python3 -m bench --help`).

Per variant (clustered as shipped, unclustered): `shard-plan --dry-run` for 4, 16 and 64 shards,
a full seed (the baseline), then for 4 and 16 shards the stored plan's shards one after another and
`merge`, with this binary's planner and, given --baseline-bin, the baseline's, alternated; the
shards run --shard-runs times, the merge once. The report (sections/shards_report.py) reads the
files this leaves in the work directory.
"""
import math
import os
import subprocess
from pathlib import Path

from bench.measure import summary
from bench.samples import ensure_sample, make_config
from bench.sections.shards_report import shards_report

SHARD_COUNTS = (4, 16, 64)
SHARD_REAL = (4, 16)
SHARD_ZOOM = "0-14"
SHARD_VARIANTS = ("clustered", "unclustered")

# Rows per non-empty tile of zoom 14 by the rows' points: the report's fit derives from them each
# zoom's tiles, the cells of its clustered tiles and the rows those read (their margins too).
CENSUS_SQL = """\
SELECT floor((ST_X(m) + 20037508.342789244) / (40075016.685578488 / 16384))::int8 AS x,
       floor((20037508.342789244 - ST_Y(m)) / (40075016.685578488 / 16384))::int8 AS y,
       count(*)
FROM (SELECT ST_Transform(location, 3857) AS m FROM bench_{n}.facilities
      WHERE location IS NOT NULL) r
GROUP BY 1, 2;
"""


def planner_order(round_, has_baseline):
    """The planners of one real count, in the order they run: `new` alone, or `new` and `old`
    alternating which goes first, so neither always meets the warmer cache or the quieter
    machine."""
    if not has_baseline:
        return ["new"]
    return ["new", "old"] if round_ % 2 == 0 else ["old", "new"]


def timed(time_path, argv, stdout_path=None):
    """argv under /usr/bin/time -v (its report in time_path), stdout into stdout_path or
    discarded."""
    cmd = ["/usr/bin/time", "-v", "-o", str(time_path), *map(str, argv)]
    if stdout_path is None:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    else:
        with open(stdout_path, "w", encoding="utf-8") as out:
            subprocess.run(cmd, check=True, stdout=out)


def write_pg_cpu(path, seconds):
    """The PG CPU of a run, as bash's cpu_since printed it."""
    path.write_text(f"{seconds:.2f}\n", encoding="utf-8")


def load_mark(b, label):
    """Notes the load average at a point of the section, for the report's first lines."""
    with open(b.work / "shards-loads.txt", "a", encoding="utf-8") as f:
        f.write(f"{label}: {b.load_average()}\n")


def plans_on_paper(b, v, config):
    """`shard-plan --dry-run` for every count of SHARD_COUNTS."""
    w = b.work
    for count in SHARD_COUNTS:
        b.log(f"shards ({v}): shard-plan --shards {count} --dry-run")
        timed(w / f"shards-{v}-plan-{count}.time",
              [b.bin, "-q", "shard-plan", "--config", config, "--zoom", SHARD_ZOOM,
               "--output", w / f"shards-{v}.mbtiles", "--shards", str(count), "--dry-run"],
              w / f"shards-{v}-plan-{count}.txt")


def full_seed(b, v, config):
    """The discarded z0-2 warm-up, then the full seed (the baseline) with its PG CPU."""
    w = b.work
    # Reads every row once (clustered low zooms are cheap), so the full seed does not pay for a
    # cold cache that the shards after it would not.
    b.log(f"shards ({v}): warm-up seed z0-2 (discarded)")
    b.tool("-q", "seed", *b.concurrency_args(), "--config", str(config), "--zoom", "0-2",
           "--output", str(w / "shards-warmup.mbtiles"), stdout=subprocess.DEVNULL)
    b.log(f"shards ({v}): full seed, zoom {SHARD_ZOOM} (the baseline)")
    cpu_before = b.reaped_cpu()
    b.timed_seed(f"shards-{v}-full", "--config", str(config), "--zoom", SHARD_ZOOM,
                 "--output", str(w / f"shards-{v}-full.mbtiles"))
    write_pg_cpu(w / f"shards-{v}-full.pgcpu", b.cpu_since(cpu_before))


def inside_tile(z, x, y):
    """W, S, E, N of a box inside tile z/x/y (a hundredth of its side in from each edge), so a
    seed over it renders that tile alone at zoom z."""
    n = 1 << z
    lon = lambda t: t / n * 360 - 180  # noqa: E731
    lat = lambda t: math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * t / n))))  # noqa: E731
    return lon(x + 0.01), lat(y + 0.99), lon(x + 0.99), lat(y + 0.01)


DEAREST_ROUNDS = 3


def dearest_alone(b, v, config):
    """The full seed's slowest tile seeded alone (its zoom only, a box inside it), DEAREST_ROUNDS
    times: its render, compression and write, which no shard that holds the tile can finish under
    (the report takes the median: one unclustered z0 tile of 1M rows took 5.9 s in one run, 6.7 s
    in another)."""
    w = b.work
    z, x, y = (int(p) for p in summary(w / f"shards-{v}-full.json")["slowest_tiles"][0]["tile"].split("/"))
    for r in range(DEAREST_ROUNDS):
        b.log(f"shards ({v}): the full seed's dearest tile, {z}/{x}/{y}, seeded alone ({r + 1}/{DEAREST_ROUNDS})")
        output = w / f"shards-{v}-dearest.mbtiles"
        for path in w.glob(f"{output.name}*"):
            path.unlink()
        b.timed_seed(f"shards-{v}-dearest-{r}", "--config", str(config), "--zoom", f"{z}-{z}", "--bbox",
                     ",".join(f"{c:.9f}" for c in inside_tile(z, x, y)), "--output", str(output))


def shard_seed(b, binary, config, output, count, k, base):
    """Shard k of the plan stored beside output, seeded under /usr/bin/time, its summary and PG CPU
    in files starting with base; returns its part's path."""
    cpu_before = b.reaped_cpu()
    timed(f"{base}-part-{k}.time",
          [binary, "-q", "seed", *b.concurrency_args(), "--config", config, "--zoom", SHARD_ZOOM,
           "--output", output, "--shard", f"{k}/{count}", "--summary-json", f"{base}-part-{k}.json"])
    write_pg_cpu(Path(f"{base}-part-{k}.pgcpu"), b.cpu_since(cpu_before))
    return output.with_name(f"{output.stem}.part-{k}-of-{count}.mbtiles")


def remove_part(part):
    """A shard's part and its sidecars."""
    for path in part.parent.glob(f"{part.name}*"):
        path.unlink()


def real_shards(b, v, config, count, label):
    """One planner's plan stored, its shards seeded one after another, and merged."""
    w = b.work
    binary = planner_bin(b, label)
    stem = f"shards-{v}-{count}-{label}"
    output = w / f"{stem}.mbtiles"
    # The plan is stored first, so the shards run the plan printed here (none plans).
    timed(w / f"shards-{v}-real-{count}-{label}.time",
          [binary, "-q", "shard-plan", "--config", config, "--zoom", SHARD_ZOOM,
           "--output", output, "--shards", str(count)],
          w / f"shards-{v}-real-{count}-{label}.txt")
    parts = []
    for k in range(count):
        b.log(f"shards ({v}, {label} planner): seed --shard {k}/{count}")
        parts.append(shard_seed(b, binary, config, output, count, k, w / stem))
    b.log(f"shards ({v}, {label} planner): merge {count} parts")
    timed(w / f"{stem}-merge.time", [binary, "-q", "merge", output, *parts])
    # The report reads the merged file, not the parts; at 10M rows every copy is gigabytes.
    for part in parts:
        remove_part(part)
    load_mark(b, f"{v} after {count} shards ({label} planner)")


def rerun_shards(b, v, config, count, label, run):
    """The same stored plan's shards seeded again, one after another (run 2, 3, ... of
    --shard-runs): only their times are kept, in files of stem shards-V-N-LABEL-run-R."""
    w = b.work
    binary = planner_bin(b, label)
    output = w / f"shards-{v}-{count}-{label}.mbtiles"
    for k in range(count):
        b.log(f"shards ({v}, {label} planner, run {run}): seed --shard {k}/{count}")
        # A part left in place would be resumed, not seeded again.
        remove_part(shard_seed(b, binary, config, output, count, k,
                               w / f"shards-{v}-{count}-{label}-run-{run}"))
    load_mark(b, f"{v} after {count} shards ({label} planner, run {run})")


def planner_bin(b, label):
    """The binary of planner `label`: this one ("new") or --baseline-bin ("old")."""
    return b.bin if label == "new" else b.opts.baseline_bin


def remove_later_runs(work):
    """The files of the shards' later runs (--shard-runs) an earlier bench left in `work`."""
    for path in work.glob("shards-*-run-*-part-*"):
        path.unlink()


def remove_outputs(b):
    """Every MBTiles (and its sidecars) the section wrote."""
    for path in b.work.glob("shards*.mbtiles*"):
        path.unlink()


def section_shards(b):
    """The shards section: plans, full seeds, real shards and merges, then the report."""
    variants = (os.environ.get("SHARDS_VARIANTS") or " ".join(SHARD_VARIANTS)).split()
    for v in variants:
        if v not in SHARD_VARIANTS:
            b.die(f"SHARDS_VARIANTS: '{v}' is not clustered or unclustered")
    n = b.opts.shard_rows
    ensure_sample(b, n)
    (b.work / "shards-loads.txt").unlink(missing_ok=True)
    # The report reads every later run it finds: none may be left from a run with more of them.
    remove_later_runs(b.work)
    census = b.psql(CENSUS_SQL.format(n=int(n)), tuples=True)
    (b.work / "shards-census.txt").write_text(census.replace("|", " "), encoding="utf-8")
    has_baseline = bool(b.opts.baseline_bin)
    round_ = 0
    for v in variants:
        config = b.work / f"shards-{v}.toml"
        make_config(b, n, v, config)
        load_mark(b, f"{v} start")
        plans_on_paper(b, v, config)
        full_seed(b, v, config)
        dearest_alone(b, v, config)
        load_mark(b, f"{v} after the full seed")
        for count in SHARD_REAL:
            for run in range(1, b.opts.shard_runs + 1):
                labels = planner_order(round_, has_baseline)
                if has_baseline:
                    round_ += 1
                for label in labels:
                    if run == 1:
                        real_shards(b, v, config, count, label)
                    else:
                        rerun_shards(b, v, config, count, label, run)
    planners = ["new", "old"] if has_baseline else ["new"]
    b.failed(shards_report(b.work, n, SHARD_ZOOM, variants, SHARD_REAL, planners, SHARD_COUNTS))
    remove_outputs(b)
