"""The edge-cloudfront section: CloudFront's propagation and quotas, on moto's server extended so
that an invalidation stays in progress for EDGE_CF_PROPAGATION seconds and the quotas in flight
hold: a full seed's invalidations, an UPDATE's, and `watch` at EDGE_CF_RATE changes a second
without a CDN, with CloudFront, and with a daily budget."""
from __future__ import annotations

import json
import os
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.measure import http_get, nearest_rank, prom_sum, prom_value
from bench.samples import ensure_sample, make_config
from bench.sections.watch import (RESEED_SEED, RESEED_ZOOM, capture_changes, changes, edit_file,
                                  edit_lines, env_int, finish_sample, free_port, into_tree, paced,
                                  print_report, run_sql_file, say, start_watch, stop_watch,
                                  wait_for)

if TYPE_CHECKING:
    from bench.context import Bench

# Run by moto's venv, which has boto3: the invalidations of DISTRIBUTION at URL, as JSON
# [in progress, all].
LIST_INVALIDATIONS = """
import json, sys, boto3
cf = boto3.client("cloudfront", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="bench", aws_secret_access_key="bench")
items = cf.list_invalidations(DistributionId=sys.argv[2])["InvalidationList"].get("Items") or []
print(json.dumps([sum(1 for i in items if i["Status"] == "InProgress"), len(items)]))
"""


@dataclass
class Knobs:
    """The section's environment: EDGE_CF_PROPAGATION, _SECONDS, _RATE and _UPDATE."""
    propagation: int
    seconds: int
    rate: int
    update: int

    @classmethod
    def from_env(cls, b: Bench) -> "Knobs":
        """The knobs from the environment, with the section's defaults."""
        return cls(env_int(b, "EDGE_CF_PROPAGATION", 30), env_int(b, "EDGE_CF_SECONDS", 60),
                   env_int(b, "EDGE_CF_RATE", 10), env_int(b, "EDGE_CF_UPDATE", 6000))


def cf_changes_sql(schema: str, n: int, rate: float, seed: str, lo: int, hi: int) -> str:
    """An SQL script of N single-row changes to SCHEMA.facilities (ids LO..HI), each its own
    transaction, at RATE per second on a fixed schedule: 60% moves by up to 0.01 degrees, 40%
    renames. No inserts or deletes, so runs with other seeds can follow on the same table."""
    rng = random.Random(seed)
    t = f'"{schema}".facilities'
    out = ["\\set ON_ERROR_STOP on",
           f"COMMENT ON TABLE {t} IS 'modified by the edge-cloudfront benchmark';",
           "CREATE TEMP TABLE watch_start AS SELECT clock_timestamp() AS t0;"]
    for i in range(n):
        fid = rng.randint(lo, hi)
        out.append(paced(i, rate))
        if rng.random() < 0.6:
            dx, dy = rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01)
            out.append(f"UPDATE {t} SET location = ST_Translate(location, {dx:.6f}, {dy:.6f}) WHERE id = {fid};")
        else:
            out.append(f"UPDATE {t} SET name = name || ' (renamed)' WHERE id = {fid};")
    return "\n".join(out) + "\n"


def settle(base: str, seconds: float, out: Path) -> None:
    """Waits (at most SECONDS) until the watcher at BASE has no CloudFront purge in flight and its
    outbox is empty; saves /metrics to OUT either way."""
    deadline = time.monotonic() + seconds
    text = ""
    while time.monotonic() < deadline:
        status, text = http_get(base + "/metrics")
        if status == 200 and prom_sum(text, "oar_tiles_purge_in_flight") == 0 \
                and prom_sum(text, "oar_tiles_outbox_entries") == 0:
            break
        time.sleep(0.5)
    out.write_text(text)


