"""Unit tests of bench.sections.watch: the scripted changes, the config edits, the report, the
comparison of two MBTiles and the small process helpers."""
from __future__ import annotations

import json
import os
import re
import sqlite3
import tempfile
import unittest
import zlib
from pathlib import Path
from unittest import mock

from bench.context import BenchError
from bench.measure import ReportError
from bench.sections import watch


class FakeBench:
    """What the helpers under test use of Bench: die, failed, log and value."""

    CHANGES_SCHEMA = "bench_changes"

    def __init__(self, values: dict[str, str] | None = None):
        self.status = 0
        self.logged: list[str] = []
        self.values = values or {}

    def die(self, msg: str):
        raise BenchError(msg)

    def failed(self, code: int) -> None:
        self.status = max(self.status, code)

    def log(self, msg: str) -> None:
        self.logged.append(msg)

    def value(self, sql: str) -> str:
        return next(v for k, v in self.values.items() if k in sql)


def json_log(path: Path, events: list[dict]) -> Path:
    """A watcher's JSON log with one line per event's fields, and one line that is not JSON."""
    lines = ["not json"] + [json.dumps({"fields": fields}) for fields in events]
    path.write_text("\n".join(lines) + "\n")
    return path


def mbtiles(path: Path, tiles: dict[tuple[int, int, int], bytes], gzip: bool = False) -> Path:
    """An MBTiles file holding TILES (XYZ rows), gzipped when GZIP."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE tiles (zoom_level int, tile_column int, tile_row int, tile_data blob)")
        for (z, x, y), data in tiles.items():
            if gzip:
                c = zlib.compressobj(wbits=31)
                data = c.compress(data) + c.flush()
            db.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (z, x, (1 << z) - 1 - y, data))
    return path


class ChangesSql(unittest.TestCase):
    def test_the_script_is_the_seeds_and_paces_every_change(self):
        sql = watch.changes_sql("bench_2000", 20, 10, "0.42", 1, 2000)
        self.assertEqual(sql, watch.changes_sql("bench_2000", 20, 10, "0.42", 1, 2000))
        lines = sql.splitlines()
        self.assertEqual(lines[:3], [
            "\\set ON_ERROR_STOP on",
            "COMMENT ON TABLE \"bench_2000\".facilities IS 'modified by the watch benchmark';",
            "CREATE TEMP TABLE watch_start AS SELECT clock_timestamp() AS t0;"])
        waits = [line for line in lines if line.startswith("SELECT pg_sleep_until")]
        self.assertEqual(len(waits), 20)
        self.assertIn("interval '1 second' * 1.900) \\g /dev/null", waits[-1])
        changes = lines[4::2]
        self.assertEqual(len(changes), 20)
        ids = [int(re.search(r"WHERE id = (\d+);$", c).group(1)) for c in changes]
        self.assertEqual(len(set(ids)), 20, "each facility changes once")
        self.assertTrue(all(1 <= i <= 2000 for i in ids))

    def test_the_seed_is_a_string_as_bash_passed_it(self):
        # bench_helpers drew id 371 first from the text "0.42" (a float seed draws another).
        self.assertIn("WHERE id = 371;", watch.changes_sql("s", 1, 10, "0.42", 1, 2000))

    def test_every_kind_of_change_appears(self):
        sql = watch.changes_sql("s", 300, 10, "0.42", 1, 100000)
        for kind in ("SET location = ST_Translate", "' (edited)'", "INSERT INTO", "DELETE FROM"):
            self.assertIn(kind, sql)


class ConfigEdits(unittest.TestCase):
    CONFIG = ('[database]\npool_size = 4\n\n[watch]\ncheck_edge = 2\ndebounce = "1s"\n\n'
              '[[tileset]]\nname = "facilities"\noutput = "facilities.mbtiles"\n'
              '[changes]\nschema = "bench_changes"\n')

    def test_into_tree_sets_the_output_and_check_edge(self):
        text = watch.into_tree(self.CONFIG, Path("/w/edge-tree"), 8)
        self.assertIn('output = "dir:/w/edge-tree"\n', text)
        self.assertIn("[watch]\ncheck_edge = 8\ndebounce", text)
        self.assertEqual(text.count("check_edge"), 1)

    def test_into_tree_without_check_edge_keeps_the_watch_table(self):
        text = watch.into_tree(self.CONFIG, Path("/t"))
        self.assertIn("check_edge = 2\n", text)
        self.assertIn('output = "dir:/t"\n', text)

    def test_a_watch_header_with_trailing_space_is_the_table(self):
        text = watch.into_tree("[watch]  \nx = 1\n", Path("/t"), 0)
        self.assertEqual(text, "[watch]\ncheck_edge = 0\nx = 1\n")

    def test_without_changes_renames_the_schema(self):
        text = watch.without_changes(self.CONFIG, "bench_changes")
        self.assertIn('schema = "bench_changes_absent"\n', text)


class Report(unittest.TestCase):
    def setUp(self):
        self.dir = Path(tempfile.mkdtemp())

    def metrics(self, applied: int) -> str:
        return ("# HELP x\noar_tiles_changes_applied_total{output=\"a\"} %d\n"
                "oar_tiles_tiles_rendered_total 42\n" % applied)

    def test_percentiles_and_counts(self):
        log = json_log(self.dir / "w.log", [
            {"message": "cycle: 3 changes", "latencies": "[0.5, 1.5, 2.5]"},
            {"message": "cycle: 1 change", "latencies": "[3.5]"}])
        lines, status = watch.watch_report(log, self.metrics(4), 4, 10)
        self.assertEqual(status, 0)
        self.assertEqual(lines, [
            "watch: 4 single-row changes at 10/s, default debounce 1 s / max_delay 10 s",
            "  changes applied 4 (latencies measured 4), cycles 2, tiles rendered 42",
            "  change-to-tile latency: p50 1.50 s, p95 3.50 s, max 3.50 s (target p95 <= 3 s)"])

    def test_missing_changes_warn_and_fail_with_3(self):
        log = json_log(self.dir / "w.log", [{"message": "cycle: 1", "latencies": "[0.2]"}])
        lines, status = watch.watch_report(log, self.metrics(1), 2, 10)
        self.assertEqual((lines[-1], status), ("  WARNING: expected 2 changes", 3))

    def test_no_latencies_cannot_be_reported(self):
        log = json_log(self.dir / "w.log", [{"message": "cycle: 0 changes"}])
        with self.assertRaises(ReportError):
            watch.watch_report(log, self.metrics(0), 1, 10)

    def test_print_report_fails_the_run_with_the_status(self):
        b = FakeBench()
        with mock.patch("builtins.print"):
            watch.print_report(b, lambda: (["x"], 3))
        self.assertEqual(b.status, 3)
        b = FakeBench()
        watch.print_report(b, lambda: watch.fail("cannot"))
        self.assertEqual((b.status, b.logged), (1, ["cannot"]))


class SameTiles(unittest.TestCase):
    def test_equal_tiles_gzipped_or_not(self):
        d = Path(tempfile.mkdtemp())
        a = mbtiles(d / "a.mbtiles", {(1, 0, 1): b"mvt", (0, 0, 0): b"top"}, gzip=True)
        b = mbtiles(d / "b.mbtiles", {(1, 0, 1): b"mvt", (0, 0, 0): b"top"})
        self.assertEqual(watch.same_tiles(a, b), (
            ["  the watched output equals a full seed of the changed data (2 tiles)"], 0))

    def test_a_different_tile_fails_with_3(self):
        d = Path(tempfile.mkdtemp())
        a = mbtiles(d / "a.mbtiles", {(1, 0, 1): b"mvt"})
        b = mbtiles(d / "b.mbtiles", {(1, 0, 1): b"MVT"})
        lines, status = watch.same_tiles(a, b)
        self.assertEqual(status, 3)
        self.assertIn("differ (1 against 1 tiles)", lines[0])


class Helpers(unittest.TestCase):
    def test_ids_must_be_contiguous(self):
        b = FakeBench({"min(id)": "1 2000 2000"})
        self.assertEqual(watch.id_range(b, "bench_2000", "watch"), (1, 2000))
        b = FakeBench({"min(id)": "1 2001 2000"})
        with self.assertRaisesRegex(BenchError, "watch: bench_2000.facilities ids are not contiguous"):
            watch.id_range(b, "bench_2000", "watch")
        self.assertEqual(watch.id_range(b, "bench_2000"), (1, 2001))

    def test_exit_code_as_the_shell_reports_it(self):
        self.assertEqual(watch.exit_code(-15), 143)
        self.assertEqual(watch.exit_code(3), 3)

    def test_applied_needs_none_pending(self):
        text = "oar_tiles_changes_applied_total 5\noar_tiles_pending_changes 1\n"
        self.assertFalse(watch.applied(text, 5))
        self.assertTrue(watch.applied(text.replace("changes 1", "changes 0"), 5))
        self.assertFalse(watch.applied("oar_tiles_changes_applied_total 4\n", 5))

    def test_env_int(self):
        b = FakeBench()
        with mock.patch.dict(os.environ, {"X_N": ""}):
            self.assertEqual(watch.env_int(b, "X_N", 20), 20)
        with mock.patch.dict(os.environ, {"X_N": "4"}):
            self.assertEqual(watch.env_int(b, "X_N", 20), 4)
        with mock.patch.dict(os.environ, {"X_N": "4; DROP"}):
            with self.assertRaisesRegex(BenchError, "X_N must be a non-negative integer"):
                watch.env_int(b, "X_N", 20)

    def test_free_port_is_free(self):
        import socket
        port = watch.free_port()
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


if __name__ == "__main__":
    unittest.main()
