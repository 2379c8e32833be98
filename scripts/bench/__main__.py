"""`python3 -m bench [OPTIONS]`: the benchmark's run, as scripts/bench.sh ran it: options, the
database, GNU time, the lock other benchmark runs share, the profiling build, a work directory,
then the sections in order, one blank line apart; the exit status is the worst a section
reported (3: a cross-check failed), 1 when the run stopped on an error."""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import cli, measure
from bench.context import Bench, BenchError
from bench.sections import SECTIONS, exclusive

ROOT = Path(__file__).resolve().parents[2]


def log(msg: str) -> None:
    """'bench: MSG' on stderr (before a Bench exists)."""
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def database_url() -> str:
    """scripts/setup-postgis.sh's URL (it starts PostgreSQL with PostGIS if needed), exported to
    every child as DATABASE_URL."""
    line = subprocess.run([str(ROOT / "scripts/setup-postgis.sh")], stdout=subprocess.PIPE,
                          text=True, check=True).stdout.strip()
    url = line.removeprefix("DATABASE_URL=")
    os.environ["DATABASE_URL"] = url
    return url


def ensure_gnu_time() -> None:
    """Installs GNU time when missing: only it reports peak RSS (the shell keyword does not)."""
    if not os.access("/usr/bin/time", os.X_OK):
        subprocess.run(["bash", "-c", '. "$1" && apt_install time', "bash",
                        str(ROOT / "scripts/apt.sh")], check=True)


def take_lock(sections: list[str]):
    """The benchmark lock, held until the process exits: exclusive for a run with a section that
    rewrites a shared sample or installs change capture on one, shared otherwise."""
    path = Path(os.environ.get("TMPDIR") or "/tmp") / "oar-tiles-bench.lock"
    lock = open(path, "a")
    mode = fcntl.LOCK_EX if exclusive(sections) else fcntl.LOCK_SH
    try:
        try:
            fcntl.flock(lock, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another benchmark run ({path})")
            fcntl.flock(lock, mode)
    except BaseException:
        lock.close()
        raise
    return lock


def build() -> Path:
    """Builds the profiling binary (the release build with line tables, so `perf` can name where a
    measured run spends its time); returns where cargo put it: CARGO_TARGET_DIR (relative to the
    repository, as cargo takes it there) or target/. OAR_TILES_BENCH_BIN names a binary built
    already instead (a copy out of a target other builds share, which they would overwrite during
    the run); nothing is built then."""
    given = os.environ.get("OAR_TILES_BENCH_BIN")
    if given:
        if not os.access(given, os.X_OK):
            raise SystemExit(f"bench: OAR_TILES_BENCH_BIN: {given} is not an executable")
        return Path(given).resolve()
    log("building the profiling binary (cargo build --profile profiling)")
    subprocess.run(["cargo", "build", "--profile", "profiling", "--locked", "-q"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or "target")
    if not target.is_absolute():
        target = ROOT / target
    return target / "profiling" / "oar-tiles"


def exit_on(signum: int, code: int) -> None:
    """SIGNUM ends the run with exit status CODE, through the cleanups."""
    def handler(_signum, _frame):
        raise SystemExit(code)
    signal.signal(signum, handler)


def run_sections(b: Bench) -> None:
    """The sections in the order given, one blank line apart."""
    for i, name in enumerate(b.opts.sections):
        if i:
            print(flush=True)
        SECTIONS[name](b)
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    """The whole run; returns the exit status."""
    # Report lines and the children's output (load-sample.sh's line, say) interleave in order.
    sys.stdout.reconfigure(line_buffering=True)
    opts = cli.parse_or_exit(argv)
    exit_on(signal.SIGINT, 130)
    exit_on(signal.SIGTERM, 143)
    url = database_url()
    ensure_gnu_time()
    lock = take_lock(opts.sections)  # noqa: F841 - held open until exit
    binary = build()
    work = Path(tempfile.mkdtemp(prefix="oar-tiles-bench.", dir=os.environ.get("TMPDIR") or "/tmp"))
    b = Bench(opts, ROOT, binary, work, url, len(os.sched_getaffinity(0)))
    b.on_cleanup(lambda: shutil.rmtree(work, ignore_errors=True))
    try:
        run_sections(b)
    except (BenchError, measure.ReportError) as e:
        b.log(f"ERROR: {e}")
        return 1
    except subprocess.CalledProcessError as e:
        # As bash's `set -e`: the run stops with the failed command's status.
        b.log(f"ERROR: {e}")
        return e.returncode if 0 < e.returncode < 256 else 1
    finally:
        sys.stdout.flush()
        # A second Ctrl-C must not cut the cleanups short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        b.run_cleanups()
    return b.status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
