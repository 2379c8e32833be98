"""Tests of bench.measure: time -v reports, summaries, MBTiles reading, percentiles, units,
Prometheus text, the watcher's log and report()'s status."""
import gzip
import json
import os
import tempfile
import unittest
from pathlib import Path

from bench import measure
from bench.tests import fixtures


class Files(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def test_time_v_reads_wall_cpu_and_rss(self):
        path = fixtures.write_time_v(self.dir / "a.time", wall="1:02:03.5", user=1.5, system=0.25,
                                     rss_kb=2048)
        self.assertEqual(measure.time_v(path), (3723.5, 1.75, 2.0))
        path = fixtures.write_time_v(self.dir / "b.time", wall="0:01.50")
        self.assertEqual(measure.time_v(path)[0], 1.5)

    def test_time_v_without_a_field_fails(self):
        path = self.dir / "c.time"
        path.write_text("\tUser time (seconds): 1\n")
        with self.assertRaisesRegex(measure.ReportError, "printed no 'Elapsed"):
            measure.time_v(path)

    def test_summary_wants_one_tileset(self):
        path = fixtures.write_summary(self.dir / "s.json")
        self.assertEqual(measure.summary(path)["tiles_written"], 3)
        fixtures.write_summary(path, fixtures.seed_summary(), fixtures.seed_summary())
        with self.assertRaisesRegex(measure.ReportError, "expected one tileset"):
            measure.summary(path)
        self.assertEqual(measure.seed_totals(path)[:2], (6, 2.5))

    def test_thread_cpu_rounds(self):
        path = self.dir / "t.json"
        path.write_text(json.dumps({"backends": 1.2345, "total": 0.555}))
        self.assertEqual(measure.thread_cpu(path), (1.23, 0.56))

    def test_mbtiles_reading_and_comparing(self):
        mvt = b"\x1a\x02ab"
        # One gzip stream for both files: gzip's header holds the second it was made in, so two
        # compressions a second boundary apart differ.
        stored = gzip.compress(mvt)
        a = fixtures.write_mbtiles(self.dir / "a.mbtiles", {
            (0, 0, 0): stored, (1, 0, 1): b"raw", (1, 1, 1): b"x" * 10})
        b = fixtures.write_mbtiles(self.dir / "b.mbtiles", {
            (0, 0, 0): stored, (1, 0, 1): b"other", (2, 0, 0): b"y"})
        # TMS row 1 of zoom 1 is XYZ row 0; gzip is undone.
        self.assertEqual(sorted(measure.mbtiles_tiles(a)),
                         [(0, 0, 0, mvt), (1, 0, 0, b"raw"), (1, 1, 0, b"x" * 10)])
        self.assertEqual(measure.compare(a, b), (1, 1, 1, 1))
        self.assertEqual(measure.sizes_per_zoom(a)[1], [3, 10])
        self.assertEqual(set(measure.tile_digests(a)), {(0, 0, 0), (1, 0, 1), (1, 1, 1)})
        self.assertNotEqual(measure.tile_digests(a)[1, 0, 1], measure.tile_digests(b)[1, 0, 1])

    def test_watch_log(self):
        log = self.dir / "watch.log"
        log.write_text("\n".join([
            json.dumps({"fields": {"message": "cycle: 3 changes", "latencies": "[0.5, 1.5]"}}),
            "not json",
            json.dumps({"fields": {"message": "edge checked", "edge_latencies": "[2.0]"}}),
            json.dumps({"fields": {"message": "cycle: 1 change", "latencies": "[0.25]"}}),
        ]) + "\n")
        self.assertEqual(measure.watch_log(log), ([0.5, 1.5, 0.25], [2.0], 2))


class Figures(unittest.TestCase):
    def test_nearest_rank(self):
        values = list(range(1, 101))
        self.assertEqual(measure.nearest_rank(values, 0.5), 50)
        self.assertEqual(measure.nearest_rank(values, 0.95), 95)
        self.assertEqual(measure.nearest_rank(values, 0.99), 99)
        self.assertEqual(measure.nearest_rank([7], 0.99), 7)
        self.assertEqual(measure.nearest_rank([1, 2, 3], 0.0), 1)
        # The rank rounds up: the median of 5 is the 3rd, p91 of 10 the 10th.
        self.assertEqual(measure.nearest_rank([1, 2, 3, 4, 5], 0.5), 3)
        self.assertEqual(measure.nearest_rank(list(range(1, 11)), 0.91), 10)

    def test_units(self):
        self.assertEqual(measure.human(1536), "1.5 KiB")
        self.assertEqual(measure.human(3 * 2**20), "3.0 MiB")
        self.assertEqual(measure.kib(2048), "2.0")
        self.assertEqual(measure.clock_seconds("2:03.25"), 123.25)

    def test_prometheus(self):
        text = ("# HELP x\noar_tiles_changes_applied_total{kind=\"a\"} 3\n"
                "oar_tiles_changes_applied_total{kind=\"b\"} 4.5\noar_tiles_changes_applied_totalx 9\n\n")
        self.assertEqual(measure.prom_sum(text, "oar_tiles_changes_applied_total"), 7.5)
        self.assertEqual(measure.prom_value(text, 'oar_tiles_changes_applied_total{kind="b"}'), 4.5)
        self.assertIsNone(measure.prom_value(text, "absent"))


class Processes(unittest.TestCase):
    def test_this_process(self):
        self.assertTrue(measure.alive(os.getpid()))
        self.assertEqual(measure.parent_pid(os.getpid()), os.getppid())
        self.assertGreaterEqual(measure.reaped_cpu(os.getpid()), 0.0)
        self.assertFalse(measure.alive(2**22 + 1))


class Report(unittest.TestCase):
    class B:
        def __init__(self):
            self.status, self.logged = 0, []

        def failed(self, code):
            self.status = max(self.status, code)

        def log(self, msg):
            self.logged.append(msg)

    def test_statuses(self):
        b = self.B()
        measure.report(b, lambda: 0)
        self.assertEqual(b.status, 0)
        measure.report(b, lambda: measure.fail("no timings"))
        self.assertEqual((b.status, b.logged), (1, ["no timings"]))
        measure.report(b, lambda: 3)
        measure.report(b, lambda: None)
        self.assertEqual(b.status, 3)


if __name__ == "__main__":
    unittest.main()
