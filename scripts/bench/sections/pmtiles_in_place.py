"""Section pmtiles-in-place: what a reseed of a PMTiles archive in S3 (moto) costs on the wire,
through a byte-counting proxy the section runs: a 1-row, a 1,000-row and a 100,000-row change
(capped at the sample's rows), each for this build and, given --baseline-bin, for that build on a
bucket of its own, in the same run; a 1-row reseed from a machine with an empty cache; and 50
successive 10-row reseeds of this build's archive, its size after each against a fresh seed's and
whether a run wrote it whole and clustered again."""
from __future__ import annotations

import dataclasses
import html
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from bench import measure, samples
from bench.proxy import CountingProxy

CHANGE_ROWS = (1, 1000, 100000)
SMALL_ROUNDS = 50
SMALL_ROWS = 10
KEY = "bench/facilities.pmtiles"
# The PMTiles v3 header's `clustered` byte.
CLUSTERED_BYTE = 96
CHANGES_SCHEMA = "bench_inplace_changes"
# Issue 88's targets.
SMALL_SENT_SHARE = 0.05
EMPTY_CACHE_SHARE = 0.10
GROWTH_FACTOR = 1.5
# moto checks no signature, but answers an object's reads only to a request that carries one.
MOTO_AUTH = {"Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request,"
                              " SignedHeaders=host, Signature=0"}
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_EC2_METADATA_DISABLED": "true"}


@dataclasses.dataclass
class Run:
    """One run of the tool against the store: what went over the wire, how long it took, and the
    archive it left."""
    label: str
    sent: int
    received: int
    wall: float
    size: int
    clustered: bool


@dataclasses.dataclass
class Build:
    """A binary under test with its own table copy, change schema, config, bucket and cache."""
    name: str
    bin: str
    table: str
    config: Path
    bucket: str
    cache: Path
    runs: list[Run] = dataclasses.field(default_factory=list)


class Store:
    """moto reached directly (to create buckets and read what a run left) and through the
    counting proxy (for the tool)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        parsed = urllib.parse.urlsplit(self.url)
        self.proxy = CountingProxy(parsed.hostname, parsed.port or 80)

    def create_bucket(self, b, bucket: str) -> None:
        """Creates BUCKET (moto takes an unsigned request), removed at exit."""
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/{bucket}", method="PUT"), timeout=30).close()
        b.on_cleanup(lambda: self.remove_bucket(bucket))

    def remove_bucket(self, bucket: str) -> None:
        """Deletes BUCKET's objects and BUCKET (the moto server may be shared: what a run leaves
        stays in its memory)."""
        while True:
            with urllib.request.urlopen(f"{self.url}/{bucket}?list-type=2", timeout=30) as r:
                keys = re.findall(r"<Key>([^<]+)</Key>", r.read().decode())
            if not keys:
                break
            for key in keys:
                self._delete(f"{bucket}/{urllib.parse.quote(html.unescape(key))}")
        self._delete(bucket)

    def _delete(self, path: str) -> None:
        request = urllib.request.Request(f"{self.url}/{path}", method="DELETE", headers=MOTO_AUTH)
        urllib.request.urlopen(request, timeout=30).close()

    def size(self, bucket: str) -> int:
        """The archive object's size."""
        request = urllib.request.Request(f"{self.url}/{bucket}/{KEY}", method="HEAD", headers=MOTO_AUTH)
        with urllib.request.urlopen(request, timeout=30) as r:
            return int(r.headers["Content-Length"])

    def clustered(self, bucket: str) -> bool:
        """Whether the archive's header says its tiles are clustered."""
        request = urllib.request.Request(f"{self.url}/{bucket}/{KEY}",
                                         headers={**MOTO_AUTH, "Range": f"bytes={CLUSTERED_BYTE}-{CLUSTERED_BYTE}"})
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.read() == b"\x01"


