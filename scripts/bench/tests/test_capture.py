"""Tests of the capture section's parsing and report."""
import contextlib
import io
import unittest

from bench.sections import capture


def lines_for(table, factor=1.0, rounds=2, cpu=True):
    """Notice lines of every case and variant: off 100 ms, the others FACTOR times more."""
    out = []
    for case in capture.LABELS:
        for rnd in range(1, rounds + 1):
            for v in capture.VARIANTS:
                ms = 100.0 * (1 if v == "off" else factor) + rnd
                out.append(f"{table} {case} {v} {rnd} {ms} {ms / 2 if cpu else '-'}")
    return out


class Capture(unittest.TestCase):
    def test_notice_lines(self):
        output = "SET\npsql:/x.sql:12: NOTICE:  capture move off 1 12.5 6.0\nNOTICE:  other\n"
        self.assertEqual(capture.notice_lines(output, "lean"), ["lean move off 1 12.5 6.0"])

    def test_paired_ratio(self):
        _, _, by_round = capture.parse_timings(lines_for("lean", factor=1.2))
        self.assertAlmostEqual(capture.paired(by_round["wall"], "lean", "move", "on"), 0.199, places=2)

    def test_report(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = capture.capture_report(lines_for("facilities", 1.3) + lines_for("lean", 1.1, cpu=False),
                                            "1 2 3 / 4 5 6")
        text = out.getvalue().splitlines()
        self.assertEqual(status, 0)
        self.assertIn("median of 2 rounds", text[0])
        self.assertTrue(text[0].endswith("(load 1 2 3 / 4 5 6)"))
        self.assertEqual(sum(1 for line in text if line.startswith("  worst bulk overhead")), 3)
        self.assertIn("(target <= +25%: NOT met)", text[10])
        self.assertTrue(text[10].startswith("  worst bulk overhead +29.6%"))
        self.assertTrue(any(line.startswith("  lean: the same rows") for line in text))

    def test_no_timings_fails(self):
        from bench import measure
        with self.assertRaises(measure.ReportError):
            capture.capture_report([], "load")


if __name__ == "__main__":
    unittest.main()
