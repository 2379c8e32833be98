"""The live section: commit -> drawn on a map that is already open, through Varnish, per layout
of LIVE_LAYOUTS (unclustered, partition: unclustered, partitioned by country, the page on the
largest country's partition and its own feed; clustered); per rate of LIVE_RATES beside a stream of
other renames; behind Varnish purged per tile or (LIVE_CDN=cloudfront) a CloudFront stand-in whose
invalidations take LIVE_CF_PROPAGATION s, the feed versioned; with --baseline-bin, that binary's
watcher in the same run."""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bench.samples import ensure_sample, make_config
from bench.sections.cloudfront import start_moto, stop_moto
from bench.sections.live_edge import binaries
from bench.sections.live_page import Case, chromium_paths, measure_page
from bench.sections.live_stream import Stream, cycle_lag, lag_line
from bench.sections.origin import Origin, install_varnish
from bench.sections.watch import (RESEED_ZOOM, capture_changes, changes, edit_file, edit_lines,
                                  env_int, finish_sample, free_port, into_tree, load_now,
                                  print_report, say, start_watch, stop_watch, wait_for)

if TYPE_CHECKING:
    from bench.context import Bench

LAYOUTS = ("clustered", "unclustered", "partition")
PUBLIC_HOST = "live-bench.test"


@dataclass
class Knobs:
    """The section's environment: LIVE_CHANGES, LIVE_IDLE_SECONDS, LIVE_BROWSER_CACHE_CONTROL
    (unset: a day in browsers; empty: as serve sends it), LIVE_LAYOUTS, LIVE_EVENTS, LIVE_RATES
    (commits a second of other renames beside the timed ones; unset: none), LIVE_SECONDS (how long
    each stream lasts at least), LIVE_CDN (varnish or cloudfront) and LIVE_CF_PROPAGATION."""
    changes: int
    idle_seconds: float
    cache_control: str
    layouts: list[str]
    events: bool
    rates: list[float] = field(default_factory=list)
    seconds: float = 60.0
    cdn: str = "varnish"
    propagation: int = 30

    @classmethod
    def from_env(cls, b: Bench) -> "Knobs":
        """The knobs from the environment, with the section's defaults; dies on a bad value."""
        idle = os.environ.get("LIVE_IDLE_SECONDS") or "60"
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", idle) or float(idle) == 0:
            b.die(f"LIVE_IDLE_SECONDS must be a positive number of seconds, got '{idle}'")
        layouts = (os.environ.get("LIVE_LAYOUTS") or "unclustered partition clustered").split()
        for layout in layouts:
            if layout not in LAYOUTS:
                b.die(f"LIVE_LAYOUTS: '{layout}' is not clustered, unclustered or partition")
        rates = (os.environ.get("LIVE_RATES") or "").split()
        if not all(re.fullmatch(r"[0-9]+(\.[0-9]+)?", r) and float(r) > 0 for r in rates):
            b.die(f"LIVE_RATES must be positive commits a second, got '{' '.join(rates)}'")
        cdn = os.environ.get("LIVE_CDN") or "varnish"
        if cdn not in ("varnish", "cloudfront"):
            b.die(f"LIVE_CDN: '{cdn}' is not varnish or cloudfront")
        return cls(env_int(b, "LIVE_CHANGES", 24), float(idle),
                   os.environ.get("LIVE_BROWSER_CACHE_CONTROL", "public, max-age=86400"),
                   layouts, bool(os.environ.get("LIVE_EVENTS")), [float(r) for r in rates],
                   float(env_int(b, "LIVE_SECONDS", 60)), cdn, env_int(b, "LIVE_CF_PROPAGATION", 30))


def partitioned(text: str, column: str) -> str:
    """The config with its first [[tileset]] partitioned by COLUMN."""
    first = [True]

    def edit(line: str) -> list[str]:
        """One line of the config, with partition_by after the first [[tileset]]."""
        if first[0] and re.fullmatch(r"\[\[tileset\]\]\s*", line):
            first[0] = False
            return ["[[tileset]]", f'partition_by = "{column}"']
        return [line]
    return edit_lines(text, edit)


def feed_and_cdn(cache: str) -> str:
    """The CDN purging CACHE per tile, and the feed (appended after the CDN: a tileset's tables
    may come in any order)."""
    return f'\n[[tileset.cdn]]\nkind = "http"\nname = "varnish"\nurl = "{cache}{{path}}"\n\n[tileset.feed]\n'