def with_store(config: str, port: int) -> str:
    """CONFIG with its [store] pointed at the proxy on PORT, path-style, region us-east-1."""
    lines = [line for line in config.splitlines(keepends=True)
             if not re.match(r"\s*(endpoint|force_path_style|region)\s*=", line)]
    at = next((i for i, line in enumerate(lines) if re.match(r"\s*\[store\]\s*(#.*)?$", line)), None)
    store = [f'endpoint = "http://127.0.0.1:{port}"\n', "force_path_style = true\n", 'region = "us-east-1"\n']
    if at is None:
        return "".join(lines) + "\n[store]\n" + "".join(store)
    return "".join(lines[:at + 1] + store + lines[at + 1:])


def moto_url(b) -> str:
    """OAR_TILES_TEST_MOTO, else a moto server of the section's own (stopped at exit)."""
    given = os.environ.get("OAR_TILES_TEST_MOTO")
    if given:
        return given
    subprocess.run([str(b.scripts("moto-server.sh")), "install"], check=True)
    url, pid = subprocess.run([str(b.scripts("moto-server.sh")), "start"], check=True, text=True,
                              stdout=subprocess.PIPE).stdout.split()[:2]
    b.on_cleanup(lambda: subprocess.run([str(b.scripts("moto-server.sh")), "stop", pid], check=False))
    return url


def copy_sample(b, rows: int, schema: str) -> str:
    """A copy of bench_<rows>.facilities in SCHEMA (changed and captured without touching the
    shared sample); returns its table."""
    b.psql(f"""SET client_min_messages = warning;
DROP SCHEMA IF EXISTS {schema} CASCADE;
CREATE SCHEMA {schema};
CREATE TABLE {schema}.facilities (LIKE bench_{rows}.facilities INCLUDING ALL);
INSERT INTO {schema}.facilities SELECT * FROM bench_{rows}.facilities;
VACUUM ANALYZE {schema}.facilities;
""", out=None)
    return f"{schema}.facilities"


def change_rows(b, table: str, rows: int, tag: str) -> None:
    """Renames ROWS facilities of TABLE, spread over the table by md5(id, TAG): the same rows in
    every copy of the sample."""
    b.psql(f"""UPDATE {table} SET name = coalesce(name, '') || ' {tag}'
WHERE id IN (SELECT id FROM {table} ORDER BY md5(id::text || '{tag}') LIMIT {int(rows)})""", out=None)


def run_tool(b, store: Store, build: Build, label: str, *extra: str, cache: Path | None = None) -> Run:
    """`seed` of BUILD's archive (with EXTRA arguments) from the machine whose cache is CACHE
    (default: the build's), counted and timed; the run is added to the build's runs."""
    cache = cache or build.cache
    cache.mkdir(parents=True, exist_ok=True)
    before = store.proxy.counts()
    started = time.monotonic()
    subprocess.run([build.bin, "-q", "seed", *b.concurrency_args(), "--config", str(build.config),
                    "--zoom", b.opts.zoom, "--output", f"s3://{build.bucket}/{KEY}", *extra],
                   stdout=subprocess.DEVNULL, check=True,
                   env={**os.environ, **AWS_ENV, "XDG_CACHE_HOME": str(cache)})
    wall = time.monotonic() - started
    after = store.proxy.counts()
    run = Run(label, after[0] - before[0], after[1] - before[1], wall,
              store.size(build.bucket), store.clustered(build.bucket))
    build.runs.append(run)
    b.log(f"pmtiles-in-place: {build.name}, {label}: sent {human(run.sent)}, received"
          f" {human(run.received)}, {wall:.2f} s, archive {human(run.size)}")
    return run


