"""Tests of bench.sections.partitions: the configs' edits, the rounds, the changes' script, both
reports and the partition-by-partition check, from small fixture files."""
import contextlib
import io
import json
import re
import tempfile
import tomllib
import unittest
from pathlib import Path

from bench import measure
from bench.sections import partitions as p
from bench.tests import fixtures

CONFIG = """[database]
pool_size = 2

[[tileset]]

name = "facilities"
output = "facilities.mbtiles"
minzoom = 0
maxzoom = 14

[[tileset.layer]]
name = "facilities"

[[tileset]]
name = "second"
"""


def quiet(fn, *args):
    """(fn's result, its stdout lines)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = fn(*args)
    return result, out.getvalue().splitlines()


class Configs(unittest.TestCase):
    def test_zooms_are_set(self):
        text = p.with_zooms(CONFIG, "3", "8")
        self.assertIn("\nminzoom = 3\nmaxzoom = 8\n", text)

    def test_partition_by_goes_under_the_first_tileset_only(self):
        text = p.partitioned(CONFIG, "contributor_ids")
        self.assertEqual(text.count("partition_by"), 1)
        self.assertIn('[[tileset]]\npartition_by = "contributor_ids"\n\nname = "facilities"', text)
        cfg = tomllib.loads(text)
        self.assertEqual(cfg["tileset"][0]["partition_by"], "contributor_ids")
        self.assertNotIn("partition_by", cfg["tileset"][1])

    def test_output_is_pointed_elsewhere(self):
        text = p.with_output(CONFIG, Path("/w/wp-watched/facilities.mbtiles"))
        self.assertIn('\noutput = "/w/wp-watched/facilities.mbtiles"\n', text)


class Rounds(unittest.TestCase):
    def test_whole_three_times_partitioned_as_asked_alternately(self):
        self.assertEqual(p.partitions_rounds(1),
                         [(1, "whole"), (1, "partitioned"), (2, "whole"), (3, "whole")])
        self.assertEqual(len(p.partitions_rounds(3)), 6)


class Changes(unittest.TestCase):
    def test_the_script_is_paced_deterministic_and_one_change_a_row(self):
        sql = p.watch_partition_changes("bench_1000_contributors", 40, 10, "0.42-partitions", 1, 1000)
        self.assertEqual(sql, p.watch_partition_changes("bench_1000_contributors", 40, 10,
                                                        "0.42-partitions", 1, 1000))
        lines = sql.splitlines()
        self.assertEqual(lines[0], "\\set ON_ERROR_STOP on")
        self.assertIn("'modified by the watch-partitions benchmark'", lines[1])
        sleeps = [line for line in lines if line.startswith("SELECT pg_sleep_until")]
        self.assertEqual(len(sleeps), 40)
        self.assertIn("interval '1 second' * 3.900)", sleeps[-1])
        changes = lines[4::2]
        self.assertEqual(len(changes), 40)
        ids = [int(re.search(r"WHERE id = (\d+);$", c).group(1)) for c in changes]
        self.assertEqual(len(set(ids)), 40)
        self.assertTrue(all(1 <= i <= 1000 for i in ids))
        kinds = {c.split()[0] for c in changes}
        self.assertLessEqual(kinds, {"UPDATE", "INSERT", "DELETE"})
        self.assertNotEqual(sql, p.watch_partition_changes("bench_1000_contributors", 40, 10, "other", 1, 1000))


class PartitionsReport(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = Path(self.tmp.name)
        for r, wall in ((1, "0:02.00"), (2, "0:01.00"), (3, "0:03.00")):
            fixtures.write_time_v(self.d / f"part-whole-{r}.time", wall=wall, rss_kb=10240)
            fixtures.write_summary(self.d / f"part-whole-{r}.json", fixtures.seed_summary(tiles_written=1000))
        fixtures.write_time_v(self.d / "part-partitioned-1.time", wall="0:06.00", rss_kb=20480)
        fixtures.write_summary(self.d / "part-partitioned-1.json",
                               fixtures.seed_summary(tiles_written=1000, seconds=1.0),
                               fixtures.seed_summary(tiles_written=500, seconds=3.0))
        self.index([{"value": 1, "features": 30, "tiles": 1000}, {"value": 2, "features": 10, "tiles": 500}])

    def index(self, entries):
        (self.d / "part-index.json").write_text(json.dumps({"partitions": entries}))

    def tearDown(self):
        self.tmp.cleanup()

    def test_the_figures(self):
        status, lines = quiet(p.partitions_report, self.d, 20, "0-8", "contributor_ids", 1, "L", "9")
        self.assertEqual(status, 0)
        self.assertEqual(lines[0], "partitions: 20 facilities (bench_20_contributors), zoom 0-8, clustered;"
                                   " 2 partitions by contributor_ids")
        self.assertEqual(lines[2], "  whole             3           1000      2.00    2000.0        0.75    10.0 MB")
        self.assertEqual(lines[3], "  partitioned       1           1500      6.00    4000.0        0.75    20.0 MB")
        # 4000 us a tile against 2000: 2.00.
        self.assertEqual(lines[5], "  wall time per tile written, partitioned / whole: 2.00 (target <= 1.5: NOT met)")
        self.assertIn("rows per partition min 10, median 20, max 30 (40 memberships of 20 rows, 2.00 a row)",
                      lines[7])
        # 6 s wall against 1500 tiles at 2 ms: 3 s beyond, over 2 partitions.
        self.assertIn("beyond the whole tileset's time per tile: 1500 ms a partition", lines[8])
        self.assertEqual(lines[9], "  load average before / after the measured seeds: L; the section took 9 s")

    def test_an_index_that_disagrees_with_the_summary_fails_with_3(self):
        self.index([{"value": 1, "features": 30, "tiles": 1000}])
        status, lines = quiet(p.partitions_report, self.d, 20, "0-8", "contributor_ids", 1)
        self.assertEqual(status, 3)
        self.assertIn("WARNING: the index counts 1000 tiles, the summary 1500 written", "\n".join(lines))

    def test_rounds_that_wrote_different_tiles_fail(self):
        fixtures.write_summary(self.d / "part-whole-2.json", fixtures.seed_summary(tiles_written=999))
        with self.assertRaisesRegex(measure.ReportError, r"whole rounds wrote different numbers of tiles: \[999, 1000\]"):
            quiet(p.partitions_report, self.d, 20, "0-8", "contributor_ids", 1)


class WatchReport(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = Path(self.tmp.name)
        events = [{"fields": {"message": "cycle: 2 changes", "latencies": json.dumps([0.5, 1.5]),
                              "partitions_rendered": 3, "partitions_total": 10}},
                  {"fields": {"message": "cycle: 1 change", "latencies": json.dumps([4.0]),
                              "partitions_rendered": 1, "partitions_total": 11}}]
        (self.d / "watch.log").write_text("not json\n" + "\n".join(json.dumps(e) for e in events) + "\n")
        (self.d / "metrics.txt").write_text("oar_tiles_changes_applied_total 3\n"
                                            "oar_tiles_tiles_rendered_total 7\n"
                                            "oar_tiles_partitions_rendered_total 4\n")
        fixtures.write_summary(self.d / "seed.json", fixtures.seed_summary(), fixtures.seed_summary())
        fixtures.write_time_v(self.d / "seed.time", wall="0:02.50")

    def tearDown(self):
        self.tmp.cleanup()

    def report(self, n):
        return quiet(p.watch_partitions_report, self.d / "watch.log", self.d / "metrics.txt", n, 10.0,
                     self.d / "seed.json", self.d / "seed.time", "0-8")

    def test_the_figures(self):
        status, lines = self.report(3)
        self.assertEqual(status, 0)
        self.assertEqual(lines[1], "  full seed before the watcher: 2 partitions, 6 tiles written in 2.5 s"
                                   " (peak RSS 50.0 MB)")
        self.assertIn("changes applied 3 (latencies measured 3), cycles 2, tiles rendered 7, partitions"
                      " rendered 4", lines[2])
        self.assertEqual(lines[3], "  partitions rendered per cycle (2 cycle events): median 2, p95 3, max 3, of 11")
        self.assertEqual(lines[4], "  change-to-tile latency: p50 1.50 s, p95 4.00 s, max 4.00 s"
                                   " (target p95 <= 3 s: NOT met)")

    def test_missing_changes_fail_with_3(self):
        status, lines = self.report(4)
        self.assertEqual(status, 3)
        self.assertEqual(lines[-1], "  WARNING: expected 4 changes applied and measured")


class SamePartitions(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def side(self, name, tiles_by_value):
        folder = self.d / name
        folder.mkdir()
        entries = []
        for value, tiles in tiles_by_value.items():
            fixtures.write_mbtiles(folder / f"facilities.{value}.mbtiles", tiles)
            entries.append({"value": value, "path": str(value), "tiles": len(tiles)})
        index = folder / "facilities.partitions.json"
        index.write_text(json.dumps({"partitions": entries}))
        return index

    def test_equal_partitions(self):
        a = self.side("a", {1: {(0, 0, 0): b"x"}, 2: {(1, 0, 0): b"y", (1, 1, 0): b"z"}})
        b = self.side("b", {1: {(0, 0, 0): b"x"}, 2: {(1, 0, 0): b"y", (1, 1, 0): b"z"}})
        status, lines = quiet(p.same_partitions, a, b)
        self.assertEqual(status, 0)
        self.assertEqual(lines, ["  the watched partitions equal a fresh partitioned seed of the changed data"
                                 " (2 partitions, 3 tiles, index entries equal)"])

    def test_a_missing_value_and_other_bytes_fail_with_3(self):
        a = self.side("a", {1: {(0, 0, 0): b"x"}, 2: {(1, 0, 0): b"y"}})
        b = self.side("b", {1: {(0, 0, 0): b"other"}})
        status, lines = quiet(p.same_partitions, a, b)
        self.assertEqual(status, 3)
        self.assertIn("in 2 way(s):", lines[0])
        self.assertEqual(lines[1:], ["    2 only in the watched index",
                                     "    1: 1 against 1 tiles, 1 with other bytes"])


if __name__ == "__main__":
    unittest.main()
