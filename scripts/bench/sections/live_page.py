"""The live section's measure on an open map: commit -> drawn, in
headless Chromium driven through chromedriver's WebDriver HTTP API.

The page is `serve`'s preview through the cache, opened once. For each of CHANGES facilities
(drawn at random with a fixed seed), the map jumps to it at zoom 14.5 and waits until it is drawn;
then one transaction renames it, and the time from its commit (PostgreSQL's clock_timestamp()
after COMMIT, the same clock as this process's) to the first frame whose rendered features
(queryRenderedFeatures) carry the new name is one sample. The page never reloads. Beside it, the
baseline: commit -> the feed, read through the cache as the map reads it, lists the facility's
zoom-14 tile. Then the map stays idle IDLE_SECONDS, and the requests it made meanwhile are counted.
Given a stream (live_stream.Stream), the timed renames go on beside it until it has run its time.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.measure import fail
from bench.sections.live_stream import Stream
from bench.sections.watch import free_port, say, stop_quietly

if TYPE_CHECKING:
    from bench.context import Bench

PATIENCE = 60.0
POLL = 0.05
PAGE_SECONDS = 120
MISSES = 500
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--disable-extensions", "--no-first-run",
                 "--no-default-browser-check", "--host-resolver-rules=MAP *.test 127.0.0.1",
                 "--window-size=1024,768"]
DRAWN = """
const name = arguments[0];
return window.__map.queryRenderedFeatures({ layers: window.__drawnLayers })
  .some((f) => f.properties.name === name);
"""


class WebDriver:
    """A chromedriver and one headless Chromium session; stopped by `close` or at exit."""

    def __init__(self, b: Bench, chromium: str, chromedriver: str):
        self.port = free_port()
        self.driver = subprocess.Popen(
            [chromedriver, f"--port={self.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.profile = tempfile.mkdtemp(prefix="oar-tiles-bench-chromium-")
        self.session: str | None = None
        self._unregister = b.on_cleanup(self.close)
        self._await_port()
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium, "args": [*CHROMIUM_ARGS, f"--user-data-dir={self.profile}"]}}}}
        try:
            self.session = self._post("/session", caps)["sessionId"]
        except BaseException:
            self.close()
            raise

    def _await_port(self) -> None:
        """Waits (at most 10 s) until chromedriver accepts connections."""
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)

    def _post(self, path: str, body: dict) -> object:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as e:
            fail(f"live: WebDriver {path}: {e.code} {e.read().decode(errors='replace')[:2000]}")

    def goto(self, url: str) -> None:
        """Opens URL in the session's window."""
        self._post(f"/session/{self.session}/url", {"url": url})

    def run(self, script: str, *args: object) -> object:
        """Runs SCRIPT in the page; a returned promise is awaited (WebDriver's execute/sync)."""
        return self._post(f"/session/{self.session}/execute/sync", {"script": script, "args": list(args)})

    def close(self) -> None:
        """Ends the session, stops chromedriver and removes the profile."""
        if self.session is not None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{self.port}/session/{self.session}", method="DELETE")
                urllib.request.urlopen(request, timeout=30).close()
            except OSError:
                pass
            self.session = None
        self.driver.kill()
        stop_quietly(self.driver)
        shutil.rmtree(self.profile, ignore_errors=True)
        self._unregister()


def read_json(url: str) -> object:
    """The JSON document at URL, None when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


def head_sequence(url: str) -> int:
    """The sequence of the feed's head at URL (0 when it cannot be read)."""
    head = read_json(url)
    try:
        return head["sequence"]
    except (TypeError, KeyError):
        return 0


def tile_at(lon: float, lat: float, zoom: int) -> str:
    """z/x/y of the tile holding LON, LAT at ZOOM."""
    n = 2 ** zoom
    lat = math.radians(lat)
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.log(math.tan(lat) + 1 / math.cos(lat)) / math.pi) / 2 * n)
    return f"{zoom}/{x}/{y}"


class FeedReader:
    """The feed as a map reads it, through the cache; segments are immutable, so each is read once."""

    def __init__(self, changes_url: str):
        self.changes_url = changes_url
        self.segments: dict[int, dict] = {}

    def lists(self, after: int, tile: str) -> bool:
        """Whether a segment after `after` lists `tile` (or asks for a reload of everything)."""
        head = read_json(f"{self.changes_url}/head.json")
        if not head:
            return False
        for n in range(after + 1, head["sequence"] + 1):
            if n not in self.segments:
                segment = read_json(f"{self.changes_url}/{n}.json")
                if segment is None:
                    return False
                self.segments[n] = segment
            segment = self.segments[n]
            if segment.get("reload") or tile in segment.get("tiles", []):
                return True
        return False


