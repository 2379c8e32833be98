"""Tests of the reseed section's floor and report."""
import contextlib
import gzip
import io
import tempfile
import unittest
from pathlib import Path

from bench.sections import reseed
from bench.tests import fixtures

INFO = {"rows": "5", "zoom": "0-14", "cluster": "clustered (x)", "concurrency": "2 (tool default)",
        "applied": "moves=1 edits=1 inserts=1 deletes=1", "logged": "4", "seed": "0.42",
        "bands": "0-5 6-14", "load": "1 / 2"}
FLOOR = {"tiles": "2", "mvt_bytes": str(2**20), "all_tiles": "3", "all_mvt_bytes": str(2 * 2**20),
         "zlib_seconds": "0.1000", "level": "3", "sessions": "2", "cluster_maxzoom": "11",
         "postgis_seconds": "0.200000"}


class Reseed(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.work = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def test_compression_level(self):
        path = self.work / "c.toml"
        path.write_text("[output]\n compression_level = 9\ncompression_level = 6\n")
        self.assertEqual(reseed.compression_level(path), "6")
        path.write_text("[output]\n")
        self.assertIsNone(reseed.compression_level(path))

    def test_floor_tiles_lists_the_changed_tiles_above_cluster_maxzoom(self):
        tiles = {(12, 1, (1 << 12) - 1 - 2): gzip.compress(b"a" * 100),  # XYZ 12/1/2
                 (11, 0, (1 << 11) - 1): gzip.compress(b"b" * 50),  # XYZ 11/0/0
                 (13, 0, (1 << 13) - 1): gzip.compress(b"c" * 10)}  # XYZ 13/0/0, not changed
        fixtures.write_mbtiles(self.work / "r.mbtiles", tiles)
        (self.work / "changed.txt").write_text("12/1/2\n11/0/0\n14/0/0\n\n")
        got = reseed.floor_tiles(self.work / "r.mbtiles", self.work / "changed.txt", 11, 4096, 64, 2, 3,
                                 self.work / "floor.csv")
        self.assertEqual({k: v for k, v in got.items() if k != "zlib_seconds"},
                         {"tiles": "1", "mvt_bytes": "100", "all_tiles": "2", "all_mvt_bytes": "150"})
        self.assertEqual([line.split(",")[:3] for line in (self.work / "floor.csv").read_text().splitlines()],
                         [["12", "1", "2"]])

    def write_runs(self, fresh_tiles):
        w = self.work
        for name, wall in (("full", "0:10.00"), ("dirty", "0:00.50"), ("fresh", "0:08.00"),
                           ("z0-5", "0:00.20"), ("z6-14", "0:00.30")):
            fixtures.write_time_v(w / f"reseed-{name}.time", wall=wall)
            fixtures.write_summary(w / f"reseed-{name}.json", fixtures.seed_summary())
        for r in range(1, 6):
            fixtures.write_time_v(w / f"reseed-noop-{r}.time", wall=f"0:00.0{r}", user=0.01, system=0.0)
        fixtures.write_mbtiles(w / "reseed.mbtiles", {(0, 0, 0): b"a", (1, 0, 0): b"b"})
        fixtures.write_mbtiles(w / "reseed-fresh.mbtiles", fresh_tiles)
        (w / "reseed-changed.txt").write_text("0/0/0\n1/0/1\n")

    def run_report(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = reseed.reseed_report(self.work, INFO, FLOOR)
        return out.getvalue().splitlines(), status

    def test_report(self):
        self.write_runs({(0, 0, 0): b"a", (1, 0, 0): b"b"})
        lines, status = self.run_report()
        self.assertEqual(status, 0)
        self.assertEqual(lines[0], "== reseed: 5 facilities, zoom 0-14, clustered (x), concurrency 2 (tool default) ==")
        self.assertIn("changes applied in one transaction: 4 = 1 moves within hub areas", lines[2])
        self.assertIn("--changed-list lines 2", lines[5])
        self.assertEqual(lines[7], "  reseed / full seed wall time: 0.50 / 10.00 s = 5.00%   (target < 2%)")
        self.assertIn("(1.00 MiB of MVT) in 0.200 s over 2 session(s) = 2.00% of the full seed", lines[9])
        self.assertIn("0.100 s CPU in one thread = 0.50% of the full seed spread over 2 core(s)", lines[10])
        self.assertEqual(lines[12], "  reseed / floor: 0.500 / 0.250 s = 2.00   (target <= 1.5)")
        self.assertEqual(lines[13], "  seed --dirty with no changes: median 30 ms wall (min 10, max 50 ms of 5 runs),"
                                    " median oar-tiles CPU 10 ms   (target <= 50 ms)")
        self.assertIn("against the faster full seed the ratio is 6.25%", lines[14])
        self.assertIn("z0-5: 4 tiles in 0.20 s; z6-14: 4 tiles in 0.30 s", lines[15])
        self.assertIn("IDENTICAL to the full seed of the changed data: 2 tiles equal", lines[16])
        self.assertEqual(lines[-1], "  slowest re-rendered tiles: 0/0/0 3 ms")

    def test_a_different_output_fails_with_3(self):
        self.write_runs({(0, 0, 0): b"a", (1, 0, 0): b"c", (2, 0, 0): b"d"})
        lines, status = self.run_report()
        self.assertEqual(status, 3)
        self.assertIn("DIFFERENT FROM the full seed of the changed data: 1 tiles equal, 1 with other bytes,"
                      " 0 only in the reseed, 1 only in the full seed", lines[16])


if __name__ == "__main__":
    unittest.main()
