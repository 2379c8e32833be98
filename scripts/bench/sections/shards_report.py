"""The shards section's report: the shard plans on paper, the real shards against the full seed,
the capacity figure, and the cost model's coefficients fitted on the full seeds.

Every function reads the files `sections/shards.py` leaves in the work directory DIR:
shards-loads.txt, shards-census.txt, shards-VARIANT-plan-N.{time,txt},
shards-VARIANT-full.{time,json,pgcpu,mbtiles} and per real count and planner
shards-VARIANT-real-N-LABEL.{time,txt}, shards-VARIANT-N-LABEL-part-K.{time,json,pgcpu},
shards-VARIANT-N-LABEL-merge.time and the merged shards-VARIANT-N-LABEL.mbtiles; the shards' later
runs (--shard-runs) in shards-VARIANT-N-LABEL-run-R-part-K.{time,json,pgcpu}, R from 2.
"""
import math
import re
import statistics
from pathlib import Path

from bench.measure import fail, summary, tile_digests, time_v

PLAN_HEAD = re.compile(r"^tileset (\S+): (\d+) shards, split zoom (\d+), heaviest shard ([\d.]+) x mean$")
PLAN_SHARD = re.compile(r"^shard (\d+): weight (\d+) ")

FIT_NAMES = ("TILE_MICROS", "CLUSTER_TILE_MICROS", "ROW_MICROS", "CLUSTER_ROW_MICROS",
             "CELL_MICROS", "BYTE_MICROS")
BYTE_NAMES = ("TILE_BYTES", "ROW_BYTES", "CELL_BYTES")


def shard_plan(path):
    """(split zoom, weights) from `shard-plan` output of one tileset."""
    split, weights = None, []
    for line in Path(path).read_text(encoding="utf-8").splitlines(keepends=True):
        if m := PLAN_HEAD.match(line.strip()):
            if split is not None:
                fail(f"{path}: expected one tileset")
            split = int(m.group(3))
        elif m := PLAN_SHARD.match(line.strip()):
            weights.append(int(m.group(2)))
    if split is None or not weights:
        fail(f"{path}: no shard plan printed")
    return split, weights


def read_census(path):
    """Rows per non-empty tile of the census file (lines `x y count`), duplicates summed."""
    cells = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines(keepends=True):
        if line.strip():
            x, y, n = (int(v) for v in line.split())
            cells[(x, y)] = cells.get((x, y), 0) + n
    return cells


def pyramid(cells, deepest):
    """zoom -> {(x, y): rows} from the rows per tile of zoom `deepest`, each zoom summing its
    children."""
    levels = {deepest: cells}
    for z in range(deepest - 1, -1, -1):
        up = {}
        for (x, y), n in levels[z + 1].items():
            up[(x >> 1, y >> 1)] = up.get((x >> 1, y >> 1), 0) + n
        levels[z] = up
    return levels


def rows_read(levels, z, cell_depth):
    """Rows zoom z's clustered tiles read: each cell's rows, once for its own tile and once for
    every other non-empty tile whose one-cell margin reaches it."""
    side = 1 << (z + cell_depth)
    read = 0
    for (cx, cy), n in levels[z + cell_depth].items():
        tx = {cx >> cell_depth} | {(cx + d) >> cell_depth for d in (-1, 1) if 0 <= cx + d < side}
        ty = {cy >> cell_depth} | {(cy + d) >> cell_depth for d in (-1, 1) if 0 <= cy + d < side}
        read += n * sum(1 for a in tx for b in ty if (a, b) in levels[z])
    return read


def census(path, deepest=14, cluster_maxzoom=11, cell_depth=3):
    """Per zoom from the section's census (rows per non-empty tile of zoom `deepest`): non-empty
    tiles, rows, and where clustered the non-empty cells (tiles `cell_depth` zooms deeper) and the
    rows its tiles read: their own and those of the neighbours' cells in their one-cell margin (as
    src/plan/shard/cost.rs estimates them)."""
    levels = pyramid(read_census(path), deepest)
    out = {}
    for z in range(deepest + 1):
        rows = sum(levels[z].values())
        tiles = len(levels[z])
        if z <= cluster_maxzoom and z + cell_depth <= deepest:
            out[z] = (tiles, rows, len(levels[z + cell_depth]), rows_read(levels, z, cell_depth))
        else:
            out[z] = (tiles, rows, rows, rows)
    return out