def cf_watch_log(log: Path) -> tuple[list[float], list[float], int]:
    """From a watcher's JSON log: each cycle with changes (its seconds), the commit-to-completed
    times, and the max_delay warnings."""
    cycles, completed, warnings = [], [], 0
    with open(log, encoding="utf-8") as f:
        lines = f.readlines()
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        fields = event.get("fields", {})
        message = str(fields.get("message", ""))
        if "purge_completed" in fields:
            completed.extend(json.loads(fields["purge_completed"]))
        if message.startswith("cycle:") and not message.startswith("cycle: 0 change"):
            try:
                cycles.append(float(message.split(" in ", 1)[1].split(" s", 1)[0]))
            except (IndexError, ValueError):
                pass
        if "over max_delay" in message:
            warnings += 1
    return sorted(cycles), sorted(completed), warnings


def quantile(values: list[float], q: float) -> float:
    """The nearest-rank quantile Q of sorted VALUES, NaN when there are none."""
    return nearest_rank(values, q) if values else float("nan")


def cf_watch_lines(label: str, log: Path, text: str, n: int, seconds: float) -> tuple[list[str], int]:
    """One `watch` run: changes missed, cycle time, commit -> invalidation completed, spend and the
    projected daily price."""
    cycles, completed, warnings = cf_watch_log(log)
    applied = prom_sum(text, "oar_tiles_changes_applied_total")
    spend = prom_sum(text, "oar_tiles_purge_spend_usd_total")
    paths = prom_sum(text, "oar_tiles_purge_paths_total")
    requests = prom_sum(text, "oar_tiles_purge_requests_total")
    nan = float("nan")
    lines = [f"  watch `{label}`: {n} changes at {n / seconds:g}/s for {seconds:g} s: applied {applied:.0f},"
             f" missed {n - applied:.0f}; cycles with changes {len(cycles)}: p50 {quantile(cycles, 0.5):.2f} s,"
             f" max {cycles[-1] if cycles else nan:.2f} s; max_delay warnings {warnings}"]
    if requests or label != "no-cdn":
        waiting = prom_sum(text, "oar_tiles_outbox_entries")
        in_flight = prom_sum(text, "oar_tiles_purge_in_flight")
        lines.append(f"    purges: {requests:.0f} invalidation(s), {paths:.0f} path(s), {paths / max(applied, 1):.2f} per change,"
                     f" ${spend:.3f}: about ${spend / seconds * 86400:,.0f} a day at this rate;"
                     f" no room {prom_sum(text, 'oar_tiles_purge_no_room_total'):.0f} time(s),"
                     f" over budget {prom_sum(text, 'oar_tiles_purge_over_budget_total'):.0f} time(s);"
                     f" left: {waiting:.0f} outbox entries, {in_flight:.0f} purge(s) in flight")
        lines.append(f"    commit -> invalidation completed ({len(completed)} changes): p50 {quantile(completed, 0.5):.1f} s,"
                     f" p95 {quantile(completed, 0.95):.1f} s, max {completed[-1] if completed else nan:.1f} s")
        interval = prom_value(text, "oar_tiles_budget_path_interval_seconds")
        if interval is not None:
            # A new ledger starts with an hour's allowance, which a short run spends first: the
            # rate above overstates the day, which the ledger caps at the budget.
            lines.append(f"    budget: ${prom_sum(text, 'oar_tiles_budget_spent_today_usd'):.3f} spent today"
                         f" (from a fresh ledger's first hour's allowance; the day is capped at the budget);"
                         f" it buys one path every {interval:.0f} s")
    return lines, 0


def purge_lines(label: str, summary_path: Path) -> tuple[list[str], int]:
    """A purge's line from a summary: invalidations, paths, price, and whether it waited."""
    summary = json.loads(summary_path.read_text())[0]
    return [f"  {label}: {summary.get('changes_read')} change(s) read, {purge['requests']} invalidation(s),"
            f" {purge['paths']} path(s), ${purge.get('price_usd') or 0:.3f}"
            f" (evicting ~{purge.get('evicted', 0)} unchanged tiles)"
            f"{'; NO ROOM: waits in the outbox' if purge.get('no_room') else ''}"
            for purge in summary["purges"]], 0


