"""Unit tests of bench.sections.edge, edge_zooms and origin: the config edits, the report from a
watcher's log and metrics, the moves, the dry run's plan, the per-zoom figures and the tree's
tiles."""
from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

from bench.measure import ReportError
from bench.sections import edge, edge_zooms, origin
from bench.tests.test_watch import json_log

METRICS = """# TYPE oar_tiles_changes_applied_total counter
oar_tiles_changes_applied_total 4
oar_tiles_purge_requests_total{target="varnish"} 10
oar_tiles_purge_paths_total{target="varnish"} 30
oar_tiles_edge_requests_total 16
oar_tiles_edge_stale_answers_total 1
oar_tiles_edge_unconfirmed_total 0
"""


class Config(unittest.TestCase):
    def test_edge_config_needs_a_watch_table(self):
        text = edge.edge_config('output = "x.mbtiles"\n[watch]\ncheck_edge = 1\n', Path("/t"), 8)
        self.assertEqual(text, 'output = "dir:/t"\n[watch]\ncheck_edge = 8\n')
        with self.assertRaises(ValueError):
            edge.edge_config('output = "x.mbtiles"\n', Path("/t"), 8)

    def test_the_cdn_tables(self):
        self.assertEqual(edge.http_cdn("http://c/f", public=True),
                         '\n[[tileset.cdn]]\nkind = "http"\nname = "varnish"\nurl = "http://c/f/{path}"\n'
                         'public_url = "http://c/f"\n')
        self.assertNotIn("public_url", edge.http_cdn("http://c/f", public=False))

    def test_cloudfront_replaces_every_cdn_table(self):
        text = 'a = 1\n\n[[tileset.cdn]]\nkind = "http"\n[[tileset.cdn]]\nkind = "x"\n'
        self.assertEqual(edge.cloudfront_instead(text, "EBENCHDRYRUN"),
                         'a = 1\n\n[[tileset.cdn]]\nkind = "cloudfront"\nname = "cloudfront"\n'
                         'distribution_id = "EBENCHDRYRUN"\n')


class Report(unittest.TestCase):
    def setUp(self):
        self.log = json_log(Path(tempfile.mkdtemp()) / "edge.log", [
            {"message": "cycle: 2 changes", "latencies": "[0.4, 0.6]"},
            {"message": "edge check", "edge_latencies": "[1.0, 2.0, 4.0]"},
            {"message": "cycle: 2 changes", "latencies": "[0.5, 0.7]"}])

    def test_the_report_lines_per_change_and_per_path(self):
        lines, status = edge.edge_report(self.log, METRICS, 4, 10)
        self.assertEqual(status, 0)
        self.assertEqual(lines, [
            "edge: 4 single-row changes at 10/s through `watch` to a tree served by `oar-tiles serve`"
            " behind Varnish (every tile cached for a day, purged by PURGE)",
            "  changes applied 4, cycles 2, measured at the edge 3, at the origin 4",
            "  commit-to-origin latency: p50 0.50 s, p95 0.70 s, max 0.70 s",
            "  commit-to-edge latency: p50 2.00 s, p95 4.00 s, max 4.00 s (target p95 <= 3 s)",
            "  purge requests 10 (30 paths): 2.5 per change; edge requests 16, stale answers 1,"
            " unconfirmed 0"])

    def test_fewer_changes_than_committed_fail_with_3(self):
        lines, status = edge.edge_report(self.log, METRICS, 5, 10)
        self.assertEqual((lines[-1], status), ("  WARNING: expected 5 changes", 3))

    def test_no_edge_latency_cannot_be_reported(self):
        log = json_log(self.log.with_name("o.log"), [{"message": "cycle: 1", "latencies": "[1]"}])
        with self.assertRaisesRegex(ReportError, "edge: the log holds no latencies"):
            edge.edge_report(log, METRICS, 1, 10)


class MovesAndPlan(unittest.TestCase):
    def test_moves_are_one_transaction_of_distinct_facilities(self):
        lines = edge.moves_sql("bench_2000", 90, "0.42", 1, 2000).splitlines()
        self.assertEqual((lines[0], lines[-1], len(lines)), ("BEGIN;", "COMMIT;", 93))
        self.assertEqual(lines[1], "COMMENT ON TABLE \"bench_2000\".facilities IS 'modified by the edge benchmark';")
        self.assertEqual(len({line.rsplit("=", 1)[1] for line in lines[2:-1]}), 90)

    def test_the_plan_line(self):
        path = Path(tempfile.mkdtemp()) / "plan.json"
        path.write_text(json.dumps([{"changes_read": 90, "plan": {
            "dirty_tiles": [{"zoom": 0, "tiles": 1}, {"zoom": 1, "tiles": 3}],
            "purges": [{"target": "cloudfront", "changed": 40, "paths": ["/a/*", "/b/1.pbf"],
                        "requests": 1, "price_usd": 0.01}]}}]))
        self.assertEqual(edge.plan_lines(path), ([
            "  reseed after moving facilities (90 changes read): 4 dirty tiles; CloudFront `cloudfront`:"
            " 40 paths before folding, 2 after (1 wildcards), 1 invalidation(s), $0.01 at $0.005 a path"], 0))


class Zooms(unittest.TestCase):
    def test_tile_path(self):
        self.assertEqual(edge_zooms.tile_path(0.0, 0.0, 1), "1/1/1.pbf")
        self.assertEqual(edge_zooms.tile_path(180.0, 89.9, 2), "2/3/0.pbf")
        self.assertEqual(edge_zooms.tile_path(-74.0, 40.7, 14), "14/4824/6160.pbf")

    def test_stats_pick_the_index_int_q_n(self):
        self.assertEqual(edge_zooms.stats([]), "none")
        self.assertEqual(edge_zooms.stats([0.4, 0.1, 0.3, 0.2]),
                         "p50 0.30 s, p95 0.40 s, max 0.40 s (4 tiles)")

    def test_the_lines(self):
        lines = edge_zooms.zooms_lines({10: [0.5], 11: []}, [0.2, 0.3], 1)
        self.assertEqual(lines, [
            "  commit -> edge, z10-z11 tiles at each change: p50 0.50 s, p95 0.50 s, max 0.50 s (1 tiles)",
            "    z10: p50 0.50 s, p95 0.50 s, max 0.50 s (1 tiles)",
            "    z11: none",
            "  commit -> origin, the same tiles: p50 0.30 s, p95 0.30 s, max 0.30 s (2 tiles)",
            "  tiles whose bytes at the edge did not change within 60 s: 1",
            "  (target: commit -> edge p95 <= 1.5 s for z10-z11 on an unclustered layer)"])


class Tree(unittest.TestCase):
    def test_tree_tiles_lists_the_tiles_of_the_extension(self):
        root = Path(tempfile.mkdtemp())
        for path in ("0/0/0.pbf", "1/0/1.pbf", "1/0/1.json", "changes/0/1.pbf"):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(b"")
        self.assertEqual(sorted(origin.tree_tiles(root, "pbf")), ["0/0/0.pbf", "1/0/1.pbf"])


if __name__ == "__main__":
    unittest.main()
