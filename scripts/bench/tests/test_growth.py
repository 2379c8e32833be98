"""Tests of the growth section's log reading and report."""
import contextlib
import io
import tempfile
import unittest
from pathlib import Path

from bench.sections import growth
from bench.tests import fixtures


class Growth(unittest.TestCase):
    def test_hash_seconds(self):
        log = "x agg_tiles_hash after the purges in 0.25 s\ny after the purges in 1.5 s\n"
        self.assertEqual(growth.hash_seconds(log), 1.5)
        self.assertEqual(growth.hash_seconds("nothing"), 0.0)

    def test_report(self):
        facts = {}
        with tempfile.TemporaryDirectory() as d:
            work = Path(d)
            for n, wall, tiles in ((10, "0:02.00", 100), (20, "0:03.00", 100)):
                fixtures.write_time_v(work / f"growth-{n}.time", wall=wall, rss_kb=300 * 1024)
                fixtures.write_summary(work / f"growth-{n}.json",
                                       fixtures.seed_summary(tiles_written=tiles, bytes_written=tiles * 10))
                facts.update({(n, "load"): 1.0, (n, "tool-cpu"): 0.5, (n, "server-cpu"): 1.0,
                              (n, "bytes"): 2**20, (n, "tree-run"): 2.0, (n, "tree-hash"): 0.5,
                              (n, "tree-tiles"): 100.0})
            facts[20, "tree-run"] = 2.3
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                self.assertEqual(growth.growth_report(work, [10, 20], facts), 0)
        lines = out.getvalue().splitlines()
        self.assertEqual(lines[2], "          10      1.0      2.0       100        50             1.00    300.0 MB         1.0 MB")
        self.assertTrue(lines[3].startswith("          20      1.0      3.0       100 "))
        self.assertIn("1.50", lines[3])
        self.assertEqual(lines[7], "  peak RSS 300.0 MB (target <= 256 MB: NOT met)")
        self.assertEqual(lines[10], "          10     tree       100    2.00    0.50        1.50          2.00     1.00x")
        self.assertEqual(lines[11], "          20     tree       100    2.30    0.50        1.80          2.30     1.20x")


if __name__ == "__main__":
    unittest.main()