def section_pmtiles_in_place(b) -> None:
    """The pmtiles-in-place section (see the help text)."""
    rows = b.opts.rows
    layout = os.environ.get("INPLACE_LAYOUT") or "unclustered"
    if layout not in ("clustered", "unclustered"):
        b.die(f"INPLACE_LAYOUT: '{layout}' is not clustered or unclustered")
    samples.ensure_sample(b, rows)
    store = Store(moto_url(b))
    b.on_cleanup(store.proxy.close)
    binaries = [("this build", str(b.bin))] + ([("baseline-bin", b.opts.baseline_bin)] if b.opts.baseline_bin else [])
    cluster = b.cluster_spec if layout == "clustered" else None
    builds = [prepare_build(b, store, rows, i, name, binary, cluster)
              for i, (name, binary) in enumerate(binaries)]
    load_before = b.load_average()
    for build in builds:
        b.log(f"pmtiles-in-place: {build.name}, full seed")
        run_tool(b, store, build, "seed")
    for n in dict.fromkeys(min(k, rows) for k in CHANGE_ROWS):
        for build in builds:
            change_rows(b, build.table, n, f"c{n}")
        for build in builds:
            run_tool(b, store, build, rows_label(n), "--dirty")
    for build in builds:
        change_rows(b, build.table, 1, "empty-cache")
    for build in builds:
        run_tool(b, store, build, f"{rows_label(1)}, empty cache", "--dirty", cache=b.work / f"inplace-{build.bucket}-new")
    this = builds[0]
    # The machine that wrote the archive last goes on with it.
    this.cache = b.work / f"inplace-{this.bucket}-new"
    for round_ in range(1, int(os.environ.get("INPLACE_ROUNDS") or SMALL_ROUNDS) + 1):
        change_rows(b, this.table, SMALL_ROWS, f"r{round_}")
        run_tool(b, store, this, f"round {round_}", "--dirty")
    b.log("pmtiles-in-place: a fresh seed of the changed data, from an empty cache")
    fresh_bucket = f"{this.bucket}-fresh"
    store.create_bucket(b, fresh_bucket)
    fresh = dataclasses.replace(this, bucket=fresh_bucket, runs=[])
    run_tool(b, store, fresh, "fresh seed", cache=b.work / f"inplace-{fresh_bucket}")
    info = {"rows": rows, "zoom": b.opts.zoom, "layout": layout,
            "load": f"{load_before} / {b.load_average()}"}
    measure.report(b, lambda: print_report(info, builds, fresh.runs[0]))


