"""Tests of the main section's report."""
import contextlib
import io
import unittest

from bench.sections import main
from bench.tests import fixtures


def report(**base):
    """The report's lines and status for a fixture seed and baseline (BASE overrides)."""
    seed = main.Seed(rows=1000, zoom="0-1", concurrency="2 (tool default)", cores=2, server_cpu=2.0,
                     tool_cpu=0.5, mvt_bytes=5000, load_before="0.1 0.2 0.3", load_after="0.4 0.5 0.6")
    values = dict(tiles=3, bytes=5000, sessions=2, one_secs=1.0, split_secs=0.5, split_cpu=0.8,
                  copy_secs=0.6, copy_cpu=1.5)
    values.update(base)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main.main_report(fixtures.seed_summary(), fixtures.time_v_text(wall="0:01.50"), seed,
                                  main.Baselines(**values))
    return out.getvalue().splitlines(), status


class MainReport(unittest.TestCase):
    def test_figures(self):
        lines, status = report()
        self.assertEqual(status, 0)
        self.assertEqual(lines[0], "== main: oar-tiles benchmark: 1000 facilities, zoom 0-1, concurrency 2 (tool default),"
                                   " 2 cores, layer unclustered ==")
        self.assertEqual(lines[1], "  end-to-end seed:   3 tiles written in 1.50 s = 2 tiles/s  (queried 4, peak RSS 50.0 MB)")
        self.assertIn("ratio end-to-end / server-side tiles/s: 0.67", lines[5])
        self.assertIn("(issue 14's definition): 0.40   (target >= 0.85)", lines[10])
        self.assertIn("PostgreSQL 2.00 s = baseline 1.50 s + 0.50 s of the tool's statements (+33%)", lines[11])
        self.assertIn("the seed cannot take less than 1.25 s", lines[11])
        self.assertIn("baseline tiles match tiles_written (3 vs 3); uncompressed MVT bytes identical", lines[13])
        self.assertEqual(lines[17], "     0         1         1         1.0     2.0  0/0/0 (1.0 KB)")
        self.assertEqual(lines[18], "     1         3         2         1.9     0.9  -")
        self.assertEqual(lines[19], "  slowest tiles: 0/0/0 3 ms")

    def test_another_tile_set_fails_with_3(self):
        lines, status = report(tiles=4, bytes=1)
        self.assertEqual(status, 3)
        self.assertIn("baseline tiles DIFFER FROM tiles_written (4 vs 3); uncompressed MVT bytes DIFFERENT", lines[13])

    def test_no_shipped_cpu_leaves_out_the_split_line(self):
        lines, _ = report(copy_cpu=0.0)
        self.assertFalse(any("where the seed's CPU goes" in line for line in lines))


if __name__ == "__main__":
    unittest.main()
