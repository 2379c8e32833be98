#!/usr/bin/env python3
"""The `live` section of scripts/bench.sh (not meant to be run by hand): commit -> drawn on an open
map, measured in headless Chromium driven through chromedriver's WebDriver HTTP API.

  bench_live.py CHROMIUM CHROMEDRIVER PAGE SCHEMA TABLE GEOMETRY ID_LO ID_HI CHANGES FEED_DIR IDLE_SECONDS

PAGE is `serve`'s preview through the cache, opened once. For each of CHANGES facilities (drawn
at random from ids ID_LO..ID_HI, with a fixed seed), the map jumps to it at zoom 14.5 and waits
until it is drawn; then one transaction renames it, and the time from its commit (PostgreSQL's
clock_timestamp() after COMMIT, the same clock as this process's) to the first frame whose
rendered features (queryRenderedFeatures) carry the new name is one sample. The page never reloads.
Beside it, the baseline: commit -> the feed, read through the cache as the map reads it, lists the
facility's zoom-14 tile (it was purged and published; a run publishes several segments). Then the map stays idle IDLE_SECONDS, and the requests it made meanwhile are counted. Prints the
figures; exits 3 when a change was never drawn (after 60 s) or the page reloaded.
"""
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PATIENCE = 60.0
POLL = 0.05


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriver:
    def __init__(self, chromium, chromedriver):
        self.port = free_port()
        self.driver = subprocess.Popen(
            [chromedriver, f"--port={self.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        self.profile = tempfile.mkdtemp(prefix="oar-tiles-bench-chromium-")
        args = ["--headless=new", "--no-sandbox", "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-quic", "--disable-extensions", "--no-first-run",
                "--no-default-browser-check", "--host-resolver-rules=MAP *.test 127.0.0.1",
                "--window-size=1024,768", f"--user-data-dir={self.profile}"]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"binary": chromium, "args": args}}}}
        self.session = self._post("/session", caps)["sessionId"]

    def _post(self, path, body):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as e:
            sys.exit(f"bench: live: WebDriver {path}: {e.code} {e.read().decode(errors='replace')[:2000]}")

    def goto(self, url):
        self._post(f"/session/{self.session}/url", {"url": url})

    def run(self, script, *args):
        """Runs SCRIPT in the page; a returned promise is awaited (WebDriver's execute/sync)."""
        return self._post(f"/session/{self.session}/execute/sync", {"script": script, "args": list(args)})

    def close(self):
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/session/{self.session}", method="DELETE")
            urllib.request.urlopen(request, timeout=30).close()
        except OSError:
            pass
        self.driver.kill()
        self.driver.wait()
        subprocess.run(["rm", "-rf", self.profile], check=False)


def psql(sql):
    out = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", os.environ["DATABASE_URL"],
                          "-c", sql], cwd="/", check=True, capture_output=True, text=True).stdout
    return out.strip()


DRAWN = """
const name = arguments[0];
return window.__map.queryRenderedFeatures({ layers: window.__drawnLayers })
  .some((f) => f.properties.name === name);
"""


def head_sequence(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)["sequence"]
    except (OSError, ValueError, KeyError):
        return 0


def read_json(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


def tile_at(lon, lat, zoom):
    n = 2 ** zoom
    lat = math.radians(lat)
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.log(math.tan(lat) + 1 / math.cos(lat)) / math.pi) / 2 * n)
    return f"{zoom}/{x}/{y}"


