"""changelog: reading the change log of bulk statements (issue 62).

A copy of the 144,563-row sample (schema bench_changelog) under change capture, a full seed of a
z0-12 tree (clustered as the sample config), then one UPDATE of the names of 1,994 rows (Sri
Lanka), 17,569 (Viet Nam and Turkey) and 100,000, and `seed --dirty`: its change-log read (the
time its log line reports) per 1,000 changed rows, and its whole run against the full seed. The
baseline, in the same run before each reseed: the read as oar-tiles sent it before the fix
(scripts/bench_changelog_before.sql) by psql, cancelled after 300 s. Each size's UPDATE is one
statement, so one log row holds all its geometries in arrays.
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.measure import report, time_v
from bench.samples import write_config

ROWS = 144563
ZOOM = "0-12"
CAP_SECONDS = 300
SCHEMA = "bench_changelog"
# As registries change data: a contributor's country (1,994 rows), two countries (17,569), and
# most of the table at once (100,000).
UPDATES = ((1994, "country_code = 'LK'"), (17569, "country_code IN ('VN', 'TR')"),
           (100000, "id <= 100000"))
READ_LINE = re.compile(r"change log read in ([0-9.]*) s")


def read_seconds(log_text):
    """The seconds of the first `change log read in N s` line of a seed's log, or '?'."""
    for line in log_text.splitlines():
        if m := READ_LINE.search(line):
            return m.group(1) or "?"
    return "?"


def drop_copy(b, changes_schema):
    """The copy and its change schema dropped (at exit, after an unfinished section)."""
    b.psql(f"SET client_min_messages = warning; DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;"
           f" DROP SCHEMA IF EXISTS {changes_schema} CASCADE", check=False,
           out=subprocess.DEVNULL)


def read_before(b, changes_schema):
    """The read as before issue 62, timed: seconds to two decimals, or '>CAP' when psql failed
    (statement_timeout cancels it after CAP_SECONDS)."""
    start = time.time()
    done = subprocess.run([*b.psql_argv(), "-o", "/dev/null", "-v", f"log={changes_schema}.change_log",
                           "-v", f"table={SCHEMA}.facilities", "-f", str(b.scripts("bench_changelog_before.sql"))],
                          cwd="/", stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=dict(os.environ, PGOPTIONS=f"-c statement_timeout={CAP_SECONDS}s"))
    return f"{time.time() - start:.2f}" if done.returncode == 0 else f">{CAP_SECONDS}"


def dirty_reseed(b, config, rows):
    """`seed --dirty` after the UPDATE of ROWS rows, timed, its log kept; returns its read time."""
    w = b.work
    with open(w / f"changelog-{rows}.log", "wb") as err:
        code = subprocess.run(["/usr/bin/time", "-v", "-o", str(w / f"changelog-{rows}.time"), str(b.bin),
                               "seed", *b.concurrency_args(), "--config", str(config), "--zoom", ZOOM,
                               "--output", f"{w}/changelog-tree/", "--dirty",
                               "--summary-json", str(w / f"changelog-{rows}.json")],
                              stdout=subprocess.DEVNULL, stderr=err).returncode
    text = (w / f"changelog-{rows}.log").read_text(encoding="utf-8", errors="replace")
    if code != 0:
        b.log("changelog: seed --dirty failed: " + "\n".join(text.splitlines()[-3:]))
        b.failed(1)
    return read_seconds(text)


def section_changelog(b):
    """The changelog section: the copy, change capture, the full seed, then per size the UPDATE,
    the old read and the reseed; the report."""
    w = b.work
    changes_schema = f"{b.CHANGES_SCHEMA}_changelog"
    config = w / "changelog.toml"
    unregister = b.on_cleanup(lambda: drop_copy(b, changes_schema))
    b.log(f"changelog: loading {ROWS} facilities into {SCHEMA}.facilities")
    subprocess.run([str(b.scripts("load-sample.sh")), "--rows", str(ROWS), "--schema", SCHEMA,
                    "--table", "facilities"], check=True)
    write_config(b, config, f"{SCHEMA}.facilities", changes_schema, b.cluster_spec)
    b.tool("-q", "changes", "install", "--config", str(config), stdout=sys.stderr)
    b.log(f"changelog: full seed of a zoom {ZOOM} tree")
    b.timed_seed("changelog-full", "--config", str(config), "--zoom", ZOOM, "--output", f"{w}/changelog-tree/")
    lines = []
    for rows, where in UPDATES:
        b.psql(f"UPDATE {SCHEMA}.facilities SET name = name || ' *' WHERE {where}", out=None)
        b.log(f"changelog: {rows} rows in one UPDATE; the read as before issue 62 (at most {CAP_SECONDS} s)")
        before = read_before(b, changes_schema)
        b.log(f"changelog: {rows} rows in one UPDATE; seed --dirty")
        lines.append((rows, before, dirty_reseed(b, config, rows)))
    (w / "changelog.txt").write_text("".join(f"{r} {bf} {now}\n" for r, bf, now in lines), encoding="utf-8")
    b.tool("-q", "changes", "uninstall", "--config", str(config), stdout=sys.stderr)
    b.psql(f"SET client_min_messages = warning; DROP SCHEMA {SCHEMA} CASCADE", out=subprocess.DEVNULL)
    unregister()
    report(b, changelog_report, w, ZOOM)


def per_thousand(seconds, rows):
    """Seconds per 1,000 rows, or '-' when the time is not a number ('>300', '?')."""
    return f"{1000 * float(seconds) / int(rows):8.3f}" if seconds[0].isdigit() else f"{'-':>8}"


def changelog_report(work, zoom):
    """The changelog section's report from the files it leaves in WORK."""
    full, _, _ = time_v(f"{work}/changelog-full.time")
    print(f"changelog: one UPDATE of N names on 144,563 rows under change capture, zoom {zoom} tree"
          f" (full seed {full:.1f} s)")
    print(f"  {'rows':>7} {'read before':>12} {'per 1k':>8} {'read now':>9} {'per 1k':>8}"
          f" {'seed --dirty':>13} {'x full':>7}")
    for line in Path(f"{work}/changelog.txt").read_text(encoding="utf-8").splitlines(keepends=True):
        rows, before, now = line.split()
        wall, _, _ = time_v(f"{work}/changelog-{rows}.time")
        print(f"  {int(rows):>7} {before + ' s':>12} {per_thousand(before, rows)} {now + ' s':>9}"
              f" {per_thousand(now, rows)} {wall:11.1f} s {wall / full:7.2f}")
    return 0