def cloudfront_and_versioned_feed(distribution: str) -> str:
    """The CDN purged is CloudFront (its stand-in), not the Varnish in front, and the feed is
    versioned, so maps ask changed tiles by a version Varnish never kept."""
    return (f'\n[[tileset.cdn]]\nkind = "cloudfront"\nname = "cloudfront"\ndistribution_id = "{distribution}"\n'
            '\n[tileset.feed]\nversioned = true\n')


def headline(n: int, layout: str, country: str, k: Knobs) -> str:
    """The case's first report line."""
    shows = f" (the page shows partition {country})" if country else ""
    follows = "the events of watch, else " if k.events else ""
    cache_control = k.cache_control or "as serve sends it"
    edge = ("Varnish (PURGE per tile, the feed's head purged too)" if k.cdn == "varnish" else
            f"Varnish keyed on the query string and never purged, the purges going to a CloudFront stand-in"
            f" whose invalidations take {k.propagation} s; the feed versioned")
    return (f"live: {n} facilities {layout}{shows} ({RESEED_ZOOM}) into a tree behind {edge},"
            f" watch with its default settings; serve's page open through the cache in headless"
            f" Chromium, following {follows}the feed every second; {k.changes}"
            f" renames one at a time; browsers get Cache-Control: {cache_control}")


def largest_country(b: Bench, schema: str) -> str:
    """The country with the most facilities (dies unless it is two capitals: it reaches SQL)."""
    country = b.value(f"SELECT country_code FROM {schema}.facilities GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")
    if not re.fullmatch(r"[A-Z]{2}", country):
        b.die(f"live: no country to show (got '{country}')")
    return country