def solve(a, b):
    """x of the square system a x = b (Gaussian elimination with partial pivoting), or None when
    the system is singular."""
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
    """Least squares with coefficients >= 0: solve the normal equations, drop the most negative
    coefficient, again (a singular system drops the last one)."""
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


def shards_fit(d, variants):
    """Prints the cost model's coefficients (src/plan/shard/cost.rs) fitted on the full seeds'
    per-zoom render times, the bytes' coefficients, and each zoom's render time beside the fit."""
    xs, ys, labels = fit_rows(d, variants)
    coef = nnls(xs, ys, FIT_NAMES)
    print("  cost model fitted on the full seeds' per-zoom render times (least squares, >= 0):")
    print("    " + ", ".join(f"{n} = {c:.4g}" for n, c in zip(FIT_NAMES, coef)))
    # Bytes per tile at plan time come from the features: stored bytes = a tile's fixed part plus
    # a part per point feature or per cluster.
    bx = [(x[0], x[2], x[4]) for x in xs]
    by = [x[5] for x in xs]
    bcoef = nnls(bx, by, BYTE_NAMES)
    print("    " + ", ".join(f"{n} = {c:.4g}" for n, c in zip(BYTE_NAMES, bcoef))
          + " (stored bytes, fitted the same way)")
    print(f"    {'zoom':<7} {'tiles':>8} {'rows':>8} {'cells':>8} {'MB':>8} {'render s':>9} {'fitted s':>9}")
    for label, x, y in zip(labels, xs, ys):
        fitted = sum(c * v for c, v in zip(coef, x))
        print(f"    {label:<7} {x[0]:>8} {x[2] + x[3]:>8} {x[4]:>8} {x[5] / 1e6:8.2f} {y / 1e6:9.2f}"
              f" {fitted / 1e6:9.2f}")


def cpu_beyond_render(samples):
    """Prints what the real shards' CPU (PostgreSQL's and the tool's) took beyond their render, per
    tile and per stored byte, fitted over every shard of the run: a shard's wall time follows its
    CPU, and the render times the cost model is fitted on leave out the tool's encoding,
    compression and writes and PostgreSQL's work around each statement. In render units (CPU over
    the render's coefficient) they are what src/plan/shard/cost.rs adds to TILE_MICROS and
    BYTE_MICROS."""
    if not samples:
        return
    xs = [(render * 1e6, tiles, size) for render, tiles, size, _, _ in samples]
    both = nnls(xs, [(tool + pg) * 1e6 for *_, tool, pg in samples], ("RENDER", "TILE", "BYTE"))
    tool = nnls([x[1:] for x in xs], [tool * 1e6 for *_, tool, _ in samples], ("TILE", "BYTE"))
    per = both[0] or float("nan")
    print(f"  CPU beyond the render, fitted over the {len(samples)} real shards (least squares, >= 0): "
          f"PG + tool CPU = {both[0]:.3f} x render + {both[1]:.3g} µs a tile + {both[2]:.3g} µs a byte "
          f"(tool CPU alone: {tool[0]:.3g} µs a tile + {tool[1]:.3g} µs a byte); in render units "
          f"{both[1] / per:.3g} µs a tile and {both[2] / per:.3g} µs a byte on top of the render's fit")


def render_seconds(s, below=None):
    """Render seconds summed over a summary's zooms (those under `below` only, if given)."""
    return sum(z["render_ms_total"] for z in s["per_zoom"]
               if below is None or z["zoom"] < below) / 1000


def max_over_mean(xs):
    """The largest of xs over their mean (NaN when they sum to 0)."""
    return max(xs) * len(xs) / sum(xs) if sum(xs) else float("nan")


def slowest_over_floor(xs, dearest):
    """The slowest unit over the larger of the units' mean and the dearest tile: no plan can
    balance below a tile that takes longer than the mean."""
    return max(xs) / max(sum(xs) / len(xs), dearest)


