"""Tests of bench.sections.moved: the vertex, the region, the tiles an area covers, the zooms and
configs of subtrees, and both reports from fixture files."""
import contextlib
import io
import tempfile
import unittest
from pathlib import Path

from bench.sections import moved as m
from bench.tests import fixtures

WORLD_AREA = (2 * 20037508.342789244) ** 2


def quiet(fn, *args):
    """(fn's result, its stdout lines)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = fn(*args)
    return result, out.getvalue().splitlines()


class Geometry(unittest.TestCase):
    def test_the_vertex_moves_north_by_a_hundredth_of_a_degree(self):
        self.assertEqual(m.moved_vertex("87.5 49.25"), "87.5 49.26")
        self.assertEqual(m.region(90.0, 50.0), "88.5,49.0,91.5,51.0")

    def test_the_world_covers_every_tile(self):
        self.assertAlmostEqual(m.covered_tiles(WORLD_AREA, "0-0"), 1.0)
        self.assertAlmostEqual(m.covered_tiles(WORLD_AREA, "0-2"), 1 + 4 + 16)
        self.assertAlmostEqual(m.covered_tiles(WORLD_AREA / 4, "1-1"), 1.0)


class Subtrees(unittest.TestCase):
    def test_the_baselines_zooms_stop_at_11(self):
        self.assertEqual(m.baseline_zooms("0-14"), "0-11")
        self.assertEqual(m.baseline_zooms("3-8"), "3-8")
        self.assertEqual(m.baseline_zooms("12-14"), "12-12")

    def test_listed_tiles_under_the_world_only(self):
        text = m.with_listed_tiles('[[tileset]]\nname = "world"\n\n[[tileset]]\nname = "nyc"\n', 20000)
        self.assertEqual(text, '[[tileset]]\nname = "world"\nlisted_tiles = 20000\n\n[[tileset]]\nname = "nyc"\n')


class Reports(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def seed(self, name, queried, written, wall="0:01.00"):
        fixtures.write_time_v(self.d / f"{name}.time", wall=wall, rss_kb=2048)
        fixtures.write_summary(self.d / f"{name}.json",
                               fixtures.seed_summary(tiles_queried=queried, tiles_written=written))

    def test_moved(self):
        plan = {"everything": False, "dirty_tiles": [{"zoom": 0, "tiles": 1}, {"zoom": 1, "tiles": 2}]}
        fixtures.write_summary(self.d / "moved-plan.json", fixtures.seed_summary(plan=plan))
        self.seed("moved-full-1", 100, 90)
        self.seed("moved-dirty", 5, 4)
        self.seed("moved-renamed", 50, 50)
        fixtures.write_mbtiles(self.d / "moved-reseeded.mbtiles", {(0, 0, 0): b"a"})
        fixtures.write_mbtiles(self.d / "moved-full-2.mbtiles", {(0, 0, 0): b"a"})
        status, lines = quiet(m.moved_report, self.d, "0-1", "1,2,3,4", WORLD_AREA / 4)
        self.assertEqual(status, 0)
        # A quarter of the world: 0.25 tiles at zoom 0 and 1 at zoom 1; 3 planned = 240%.
        self.assertEqual(lines[1], "  world, dry run: 3 tiles planned; Russia's area covers about 1 tiles at these"
                                   " zooms: 240.0000% (target <= 1%)")
        self.assertEqual(lines[4], "    vertex moved, --dirty              5 tiles rendered       4 written"
                                   "    1.00 s     2.0 MB")
        self.assertEqual(lines[6], "    vertex moved / renamed: 0.1000 of the tiles rendered")
        self.assertEqual(lines[7], "    reseed against a full seed: 1 tiles, 0 differ")

    def test_subtrees_that_differ_fail_with_3(self):
        for name in ("subtrees-listed", "subtrees-forced", "subtrees-target"):
            self.seed(name, 10, 5)
        fixtures.write_mbtiles(self.d / "subtrees-listed.mbtiles", {(0, 0, 0): b"a", (1, 0, 0): b"b"})
        fixtures.write_mbtiles(self.d / "subtrees-forced.mbtiles", {(0, 0, 0): b"c"})
        status, lines = quiet(m.subtrees_report, self.d, "0-12", "0-11", WORLD_AREA)
        self.assertEqual(status, 3)
        self.assertEqual(lines[1], "  zoom 0-11   every dirty tile listed (baseline)          10 tiles rendered"
                                   "         5 written ( 50.0%)      1.0 s     2.0 MB peak RSS")
        self.assertIn("covers about 22,369,621 tiles at zoom 0-12; peak RSS 2.0 MB", lines[4])
        # XYZ rows (the stored TMS row 0 at zoom 1 is row 1), as bench.sh's helper read them.
        self.assertEqual(lines[5], "  zoom 0-11: listed against subtrees: 2 tiles, 2 differ (1 only listed,"
                                   " 0 only walked; first: [(0, 0, 0), (1, 0, 1)])")


if __name__ == "__main__":
    unittest.main()