def edge_in_front(b: Bench, origin: Origin, k: Knobs) -> tuple[int, dict[str, str], str, Callable[[], None]]:
    """Varnish in front of ORIGIN and, with LIVE_CDN=cloudfront, moto's CloudFront: Varnish's
    port, the tool's environment, the config's CloudFront and versioned feed tables (empty for
    Varnish purged per tile) and what stops moto."""
    if k.cdn != "cloudfront":
        return origin.cache(k.cache_control), dict(os.environ), "", lambda: None
    url, moto_pid, unmoto = start_moto(b, k.propagation)
    distribution = subprocess.run(
        [str(b.scripts("moto-server.sh")), "distribution", url,
         f"bench-live-{os.getpid()} propagation={k.propagation}"],
        check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    env = {**os.environ, "AWS_ENDPOINT_URL_CLOUDFRONT": url, "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    vport = origin.cache(k.cache_control, {"VARNISH_KEY_QUERY": "yes", "VARNISH_PASS_HEAD": "yes"})

    def stop() -> None:
        """Stops moto as the section ends normally."""
        stop_moto(b, moto_pid, check=True)
        unmoto()
    return vport, env, cloudfront_and_versioned_feed(distribution), stop


def watched_round(b: Bench, watcher_bin: tuple[str, str], rate: float, k: Knobs, config: Path, port: int,
                  env: dict[str, str], rows: tuple[str, int, int],
                  measure: Callable[[Stream | None, float], tuple[list[str], int]]) -> None:
    """One binary's watcher (WATCHER_BIN: label and path) on CONFIG, listening on PORT, while
    MEASURE times the page's renames beside a stream at RATE (none when 0) over ROWS (the schema
    and the ids of its facilities); its report, the cycle lag over the stream and the load."""
    label, binary = watcher_bin
    say(f"  {label}{f', beside {rate:g} commits a second for {k.seconds:g} s' if rate else ''}:")
    log = b.work / f"live-watch-{label[0]}{int(rate)}.log"
    saved, b.bin = b.bin, Path(binary)
    try:
        watcher, unwatch = start_watch(b, config, port, log, json_log=False, env=env)
    finally:
        b.bin = saved
    wait_for(b, f"http://127.0.0.1:{port}", "health", watcher=watcher)
    load_before = load_now()
    schema, lo, hi = rows
    stream = Stream(b, schema, "facilities", lo, hi, rate) if rate else None
    # Issue 85's targets: 1.5 s one at a time behind Varnish, 2 s beside 10 commits a second or
    # behind CloudFront's slow invalidations.
    target = 2.0 if rate >= 10 or k.cdn == "cloudfront" else 1.5
    print_report(b, lambda: measure(stream, target))
    if stream is not None:
        say(lag_line(cycle_lag(log, stream.started, stream.ended)))
    say(f"  load={load_before} / {load_now()}")
    stop_watch(b, "live", watcher, unwatch)


def live_case(b: Bench, layout: str, k: Knobs, chromium: str, chromedriver: str) -> None:
    """One layout: a full seed into a tree with a feed, serve behind Varnish, watch purging it,
    and the page open in Chromium timing the renames."""
    n = b.opts.reseed_rows
    schema, tree = f"bench_{n}", b.work / "live-tree"
    served: Path = tree
    country = row_filter = ""
    config = b.work / "live.toml"
    make_config(b, n, "unclustered" if layout == "partition" else layout, config)
    edit_file(config, lambda text: into_tree(text, tree, 0))
    if layout == "partition":
        country = largest_country(b, schema)
        row_filter = f"country_code = '{country}'"
        served = tree / country
        edit_file(config, lambda text: partitioned(text, "country_code"))
        if not re.search(r"^partition_by", config.read_text(), re.M):
            b.die(f"could not partition {config}")
    unguard, lo, hi = capture_changes(b, n, config)
    b.log(f"live: full seed into a tree ({layout})")
    b.tool("-q", "seed", *b.concurrency_args(), "--config", str(config), stdout=subprocess.DEVNULL)
    port = free_port()
    # The page is opened through the cache under a public name, which the cache forwards, so the
    # TileJSON's tile URLs name the cache. With LIVE_EVENTS it follows watch's events.
    if not served.is_dir():
        b.die(f"live: {served} is not a folder after the seed")
    events = ("--watch", f"http://127.0.0.1:{port}") if k.events else ()
    origin = Origin(b, served, b.work / "live-serve.log", ("--public-host", PUBLIC_HOST, *events))
    vport, env, cloudfront, stop_cloudfront = edge_in_front(b, origin, k)
    cache = f"http://127.0.0.1:{vport}/{origin.name}/"
    if layout == "partition":
        # The partition's tiles and feed are purged as COUNTRY/...; serve names the partition's
        # tree NAME-COUNTRY, so the purge URLs put NAME- before that path.
        if not origin.name.endswith(f"-{country}"):
            b.die(f"live: serve names {served} '{origin.name}', not '*-{country}'")
        cache = f"http://127.0.0.1:{vport}/{origin.name.removesuffix(country)}"
    with open(config, "a") as f:
        f.write(cloudfront or feed_and_cdn(cache))
    # A first feed segment (the seed's tiles) before the page opens.
    b.tool("-q", "seed", "--dirty", *b.concurrency_args(), "--config", str(config),
           stdout=subprocess.DEVNULL, env=env)
    say(headline(n, layout, country, k))
    b.psql(f"COMMENT ON TABLE {schema}.facilities IS 'modified by the live benchmark'", out=subprocess.DEVNULL)
    case = Case(schema, "facilities", "location", lo, hi, k.changes, row_filter)
    page = f"http://{PUBLIC_HOST}:{vport}/?tileset={origin.name}"
    for label, binary in binaries(b):
        for rate in k.rates or [0.0]:
            watched_round(b, (label, binary), rate, k, config, port, env, (schema, lo, hi),
                          lambda stream, target: measure_page(b, chromium, chromedriver, page, case,
                                                              served / "changes", k.idle_seconds,
                                                              stream, k.seconds, target))
    origin.stop()
    stop_cloudfront()
    finish_sample(b, "live", n, config, unguard)
    subprocess.run(["rm", "-rf", str(tree)], check=True)


def section_live(b: Bench) -> None:
    """live: per layout of LIVE_LAYOUTS, commit -> drawn on serve's page open in headless
    Chromium through Varnish, the feed's bytes per change, and an idle map's requests."""
    k = Knobs.from_env(b)
    for layout in k.layouts:
        n = b.opts.reseed_rows
        ensure_sample(b, n)
        install_varnish(b)
        chromium, chromedriver = chromium_paths(b)
        live_case(b, layout, k, chromium, chromedriver)