def seed_lines(summary_path: Path, seconds: float, running: int, total: int) -> tuple[list[str], int]:
    """A full seed behind CloudFront: its purge, how long seed took, and whether its invalidations
    (RUNNING of TOTAL) were still in progress when it returned."""
    summary = json.loads(summary_path.read_text())[0]
    return [f"  full seed behind CloudFront: {seconds:.1f} s, {purge['requests']} invalidation(s),"
            f" {purge['paths']} path(s), ${purge.get('price_usd') or 0:.3f};"
            f" {running} of {total} invalidation(s) still in progress when seed returned"
            f" ({'seed did not wait for propagation' if running else 'seed waited'})"
            for purge in summary["purges"]], 0


def with_budget(text: str, dollars: int) -> str:
    """The config with budget_per_day after each distribution_id line."""
    return edit_lines(text, lambda line: [line, f"budget_per_day = {dollars}"]
                      if line.startswith("distribution_id = ") else [line])


def moto_python() -> str:
    """The python of moto's venv (where scripts/moto-server.sh installs it)."""
    cache = os.environ.get("XDG_CACHE_HOME") or f"{os.environ.get('HOME') or '/root'}/.cache"
    return f"{os.environ.get('MOTO_VENV') or cache + '/oar-tiles/moto-venv'}/bin/python"


class CloudFrontRun:
    """The section's state: the knobs, moto's server, the sample's ids, the config, the env."""

    def __init__(self, b: Bench, knobs: Knobs, url: str, config: Path, lo: int, hi: int):
        self.b, self.knobs, self.url, self.config, self.lo, self.hi = b, knobs, url, config, lo, hi
        self.schema = f"bench_{b.opts.reseed_rows}"
        self.env = {**os.environ, "AWS_ENDPOINT_URL_CLOUDFRONT": url, "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
                    "AWS_EC2_METADATA_DISABLED": "true"}

    def seed(self, *args: str) -> float:
        """`seed ARGS` on the config (under the CloudFront env); returns its wall seconds."""
        started = time.time()
        self.b.tool("-q", "seed", *args, *self.b.concurrency_args(), "--config", str(self.config),
                    env=self.env, stdout=subprocess.DEVNULL)
        return time.time() - started

    def watch(self, label: str, seed: str) -> None:
        """`watch` while EDGE_CF_RATE changes a second are committed for EDGE_CF_SECONDS; then
        waits for the edge to settle (at most propagation + 60 s) and reports."""
        b, k = self.b, self.knobs
        n = k.rate * k.seconds
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = b.work / f"cf-watch-{label}.log"
        watcher, unwatch = start_watch(b, self.config, port, log, env=self.env)
        wait_for(b, base, "health", watcher=watcher)
        script = cf_changes_sql(self.schema, n, k.rate, seed, self.lo, self.hi)
        b.log(f"edge-cloudfront: {label}: committing {n} changes at {k.rate} per second")
        run_sql_file(b, b.work / f"cf-changes-{label}.sql", script)
        wait_for(b, base, "applied", n, watcher=watcher)
        metrics = b.work / f"cf-metrics-{label}.txt"
        settle(base, k.propagation + 60, metrics)
        stop_watch(b, "edge-cloudfront", watcher, unwatch)
        print_report(b, lambda: cf_watch_lines(label, log, metrics.read_text(), n, k.seconds))


def start_moto(b: Bench, propagation: int) -> tuple[str, str, object]:
    """moto's server with invalidations in progress for PROPAGATION s: its URL, PID and unregister."""
    subprocess.run([str(b.scripts("moto-server.sh")), "install"], check=True)
    env = {**os.environ, "MOTO_CLOUDFRONT_PROPAGATION_SECONDS": str(propagation)}
    lines = subprocess.run([str(b.scripts("moto-server.sh")), "start"], env=env, check=True,
                           stdout=subprocess.PIPE, text=True).stdout.splitlines()
    url, pid = lines[0], lines[-1]
    unregister = b.on_cleanup(lambda: stop_moto(b, pid, check=False))
    return url, pid, unregister