def read_parts(base, real):
    """(k, wall, tool CPU, PG CPU, summary) of each of `real` shards whose files start with base."""
    parts = []
    for k in range(real):
        wall, cpu, _ = time_v(f"{base}-part-{k}.time")
        s = summary(f"{base}-part-{k}.json")
        pg = float(Path(f"{base}-part-{k}.pgcpu").read_text(encoding="utf-8"))
        parts.append((k, wall, cpu, pg, s))
    return parts


def later_runs(base, real):
    """Each later run's walls (runs 2, 3, ... of the same plan, in order), per shard."""
    runs = []
    while all(Path(f"{base}-run-{len(runs) + 2}-part-{k}.time").exists() for k in range(real)):
        runs.append([time_v(f"{base}-run-{len(runs) + 2}-part-{k}.time")[0] for k in range(real)])
    return runs


def noise_alone(spread, count):
    """The slowest over the mean that `count` shards of equal work would show in one run from a
    run-to-run spread (relative sd) of `spread` alone: the mean plus the expected largest of
    `count` normal draws (Blom's approximation) in units of the spread."""
    return 1 + spread * statistics.NormalDist().inv_cdf((count - 0.375) / (count + 0.25))


def print_runs(walls, later, floor_wall):
    """The balance over every run of one plan: per run, and on each shard's median wall; and the
    run-to-run spread of a shard's wall with the balance that spread alone would show. Returns the
    medians' balance (None with one run)."""
    if not later:
        return None
    runs = [walls, *later]
    medians = [statistics.median(col) for col in zip(*runs)]
    spread = math.sqrt(statistics.fmean((statistics.stdev(col) / statistics.fmean(col)) ** 2
                                        for col in zip(*runs)))
    by_median = slowest_over_floor(medians, floor_wall)
    print(f"    {len(runs)} runs of the plan: slowest / max(mean, dearest tile alone) per run "
          f"{', '.join(f'{slowest_over_floor(r, floor_wall):.3f}' for r in runs)}; on each shard's median wall "
          f"{by_median:.3f} (target <= 1.10); a shard's wall varies by {spread:.1%} (sd) from run to run, "
          f"which alone would put the slowest of {len(walls)} equal shards at "
          f"{noise_alone(spread, len(walls)):.3f} x their mean in one run")
    print(f"    median wall s per shard: {' '.join(f'{m:.2f}' for m in medians)}")
    return by_median


def print_parts(parts, split, planned):
    """The real shards' table, one row per shard."""
    total_wall = sum(wall for _, wall, _, _, _ in parts)
    for k, wall, cpu, pg, s in parts:
        rate = s["tiles_written"] / s["seconds"] if s["seconds"] else 0
        print(f"    {k:>5} {wall:7.2f} {s['seconds']:7.2f} {wall - s['seconds']:6.2f} {cpu:8.2f} {pg:7.2f} "
              f"{s['tiles_written']:>8} {rate:8.0f} {s['bytes_written'] / 1e6:7.1f} {render_seconds(s):7.2f} "
              f"{render_seconds(s, split):6.2f} {planned[k] / max(sum(planned), 1):8.1%} "
              f"{wall / total_wall:6.1%}")


def check_merged(d, v, base, full, shard_tiles):
    """0 when the merged shards equal the full seed tile for tile (and wrote as many), else 3;
    prints which."""
    a, b = tile_digests(f"{d}/shards-{v}-full.mbtiles"), tile_digests(f"{base}.mbtiles")
    if a != b or shard_tiles != full["tiles_written"]:
        print(f"    WARNING: the merged shards differ from the full seed ({len(b)} against {len(a)} "
              f"tiles, {sum(1 for t in a.keys() & b.keys() if a[t] != b[t])} with other bytes; "
              f"{shard_tiles} tiles written by the shards against {full['tiles_written']})")
        return 3
    print(f"    the merged shards equal the full seed tile for tile ({len(a)} tiles)")
    return 0


