"""Unit tests of bench.sections.live and live_page: the knobs, the config edits, the headline,
the feed as a map reads it, the percentile and the page's report."""
from __future__ import annotations

import json
import os
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from bench.context import BenchError
from bench.sections import live, live_page, live_stream
from bench.tests.test_watch import FakeBench

LIVE_VARS = ("LIVE_CHANGES", "LIVE_IDLE_SECONDS", "LIVE_BROWSER_CACHE_CONTROL", "LIVE_LAYOUTS", "LIVE_EVENTS")


def knobs(**env: str) -> live.Knobs:
    """The knobs with only ENV of the section's variables set."""
    with mock.patch.dict(os.environ, env):
        for name in LIVE_VARS:
            if name not in env:
                os.environ.pop(name, None)
        return live.Knobs.from_env(FakeBench())


class Knobs(unittest.TestCase):
    def test_defaults(self):
        self.assertEqual(knobs(), live.Knobs(24, 60.0, "public, max-age=86400",
                                             ["unclustered", "partition", "clustered"], False))

    def test_an_empty_cache_control_is_kept_empty(self):
        self.assertEqual(knobs(LIVE_BROWSER_CACHE_CONTROL="").cache_control, "")

    def test_values(self):
        k = knobs(LIVE_CHANGES="4", LIVE_IDLE_SECONDS="2.5", LIVE_LAYOUTS="clustered", LIVE_EVENTS="1")
        self.assertEqual((k.changes, k.idle_seconds, k.layouts, k.events), (4, 2.5, ["clustered"], True))

    def test_an_unknown_layout_dies(self):
        with self.assertRaisesRegex(BenchError, "LIVE_LAYOUTS: 'flat' is not clustered, unclustered or partition"):
            knobs(LIVE_LAYOUTS="clustered flat")
        with self.assertRaisesRegex(BenchError, "LIVE_IDLE_SECONDS"):
            knobs(LIVE_IDLE_SECONDS="soon")


class Config(unittest.TestCase):
    def test_only_the_first_tileset_is_partitioned(self):
        text = "[[tileset]]  \nname = \"a\"\n[[tileset]]\nname = \"b\"\n"
        self.assertEqual(live.partitioned(text, "country_code"),
                         '[[tileset]]\npartition_by = "country_code"\nname = "a"\n[[tileset]]\nname = "b"\n')

    def test_feed_after_the_cdn(self):
        self.assertEqual(live.feed_and_cdn("http://c/n-"),
                         '\n[[tileset.cdn]]\nkind = "http"\nname = "varnish"\nurl = "http://c/n-{path}"\n\n[tileset.feed]\n')

    def test_headline_as_bash_echoed_it(self):
        k = knobs(LIVE_CHANGES="4")
        self.assertEqual(live.headline(2000, "partition", "US", k),
                         "live: 2000 facilities partition (the page shows partition US) (0-14) into a tree behind"
                         " Varnish (PURGE per tile, the feed's head purged too), watch with its default settings;"
                         " serve's page open through the cache in headless Chromium, following the feed every"
                         " second; 4 renames one at a time; browsers get Cache-Control: public, max-age=86400")
        k = knobs(LIVE_EVENTS="1", LIVE_BROWSER_CACHE_CONTROL="")
        line = live.headline(2000, "clustered", "", k)
        self.assertIn("facilities clustered (0-14)", line)
        self.assertIn("following the events of watch, else the feed every second", line)
        self.assertTrue(line.endswith("browsers get Cache-Control: as serve sends it"))

    def test_the_country_reaches_sql_so_it_must_be_two_capitals(self):
        self.assertEqual(live.largest_country(FakeBench({"country_code": "BD"}), "s"), "BD")
        with self.assertRaisesRegex(BenchError, "live: no country to show"):
            live.largest_country(FakeBench({"country_code": "B'"}), "s")


