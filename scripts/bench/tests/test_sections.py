"""Tests of the sections' registry."""
import unittest

from bench import cli
from bench.sections import EXCLUSIVE, KNOWN_MESSAGE, MODULES, SECTIONS, exclusive


class Registry(unittest.TestCase):
    def test_every_known_section_is_registered_in_order(self):
        self.assertEqual(list(SECTIONS), list(MODULES))
        self.assertEqual(sorted(KNOWN_MESSAGE.split(", ")), sorted(SECTIONS))
        self.assertTrue(set(cli.DEFAULT_SECTIONS.split(",")) <= set(SECTIONS))

    def test_lock_modes_as_bench_sh(self):
        self.assertTrue(EXCLUSIVE <= set(SECTIONS))
        self.assertFalse(exclusive(["main", "cluster", "tls", "pmtiles", "capture", "partitions",
                                    "shards", "validate", "capacity", "polygons", "generalise",
                                    "moved", "subtrees"]))
        for name in ("reseed", "changelog", "growth", "watch", "edge", "edge-zooms", "edge-cloudfront",
                     "watch-partitions", "live"):
            self.assertTrue(exclusive(["main", name]), name)

    def test_sections_import_lazily(self):
        self.assertEqual(SECTIONS["edge-zooms"].__name__, "section_edge_zooms")


if __name__ == "__main__":
    unittest.main()