def shards_real(d, v, real, label, full, full_wall, floor, results, samples):
    """One planner's real shards of one variant and count: the table, the balance and the check
    against the full seed; notes (wall ratio, seeding ratio, tiles/s, PG CPU/tile, tiles, wall
    ratio over the dearest tile's render, the ratio on the shards' median walls over every run or
    None) in `results`, each shard's (render s, tiles, bytes, tool
    CPU, PG CPU) appended to `samples`. `floor` is print_full's. Returns the exit status (3 when
    the merged shards differ)."""
    render, alone_wall, alone_seed = floor
    base = f"{d}/shards-{v}-{real}-{label}"
    plan_wall, _, _ = time_v(f"{d}/shards-{v}-real-{real}-{label}.time")
    split, planned = shard_plan(f"{d}/shards-{v}-real-{real}-{label}.txt")
    print(f"  {v}, {real} real shards one after another, {label} planner (plan {plan_wall:.2f} s, split "
          f"zoom {split}); start = wall - seeding (process start, plan read, finish); "
          f"render above = render s of zooms < {split}:")
    print(f"    {'shard':>5} {'wall s':>7} {'seed s':>7} {'start':>6} {'tool CPU':>8} {'PG CPU':>7} "
          f"{'tiles':>8} {'tiles/s':>8} {'MB':>7} {'render':>7} {'above':>6} {'planned':>8} {'real':>6}")
    parts = read_parts(base, real)
    walls = [p[1] for p in parts]
    seeds = [p[4]["seconds"] for p in parts]
    rends = [render_seconds(p[4]) for p in parts]
    cpus = [p[2] + p[3] for p in parts]
    pgs = [p[3] for p in parts]
    shard_tiles = sum(p[4]["tiles_written"] for p in parts)
    print_parts(parts, split, planned)
    samples.extend((render_seconds(s), s["tiles_written"], s["bytes_written"], cpu, pg)
                   for _, _, cpu, pg, s in parts)
    merge_wall, _, _ = time_v(f"{base}-merge.time")
    by_wall, by_seed = slowest_over_floor(walls, alone_wall), slowest_over_floor(seeds, alone_seed)
    by_render = slowest_over_floor(walls, render)
    print(f"    slowest / max(mean, dearest tile alone {alone_wall:.2f} s wall, {alone_seed:.2f} s seeding): wall "
          f"{by_wall:.3f}, seeding {by_seed:.3f} (target <= 1.10); over max(mean, its render {render:.2f} s): "
          f"wall {by_render:.3f}; max/mean: wall"
          f" {max_over_mean(walls):.3f} (planned {max_over_mean(planned):.3f}), seeding"
          f" {max_over_mean(seeds):.3f}, render {max_over_mean(rends):.3f}, tool + PG CPU"
          f" {max_over_mean(cpus):.3f} (PG CPU: the backends the postmaster reaped during the shard, other "
          f"clients' included); merge {merge_wall:.2f} s")
    print(f"    shards' total / full seed {sum(walls) / full_wall:.3f}; full seed / heaviest shard "
          f"{full_wall / max(walls):.2f} (the speed-up {real} machines would give, merge left out); "
          f"{shard_tiles / sum(seeds):.0f} tiles/s per shard, PG CPU {1e3 * sum(pgs) / max(shard_tiles, 1):.3f} "
          "ms/tile")
    by_median = print_runs(walls, later_runs(base, real), alone_wall)
    results[(v, real, label)] = (by_wall, by_seed, shard_tiles / sum(seeds), sum(pgs) / max(shard_tiles, 1),
                                 shard_tiles, by_render, by_median)
    return check_merged(d, v, base, full, shard_tiles)


def capacity_line(v, real, note, rows, points=100_000_000, seconds=600, cores=32):
    """The capacity figure of one variant from its run's note (see shards_real): shards a
    `points`-row registry needs for z0-14 within `seconds` on one PostgreSQL of `cores` cores,
    tiles and PG CPU scaled linearly in rows."""
    _, _, rate, pg_per_tile, tiles = note[:5]
    scale = points / rows
    tiles_big = tiles * scale
    pg_big = pg_per_tile * tiles_big
    shards = tiles_big / (rate * seconds) if rate else float("inf")
    return (f"  {v}: {points / 1e6:.0f}M points, z0-14 in {seconds / 60:.0f} min: about {tiles_big / 1e6:.1f}M "
            f"tiles, {shards:.0f} shards at {rate:.0f} tiles/s each ({real}-shard run), PG CPU "
            f"{pg_big / 3600:.1f} core-hours = {pg_big / seconds:.0f} cores busy for {seconds / 60:.0f} min "
            f"against {cores}: {'fits' if pg_big / seconds <= cores else 'does not fit'} one "
            f"{cores}-core PostgreSQL (linear in rows from {rows}; a rough figure)")