def prepare_build(b, store: Store, rows: int, i: int, name: str, binary: str,
                  cluster: str | None = None) -> Build:
    """BUILD number I: its table copy and change capture (installed by its own binary, removed at
    exit), its config (clustered as CLUSTER, a cluster spec, or not) and its bucket."""
    schema = f"bench_{rows}_inplace_{i}"
    table = copy_sample(b, rows, schema)
    config = b.work / f"inplace-{i}.toml"
    samples.write_config(b, config, table, f"{CHANGES_SCHEMA}_{i}", cluster)
    config.write_text(with_store(config.read_text(), store.proxy.port))
    bucket = f"bench-inplace-{os.getpid()}-{i}"
    store.create_bucket(b, bucket)

    def drop() -> None:
        subprocess.run([binary, "-q", "changes", "uninstall", "--config", str(config)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        b.psql(f"SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE; DROP SCHEMA IF EXISTS {CHANGES_SCHEMA}_{i} CASCADE",
               check=False, out=subprocess.DEVNULL)
    b.on_cleanup(drop)
    install_capture(b, binary, config)
    return Build(name, binary, table, config, bucket, b.work / f"inplace-{bucket}")


UNKNOWN_FIELD = re.compile(r":(\d+):\d+: unknown field `([a-z_]+)`")


def install_capture(b, binary: str, config: Path) -> None:
    """`changes install` with BINARY; a setting an older binary does not know (a newer one's key
    at its default in the sample config) is dropped from CONFIG, logged, and the install tried
    again."""
    while True:
        done = subprocess.run([binary, "-q", "changes", "install", "--config", str(config)], text=True,
                              stdout=sys.stderr, stderr=subprocess.PIPE)
        unknown = UNKNOWN_FIELD.search(done.stderr)
        if done.returncode == 0 or not unknown:
            sys.stderr.write(done.stderr)
            break
        lines = config.read_text().splitlines(keepends=True)
        b.log(f"pmtiles-in-place: {Path(binary).name} does not know `{unknown.group(2)}`: dropped from its config")
        del lines[int(unknown.group(1)) - 1]
        config.write_text("".join(lines))
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, [binary, "changes", "install"])


# --- the report ----------------------------------------------------------------------------------

def human(n: int) -> str:
    """N bytes in kB below a megabyte, else in MB (decimal units, as the store bills them)."""
    return f"{n / 1e3:.1f} kB" if n < 1_000_000 else f"{n / 1e6:.2f} MB"


def run_line(build: str, r: Run) -> str:
    """One row of the table of runs."""
    return (f"  {r.label:<20} {build:<13} {human(r.sent):>11} {human(r.received):>11} {r.wall:8.2f} s"
            f" {human(r.size):>11}  {'yes' if r.clustered else 'no'}")


def verdict(met: bool) -> str:
    """'met' or 'NOT met'."""
    return "met" if met else "NOT met"


def rows_label(n: int) -> str:
    """'1 row', '1,000 rows'."""
    return f"{n:,} row" + ("" if n == 1 else "s")


def compactions(runs: list[Run]) -> list[str]:
    """The labels of the runs that left a clustered archive after one that was not."""
    return [r.label for previous, r in zip(runs, runs[1:]) if r.clustered and not previous.clustered]


def growth_lines(runs: list[Run], fresh: Run) -> list[str]:
    """The lines of the successive small reseeds: the archive's size after each against a fresh
    seed of the same data, compactions, and the share of the archive each sent."""
    rounds = [r for r in runs if r.label.startswith("round ")]
    if not rounds:
        return []
    start = runs.index(rounds[0])
    compacted = [label.removeprefix("round ") for label in compactions(runs[start - 1:start + len(rounds)])]
    largest = max(r.size for r in rounds)
    ratio = largest / fresh.size
    sizes = " ".join(f"{r.size / fresh.size:.2f}" for r in rounds)
    over = sum(1 for r in rounds if r.sent > SMALL_SENT_SHARE * r.size)
    return [
        f"  {len(rounds)} successive {SMALL_ROWS}-row reseeds (this build), the archive after each as a"
        f" multiple of a fresh seed of the same data ({human(fresh.size)}, seeded in {fresh.wall:.2f} s):",
        f"    {sizes}",
        f"    compacted (written whole and clustered again) by round(s): {', '.join(compacted) or 'none'}",
        f"    largest {human(largest)} = {ratio:.2f} x the fresh seed   (target <= {GROWTH_FACTOR} x, or"
        f" compacted once: {verdict(ratio <= GROWTH_FACTOR or bool(compacted))})",
        f"    sent per reseed: mean {human(int(statistics.mean(r.sent for r in rounds)))},"
        f" median {human(int(statistics.median(r.sent for r in rounds)))}, max"
        f" {human(max(r.sent for r in rounds))} = at most {max(r.sent / r.size for r in rounds):.1%} of the archive"
        f"   (target <= {SMALL_SENT_SHARE:.0%}: {verdict(not over)}"
        + (f", over it in {over} of {len(rounds)} rounds)" if over else ")"),
        f"    received per reseed: median {human(int(statistics.median(r.received for r in rounds)))};"
        f" wall median {statistics.median(r.wall for r in rounds):.2f} s",
    ]


def print_report(info: dict, builds: list[Build], fresh: Run) -> int:
    """Prints the section's report."""
    print(f"pmtiles-in-place: {info['rows']} facilities, zoom {info['zoom']}, {info.get('layout', 'unclustered')}, one PMTiles"
          f" object in S3 (moto) per build, through a byte-counting proxy")
    print(f"  {'run':<20} {'build':<13} {'sent':>11} {'received':>11} {'wall':>10} {'archive':>11}  clustered")
    labels = list(dict.fromkeys(r.label for r in builds[0].runs if not r.label.startswith("round ")))
    for label in labels:
        for build in builds:
            for r in build.runs:
                if r.label == label:
                    print(run_line(build.name, r))
    for build in builds:
        at = next((i for i, r in enumerate(build.runs) if r.label.endswith("empty cache")), None)
        if at:
            empty, archive = build.runs[at], build.runs[at - 1].size
            share = empty.received / archive
            print(f"  empty cache, {build.name}: received {human(empty.received)} = {share:.1%} of the"
                  f" archive it updated ({human(archive)})"
                  f"   (target <= {EMPTY_CACHE_SHARE:.0%}: {verdict(share <= EMPTY_CACHE_SHARE)})")
    for line in growth_lines(builds[0].runs, fresh):
        print(line)
    print(f"  load average at the start / end: {info['load']}")
    return 0
