"""Tests of bench.context: the Bench's arguments, status and cleanups."""
import contextlib
import io
import re
import unittest
from pathlib import Path

from bench import cli
from bench.context import Bench, BenchError


def bench(*argv):
    """A Bench over options parsed from ARGV."""
    return Bench(cli.parse(list(argv)), Path("/repo"), Path("/repo/bin"), Path("/tmp/w"), "postgresql://x", 2)


class Arguments(unittest.TestCase):
    def test_concurrency_args(self):
        self.assertEqual(bench().concurrency_args(), [])
        self.assertEqual(bench("--concurrency", "3").concurrency_args(), ["--concurrency", "3"])

    def test_cluster_spec_and_paths(self):
        self.assertEqual(bench("--cluster-position", "cell-center").cluster_spec, "11,512,cell-center")
        self.assertEqual(bench().scripts("load-sample.sh"), Path("/repo/scripts/load-sample.sh"))
        self.assertTrue(re.fullmatch(r"\S+ \S+ \S+", bench().load_average()))
        self.assertEqual(bench().psql_argv(), ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgresql://x"])


class Status(unittest.TestCase):
    def test_failed_keeps_the_worst(self):
        b = bench()
        b.failed(3)
        b.failed(1)
        self.assertEqual(b.status, 3)

    def test_die_raises(self):
        with self.assertRaisesRegex(BenchError, "broken"):
            bench().die("broken")


class Cleanups(unittest.TestCase):
    def test_last_first_unregistered_skipped_failures_logged(self):
        b = bench()
        ran = []
        b.on_cleanup(lambda: ran.append("first"))
        gone = b.on_cleanup(lambda: ran.append("gone"))
        b.on_cleanup(lambda: 1 / 0)
        b.on_cleanup(lambda: ran.append("last"))
        gone()
        gone()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            b.run_cleanups()
        self.assertEqual(ran, ["last", "first"])
        self.assertIn("division by zero", err.getvalue())
        b.run_cleanups()
        self.assertEqual(ran, ["last", "first"])


class Children(unittest.TestCase):
    def test_cleanup_stops_the_children_and_their_own(self):
        import tempfile
        import time
        from bench import measure
        b = bench()
        with tempfile.TemporaryDirectory() as d:
            pid_file = Path(d) / "pid"
            parent = b.spawn(["sh", "-c", f'sleep 300 & echo $! > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; wait'])
            done = b.spawn(["true"])
            done.wait()
            deadline = time.monotonic() + 10
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            grandchild = int(pid_file.read_text())
        b.run_cleanups()
        self.assertEqual(parent.returncode, -15)
        # The grandchild went with its group (the signal is delivered; it may take a moment to die).
        while measure.alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertFalse(measure.alive(grandchild))

if __name__ == "__main__":
    unittest.main()
