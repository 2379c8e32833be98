"""Section capture: what change capture's triggers cost the application's writes, on copies of
the 100k sample (the sample's table and a lean one), each write timed inside the server with the
triggers off, on, the first design's row triggers, the row triggers with the old notify trigger,
and empty statement triggers (the floor)."""
from __future__ import annotations

import collections
import re
import statistics
import subprocess
import sys

from bench import measure, samples

SCHEMA = "bench_capture"

COPY_SQL = f"""SET client_min_messages = warning; DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.facilities (LIKE bench_100000.facilities INCLUDING ALL);
INSERT INTO {SCHEMA}.facilities SELECT * FROM bench_100000.facilities;
CREATE TABLE {SCHEMA}.lean (id text PRIMARY KEY, os_id text NOT NULL, name text NOT NULL,
    address text NOT NULL, country_code char(2) NOT NULL, contributors integer NOT NULL,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
    location geometry(Point, 4326) NOT NULL);
INSERT INTO {SCHEMA}.lean SELECT id::text, os_id, name, address, country_code, contributors,
    created_at, updated_at, location FROM bench_100000.facilities;
CREATE INDEX lean_location ON {SCHEMA}.lean USING gist (location);
VACUUM ANALYZE {SCHEMA}.facilities;
VACUUM ANALYZE {SCHEMA}.lean;
"""

TABLES = {"facilities": "the 100k sample's table (bigint ids, primary key, unique os_id, GiST index)",
          "lean": "the same rows in a lean table (text ids, primary key and one GiST index only)"}
LABELS = {"move": "UPDATE 20,000 rows, geometry moved", "rename": "UPDATE 20,000 rows, name",
          "integer": "UPDATE 20,000 rows, rendered integer",
          "unrendered": "UPDATE 20,000 rows, column no layer renders",
          "insert": "INSERT 20,000 rows", "delete": "DELETE 20,000 rows",
          "single-row": "2,000 single-row UPDATEs (name)"}
VARIANTS = ("off", "row", "rownotify", "floor", "on")


def section_capture(b) -> None:
    """The capture section (see the help text)."""
    samples.ensure_sample(b, 100000)
    # The sample's table, and a lean copy of its rows (text ids, a primary key and one GiST index,
    # nothing else), where a write costs least and the triggers' own cost shows most (issue 35).
    b.log(f"capture: copying bench_100000.facilities to {SCHEMA}.facilities and {SCHEMA}.lean")
    b.psql(COPY_SQL, out=subprocess.DEVNULL)
    lines: list[str] = []
    load_before = b.load_average()
    changes = f"{b.CHANGES_SCHEMA}_capture"
    for table in TABLES:
        config = b.work / f"capture-{table}.toml"
        samples.write_config(b, config, f"{SCHEMA}.{table}", changes)
        b.tool("-q", "changes", "install", "--config", str(config), stdout=sys.stderr)
        b.log(f"capture: {b.opts.capture_rounds} rounds of each write to {SCHEMA}.{table},"
              " triggers off and on")
        lines += capture_timings(b, table, changes)
        b.tool("-q", "changes", "uninstall", "--config", str(config), stdout=sys.stderr)
    b.psql(f"DROP SCHEMA {SCHEMA} CASCADE", out=subprocess.DEVNULL)
    (b.work / "capture.txt").write_text("".join(line + "\n" for line in lines))
    load = f"{load_before} / {b.load_average()}"
    measure.report(b, lambda: capture_report(lines, load))


def capture_timings(b, table: str, changes: str) -> list[str]:
    """scripts/bench_capture.sql on SCHEMA.TABLE: its 'capture' notices, each as 'TABLE CASE
    VARIANT ROUND MS [CPU]'."""
    done = subprocess.run(
        [*b.psql_argv(), "-v", f"table={SCHEMA}.{table}", "-v", f"log={changes}.change_log",
         "-v", f"rounds={b.opts.capture_rounds}", "-v", "singles=2000",
         "-f", str(b.scripts("bench_capture.sql"))],
        cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True)
    return notice_lines(done.stdout, table)


