"""Tests of bench.samples: the derived configs, the tile list and the baseline's statements."""
import math
import tempfile
import tomllib
import unittest
from pathlib import Path
from types import SimpleNamespace

from bench import measure, samples

ROOT = Path(__file__).resolve().parents[3]

CONFIG = """[database]
pool_size = 4

[[tileset]]
name = "t"
extent = 2048

[[tileset.layer]]
name = "points"
table = "public.facilities"   # the demo's
cluster_maxzoom = 9
cluster_cell = 256

[changes]
schema = "oar_tiles_changes"
"""


class DeriveConfig(unittest.TestCase):
    def test_clustered_as_asked_whatever_the_source_says(self):
        text, cfg = samples.derive_config(CONFIG, "bench_5.facilities", "bench_changes",
                                          (11, 512, "centroid"))
        layer = tomllib.loads(text)["tileset"][0]["layer"][0]
        self.assertEqual(layer, {"name": "points", "table": "bench_5.facilities", "cluster_maxzoom": 11,
                                 "cluster_cell": 512, "cluster_position": "centroid"})
        self.assertEqual(tomllib.loads(text)["changes"], {"schema": "bench_changes"})
        self.assertEqual(cfg, samples.SampleConfig(2048, 64, "points", 4, samples.DEFAULT_SIZE_BUDGET))

    def test_unclustered_and_changes_added(self):
        text, _ = samples.derive_config(CONFIG.replace('[changes]\nschema = "oar_tiles_changes"\n', ""),
                                        "s.t", "c", None)
        parsed = tomllib.loads(text)
        self.assertNotIn("cluster_maxzoom", parsed["tileset"][0]["layer"][0])
        self.assertEqual(parsed["changes"]["schema"], "c")

    def test_two_tables_fail(self):
        with self.assertRaisesRegex(measure.ReportError, "found 2"):
            samples.derive_config(CONFIG.replace("[changes]", '[[tileset.layer]]\nname = "b"\ntable = "x"\n[changes]'),
                                  "s.t", "c", None)

    def test_the_sample_config_derives(self):
        text, cfg = samples.derive_config((ROOT / "sample-config.toml").read_text(), "bench_9.facilities",
                                          "bench_changes", samples.parse_cluster("11,512,cell-center"))
        self.assertEqual(tomllib.loads(text)["tileset"][0]["layer"][0]["cluster_position"], "cell-center")
        self.assertEqual(cfg.layer, "facilities")

    def test_make_config_checks_its_arguments(self):
        b = SimpleNamespace(root=ROOT, CHANGES_SCHEMA="bench_changes", cluster_spec="11,512,centroid")
        with tempfile.TemporaryDirectory() as d:
            cfg = samples.make_config(b, "7_contributors", "clustered", Path(d) / "c.toml")
            self.assertIn('table = "bench_7_contributors.facilities"', (Path(d) / "c.toml").read_text())
            self.assertEqual(cfg.extent, 4096)
            with self.assertRaises(ValueError):
                samples.make_config(b, "7; DROP", "clustered", Path(d) / "c.toml")
            with self.assertRaises(ValueError):
                samples.make_config(b, 7, "both", Path(d) / "c.toml")


class Sessions(unittest.TestCase):
    def test_default_sessions(self):
        cfg = samples.SampleConfig(4096, 64, "f", 8, 1)
        b = lambda **o: SimpleNamespace(cores=2, opts=SimpleNamespace(**{  # noqa: E731
            "baseline_sessions": None, "concurrency": None, **o}))
        self.assertEqual(samples.default_sessions(b(), cfg), 2)
        self.assertEqual(samples.default_sessions(b(concurrency=1), cfg), 1)
        self.assertEqual(samples.default_sessions(b(baseline_sessions=5), cfg), 5)


class TileList(unittest.TestCase):
    def test_envelopes_and_sessions(self):
        lines = list(samples.tile_list_lines(
            [(0, 0, 0, 100), (1, 1, 0, 5000), (1, 0, 1, 10), (2, 0, 0, 4000)], 64, 4096, 2))
        fields = [line.split(",") for line in lines]
        # Largest first, each to the least loaded session.
        self.assertEqual([(f[0], f[1], f[2], f[7]) for f in fields],
                         [("1", "1", "0", "0"), ("2", "0", "0", "1"), ("0", "0", "0", "1"), ("1", "0", "1", "1")])
        w, s, e, n = map(float, fields[2][3:7])  # z0: the world and its buffer, past the antimeridian
        self.assertAlmostEqual(w, -180 * (1 + 2 * 64 / 4096), places=6)
        self.assertAlmostEqual(e, 180 * (1 + 2 * 64 / 4096), places=6)
        self.assertGreater(n, 85.05)
        self.assertAlmostEqual(s, -n, places=9)
        self.assertTrue(math.isclose(float(fields[0][3]), -180 * 64 / 4096, rel_tol=1e-6))


class Statements(unittest.TestCase):
    cfg = samples.SampleConfig(4096, 64, "facilities", 2, 1)

    def test_count_and_copy(self):
        count = samples.baseline_sql("s.t", "bench_5", "b.session = 1", self.cfg, "count")
        self.assertTrue(count.startswith("SET jit = off;\nSELECT count(*) FILTER"))
        self.assertIn("FROM bench_5.facilities t", count)
        self.assertTrue(count.endswith("WHERE b.session = 1;\n"))
        copy = samples.baseline_sql("s.t", "bench_5", "true", self.cfg, "copy")
        self.assertIn("COPY (\nSELECT b.x, b.y, m.mvt\n", copy)
        self.assertTrue(copy.endswith("WHERE true\n) TO STDOUT (FORMAT binary);\n"))
        self.assertIn("ST_AsMVT(q, 'facilities', 4096, 'geom', 'id' ORDER BY q.id)", copy)


if __name__ == "__main__":
    unittest.main()
