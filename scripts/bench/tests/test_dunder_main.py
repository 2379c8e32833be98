"""Tests of bench.__main__: sections one blank line apart, the lock's modes, the exit status."""
import contextlib
import fcntl
import io
import os
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from bench import __main__ as entry
from bench import cli
from bench.context import Bench


class RunSections(unittest.TestCase):
    def test_one_blank_line_between_sections_and_the_worst_status(self):
        opts = cli.parse(["--sections", "main,cluster,tls"])
        b = Bench(opts, Path("/r"), Path("/r/bin"), Path("/w"), "url", 2)
        fake = {"main": lambda b: print("a"), "cluster": lambda b: (print("b"), b.failed(3)),
                "tls": lambda b: (print("c"), b.failed(1))}
        out = io.StringIO()
        with mock.patch.dict(entry.SECTIONS, fake), contextlib.redirect_stdout(out):
            entry.run_sections(b)
        self.assertEqual(out.getvalue(), "a\n\nb\n\nc\n")
        self.assertEqual(b.status, 3)


class Lock(unittest.TestCase):
    def test_shared_runs_overlap_and_an_exclusive_one_waits(self):
        with tempfile.TemporaryDirectory() as d, mock.patch.dict(os.environ, {"TMPDIR": d}):
            first = entry.take_lock(["main"])
            second = entry.take_lock(["cluster"])  # shared beside shared: no wait
            probe = open(Path(d) / "oar-tiles-bench.lock", "a")
            with self.assertRaises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            first.close()
            second.close()
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            err = io.StringIO()
            with contextlib.redirect_stderr(err), self.assertRaises(BlockingIOError):
                # An exclusive run logs that it waits; here the wait itself is cut short.
                with mock.patch.object(entry.fcntl, "flock", side_effect=[BlockingIOError, BlockingIOError]):
                    entry.take_lock(["reseed"])
            self.assertIn("waiting for another benchmark run", err.getvalue())
            probe.close()


if __name__ == "__main__":
    unittest.main()