def stop_moto(b: Bench, pid: str, check: bool) -> None:
    """scripts/moto-server.sh stop PID."""
    subprocess.run([str(b.scripts("moto-server.sh")), "stop", pid], check=check)


def full_seed_behind_cloudfront(b: Bench, run: CloudFrontRun, url: str, distribution: str, tree: Path) -> None:
    """A full seed into an empty tree with CloudFront configured, and its report."""
    with open(run.config, "a") as f:
        f.write(f'\n[[tileset.cdn]]\nkind = "cloudfront"\nname = "cloudfront"\ndistribution_id = "{distribution}"\n')
    b.log("edge-cloudfront: full seed behind CloudFront")
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    summary = b.work / "cf-seed.json"
    seconds = run.seed("--summary-json", str(summary))
    try:
        listed = subprocess.run([moto_python(), "-c", LIST_INVALIDATIONS, url, distribution], check=True,
                                stdout=subprocess.PIPE, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        b.log(f"edge-cloudfront: listing the invalidations failed: {e}")
        b.failed(1)
        return
    running, total = json.loads(listed)
    print_report(b, lambda: seed_lines(summary, seconds, running, total))


def one_update(b: Bench, run: CloudFrontRun) -> None:
    """One UPDATE of EDGE_CF_UPDATE facilities and `seed --dirty`, and its purge's line."""
    k, schema = run.knobs, run.schema
    b.log(f"edge-cloudfront: one UPDATE of {k.update} facilities, seed --dirty")
    b.psql(f"COMMENT ON TABLE {schema}.facilities IS 'modified by the edge-cloudfront benchmark';"
           f" UPDATE {schema}.facilities SET location = ST_Translate(location, 0.002, 0.001)"
           f" WHERE id IN (SELECT id FROM {schema}.facilities ORDER BY md5(id::text) LIMIT {k.update})",
           out=subprocess.DEVNULL)
    summary = b.work / "cf-update.json"
    run.seed("--dirty", "--summary-json", str(summary))
    print_report(b, lambda: purge_lines(f"{k.update}-row UPDATE", summary))


def section_edge_cloudfront(b: Bench) -> None:
    """edge-cloudfront: on the --reseed-rows sample unclustered into a tree, a full seed's and an
    UPDATE's invalidations, and `watch` without a CDN, with CloudFront and with a budget."""
    k = Knobs.from_env(b)
    n = b.opts.reseed_rows
    schema, tree = f"bench_{n}", b.work / "cf-tree"
    ensure_sample(b, n)
    url, moto_pid, unmoto = start_moto(b, k.propagation)
    distribution = subprocess.run(
        [str(b.scripts("moto-server.sh")), "distribution", url, f"bench-{os.getpid()} propagation={k.propagation}"],
        check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    config = b.work / "cf.toml"
    make_config(b, n, "unclustered", config)
    edit_file(config, lambda text: into_tree(text, tree))
    unguard, lo, hi = capture_changes(b, n, config)
    run = CloudFrontRun(b, k, url, config, lo, hi)

    say(f"edge-cloudfront: {n} facilities unclustered ({RESEED_ZOOM}) into a tree; CloudFront on moto's server,"
        f" invalidations in progress for {k.propagation} s, 3,000 file paths and 15 wildcards in flight")
    b.log("edge-cloudfront: baseline: full seed and watch without a CDN")
    say(f"  baseline (no CDN): full seed {run.seed():.1f} s")
    run.watch("no-cdn", f"{RESEED_SEED}-cf-base")
    full_seed_behind_cloudfront(b, run, url, distribution, tree)
    one_update(b, run)
    run.watch("cloudfront", f"{RESEED_SEED}-cf")
    edit_file(config, lambda text: with_budget(text, 10))
    run.watch("budget-10", f"{RESEED_SEED}-cf-budget")

    stop_moto(b, moto_pid, check=True)
    unmoto()
    finish_sample(b, "edge-cloudfront", n, config, unguard)
    subprocess.run(["rm", "-rf", str(tree)], check=True)
