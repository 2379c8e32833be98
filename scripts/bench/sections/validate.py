"""validate: how long checking an output takes, beside the seed that wrote it.

The sample (--rows) seeded as sample-config.toml ships it (clustered, --zoom) into MBTiles, then:
`validate` (container, every tile, metadata, agg_tiles_hash), `validate --against-db --all` (the
whole pyramid rendered again and compared), and, when martin's `mbtiles` CLI is installed
($OAR_TILES_TEST_MBTILES_CLI, `mbtiles` on PATH, or where scripts/test.sh builds it),
`mbtiles validate --agg-hash verify` on the same file, whose verdict should agree. The seed's own
wall time is the baseline.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.measure import report, time_v
from bench.samples import ensure_sample, make_config

CHECKS = (("validate-plain", "validate"), ("validate-db", "validate --against-db --all"))


def mbtiles_cli(env=os.environ):
    """martin's `mbtiles` CLI: $OAR_TILES_TEST_MBTILES_CLI, else `mbtiles` on PATH, else where
    scripts/test.sh builds it if it is there; None when none is."""
    found = env.get("OAR_TILES_TEST_MBTILES_CLI") or shutil.which("mbtiles")
    if found:
        return found
    cache = env.get("XDG_CACHE_HOME") or f"{env.get('HOME', '')}/.cache"
    built = Path(cache) / "oar-tiles" / "mbtiles-cli" / "bin" / "mbtiles"
    return str(built) if os.access(built, os.X_OK) else None


def timed_check(work, name, argv, out, stderr=None):
    """argv under /usr/bin/time -v (WORK/NAME.time), stdout into OUT; its exit status in
    WORK/NAME.code (a check that finds problems exits non-zero, which is a figure, not an error)."""
    with open(out, "w", encoding="utf-8") as f:
        code = subprocess.run(["/usr/bin/time", "-v", "-o", str(work / f"{name}.time"), *map(str, argv)],
                              stdout=f, stderr=stderr).returncode
    (work / f"{name}.code").write_text(f"{code}\n", encoding="utf-8")


def read_code(work, name):
    """A check's exit status, as written by timed_check."""
    return (work / f"{name}.code").read_text(encoding="utf-8").strip()


def validate_report(work, rows, zoom):
    """The section's report from the files it leaves in WORK; returns the exit status (3 when
    martin's verdict disagrees with ours)."""
    work = Path(work)
    seed_wall, _, seed_rss = time_v(work / "validate-seed.time")
    tiles = json.loads(Path(work / "validate-seed.json").read_text(encoding="utf-8"))[0]["tiles_written"]
    print(f"validate: {rows} facilities, zoom {zoom}, clustered, MBTiles of {tiles} tiles")
    print(f"  {'seed (baseline)':<40} {seed_wall:8.2f} s  {seed_rss:8.1f} MB")
    for name, label in CHECKS:
        wall, _, rss = time_v(work / f"{name}.time")
        problems = json.loads(Path(work / f"{name}.json").read_text(encoding="utf-8"))["problems"]
        print(f"  {label:<40} {wall:8.2f} s  {rss:8.1f} MB  {wall / seed_wall:6.2f} x seed"
              f"  exit {read_code(work, name)}, {problems} problem(s)")
    if not (work / "validate-mbtiles.code").exists():
        print("  mbtiles validate: not installed (scripts/test.sh installs it; set OAR_TILES_TEST_MBTILES_CLI)")
        return 0
    wall, _, rss = time_v(work / "validate-martin.time")
    code, ours = read_code(work, "validate-mbtiles"), read_code(work, "validate-plain")
    agree = (code == "0") == (ours == "0")
    print(f"  {'mbtiles validate --agg-hash verify':<40} {wall:8.2f} s  {rss:8.1f} MB  exit {code}:"
          f" {'agrees' if agree else 'DISAGREES'} with validate (exit {ours})")
    if agree:
        return 0
    print((work / "validate-martin.out").read_text(encoding="utf-8", errors="replace"))
    return 3


def remove_outputs(work):
    """The seeded MBTiles and its sidecars."""
    for path in work.glob("validate.mbtiles*"):
        path.unlink()


def section_validate(b):
    """The validate section: the seed, the checks, the report."""
    w = b.work
    cli = mbtiles_cli()
    ensure_sample(b, b.opts.rows)
    make_config(b, b.opts.rows, "clustered", w / "validate.toml")
    remove_outputs(w)
    b.log("validate: seed (the baseline)")
    b.timed_seed("validate-seed", "--config", str(w / "validate.toml"), "--zoom", b.opts.zoom,
                 "--output", str(w / "validate.mbtiles"))
    b.log("validate: validate")
    timed_check(w, "validate-plain", [b.bin, "-q", "validate", "--json", w / "validate.mbtiles"],
                w / "validate-plain.json")
    b.log("validate: validate --against-db --all")
    timed_check(w, "validate-db", [b.bin, "-q", "validate", "--json", "--config", w / "validate.toml",
                                   "--against-db", "--all", w / "validate.mbtiles"], w / "validate-db.json")
    (w / "validate-mbtiles.code").unlink(missing_ok=True)
    if cli:
        b.log(f"validate: {cli} validate --agg-hash verify")
        timed_check(w, "validate-martin", [cli, "validate", "--agg-hash", "verify", w / "validate.mbtiles"],
                    w / "validate-martin.out", stderr=subprocess.STDOUT)
        # The martin check's status under the name the report looks for.
        (w / "validate-martin.code").rename(w / "validate-mbtiles.code")
    report(b, validate_report, w, b.opts.rows, b.opts.zoom)
    sys.stdout.flush()
    remove_outputs(w)
