"""Tests of bench.sections.changelog: the read time from a seed's log, and the report."""
import contextlib
import io
import tempfile
import unittest
from pathlib import Path

from bench.sections import changelog as c
from bench.tests import fixtures


class ReadSeconds(unittest.TestCase):
    def test_the_first_read_line(self):
        log = "starting\nINFO seed: change log read in 1.25 s (3 rows)\nchange log read in 9 s\n"
        self.assertEqual(c.read_seconds(log), "1.25")

    def test_no_line_or_no_number_is_unknown(self):
        self.assertEqual(c.read_seconds("nothing\n"), "?")
        self.assertEqual(c.read_seconds("change log read in  s\n"), "?")

    def test_per_thousand(self):
        self.assertEqual(c.per_thousand("2.00", "1000"), "   2.000")
        self.assertEqual(c.per_thousand(">300", "1000"), "       -")
        self.assertEqual(c.per_thousand("?", "1000"), "       -")


class Report(unittest.TestCase):
    def test_the_table(self):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            fixtures.write_time_v(d / "changelog-full.time", wall="0:20.00")
            fixtures.write_time_v(d / "changelog-1994.time", wall="0:02.00")
            fixtures.write_time_v(d / "changelog-100000.time", wall="0:10.00")
            (d / "changelog.txt").write_text("1994 0.50 0.10\n100000 >300 ?\n")
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                self.assertEqual(c.changelog_report(d, "0-12"), 0)
        self.assertEqual(out.getvalue().splitlines(), [
            "changelog: one UPDATE of N names on 144,563 rows under change capture, zoom 0-12 tree (full seed 20.0 s)",
            "     rows  read before   per 1k  read now   per 1k  seed --dirty  x full",
            "     1994       0.50 s    0.251    0.10 s    0.050         2.0 s    0.10",
            "   100000       >300 s        -       ? s        -        10.0 s    0.50"])


if __name__ == "__main__":
    unittest.main()
