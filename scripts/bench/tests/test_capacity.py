"""Tests of bench.sections.capacity: the binaries measured and the same-tiles check's line."""
import unittest

from bench.sections import capacity as c


class Capacity(unittest.TestCase):
    def test_labels(self):
        self.assertEqual(c.labels_of(None), ["ours"])
        self.assertEqual(c.labels_of("/bin/old"), ["ours", "baseline-bin"])

    def test_same_tiles(self):
        self.assertEqual(c.same_tiles_line(0, 0, 0, 12), ("  both binaries wrote the same 12 tiles, byte for byte", 0))

    def test_other_tiles_fail_with_3(self):
        line, status = c.same_tiles_line(1, 2, 3, 4)
        self.assertEqual(status, 3)
        self.assertEqual(line, "  WARNING: the tiles differ from --baseline-bin's: 1 only here, 2 only there,"
                               " 3 with other bytes")


if __name__ == "__main__":
    unittest.main()