def capacity_figure(results, rows, variants):
    """Prints the capacity figure of each variant from the new planner's most sharded run (a rough
    figure: dense places add fewer tiles than rows)."""
    for v in variants:
        runs = sorted(k for k in results if k[0] == v and k[2] == "new")
        if runs:
            print(capacity_line(v, runs[-1][1], results[runs[-1]], rows))


def print_plans(d, v, counts):
    """The dry-run plans' table of one variant."""
    print(f"  {v}: shard plans (dry run); weights are estimated CPU times (s); speed-up with N "
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


def print_full(d, v):
    """The full seed's line and its dearest tile's; returns (summary, wall, dearest seconds)."""
    full_wall, full_cpu, _ = time_v(f"{d}/shards-{v}-full.time")
    full = summary(f"{d}/shards-{v}-full.json")
    full_pg = float(Path(f"{d}/shards-{v}-full.pgcpu").read_text(encoding="utf-8"))
    print(f"  {v}: full seed (the baseline) {full_wall:.2f} s wall, {full['seconds']:.2f} s seeding, "
          f"tool CPU {full_cpu:.2f} s, PG CPU {full_pg:.2f} s, {full['tiles_written']} tiles, "
          f"render {render_seconds(full):.1f} s")
    # The dearest tile's render: the longest one tile (or the statement it rode in) took in the
    # full seed. Its floor: that tile seeded alone (render, compression, write), where measured.
    render = max(z["render_ms_max"] for z in full["per_zoom"]) / 1000
    alone_wall, alone_seed, alone = render, render, ""
    rounds = sorted(Path(d).glob(f"shards-{v}-dearest-*.json"))
    if rounds:
        walls = [time_v(path.with_suffix(".time"))[0] for path in rounds]
        runs = [summary(path) for path in rounds]
        alone_wall, alone_seed = statistics.median(walls), statistics.median(r["seconds"] for r in runs)
        a = runs[0]
        tile = a["slowest_tiles"][0]["tile"] if a["slowest_tiles"] else "none"
        alone = (f"; seeded alone ({a['tiles_written']} tile, {tile}, {a['bytes_written'] / 1e6:.1f} MB), median of "
                 f"{len(rounds)}: {alone_wall:.2f} s wall ({', '.join(f'{w:.2f}' for w in walls)}), "
                 f"{alone_seed:.2f} s seeding, the floor")
    print(f"  {v}: dearest tile {render:.2f} s (the full seed's largest render_ms_max){alone}")
    return full, full_wall, (render, alone_wall, alone_seed)


def cell_line(label, note):
    """One planner's part of a cell's summary line, from its run's note (see shards_real)."""
    by_wall, by_seed, *_, by_render, by_median = note
    medians = "" if by_median is None else f", {by_median:.3f} on the shards' median walls"
    return (f"{label} {by_wall:.3f} wall / {by_seed:.3f} seeding ({by_render:.3f} over its render) in the "
            f"first run{medians}")


def shards_report(d, rows, zooms, variants, reals, planners, counts):
    """The shards section's report; returns its exit status (3 when merged shards differ from
    the full seed)."""
    results, samples = {}, []
    print(f"shards: {rows} facilities, sample config clustered as shipped and unclustered, z{zooms}; "
          "load averages (1, 5, 15 min):")
    for line in Path(f"{d}/shards-loads.txt").read_text(encoding="utf-8").splitlines(keepends=True):
        print(f"    {line.rstrip()}")
    status = 0
    for v in variants:
        print_plans(d, v, counts)
        full, full_wall, floor = print_full(d, v)
        for real in reals:
            for label in planners:
                status = max(status, shards_real(d, v, real, label, full, full_wall, floor, results,
                                                 samples))
    for v in variants:
        for real in reals:
            cells = [cell_line(label, results[(v, real, label)])
                     for label in planners if (v, real, label) in results]
            print(f"  slowest unit / max(mean, dearest tile alone), {v}, {real} shards: {'; '.join(cells)} "
                  "(target <= 1.10)")
    capacity_figure(results, rows, variants)
    cpu_beyond_render(samples)
    shards_fit(d, variants)
    return status