def percentile(values: list[float], q: float) -> float:
    """The value at rank round(q * (len - 1)) of VALUES sorted (nearest rank, rounded)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def changes_url_of(page: str) -> str:
    """The feed's URL through the cache for the preview PAGE (its Host is the cache's own)."""
    origin_of_page = page.split("//", 1)[1].split("/", 1)[0]
    tileset = page.split("tileset=", 1)[1].split("&", 1)[0].split("#", 1)[0]
    return f"http://127.0.0.1:{origin_of_page.rsplit(':', 1)[1]}/{tileset}/changes"


@dataclass
class Case:
    """What the page measures: the table, the ids or filter to draw from, how many renames."""
    schema: str
    table: str
    geometry: str
    lo: int
    hi: int
    changes: int
    row_filter: str = ""


@dataclass
class Timings:
    """The renames' samples: commit -> drawn, commit -> listed in the feed, never drawn."""
    drawn: list[float] = field(default_factory=list)
    published: list[float] = field(default_factory=list)
    failures: int = 0


def open_page(browser: WebDriver, page: str) -> None:
    """Opens PAGE and waits (at most 120 s) until it follows its feed and its map is idle."""
    browser.goto(page)
    deadline = time.time() + PAGE_SECONDS
    while True:
        state = browser.run("return { error: window.__error || null, feed: window.__feed || null, "
                            "map: !!window.__map }")
        if state["error"]:
            fail(f"live: the page failed: {state['error']}")
        if state["feed"] is not None and state["map"]:
            break
        if time.time() > deadline:
            fail("live: the page never started following its feed")
        time.sleep(0.2)
    browser.run("window.__sameDocument = true; window.__ready.then(() => { window.__readyNow = true; });")
    while not browser.run("return window.__readyNow === true"):
        if time.time() > deadline:
            fail("live: the page's map never became idle")
        time.sleep(0.2)


def shown_row(b: Bench, browser: WebDriver, case: Case, fid: int) -> tuple[str, str, str] | None:
    """(lon, lat, name) of facility FID once the map, jumped to it, draws its name; None when it
    has no location or name, or is not drawn there."""
    row = b.value(f"SELECT ST_X({case.geometry}), ST_Y({case.geometry}), name FROM {case.schema}.{case.table} "
                  f"WHERE id = {fid} AND {case.geometry} IS NOT NULL AND name IS NOT NULL")
    if not row:
        return None
    lon, lat, old = row.split("|", 2)
    browser.run("window.__map.jumpTo({ center: [Number(arguments[0]), Number(arguments[1])], zoom: 14.5 });"
                "return window.__whenIdle().then(() => true);", lon, lat)
    # Another row of the same name drawn over it is fine; one not drawn at all (off the tileset's
    # box, or a filtered row) is skipped.
    return (lon, lat, old) if browser.run(DRAWN, old) else None


def time_rename(b: Bench, browser: WebDriver, feed: FeedReader, case: Case, done: str, fid: int,
                where: tuple[str, str], sequence: int, head_url: str, t: Timings) -> int:
    """Renames FID and waits until the map draws the new name (at most 60 s), noting when the
    feed listed its tile; returns the feed's head sequence after it."""
    new = f"live bench {done} {fid}"
    committed = float(b.value(
        f"BEGIN; UPDATE {case.schema}.{case.table} SET name = '{new}' WHERE id = {fid}; COMMIT;"
        " SELECT extract(epoch FROM clock_timestamp());").splitlines()[-1])
    published_at = None
    tile = tile_at(float(where[0]), float(where[1]), 14)
    while True:
        if published_at is None and feed.lists(sequence, tile):
            published_at = time.time()
            t.published.append(published_at - committed)
        if browser.run(DRAWN, new):
            t.drawn.append(time.time() - committed)
            if published_at is None:
                t.published.append(t.drawn[-1])
            return head_sequence(head_url)
        if time.time() - committed > PATIENCE:
            t.failures += 1
            say(f"  change {done} (id {fid}) not drawn after {PATIENCE:.0f} s")
            return sequence
        time.sleep(POLL)


def time_renames(b: Bench, browser: WebDriver, page: str, case: Case, until: float = 0.0) -> Timings:
    """CASE.changes renames of facilities the map draws, each timed from commit to drawn, and more
    until the epoch second UNTIL (while a stream of other renames runs beside them)."""
    changes_url = changes_url_of(page)
    head_url = f"{changes_url}/head.json"
    feed = FeedReader(changes_url)
    rng = random.Random(47)
    sequence = head_sequence(head_url)
    t = Timings()
    candidates = ([int(i) for i in b.value(
        f"SELECT id FROM {case.schema}.{case.table} WHERE {case.row_filter} ORDER BY id").split()]
        if case.row_filter else [])
    done = skipped = 0
    round_tag = f"{time.time():.0f}"
    while done < case.changes or time.time() < until:
        skipped += 1
        if skipped > MISSES:
            fail("live: 500 facilities in a row were not drawn where they are: is the page showing the tiles?")
        fid = rng.choice(candidates) if candidates else rng.randint(case.lo, case.hi)
        shown = shown_row(b, browser, case, fid)
        if shown is None:
            continue
        skipped = 0
        # Named after the round too: a later round picks the same facilities in the same order, and
        # a name a facility already has would count as drawn at once.
        sequence = time_rename(b, browser, feed, case, f"{round_tag}.{done}", fid, shown[:2], sequence,
                               head_url, t)
        done += 1
    return t


