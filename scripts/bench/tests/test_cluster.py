"""Tests of the cluster section's report."""
import contextlib
import io
import tempfile
import unittest
from pathlib import Path

from bench.sections import cluster
from bench.tests import fixtures


def write_run(work, variant, tiles, over_budget=()):
    """A variant's seed: its MBTiles, summary and time -v report."""
    fixtures.write_mbtiles(work / f"cluster-5-{variant}.mbtiles", tiles)
    fixtures.write_summary(work / f"cluster-5-{variant}.json", fixtures.seed_summary(
        tiles_written=len(tiles), bytes_written=sum(map(len, tiles.values())),
        over_budget=list(over_budget)))
    fixtures.write_time_v(work / f"cluster-5-{variant}.time")


class ClusterReport(unittest.TestCase):
    def run_report(self, clustered, unclustered, over=()):
        with tempfile.TemporaryDirectory() as d:
            work = Path(d)
            write_run(work, "clustered", clustered)
            write_run(work, "unclustered", unclustered, over)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                status = cluster.cluster_report(work, 5, "0-2", 2048, "desc", "1 / 2")
        return out.getvalue().splitlines(), status

    def test_table_and_totals(self):
        lines, status = self.run_report({(0, 0, 0): b"a" * 1024, (1, 0, 0): b"b" * 512, (1, 1, 0): b"c" * 2048},
                                        {(0, 0, 0): b"a" * 4096}, over=[{"tile": "0/0/0"}])
        self.assertEqual(status, 0)
        self.assertEqual(lines[0], "== clustering: 5 facilities, zoom 0-2 seeded (zooms past cluster_maxzoom"
                                   " render the same either way), desc ==")
        self.assertEqual(lines[5], "     0 |     1     1.0     1.0     1.0     1.0     2.0     3.0 |"
                                   "     1     4.0     4.0     4.0     1.0     2.0     3.0")
        self.assertEqual(lines[6], "     1 |     2     1.2     2.0     2.0     0.5     0.9     1.0 |"
                                   "     0       -       -       -     0.5     0.9     1.0")
        self.assertEqual(lines[7], "     2 |     0       -       -       -       -       -       - |"
                                   "     0       -       -       -       -       -       -")
        self.assertEqual(lines[8], "  load average before / after the two seeds: 1 / 2")
        self.assertIn("tiles over the 2 KiB budget: 1 (summary's over_budget lists 1); largest 4.0 KiB", lines[12])

    def test_disagreeing_budget_fails_with_3(self):
        _, status = self.run_report({(0, 0, 0): b"a"}, {(0, 0, 0): b"a" * 4096})
        self.assertEqual(status, 3)


if __name__ == "__main__":
    unittest.main()