class FeedReader:
    """The feed as a map reads it, through the cache; segments are immutable, so each is read once."""

    def __init__(self, changes_url):
        self.changes_url = changes_url
        self.segments = {}

    def lists(self, after, tile):
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


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main():
    (chromium, chromedriver, page, schema, table, geometry, lo, hi, changes, feed_dir,
     idle_seconds) = sys.argv[1:12]
    lo, hi, changes, idle_seconds = int(lo), int(hi), int(changes), float(idle_seconds)
    # The feed's head as a map's poll reads it, through the cache (its Host is the cache's own).
    origin_of_page = page.split("//", 1)[1].split("/", 1)[0]
    tileset = page.split("tileset=", 1)[1].split("&", 1)[0].split("#", 1)[0]
    changes_url = f"http://127.0.0.1:{origin_of_page.rsplit(':', 1)[1]}/{tileset}/changes"
    head_url = f"{changes_url}/head.json"
    feed = FeedReader(changes_url)
    rng = random.Random(47)
    browser = WebDriver(chromium, chromedriver)
    failures = 0
    try:
        browser.goto(page)
        deadline = time.time() + 120
        while True:
            state = browser.run("return { error: window.__error || null, feed: window.__feed || null, "
                                "map: !!window.__map }")
            if state["error"]:
                sys.exit(f"bench: live: the page failed: {state['error']}")
            if state["feed"] is not None and state["map"]:
                break
            if time.time() > deadline:
                sys.exit("bench: live: the page never started following its feed")
            time.sleep(0.2)
        browser.run("window.__sameDocument = true; window.__ready.then(() => { window.__readyNow = true; });")
        while not browser.run("return window.__readyNow === true"):
            if time.time() > deadline:
                sys.exit("bench: live: the page's map never became idle")
            time.sleep(0.2)
        first_sequence = browser.run("return window.__feed.sequence")
        sequence = head_sequence(head_url)
        latencies, published = [], []
        # LIVE_FILTER: the rows the page shows (a partition's), drawn from instead of the id range.
        row_filter = os.environ.get("LIVE_FILTER", "")
        candidates = ([int(i) for i in psql(f"SELECT id FROM {schema}.{table} WHERE {row_filter} ORDER BY id").split()]
                      if row_filter else [])
        done = skipped = 0
        while done < changes:
            skipped += 1
            if skipped > 500:
                sys.exit("bench: live: 500 facilities in a row were not drawn where they are: is the page showing the tiles?")
            fid = rng.choice(candidates) if candidates else rng.randint(lo, hi)
            row = psql(f"SELECT ST_X({geometry}), ST_Y({geometry}), name FROM {schema}.{table} "
                       f"WHERE id = {fid} AND {geometry} IS NOT NULL AND name IS NOT NULL")
            if not row:
                continue
            lon, lat, old = row.split("|", 2)
            browser.run("window.__map.jumpTo({ center: [Number(arguments[0]), Number(arguments[1])], zoom: 14.5 });"
                        "return window.__whenIdle().then(() => true);", lon, lat)
            if not browser.run(DRAWN, old):
                # Another row of the same name drawn over it is fine; one not drawn at all (off the
                # tileset's box, or a filtered row) is skipped.
                continue
            skipped = 0
            new = f"live bench {done} {fid}"
            committed = float(psql(
                f"BEGIN; UPDATE {schema}.{table} SET name = '{new}' WHERE id = {fid}; COMMIT;"
                " SELECT extract(epoch FROM clock_timestamp());").splitlines()[-1])
            published_at = None
            tile = tile_at(float(lon), float(lat), 14)
            while True:
                if published_at is None and feed.lists(sequence, tile):
                    published_at = time.time()
                    published.append(published_at - committed)
                if browser.run(DRAWN, new):
                    latencies.append(time.time() - committed)
                    if published_at is None:
                        published.append(latencies[-1])
                    sequence = head_sequence(head_url)
                    break
                if time.time() - committed > PATIENCE:
                    failures += 1
                    print(f"  change {done} (id {fid}) not drawn after {PATIENCE:.0f} s", flush=True)
                    break
                time.sleep(POLL)
            done += 1
        same = browser.run("return window.__sameDocument === true")
        last_sequence = browser.run("return window.__feed.sequence")
        feed_state = browser.run("return window.__feed")
        # An idle open map: what it asks for while nothing changes.
        browser.run("performance.setResourceTimingBufferSize(100000); performance.clearResourceTimings();")
        time.sleep(idle_seconds)
        entries = browser.run("return performance.getEntriesByType('resource').map((e) => e.name)")
    finally:
        browser.close()

    segments = [os.path.join(feed_dir, f"{n}.json") for n in range(first_sequence + 1, last_sequence + 1)]
    sizes = [os.path.getsize(p) for p in segments if os.path.exists(p)]
    listed = 0
    for path in segments:
        if os.path.exists(path):
            with open(path) as f:
                listed += len(json.load(f)["tiles"])
    per_minute = len(entries) * 60.0 / idle_seconds
    heads = sum(1 for e in entries if e.endswith("/head.json"))
    if latencies:
        p50, p95 = statistics.median(latencies), percentile(latencies, 0.95)
        verdict = "met" if p95 <= 3.0 else "NOT met"
        print(f"  commit -> the feed at the cache lists its z14 tile (baseline), {len(published)} change(s): "
              f"p50 {statistics.median(published):.2f} s, p95 {percentile(published, 0.95):.2f} s, "
              f"max {max(published):.2f} s")
        print(f"  commit -> drawn on an open map at z14.5, {len(latencies)} change(s): "
              f"p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(latencies):.2f} s "
              f"(target p95 <= 3 s: {verdict}; the map follows the feed by "
              f"{'polling its head every second' if feed_state.get('transport') != 'events' else 'watch' + chr(39) + 's events'})")
    print(f"  feed: {len(sizes)} segment(s) for {changes} change(s), {sum(sizes)} bytes "
          f"({sum(sizes) / max(changes, 1):.0f} bytes per change, {listed / max(len(sizes), 1):.1f} tiles per segment); "
          f"the map refreshed {feed_state['refreshed']} tile id(s), reloaded {feed_state['reloads']} time(s)")
    print(f"  an idle open map: {per_minute:.1f} request(s) per minute "
          f"({heads} of {len(entries)} for head.json in {idle_seconds:.0f} s; tiles load in workers, "
          f"which this count does not see, and an idle map loads none)")
    if failures or not same:
        print(f"  FAILED: {failures} change(s) never drawn; page kept: {same}")
        sys.exit(3)


if __name__ == "__main__":
    main()