def feed_figures(feed_dir: Path, first: int, last: int) -> tuple[list[int], int]:
    """The sizes of the feed's segments FIRST+1..LAST in FEED_DIR and the tiles they list."""
    segments = [feed_dir / f"{n}.json" for n in range(first + 1, last + 1)]
    sizes = [p.stat().st_size for p in segments if p.exists()]
    listed = sum(len(json.loads(p.read_text())["tiles"]) for p in segments if p.exists())
    return sizes, listed


def page_lines(t: Timings, changes: int, sizes: list[int], listed: int, feed_state: dict,
               entries: list[str], idle_seconds: float, same: bool,
               target: float = 1.5) -> tuple[list[str], int]:
    """The report of the open map: commit -> listed and -> drawn, the feed, an idle map."""
    lines = []
    if t.drawn:
        p50, p95 = statistics.median(t.drawn), percentile(t.drawn, 0.95)
        verdict = "met" if p95 <= target else "NOT met"
        follows = "polling its head every second" if feed_state.get("transport") != "events" else "watch's events"
        lines.append(f"  commit -> the feed at the cache lists its z14 tile (baseline), {len(t.published)} change(s): "
                     f"p50 {statistics.median(t.published):.2f} s, p95 {percentile(t.published, 0.95):.2f} s, "
                     f"max {max(t.published):.2f} s")
        lines.append(f"  commit -> drawn on an open map at z14.5, {len(t.drawn)} change(s): "
                     f"p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(t.drawn):.2f} s "
                     f"(target p95 <= {target:g} s: {verdict}; the map follows the feed by {follows})")
    per_minute = len(entries) * 60.0 / idle_seconds
    heads = sum(1 for e in entries if e.endswith("/head.json"))
    lines.append(f"  feed: {len(sizes)} segment(s) for {changes} change(s), {sum(sizes)} bytes "
                 f"({sum(sizes) / max(changes, 1):.0f} bytes per change, {listed / max(len(sizes), 1):.1f} tiles per segment); "
                 f"the map refreshed {feed_state['refreshed']} tile id(s), reloaded {feed_state['reloads']} time(s)")
    lines.append(f"  an idle open map: {per_minute:.1f} request(s) per minute "
                 f"({heads} of {len(entries)} for head.json in {idle_seconds:.0f} s; tiles load in workers, "
                 f"which this count does not see, and an idle map loads none)")
    if t.failures or not same:
        return lines + [f"  FAILED: {t.failures} change(s) never drawn; page kept: {same}"], 3
    return lines, 0


def measure_page(b: Bench, chromium: str, chromedriver: str, page: str, case: Case, feed_dir: Path,
                 idle_seconds: float, stream: Stream | None = None, stream_seconds: float = 0.0,
                 target: float = 1.5) -> tuple[list[str], int]:
    """Opens PAGE, times CASE's renames on it (beside STREAM for at least STREAM_SECONDS, if
    given), then counts an idle map's requests; returns the report's lines (with the verdict on
    TARGET, the p95 in seconds) and status (3 when a change was never drawn or the page reloaded)."""
    browser = WebDriver(b, chromium, chromedriver)
    try:
        open_page(browser, page)
        first_sequence = browser.run("return window.__feed.sequence")
        if stream is not None:
            stream.start()
        try:
            t = time_renames(b, browser, page, case, time.time() + stream_seconds if stream else 0.0)
        finally:
            if stream is not None:
                stream.stop()
        same = browser.run("return window.__sameDocument === true")
        last_sequence = browser.run("return window.__feed.sequence")
        feed_state = browser.run("return window.__feed")
        # An idle open map: what it asks for while nothing changes.
        browser.run("performance.setResourceTimingBufferSize(100000); performance.clearResourceTimings();")
        time.sleep(idle_seconds)
        entries = browser.run("return performance.getEntriesByType('resource').map((e) => e.name)")
    finally:
        browser.close()
    sizes, listed = feed_figures(feed_dir, first_sequence, last_sequence)
    # Every commit the feed covered: the timed renames (more than CASE.changes beside a stream)
    # and the stream's.
    changes = len(t.drawn) + t.failures + (stream.committed if stream is not None else 0)
    lines, status = page_lines(t, changes, sizes, listed, feed_state, entries, idle_seconds, same,
                               target)
    if stream is not None:
        lines.insert(0, f"  beside the timed renames: {stream.committed} renames across the table in "
                        f"{stream.ended - stream.started:.0f} s ({stream.achieved():.1f} commits a second)")
    return lines, status


def chromium_paths(b: Bench) -> tuple[str, str]:
    """chromium and chromedriver, installed with apt when missing."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        subprocess.run(["bash", "-c", '. "$1" && shift && apt_install "$@"', "bash",
                        str(b.scripts("apt.sh")), "chromium", "chromium-driver"], check=True)
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not chromedriver:
        b.die("live: chromium or chromedriver is missing after apt_install")
    return chromium, chromedriver

