"""Unit tests of bench.sections.live_edge: the tile a facility falls in, and the report line."""
from __future__ import annotations

import unittest

from bench.sections import live_edge


class TileOf(unittest.TestCase):
    def test_known_tiles(self):
        self.assertEqual(live_edge.tile_of(0.0, 0.0, 0), (0, 0))
        # Paris at z10 and z14, as any slippy-map calculator gives them.
        self.assertEqual(live_edge.tile_of(2.3522, 48.8566, 10), (518, 352))
        self.assertEqual(live_edge.tile_of(2.3522, 48.8566, 14), (8299, 5636))

    def test_edges_stay_in_the_grid(self):
        self.assertEqual(live_edge.tile_of(180.0, -85.1, 2), (3, 3))


class ZoomsOf(unittest.TestCase):
    def test_unclustered_times_z14_and_z10(self):
        self.assertEqual(live_edge.zooms_of(None), (14, 10))

    def test_clustered_times_the_first_zoom_past_the_clusters(self):
        self.assertEqual(live_edge.zooms_of(11), (14, 12))
        self.assertEqual(live_edge.zooms_of(5), (14, 10))
        self.assertEqual(live_edge.zooms_of(16), (14, 14))


class Summary(unittest.TestCase):
    def test_names_the_zooms_it_timed(self):
        self.assertIn("z14 and z12 fresh", live_edge.summary("this build", 2, [0.5], (14, 12)))

    def test_percentiles_and_misses(self):
        line = live_edge.summary("this build", 2, [0.5, 0.25, None, 1.0])
        self.assertIn("p50 0.50 s", line)
        self.assertIn("max 1.00 s", line)
        self.assertIn("3 commits, 1 never fresh", line)

    def test_nothing_fresh(self):
        self.assertIn("nothing turned fresh", live_edge.summary("baseline-bin", 10, [None]))


if __name__ == "__main__":
    unittest.main()
