"""Sections tls and pmtiles: the main section's seed (--rows, --zoom, unclustered) in two
variants alternated over three rounds, their median wall time, peak RSS and ratio."""
from __future__ import annotations

import os
import statistics
import subprocess
from pathlib import Path

from bench import measure, samples

ROUNDS = (1, 2, 3)


def section_tls(b) -> None:
    """The seed alternately in plain text and over TLS with full verification against the test CA
    of scripts/pg-test-servers.sh, on the same server (target: <= 1.05)."""
    rows, zoom = b.opts.rows, b.opts.zoom
    samples.ensure_sample(b, rows)
    config = b.work / "tls.toml"
    samples.make_config(b, rows, "unclustered", config)
    listed = subprocess.run([str(b.scripts("pg-test-servers.sh"))], stdout=subprocess.PIPE,
                            text=True, check=True).stdout
    certs = next((line.removeprefix("OAR_TILES_TEST_TLS_DIR=") for line in listed.splitlines()
                  if line.startswith("OAR_TILES_TEST_TLS_DIR=")), "")
    if not certs:
        b.die("scripts/pg-test-servers.sh printed no certificate directory")
    # The server certificate names localhost.
    base = b.database_url.replace("@127.0.0.1:", "@localhost:", 1)
    url = {"plain": f"{base}?sslmode=disable",
           "tls": f"{base}?sslmode=verify-full&sslrootcert={certs}/ca.crt"}
    b.log("tls: warm-up seed (discarded)")
    b.tool("-q", "seed", *b.concurrency_args(), "--config", str(config), "--zoom", zoom,
           "--output", str(b.work / "tls-warmup.mbtiles"), stdout=subprocess.DEVNULL,
           env={**os.environ, "DATABASE_URL": url["plain"]})
    for round_ in ROUNDS:
        for mode in ("plain", "tls"):
            b.log(f"tls: round {round_}, {mode}")
            b.timed_seed(f"tls-{mode}-{round_}", "--config", str(config), "--zoom", zoom,
                         "--output", str(b.work / f"tls-{mode}-{round_}.mbtiles"),
                         env={"DATABASE_URL": url[mode]})
    measure.report(b, lambda: compare_runs(
        b.work, f"tls: seed of {rows} facilities, zoom {zoom}, unclustered", "1.05",
        "tls-plain", "plain (sslmode=disable)", "tls-tls", "TLS (sslmode=verify-full)"))
    for path in b.work.glob("tls-*.mbtiles"):
        path.unlink()


def section_pmtiles(b) -> None:
    """The seed alternately into MBTiles and into a PMTiles archive (store plus archive)
    (target: <= 1.10)."""
    rows, zoom = b.opts.rows, b.opts.zoom
    samples.ensure_sample(b, rows)
    config = b.work / "pmtiles.toml"
    samples.make_config(b, rows, "unclustered", config)
    b.log("pmtiles: warm-up seed (discarded)")
    b.tool("-q", "seed", *b.concurrency_args(), "--config", str(config), "--zoom", zoom,
           "--output", str(b.work / "pm-warmup.mbtiles"), stdout=subprocess.DEVNULL)
    for round_ in ROUNDS:
        for fmt in ("mbtiles", "pmtiles"):
            b.log(f"pmtiles: round {round_}, {fmt}")
            remove(b.work.glob("pm-out.*"))
            b.timed_seed(f"pm-{fmt}-{round_}", "--config", str(config), "--zoom", zoom,
                         "--output", str(b.work / f"pm-out.{fmt}"))
    measure.report(b, lambda: compare_runs(
        b.work, f"pmtiles: seed of {rows} facilities, zoom {zoom}, unclustered", "1.10",
        "pm-mbtiles", "MBTiles", "pm-pmtiles", "PMTiles"))
    remove(b.work.glob("pm-out.*"))
    remove(b.work.glob("pm-warmup.*"))


def remove(paths) -> None:
    """Deletes files and trees (a PMTiles output may leave a directory beside its archive)."""
    import shutil
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def medians(work: Path, name: str) -> tuple[float, float]:
    """The median wall seconds and the peak RSS (MB) of rounds 1-3 of a timed seed NAME."""
    runs = [measure.time_v(work / f"{name}-{r}.time") for r in ROUNDS]
    return statistics.median(w for w, _, _ in runs), max(r for _, _, r in runs)


def compare_runs(work: Path, title: str, target: str, name_a: str, label_a: str, name_b: str,
                 label_b: str) -> int:
    """Prints the median wall time and peak RSS of rounds 1-3 of two timed seeds, and B's time as
    a ratio of A's against TARGET (as written, e.g. '1.10') (bench.sh's compare_runs)."""
    a, b = medians(work, name_a), medians(work, name_b)
    print(f"{title}; median wall of 3 runs each, peak RSS")
    for label, (wall, rss) in ((label_a, a), (label_b, b)):
        print(f"  {label:<34} {wall:8.2f} s  {rss:8.1f} MB")
    ratio = b[0] / a[0]
    print(f"  {label_b} / {label_a.split(' ')[0]:<12} {ratio:8.3f}   (target <= {target}:"
          f" {'met' if ratio <= float(target) else 'NOT met'})")
    return 0
