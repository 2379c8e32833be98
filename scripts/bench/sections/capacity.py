"""capacity: how many database cores one oar-tiles process can keep busy.

Per --capacity-rows size: the sample unclustered (--zoom), a discarded warm-up seed, the measured
seed under scripts/thread_cpu.py (every thread's CPU, and the CPU of the PostgreSQL backends that
served it), with --baseline-bin the same seed by that binary, and the shipped server-side baseline
for PostgreSQL's own CPU per tile. scripts/bench_capacity.py prints the report.
"""
import os
import subprocess

from bench.measure import compare
from bench.samples import default_sessions, ensure_sample, load_tile_list, make_config, run_baseline, tile_list


def labels_of(baseline_bin):
    """The binaries measured: `ours`, then `baseline-bin` given --baseline-bin."""
    return ["ours", "baseline-bin"] if baseline_bin else ["ours"]


def same_tiles_line(only_ours, only_theirs, differ, same):
    """(line, status) of the check that both binaries wrote the same tiles."""
    if only_ours + only_theirs + differ:
        return (f"  WARNING: the tiles differ from --baseline-bin's: {only_ours} only here,"
                f" {only_theirs} only there, {differ} with other bytes", 3)
    return f"  both binaries wrote the same {same} tiles, byte for byte", 0


def measured_seeds(b, n, args, figures_dir):
    """The warm-up seed, then each binary's measured seed under thread_cpu.py; returns the load
    average before them."""
    b.log(f"capacity: warm-up seed of {n} rows (discarded)")
    b.tool(*args, "--output", str(b.work / "capacity-warmup.mbtiles"), stdout=subprocess.DEVNULL)
    (b.work / "capacity-warmup.mbtiles").unlink(missing_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    load_before = b.load_average()
    for label in labels_of(b.opts.baseline_bin):
        binary = str(b.bin) if label == "ours" else b.opts.baseline_bin
        b.log(f"capacity: measured seed of {n} rows ({label})")
        subprocess.run(["python3", str(b.scripts("thread_cpu.py")), str(figures_dir / f"{label}.threads.json"),
                        "--", binary, *args, "--output", str(b.work / f"capacity-{label}.mbtiles"),
                        "--summary-json", str(figures_dir / f"{label}.summary.json")],
                       check=True, stdout=subprocess.DEVNULL)
    return load_before


def shipped_baseline(b, n, cfg, sessions, figures_dir):
    """The shipped baseline over our seed's tiles: its CPU in baseline.pg, its tiles in
    baseline.tiles."""
    schema = f"bench_{int(n)}"
    csv = b.work / "tiles.csv"
    tile_list(b.work / "capacity-ours.mbtiles", cfg.buffer, cfg.extent, sessions, csv)
    # Unique per run so that concurrent benchmarks of the same size cannot collide.
    table = f"{schema}.bench_tiles_{os.getpid()}"
    unregister = b.on_cleanup(lambda: b.psql(f"DROP TABLE IF EXISTS {table}", check=False,
                                             out=subprocess.DEVNULL))
    load_tile_list(b, table, csv)
    _, best_copy_cpu = run_baseline(b, table, schema, cfg, sessions, "copy")
    (figures_dir / "baseline.pg").write_text(f"{best_copy_cpu}\n", encoding="utf-8")
    lines = csv.read_text(encoding="utf-8").count("\n")
    (figures_dir / "baseline.tiles").write_text(f"{lines}\n", encoding="utf-8")
    b.psql(f"DROP TABLE {table}", out=subprocess.DEVNULL)
    unregister()


def capacity_of(b, n):
    """One size: the seeds, the baseline, the report, and the binaries' tiles compared."""
    ensure_sample(b, n)
    cfg = make_config(b, n, "unclustered", b.work / "capacity.toml")
    sessions = default_sessions(b, cfg)
    args = ["-q", "seed", "--config", str(b.work / "capacity.toml"), "--zoom", b.opts.zoom,
            *b.concurrency_args()]
    figures_dir = b.work / f"capacity-{n}"
    load_before = measured_seeds(b, n, args, figures_dir)
    shipped_baseline(b, n, cfg, sessions, figures_dir)
    labels = labels_of(b.opts.baseline_bin)
    env = dict(os.environ, BENCH_LOAD=f"{load_before} / {b.load_average()}", BENCH_ZOOM=f"z{b.opts.zoom}")
    b.failed(subprocess.run(["python3", str(b.scripts("bench_capacity.py")), str(figures_dir), str(n),
                             *labels], env=env).returncode)
    if b.opts.baseline_bin:
        line, status = same_tiles_line(*compare(b.work / "capacity-ours.mbtiles",
                                                b.work / "capacity-baseline-bin.mbtiles"))
        print(line)
        b.failed(status)
    for path in b.work.glob("capacity-*.mbtiles*"):
        path.unlink()


def section_capacity(b):
    """The capacity section, per --capacity-rows size."""
    for n in b.opts.capacity_rows:
        capacity_of(b, n)