class Page(unittest.TestCase):
    def test_percentile_rounds_the_rank(self):
        self.assertEqual(live_page.percentile([5, 1, 4, 2, 3], 0.95), 5)
        self.assertEqual(live_page.percentile([1, 2, 3, 4], 0.5), 3)
        self.assertEqual(live_page.percentile([7], 0.95), 7)

    def test_tile_at(self):
        self.assertEqual(live_page.tile_at(0.0001, 0.0001, 1), "1/1/0")
        self.assertEqual(live_page.tile_at(-74.0, 40.7, 14), "14/4824/6160")

    def test_the_feed_url_is_the_caches(self):
        self.assertEqual(live_page.changes_url_of("http://live-bench.test:6081/?tileset=facilities"),
                         "http://127.0.0.1:6081/facilities/changes")

    def test_the_feed_reader_reads_each_segment_once(self):
        docs = {"/head.json": {"sequence": 3}, "/2.json": {"tiles": ["14/1/2"]},
                "/3.json": {"tiles": [], "reload": True}}
        read = []

        def fake(url):
            read.append(url)
            return docs.get(url[len("http://c"):])
        feed = live_page.FeedReader("http://c")
        with mock.patch.object(live_page, "read_json", fake):
            self.assertTrue(feed.lists(1, "14/1/2"))
            self.assertFalse(feed.lists(3, "14/1/2"))
            self.assertTrue(feed.lists(2, "14/9/9"))
        self.assertEqual(read.count("http://c/2.json"), 1)

    def test_feed_figures(self):
        d = Path(tempfile.mkdtemp())
        (d / "2.json").write_text(json.dumps({"tiles": ["a", "b"]}))
        (d / "3.json").write_text(json.dumps({"tiles": ["c"]}))
        sizes, listed = live_page.feed_figures(d, 1, 4)
        self.assertEqual((len(sizes), listed), (2, 3))

    def test_the_report(self):
        t = live_page.Timings(drawn=[1.0, 2.0, 4.0], published=[0.5, 0.6, 0.7])
        lines, status = live_page.page_lines(t, 3, [100, 200], 3, {"refreshed": 5, "reloads": 0},
                                             ["http://c/f/changes/head.json", "x"], 60, True)
        self.assertEqual(status, 0)
        self.assertEqual(lines, [
            "  commit -> the feed at the cache lists its z14 tile (baseline), 3 change(s): p50 0.60 s,"
            " p95 0.70 s, max 0.70 s",
            "  commit -> drawn on an open map at z14.5, 3 change(s): p50 2.00 s, p95 4.00 s, max 4.00 s"
            " (target p95 <= 1.5 s: NOT met; the map follows the feed by polling its head every second)",
            "  feed: 2 segment(s) for 3 change(s), 300 bytes (100 bytes per change, 1.5 tiles per segment);"
            " the map refreshed 5 tile id(s), reloaded 0 time(s)",
            "  an idle open map: 2.0 request(s) per minute (1 of 2 for head.json in 60 s; tiles load in"
            " workers, which this count does not see, and an idle map loads none)"])

    def test_a_change_never_drawn_fails_with_3(self):
        t = live_page.Timings(failures=1)
        lines, status = live_page.page_lines(t, 1, [], 0, {"refreshed": 0, "reloads": 0, "transport": "events"},
                                             [], 10, True)
        self.assertEqual((status, lines[-1]), (3, "  FAILED: 1 change(s) never drawn; page kept: True"))


class TestStream(unittest.TestCase):
    LOG = ("2026-11-29T07:00:00.500000Z  INFO oar_tiles::watch::cycle: cycle: 2 change(s), 9 tile(s)"
           " rendered (9 stored, 0 deleted) in 0.20 s; change-to-tile latency p50 0.30 s, max 0.40 s\n"
           "2026-11-29T07:00:01.000000Z  INFO something else\n")

    def cycles(self, lags):
        return [(float(i), 1, lag) for i, lag in enumerate(lags)]

    def test_cycle_lines_are_read_with_their_time(self):
        d = Path(tempfile.mkdtemp())
        (d / "w.log").write_text(self.LOG)
        since = 1795935600.0  # 2026-11-29T07:00:00Z
        self.assertEqual(live_stream.cycle_lag(d / "w.log", since, since + 10), [(0.5, 2, 0.4)])
        self.assertEqual(live_stream.cycle_lag(d / "w.log", since + 1, since + 10), [])

    def test_a_lag_that_climbs_is_growing_and_a_steady_one_flat(self):
        self.assertIn(": flat", live_stream.lag_line(self.cycles([0.5, 0.6, 0.5, 0.7, 0.6, 0.6])))
        self.assertIn(": GROWING", live_stream.lag_line(self.cycles([0.5, 0.6, 1.5, 2.0, 3.0, 4.0])))
        self.assertIn("too few", live_stream.lag_line(self.cycles([0.5])))


if __name__ == "__main__":
    unittest.main()
