"""Tests of the tls and pmtiles sections' comparison."""
import contextlib
import io
import tempfile
import unittest
from pathlib import Path

from bench.sections import outputs
from bench.tests import fixtures


class CompareRuns(unittest.TestCase):
    def test_medians_peak_and_ratio(self):
        with tempfile.TemporaryDirectory() as d:
            work = Path(d)
            for r, (a, b) in enumerate((("0:01.00", "0:01.30"), ("0:03.00", "0:01.10"), ("0:02.00", "0:02.50")), 1):
                fixtures.write_time_v(work / f"x-a-{r}.time", wall=a, rss_kb=1024 * r)
                fixtures.write_time_v(work / f"x-b-{r}.time", wall=b, rss_kb=512)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                status = outputs.compare_runs(work, "title", "1.10", "x-a", "plain (sslmode=disable)",
                                              "x-b", "TLS (sslmode=verify-full)")
        self.assertEqual(status, 0)
        self.assertEqual(out.getvalue().splitlines(), [
            "title; median wall of 3 runs each, peak RSS",
            "  plain (sslmode=disable)                2.00 s       3.0 MB",
            "  TLS (sslmode=verify-full)              1.30 s       0.5 MB",
            "  TLS (sslmode=verify-full) / plain           0.650   (target <= 1.10: met)",
        ])


if __name__ == "__main__":
    unittest.main()
