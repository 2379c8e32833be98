"""The edge section (commit-to-edge latency through Varnish, then a moved reseed's CloudFront paths
before and after folding), which goes on with edge-zooms and edge-cloudfront."""
from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.measure import fail, http_get, nearest_rank, prom_sum, watch_log
from bench.samples import ensure_sample, make_config
from bench.sections.cloudfront import section_edge_cloudfront
from bench.sections.edge_zooms import section_edge_zooms
from bench.sections.origin import Origin, install_varnish, warm
from bench.sections.watch import (RESEED_SEED, capture_changes, changes, changes_sql,
                                  concurrency_label, edit_file, finish_sample, free_port, into_tree,
                                  load_now, print_report, run_sql_file, say, start_watch,
                                  stop_watch, wait_for)

if TYPE_CHECKING:
    from bench.context import Bench

EDGE_CHANGES = 300
EDGE_RATE = 10
EDGE_CHECK = 8
EDGE_MOVES = 90
EDGE_WAIT_SECONDS = 120


def edge_config(text: str, tree: Path, check_edge: int) -> str:
    """The config writing into TREE with each watch cycle checking CHECK_EDGE purged tiles at the
    edge; raises ValueError when it has no [watch] table to put that in."""
    edited = into_tree(text, tree, check_edge)
    if f"\ncheck_edge = {check_edge}\n" not in "\n" + edited:
        raise ValueError("no [watch] table")
    return edited


def http_cdn(cache: str, public: bool) -> str:
    """A [[tileset.cdn]] table purging CACHE per tile (its public_url too when PUBLIC)."""
    text = f'\n[[tileset.cdn]]\nkind = "http"\nname = "varnish"\nurl = "{cache}/{{path}}"\n'
    return text + (f'public_url = "{cache}"\n' if public else "")


def cloudfront_instead(text: str, distribution: str) -> str:
    """The config with its CDN tables (from the first to the end) replaced by CloudFront's."""
    lines = text.splitlines(keepends=True)
    cut = next((i for i, line in enumerate(lines) if line == "[[tileset.cdn]]\n"), len(lines))
    return ("".join(lines[:cut]) + '[[tileset.cdn]]\nkind = "cloudfront"\nname = "cloudfront"\n'
            f'distribution_id = "{distribution}"\n')


def wait_at_edge(base: str, n: int, out: Path) -> None:
    """After the changes are applied, waits (at most 120 s) until the watcher at BASE has measured
    N changes at the edge or given up on some (unconfirmed tiles); saves /metrics to OUT."""
    deadline = time.monotonic() + EDGE_WAIT_SECONDS
    text = ""
    while time.monotonic() < deadline:
        status, text = http_get(base + "/metrics")
        if status == 200 and (prom_sum(text, "oar_tiles_change_to_edge_seconds_count") >= n
                              or prom_sum(text, "oar_tiles_edge_unconfirmed_total") > 0):
            break
        time.sleep(0.5)
    out.write_text(text)


def edge_report(log: Path, metrics: str, n: int, rate: float) -> tuple[list[str], int]:
    """Commit-to-edge latencies from the watcher's JSON log (its debug line per edge check), beside
    the commit-to-origin ones of the same run, and the purges per change from its metrics."""
    origin, edge, cycles = watch_log(log)
    applied = prom_sum(metrics, "oar_tiles_changes_applied_total")
    requests = prom_sum(metrics, "oar_tiles_purge_requests_total")
    paths = prom_sum(metrics, "oar_tiles_purge_paths_total")
    if not edge or not origin:
        fail("edge: the log holds no latencies")
    edge.sort()
    origin.sort()
    lines = [f"edge: {n} single-row changes at {rate:g}/s through `watch` to a tree served by"
             f" `oar-tiles serve` behind Varnish (every tile cached for a day, purged by PURGE)",
             f"  changes applied {applied:.0f}, cycles {cycles}, measured at the edge {len(edge)},"
             f" at the origin {len(origin)}"]
    for what, values in (("commit-to-origin", origin), ("commit-to-edge", edge)):
        p50, p95 = nearest_rank(values, 0.50), nearest_rank(values, 0.95)
        lines.append(f"  {what} latency: p50 {p50:.2f} s, p95 {p95:.2f} s, max {values[-1]:.2f} s"
                     + (" (target p95 <= 3 s)" if what == "commit-to-edge" else ""))
    per_change = requests / applied if applied else float("nan")
    lines.append(f"  purge requests {requests:.0f} ({paths:.0f} paths): {per_change:.1f} per change;"
                 f" edge requests {prom_sum(metrics, 'oar_tiles_edge_requests_total'):.0f},"
                 f" stale answers {prom_sum(metrics, 'oar_tiles_edge_stale_answers_total'):.0f},"
                 f" unconfirmed {prom_sum(metrics, 'oar_tiles_edge_unconfirmed_total'):.0f}")
    if applied != n:
        return lines + [f"  WARNING: expected {n} changes"], 3
    return lines, 0


