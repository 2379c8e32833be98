"""The context every section runs in: options, paths, the database, the tool, and cleanups."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NoReturn

from bench import measure
from bench.cli import Options


class BenchError(Exception):
    """die(): the message is logged as 'bench: ERROR: ...' and the run exits 1."""


class Bench:
    """What a section needs: options, paths, the database URL, running psql and the tool, the
    run's exit status and cleanups. Sections keep their own state in locals."""

    # Clustering as sample-config.toml is meant to use it.
    CLUSTER_MAXZOOM = 11
    CLUSTER_CELL = 512
    # Change capture of the benchmark's configs, apart from whatever the sample config names.
    CHANGES_SCHEMA = "bench_changes"

    def __init__(self, opts: Options, root: Path, bin: Path, work: Path, database_url: str,
                 cores: int):
        self.opts = opts
        self.root = root
        self.bin = bin
        self.work = work
        self.database_url = database_url
        self.cores = cores
        self.status = 0
        # Samples (re)loaded in this run: --reload reloads each once.
        self.loaded: set[str] = set()
        self._cleanups: list[Callable[[], None]] = []
        self._postmaster: int | None = None
        self._children: list[subprocess.Popen] = []

    @property
    def cluster_spec(self) -> str:
        """MAXZOOM,CELL,POSITION of the clustered variant."""
        return f"{self.CLUSTER_MAXZOOM},{self.CLUSTER_CELL},{self.opts.cluster_position}"

    # --- messages and status -------------------------------------------------------------------

    def log(self, msg: str) -> None:
        """'bench: MSG' on stderr."""
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    def die(self, msg: str) -> NoReturn:
        """Stops the run: raises BenchError (logged as 'bench: ERROR: MSG', exit 1)."""
        raise BenchError(msg)

    def failed(self, code: int) -> None:
        """The run's exit status becomes max(status, code)."""
        self.status = max(self.status, code)

    # --- psql ----------------------------------------------------------------------------------

    def psql_argv(self) -> list[str]:
        """psql as every section runs it (no ~/.psqlrc, quiet, stopping at the first error)."""
        return ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.database_url]

    def psql(self, sql: str | None = None, *, file: Path | None = None, tuples: bool = False,
             variables: dict[str, str] = {}, env: dict[str, str] = {}, out=subprocess.PIPE,
             check: bool = True) -> str:
        """Runs psql (from '/', so that \\copy paths and .psqlrc lookups do not depend on the
        caller's directory) with SQL on stdin or FILE; tuples=True adds -At. Returns stdout when
        `out` is a pipe (else ''). Raises CalledProcessError on failure when `check`."""
        argv = self.psql_argv()
        if tuples:
            argv.append("-At")
        for name, value in variables.items():
            argv += ["-v", f"{name}={value}"]
        if file is not None:
            argv += ["-f", str(file)]
        feed = {"input": sql} if file is None and sql is not None else {"stdin": subprocess.DEVNULL}
        done = subprocess.run(argv, text=True, cwd="/", stdout=out, check=check,
                              env={**os.environ, **env} if env else None, **feed)
        return done.stdout or ""

    def value(self, sql: str) -> str:
        """The single value `sql` selects (psql -Atc), stripped."""
        done = subprocess.run([*self.psql_argv(), "-Atc", sql], cwd="/", text=True,
                              stdout=subprocess.PIPE, check=True)
        return done.stdout.strip()

    def psql_measured(self, out_json: Path, args: list[str], stdout=None) -> subprocess.Popen:
        """psql ARGS under scripts/thread_cpu.py, which writes the CPU of the backend serving it
        to OUT_JSON; started, not waited for."""
        return self.spawn(
            ["python3", str(self.scripts("thread_cpu.py")), str(out_json), "--",
             *self.psql_argv(), *args], cwd="/", stdout=stdout)

    def spawn(self, argv: list[str], **popen_kw) -> subprocess.Popen:
        """Starts ARGV (not waited for) in a process group of its own, which the run stops at
        exit if it still runs: after an error or a signal, a background psql (and thread_cpu.py's
        psql under it) must not outlive the run and write into its removed work directory."""
        proc = subprocess.Popen(argv, process_group=0, **popen_kw)
        self._children = [p for p in self._children if p.poll() is None] + [proc]
        return proc

    def stop_children(self) -> None:
        """Ends the process groups of spawn()ed children that still run (SIGTERM, then SIGKILL
        after 10 s) and reaps them."""
        for proc in self._children:
            if proc.poll() is None:
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.killpg(proc.pid, sig)
                        proc.wait(timeout=10)
                        break
                    except ProcessLookupError:
                        break
                    except subprocess.TimeoutExpired:
                        continue
        self._children = [p for p in self._children if p.returncode is None]

    # --- the server's CPU ----------------------------------------------------------------------

    def reaped_cpu(self) -> float:
        """The CPU seconds of the postmaster's exited children so far. The server's CPU over a run
        is the difference: what the backends that ended within it used (so every backend of the
        run must have ended: a backend ends as soon as its client closes the connection). Any
        other backend that ends meanwhile (an autovacuum worker, say) is counted too."""
        if self._postmaster is None:
            checkpointer = self.value(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
            self._postmaster = measure.parent_pid(int(checkpointer))
        time.sleep(0.2)  # lets the postmaster reap the backends of a client that just exited
        return measure.reaped_cpu(self._postmaster)

    def cpu_since(self, start: float) -> float:
        """The backends' CPU since reaped_cpu() returned `start`, to 2 decimals."""
        return round(self.reaped_cpu() - start, 2)

    # --- the tool ------------------------------------------------------------------------------

    def concurrency_args(self) -> list[str]:
        """['--concurrency', N] when --concurrency was given, else []."""
        c = self.opts.concurrency
        return ["--concurrency", str(c)] if c else []

    def tool(self, *args: str, check=True, **popen_kw) -> subprocess.CompletedProcess:
        """Runs this build's oar-tiles with ARGS (subprocess.run keywords pass through)."""
        return subprocess.run([str(self.bin), *args], check=check, **popen_kw)

    def timed_seed(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        """`seed -q ARGS` under /usr/bin/time -v (report in WORK/NAME.time), the summary in
        WORK/NAME.json, stdout discarded; `env` adds variables (DATABASE_URL, say)."""
        subprocess.run(
            ["/usr/bin/time", "-v", "-o", str(self.work / f"{name}.time"), str(self.bin), "-q",
             "seed", *self.concurrency_args(), *args, "--summary-json",
             str(self.work / f"{name}.json")],
            stdout=subprocess.DEVNULL, check=True, env={**os.environ, **env} if env else None)

    # --- cleanup and the machine ---------------------------------------------------------------

    def on_cleanup(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Registers FN to run at exit (last registered first; also after an error, SIGINT or
        SIGTERM). Returns a function that unregisters it, for a section that restored things
        itself."""
        self._cleanups.append(fn)

        def unregister() -> None:
            if fn in self._cleanups:
                self._cleanups.remove(fn)
        return unregister

    def run_cleanups(self) -> None:
        """Stops the children still running, then runs the registered cleanups, last first; one
        that fails is logged and the rest run."""
        self.stop_children()
        while self._cleanups:
            fn = self._cleanups.pop()
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a cleanup must not stop the others
                self.log(f"cleanup {getattr(fn, '__name__', fn)} failed: {e}")

    def load_average(self) -> str:
        """The first three fields of /proc/loadavg."""
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])

    def scripts(self, name: str) -> Path:
        """ROOT/scripts/NAME."""
        return self.root / "scripts" / name