def notice_lines(output: str, table: str) -> list[str]:
    """The 'capture' notices of psql's output, their prefix replaced by TABLE (bench.sh's sed)."""
    return [re.sub(r"^.*NOTICE:  capture ", f"{table} ", line, count=1)
            for line in output.splitlines() if re.match(r"^.*NOTICE:  capture ", line)]


def parse_timings(lines: list[str]):
    """Per (table, case, variant) the wall ms and server CPU ms of every round, and per kind
    ('wall', 'server CPU') each round's figure by (table, case, variant, round)."""
    times = collections.defaultdict(list)
    cpu = collections.defaultdict(list)
    by_round: dict[str, dict] = {"wall": {}, "server CPU": {}}
    for line in lines:
        table, case, variant, rnd, ms, *rest = line.split()
        times[table, case, variant].append(float(ms))
        by_round["wall"][table, case, variant, rnd] = float(ms)
        if rest and rest[0] != "-":
            cpu[table, case, variant].append(float(rest[0]))
            by_round["server CPU"][table, case, variant, rnd] = float(rest[0])
    return times, cpu, by_round


def paired(runs: dict, table: str, case: str, variant: str) -> float:
    """The median over rounds of VARIANT's figure against the off figure of the same round,
    measured moments apart: on a machine whose load drifts these scatter less than the ratio of
    the medians."""
    return statistics.median(value / runs[t, c, "off", r] - 1 for (t, c, v, r), value in runs.items()
                             if (t, c, v) == (table, case, variant) and runs.get((t, c, "off", r)))


def capture_report(lines: list[str], load: str) -> int:
    """Prints the capture section's report from the notices' lines."""
    times, cpu, by_round = parse_timings(lines)
    if not times:
        measure.fail("capture: the server printed no timings")
    print("capture: writes without triggers (off), with change capture's statement triggers (on), "
          "with the row triggers of the first design alone (row) and with the statement trigger that "
          "notified watch before the capture triggers did (row+n), and with empty statement triggers "
          "reading the same transition tables (floor: PostgreSQL's cost of capturing them); median of "
          f"{len(times[next(iter(times))])} rounds, each rolled back, and (/rnd) the median of each round's "
          f"ratio to that round's off (load {load})")
    # Wall time, and the server process's CPU time where it could be read: with other work on the
    # machine the CPU time scatters far less.
    for table, described in TABLES.items():
        print(f"  {table}: {described}")
        for kind, measured in (("wall", times), ("server CPU", cpu)):
            if not all((table, case, v) in measured for case in LABELS for v in VARIANTS):
                continue
            print_kind(table, kind, measured, by_round[kind])
    return 0


def print_kind(table: str, kind: str, measured: dict, runs: dict) -> None:
    """One table's rows for one kind of figure (wall or server CPU) and the worst overhead."""
    print(f"  {'write (' + kind + ')':<44} {'off ms':>9} {'row ms':>9} {'row+n ms':>9} {'floor ms':>9}"
          f" {'on ms':>9} {'row':>8} {'row+n':>8} {'floor':>8} {'on':>8} {'floor/rnd':>9} {'on/rnd':>8}")
    worst, worst_floor = 0.0, 0.0
    for case, label in LABELS.items():
        off, row, notified, floor, on = (statistics.median(measured[table, case, v]) for v in VARIANTS)
        overhead = on / off - 1
        if case != "single-row" and overhead >= worst:
            worst, worst_floor = overhead, floor / off - 1
        print(f"  {label:<44} {off:9.1f} {row:9.1f} {notified:9.1f} {floor:9.1f} {on:9.1f}"
              f" {row / off - 1:+8.1%} {notified / off - 1:+8.1%} {floor / off - 1:+8.1%} {overhead:+8.1%}"
              f" {paired(runs, table, case, 'floor'):+9.1%} {paired(runs, table, case, 'on'):+8.1%}")
    print(f"  worst bulk overhead {worst:+.1%}, of which the transition tables' floor {worst_floor:+.1%}   "
          f"(target <= +25%: {'met' if worst <= 0.25 else 'NOT met'}); "
          "single-row writes: compare the row, row+n and on columns (target: on no worse than row)")
