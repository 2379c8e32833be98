"""Tests of bench.sections.bulk_import: when the purges ended (Varnish's counter, the stand-in's
admitted calls), the feed's newest file, the CDN tables and the report's lines."""
import os
import tempfile
import tomllib
import unittest
from pathlib import Path

from bench import cli
from bench.sections import bulk_import as imp
from bench.sections import exclusive
from bench.tests import fixtures

VARNISHSTAT = """MAIN.uptime              1234          1.00 Child process uptime
MAIN.n_purges            94611        76.67 Number of purge operations executed
MAIN.n_obj_purged          120         0.10 Number of purged objects
"""


class Purges(unittest.TestCase):
    def test_varnish_counter_from_varnishstat(self):
        self.assertEqual(imp.purges_stat(VARNISHSTAT), 94611)
        self.assertIsNone(imp.purges_stat("MAIN.n_obj_purged 3 0.0 x\n"))

    def test_the_counter_ends_where_it_reached_its_last_value(self):
        samples = [(9.0, 5), (10.0, 5), (10.2, 6), (11.0, 40), (12.4, 90), (12.6, 90), (30.0, 90)]
        self.assertAlmostEqual(imp.last_change(samples, 10.0, 13.0), 2.4)

    def test_a_run_that_purged_nothing_has_no_purge_time(self):
        samples = [(9.0, 5), (10.0, 5), (12.0, 5)]
        self.assertIsNone(imp.last_change(samples, 10.0, 13.0))
        self.assertIsNone(imp.last_change([], 10.0, 13.0))

    def test_an_earlier_runs_purges_do_not_count(self):
        # The counter rose before the run; within it, it stayed where it was.
        samples = [(5.0, 1), (8.0, 70), (10.5, 70), (11.0, 70)]
        self.assertIsNone(imp.last_change(samples, 10.0, 12.0))

    def test_purges_done_by_the_first_sample_of_the_run_count(self):
        # The count before the run is the reference: the run's purges all came before its first
        # sample, which already shows them.
        samples = [(8.0, 70), (10.1, 80), (11.0, 80)]
        self.assertAlmostEqual(imp.last_change(samples, 10.0, 12.0), 0.1)

    def test_the_stand_ins_last_admitted_call_within_the_run(self):
        admitted = [1.0, 10.5, 11.25, 20.0]
        self.assertAlmostEqual(imp.last_admitted(admitted, 10.0, 12.0), 1.25)
        self.assertIsNone(imp.last_admitted(admitted, 12.0, 19.0))


class Feed(unittest.TestCase):
    def test_the_newest_file_under_the_feed(self):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            self.assertIsNone(imp.newest_mtime(d))
            (d / "segments").mkdir()
            for name, at in (("head.json", 100.0), ("segments/1.json", 50.0), ("segments/2.json", 150.0)):
                (d / name).write_text("{}")
                os.utime(d / name, (at, at))
            self.assertEqual(imp.newest_mtime(d), 150.0)


class Tables(unittest.TestCase):
    def parsed(self, target):
        return tomllib.loads("[[tileset]]\nname = 'x'\n" + imp.cdn_table(target, "http://127.0.0.1:7/x", 9))

    def test_every_output_has_a_feed_and_its_target(self):
        self.assertNotIn("cdn", self.parsed("none")["tileset"][0])
        http = self.parsed("http")["tileset"][0]
        self.assertEqual(http["cdn"][0]["url"], "http://127.0.0.1:7/x/{path}")
        cf = self.parsed("cloudflare")["tileset"][0]
        self.assertEqual(cf["cdn"][0]["api_url"], "http://127.0.0.1:9/client/v4")
        self.assertEqual(cf["cdn"][0]["plan"], "free")
        for target in imp.TARGETS:
            self.assertIn("feed", self.parsed(target)["tileset"][0])


class Report(unittest.TestCase):
    def run_of(self, wall, **summary):
        return imp.Run(wall, 0.0, wall, fixtures.seed_summary(**summary),
                       "INFO reseed: 200000 changes (change log read in 1.34 s)\n")

    def test_a_target_s_lines(self):
        full = self.run_of(60.0, purges=[{"target": "varnish", "requests": 94611, "paths": 94611}])
        dirty = self.run_of(45.0, tiles_written=90000, purges=[
            {"target": "varnish", "requests": 5, "paths": 90000, "failed": "timed out"}],
            ways=[{"zoom": 7, "dirty": 9, "walk": 20, "walked": False},
                  {"zoom": 8, "dirty": 900, "walk": 800, "walked": True},
                  {"zoom": 9, "dirty": 3000, "walk": 2900, "walked": True}])
        first, second = imp.target_lines("http", full, dirty, 61.5, None, 50.0)
        self.assertIn("full seed    60.0 s = 1.20 x no CDN (purges done 61.5 s; 94611 req / 94611 paths)",
                      first)
        self.assertNotIn("no CDN", imp.target_lines("none", full, dirty, None, None, 60.0)[0])
        self.assertIn("seed --dirty  45.0 s = 0.75 x full", second)
        self.assertIn("change log read 1.34 s", second)
        self.assertIn("purges done -", second)
        self.assertIn("walked z8,9", second)
        self.assertIn("FAILED: timed out", second)

    def test_ways_and_purges_when_absent(self):
        self.assertEqual(imp.ways_label({}), "-")
        self.assertEqual(imp.ways_label({"ways": [{"zoom": 3, "walked": False}]}), "listed all")
        self.assertEqual(imp.purge_label({"purges": []}), "-")


class Options(unittest.TestCase):
    def test_rows_and_zoom_for_a_quick_run(self):
        o = cli.parse(["--sections", "import", "--import-rows", "10000", "--import-zoom=0-10"])
        self.assertEqual((o.sections, o.import_rows, o.import_zoom), (["import"], 10000, "0-10"))
        self.assertEqual(cli.parse([]).import_rows, 100000)
        with self.assertRaises(cli.CliError):
            cli.parse(["--import-zoom", "9-3"])

    def test_it_takes_the_lock_to_itself(self):
        self.assertTrue(exclusive(["import"]))


if __name__ == "__main__":
    unittest.main()
