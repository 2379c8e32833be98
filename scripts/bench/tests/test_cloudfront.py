"""Unit tests of bench.sections.cloudfront: the changes, the watcher's log, the per-run report,
the purge and seed lines, the budget edit, the knobs and moto's python."""
from __future__ import annotations

import json
import os
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from bench.context import BenchError
from bench.sections import cloudfront
from bench.tests.test_watch import FakeBench, json_log

METRICS = """oar_tiles_changes_applied_total 18
oar_tiles_purge_spend_usd_total{target="cloudfront"} 0.05
oar_tiles_purge_paths_total{target="cloudfront"} 10
oar_tiles_purge_requests_total{target="cloudfront"} 2
oar_tiles_purge_no_room_total 1
oar_tiles_purge_over_budget_total 0
oar_tiles_outbox_entries 0
oar_tiles_purge_in_flight 0
"""


class Changes(unittest.TestCase):
    def test_moves_and_renames_only_paced_at_the_rate(self):
        sql = cloudfront.cf_changes_sql("bench_2000", 50, 10, "0.42-cf", 1, 2000)
        lines = sql.splitlines()
        self.assertEqual(lines[1], "COMMENT ON TABLE \"bench_2000\".facilities IS 'modified by the edge-cloudfront benchmark';")
        changes = lines[4::2]
        self.assertEqual(len(changes), 50)
        self.assertTrue(all(c.startswith('UPDATE "bench_2000".facilities SET ') for c in changes))
        self.assertIn("interval '1 second' * 4.900)", lines[-2])


class WatchRun(unittest.TestCase):
    def setUp(self):
        self.log = json_log(Path(tempfile.mkdtemp()) / "cf.log", [
            {"message": "cycle: 0 changes in 0.01 s"},
            {"message": "cycle: 3 changes in 0.40 s"},
            {"message": "cycle: 2 changes in 0.20 s", "purge_completed": "[31.0, 33.0]"},
            {"message": "outbox over max_delay"},
            {"message": "cycle: 4 changes in bad"}])

    def test_the_log(self):
        self.assertEqual(cloudfront.cf_watch_log(self.log), ([0.2, 0.4], [31.0, 33.0], 1))

    def test_the_lines_with_purges(self):
        lines, status = cloudfront.cf_watch_lines("cloudfront", self.log, METRICS, 20, 2)
        self.assertEqual(status, 0)
        self.assertEqual(lines, [
            "  watch `cloudfront`: 20 changes at 10/s for 2 s: applied 18, missed 2; cycles with changes 2:"
            " p50 0.20 s, max 0.40 s; max_delay warnings 1",
            "    purges: 2 invalidation(s), 10 path(s), 0.56 per change, $0.050: about $2,160 a day at this rate;"
            " no room 1 time(s), over budget 0 time(s); left: 0 outbox entries, 0 purge(s) in flight",
            "    commit -> invalidation completed (2 changes): p50 31.0 s, p95 33.0 s, max 33.0 s"])

    def test_a_budget_adds_its_line(self):
        metrics = METRICS + ("oar_tiles_budget_path_interval_seconds 1800\n"
                             "oar_tiles_budget_spent_today_usd 0.0125\n")
        lines, _ = cloudfront.cf_watch_lines("budget-10", self.log, metrics, 20, 2)
        self.assertEqual(lines[-1], "    budget: $0.013 spent today (from a fresh ledger's first hour's"
                         " allowance; the day is capped at the budget); it buys one path every 1800 s")

    def test_no_cdn_prints_one_line_and_nan_without_cycles(self):
        log = json_log(self.log.with_name("none.log"), [])
        lines, _ = cloudfront.cf_watch_lines("no-cdn", log, "oar_tiles_changes_applied_total 20\n", 20, 2)
        self.assertEqual(lines, ["  watch `no-cdn`: 20 changes at 10/s for 2 s: applied 20, missed 0;"
                                 " cycles with changes 0: p50 nan s, max nan s; max_delay warnings 0"])


class SummaryLines(unittest.TestCase):
    def summary(self, purge: dict) -> Path:
        path = Path(tempfile.mkdtemp()) / "s.json"
        path.write_text(json.dumps([{"changes_read": 6000, "purges": [purge]}]))
        return path

    def test_the_purge_line(self):
        path = self.summary({"requests": 1, "paths": 2000, "price_usd": 5.0, "evicted": 12, "no_room": True})
        self.assertEqual(cloudfront.purge_lines("6000-row UPDATE", path), ([
            "  6000-row UPDATE: 6000 change(s) read, 1 invalidation(s), 2000 path(s), $5.000"
            " (evicting ~12 unchanged tiles); NO ROOM: waits in the outbox"], 0))
        path = self.summary({"requests": 0, "paths": 0, "price_usd": None})
        self.assertEqual(cloudfront.purge_lines("x", path)[0][0],
                         "  x: 6000 change(s) read, 0 invalidation(s), 0 path(s), $0.000 (evicting ~0 unchanged tiles)")

    def test_the_seed_line(self):
        path = self.summary({"requests": 1, "paths": 1, "price_usd": 0.0})
        self.assertEqual(cloudfront.seed_lines(path, 12.34, 1, 1), ([
            "  full seed behind CloudFront: 12.3 s, 1 invalidation(s), 1 path(s), $0.000;"
            " 1 of 1 invalidation(s) still in progress when seed returned (seed did not wait for propagation)"], 0))
        self.assertIn("(seed waited)", cloudfront.seed_lines(path, 1, 0, 1)[0][0])


class Knobs(unittest.TestCase):
    def test_defaults_and_values(self):
        with mock.patch.dict(os.environ, {"EDGE_CF_SECONDS": "10"}):
            for name in ("EDGE_CF_PROPAGATION", "EDGE_CF_RATE", "EDGE_CF_UPDATE"):
                os.environ.pop(name, None)
            self.assertEqual(cloudfront.Knobs.from_env(FakeBench()), cloudfront.Knobs(30, 10, 10, 6000))

    def test_the_update_reaches_sql_so_it_must_be_a_number(self):
        with mock.patch.dict(os.environ, {"EDGE_CF_UPDATE": "1; DROP TABLE x"}):
            with self.assertRaisesRegex(BenchError, "EDGE_CF_UPDATE"):
                cloudfront.Knobs.from_env(FakeBench())

    def test_budget_follows_the_distribution(self):
        self.assertEqual(cloudfront.with_budget('kind = "cloudfront"\ndistribution_id = "E1"\n', 10),
                         'kind = "cloudfront"\ndistribution_id = "E1"\nbudget_per_day = 10\n')

    def test_moto_python(self):
        with mock.patch.dict(os.environ, {"MOTO_VENV": "/v"}):
            self.assertEqual(cloudfront.moto_python(), "/v/bin/python")
        with mock.patch.dict(os.environ, {"MOTO_VENV": "", "XDG_CACHE_HOME": "", "HOME": "/h"}):
            self.assertEqual(cloudfront.moto_python(), "/h/.cache/oar-tiles/moto-venv/bin/python")


if __name__ == "__main__":
    unittest.main()
