"""Tests of bench.sections.validate: finding martin's CLI, and the report from fixture files."""
import contextlib
import io
import json
import os
import tempfile
import unittest
from pathlib import Path

from bench.sections import validate as v
from bench.tests import fixtures


class Cli(unittest.TestCase):
    def test_the_variable_wins_then_the_built_one(self):
        with tempfile.TemporaryDirectory() as tmp:
            env = {"OAR_TILES_TEST_MBTILES_CLI": "/opt/mbtiles", "PATH": tmp}
            self.assertEqual(v.mbtiles_cli(env), "/opt/mbtiles")
            built = Path(tmp) / "oar-tiles" / "mbtiles-cli" / "bin" / "mbtiles"
            env = {"XDG_CACHE_HOME": tmp, "PATH": tmp}
            saved = os.environ.get("PATH")
            os.environ["PATH"] = tmp  # shutil.which reads PATH from the process
            try:
                self.assertIsNone(v.mbtiles_cli(env))
                built.parent.mkdir(parents=True)
                built.write_text("#!/bin/sh\n")
                built.chmod(0o755)
                self.assertEqual(v.mbtiles_cli(env), str(built))
            finally:
                os.environ["PATH"] = saved


class Report(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = Path(self.tmp.name)
        fixtures.write_time_v(self.d / "validate-seed.time", wall="0:02.00", rss_kb=10240)
        fixtures.write_summary(self.d / "validate-seed.json", fixtures.seed_summary(tiles_written=42))
        for name, wall, problems, code in (("validate-plain", "0:01.00", 0, 0), ("validate-db", "0:04.00", 2, 3)):
            fixtures.write_time_v(self.d / f"{name}.time", wall=wall, rss_kb=5120)
            (self.d / f"{name}.json").write_text(json.dumps({"problems": problems}))
            (self.d / f"{name}.code").write_text(f"{code}\n")

    def tearDown(self):
        self.tmp.cleanup()

    def report(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = v.validate_report(self.d, 2000, "0-10")
        return status, out.getvalue().splitlines()

    def test_without_martin(self):
        status, lines = self.report()
        self.assertEqual(status, 0)
        self.assertEqual(lines, [
            "validate: 2000 facilities, zoom 0-10, clustered, MBTiles of 42 tiles",
            "  seed (baseline)                              2.00 s      10.0 MB",
            "  validate                                     1.00 s       5.0 MB    0.50 x seed  exit 0, 0 problem(s)",
            "  validate --against-db --all                  4.00 s       5.0 MB    2.00 x seed  exit 3, 2 problem(s)",
            "  mbtiles validate: not installed (scripts/test.sh installs it; set OAR_TILES_TEST_MBTILES_CLI)"])

    def test_martin_agreeing_and_disagreeing(self):
        fixtures.write_time_v(self.d / "validate-martin.time", wall="0:00.50", rss_kb=1024)
        (self.d / "validate-mbtiles.code").write_text("0\n")
        status, lines = self.report()
        self.assertEqual(status, 0)
        self.assertEqual(lines[-1], "  mbtiles validate --agg-hash verify           0.50 s       1.0 MB"
                                    "  exit 0: agrees with validate (exit 0)")
        (self.d / "validate-mbtiles.code").write_text("1\n")
        (self.d / "validate-martin.out").write_text("hash mismatch")
        status, lines = self.report()
        self.assertEqual(status, 3)
        self.assertIn("exit 1: DISAGREES with validate (exit 0)", lines[-2])
        self.assertEqual(lines[-1], "hash mismatch")


if __name__ == "__main__":
    unittest.main()
