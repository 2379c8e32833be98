"""Tests of bench.sections.polygons: the config, the polygons and generalise reports from
fixture files, and the tile-by-tile comparison."""
import contextlib
import gzip
import io
import tempfile
import tomllib
import unittest
from pathlib import Path

from bench.sections import polygons as p
from bench.tests import fixtures


def quiet(fn, *args):
    """(fn's result, its stdout lines)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = fn(*args)
    return result, out.getvalue().splitlines()


class Config(unittest.TestCase):
    def test_two_tilesets_of_two_layers_with_the_keys(self):
        text = p.polygons_config_text("bench_polygons_1", p.NO_GENERALISATION)
        # bench.sh's heredoc, line for line: a blank line between blocks.
        self.assertTrue(text.startswith('[[tileset]]\nname = "world"\n\n[[tileset.layer]]\nname = "countries"\n'
                                        'table = "bench_polygons_1.countries"\nid_column = "id"\n'
                                        'attributes = ["name", "iso_a3"]\nsimplify = 0.0\n'))
        cfg = tomllib.loads(text)
        self.assertEqual([t["name"] for t in cfg["tileset"]], ["world", "nyc"])
        self.assertEqual([[layer["table"] for layer in t["layer"]] for t in cfg["tileset"]],
                         [["bench_polygons_1.countries", "bench_polygons_1.borders"],
                          ["bench_polygons_1.boroughs", "bench_polygons_1.outlines"]])
        self.assertTrue(all(layer["min_length"] == 0.0 for t in cfg["tileset"] for layer in t["layer"]))
        defaults = tomllib.loads(p.polygons_config_text("s", ""))
        self.assertNotIn("simplify", defaults["tileset"][1]["layer"][1])


def per_zoom(zoom, written, nbytes, largest):
    return {"zoom": zoom, "queried": written, "written": written, "bytes": nbytes,
            "largest_tile": {"tile": largest, "bytes": nbytes // max(written, 1)} if written else None}


class PolygonsReport(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        d = self.d = Path(self.tmp.name)
        for tileset in ("world", "nyc"):
            for variant, walls, nbytes in (("generalised", ("0:01.00", "0:03.00", "0:02.00"), 1024),
                                           ("baseline", ("0:04.00", "0:04.00", "0:04.00"), 2048)):
                for r, wall in enumerate(walls, 1):
                    fixtures.write_time_v(d / f"polygons-{tileset}-{variant}-{r}.time", wall=wall,
                                          rss_kb=1024 * r)
                zooms = [per_zoom(0, 1, nbytes, "0/0/0"), per_zoom(1, 0, 0, None)]
                if variant == "baseline":
                    zooms.append(per_zoom(2, 2, nbytes, "2/1/1"))
                fixtures.write_summary(d / f"polygons-{tileset}-{variant}-1.json", fixtures.seed_summary(
                    tiles_written=len(zooms), bytes_written=2 * nbytes, per_zoom=zooms))

    def tearDown(self):
        self.tmp.cleanup()

    def test_the_figures(self):
        status, lines = quiet(p.polygons_report, self.d, "0-8", "0-14", "L")
        self.assertEqual(status, 0)
        self.assertEqual(lines[1], "  load average before / after: L")
        self.assertEqual(lines[3], "  world, zoom 0-8: 177 countries + their boundaries as lines")
        self.assertEqual(lines[4], "    generalised     2.00 s      3.0 MB        2 tiles        2.0 KiB"
                                   "  largest 0/0/0 1.0 KiB")
        self.assertEqual(lines[6], "    generalised / baseline: wall 0.500, bytes 0.500")
        self.assertEqual(lines[9], "       0 |     1      1.0   0/0/0             1.0 |     1      2.0   0/0/0"
                                   "             2.0 | 0.500")
        self.assertEqual(lines[10], "       1 |     0        -   -                   - |     0        -   -"
                                    "                   - | -")
        self.assertEqual(lines[11], "       2 |     0        -   -                   - |     2      2.0   2/1/1"
                                    "             1.0 | 0.000")
        self.assertEqual(lines[13], "  nyc, zoom 0-14: 5 boroughs (EPSG:2263) + their outlines")


class GeneraliseReport(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        d = self.d = Path(self.tmp.name)
        for label, factor in (("ours", 1), ("baseline-bin", 4)):
            for stem, wall in (("world-default", 1.1), ("world-off", 1.0), ("nyc-default", 2.0)):
                for r in (1, 2):
                    fixtures.write_time_v(d / f"generalise-{stem}-{label}-{r}.time",
                                          wall=f"0:{wall * factor:05.2f}")
                fixtures.write_summary(d / f"generalise-{stem}-{label}-1.json",
                                       fixtures.seed_summary(tiles_written=100))
                fixtures.write_mbtiles(d / f"generalise-{stem}-{label}.mbtiles",
                                       {(0, 0, 0): gzip.compress(b"mvt") if label == "ours" else b"mvt"})

    def tearDown(self):
        self.tmp.cleanup()

    def test_one_binary(self):
        status, lines = quiet(p.generalise_report, self.d, 2, ["ours"], "L")
        self.assertEqual(status, 0)
        self.assertEqual(lines, [
            "generalise: median wall of 2 round(s); load average before / after: L",
            "  ours         world default    1.10 s, simplify = 0    1.00 s: ratio 1.100 (target <= 1.10);"
            "  nyc default 100 tiles in 2.00 s: 50.0 tiles/s"])

    def test_two_binaries_compare_uncompressed_tiles(self):
        status, lines = quiet(p.generalise_report, self.d, 2, ["ours", "baseline-bin"])
        self.assertEqual(status, 0)
        self.assertEqual(lines[3], "  nyc tiles/s, ours / baseline-bin: 4.00x (target >= 4)")
        self.assertEqual(lines[4], "  world-default: 1 tiles, 0 differ from baseline-bin's")

    def test_other_tiles_fail_with_3(self):
        path = self.d / "generalise-nyc-default-baseline-bin.mbtiles"
        path.unlink()
        fixtures.write_mbtiles(path, {(0, 0, 0): b"other", (1, 0, 1): b"x"})
        status, lines = quiet(p.generalise_report, self.d, 2, ["ours", "baseline-bin"])
        self.assertEqual(status, 3)
        # Keys as stored (TMS rows), as bench.sh printed them.
        self.assertEqual(lines[-1], "  nyc-default: 2 tiles, 2 differ from baseline-bin's"
                                    " (first: [(0, 0, 0), (1, 0, 1)])")


if __name__ == "__main__":
    unittest.main()