def moves_sql(schema: str, k: int, seed: str, lo: int, hi: int) -> str:
    """One transaction moving K facilities of SCHEMA (ids LO..HI, seeded) by up to 0.05 degrees."""
    rng = random.Random(seed + "-edge")
    t = f'"{schema}".facilities'
    out = ["BEGIN;", f"COMMENT ON TABLE {t} IS 'modified by the edge benchmark';"]
    for fid in rng.sample(range(lo, hi + 1), k):
        dx, dy = rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)
        out.append(f"UPDATE {t} SET location = ST_Translate(location, {dx:.6f}, {dy:.6f}) WHERE id = {fid};")
    out.append("COMMIT;")
    return "\n".join(out) + "\n"


def plan_lines(summary_path: Path) -> tuple[list[str], int]:
    """The CloudFront paths of a `seed --dirty --dry-run` summary: before and after folding."""
    summary = json.loads(summary_path.read_text())[0]
    plan = summary["plan"]
    dirty = sum(z["tiles"] for z in plan["dirty_tiles"])
    lines = []
    for target in plan["purges"]:
        folded = target["paths"]
        wildcards = sum(1 for p in folded if p.endswith("*"))
        lines.append(f"  reseed after moving facilities ({summary.get('changes_read')} changes read): {dirty} dirty tiles;"
                     f" CloudFront `{target['target']}`: {target['changed']} paths before folding,"
                     f" {len(folded)} after ({wildcards} wildcards), {target['requests']} invalidation(s),"
                     f" ${target['price_usd']:.2f} at $0.005 a path")
    return lines, 0


def plan_folding(b: Bench, schema: str, lo: int, hi: int, config: Path) -> None:
    """A reseed of a few dozen moved facilities, planned for CloudFront (nothing is sent)."""
    run_sql_file(b, b.work / "edge-moves.sql", moves_sql(schema, EDGE_MOVES, RESEED_SEED, lo, hi))
    edit_file(config, lambda text: cloudfront_instead(text, "EBENCHDRYRUN"))
    env = {**os.environ, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true"}
    summary = b.work / "edge-plan.json"
    b.tool("-q", "seed", "--dirty", "--dry-run", *b.concurrency_args(), "--config", str(config),
           "--summary-json", str(summary), env=env, stdout=subprocess.DEVNULL)
    print_report(b, lambda: plan_lines(summary))


def section_edge(b: Bench) -> None:
    """edge: commit-to-edge latency through Varnish with `watch` purging it and checking 8 purged
    tiles a cycle; then the folding of a moved reseed's CloudFront paths; then edge-zooms and
    edge-cloudfront."""
    n = b.opts.reseed_rows
    schema, tree = f"bench_{n}", b.work / "edge-tree"
    ensure_sample(b, n)
    install_varnish(b)
    config = b.work / "edge.toml"
    derived = make_config(b, n, "clustered", config)
    try:
        edit_file(config, lambda text: edge_config(text, tree, EDGE_CHECK))
    except ValueError:
        b.die(f"edge: no [watch] table in {config}")
    unguard, lo, hi = capture_changes(b, n, config, "edge")
    b.log("edge: full seed into a tree (clustered)")
    b.tool("-q", "seed", *b.concurrency_args(), "--config", str(config), stdout=subprocess.DEVNULL)
    origin = Origin(b, tree, b.work / "edge-serve.log")
    cache = f"http://127.0.0.1:{origin.cache()}/{origin.name}"
    with open(config, "a") as f:
        f.write(http_cdn(cache, public=True))
    b.log("edge: warming Varnish with every tile of the tree")
    warmed = warm(b, "edge", tree, "pbf", cache)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    b.log(f"edge: starting oar-tiles watch on {base} (check_edge = {EDGE_CHECK})")
    watcher, unwatch = start_watch(b, config, port, b.work / "edge-watch.log")
    wait_for(b, base, "health")
    script = changes_sql(schema, EDGE_CHANGES, EDGE_RATE, f"{RESEED_SEED}-edge", lo, hi)
    load_before = load_now()
    b.log(f"edge: committing {EDGE_CHANGES} changes at {EDGE_RATE} per second")
    run_sql_file(b, b.work / "edge-changes.sql", script)
    wait_for(b, base, "applied", EDGE_CHANGES)
    metrics = b.work / "edge-metrics.txt"
    wait_at_edge(base, EDGE_CHANGES, metrics)
    stop_watch(b, "edge", watcher, unwatch)
    print_report(b, lambda: edge_report(b.work / "edge-watch.log", metrics.read_text(), EDGE_CHANGES,
                                        EDGE_RATE))
    say(f"  {warmed} tiles cached before the changes; load={load_before} / {load_now()},"
        f" concurrency {concurrency_label(b, derived.pool_size)}")
    plan_folding(b, schema, lo, hi, config)
    origin.stop()
    finish_sample(b, "edge", n, config, unguard)
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    say()
    section_edge_zooms(b)
    say()
    section_edge_cloudfront(b)

