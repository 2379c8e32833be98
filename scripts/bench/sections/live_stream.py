"""The live section's load beside its timed renames: renames of facilities across the table at a
steady rate (LIVE_RATES), committed one at a time by a thread of their own, and the watcher's cycle
lag over the stream read from its log, so a backlog that grows shows as a lag that climbs."""
from __future__ import annotations

import calendar
import random
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.context import Bench

# `... INFO ... cycle: 3 change(s), ... in 0.21 s; change-to-tile latency p50 0.30 s, max 0.41 s`
CYCLE_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z\s.*\bcycle: (\d+) change\(s\).*"
                        r"change-to-tile latency p50 ([0-9.]+) s, max ([0-9.]+) s")


@dataclass
class Stream:
    """Renames of random facilities of SCHEMA.TABLE with ids LO..HI at RATE commits a second, from
    `start` until `stop`; counts what it committed."""
    b: "Bench"
    schema: str
    table: str
    lo: int
    hi: int
    rate: float
    committed: int = 0
    started: float = 0.0
    ended: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts committing, one transaction a rename, on a psql session of its own."""
        self.started = time.time()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng = random.Random(59)
        argv = self.b.psql_argv() + ["-X", "-q", "-A", "-t"]
        psql = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        began = time.monotonic()
        # A later stream draws the same facilities in the same order: named apart, its renames are
        # changes (a name a row already has logs nothing).
        tag = f"{time.time():.0f}"
        i = 0
        while not self._stop.is_set():
            time.sleep(max(0.0, began + i / self.rate - time.monotonic()))
            fid = rng.randint(self.lo, self.hi)
            psql.stdin.write(f"UPDATE {self.schema}.{self.table} SET name = 'live stream {tag}.{i} {fid}' "
                             f"WHERE id = {fid};\nSELECT 1;\n")
            psql.stdin.flush()
            psql.stdout.readline()
            i += 1
            self.committed = i
        psql.stdin.close()
        psql.wait()

    def stop(self) -> None:
        """Stops committing and waits for the last commit."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.ended = time.time()

    def achieved(self) -> float:
        """Commits a second over the stream's time."""
        return self.committed / max(self.ended - self.started, 1e-9)


def cycle_lag(log: Path, since: float, until: float) -> list[tuple[float, int, float]]:
    """(seconds since SINCE, changes, max change-to-tile latency) of each cycle the watcher's text
    LOG reports between SINCE and UNTIL (epoch seconds)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = CYCLE_LINE.match(line)
        if not m:
            continue
        whole, _, fraction = m.group(1).partition(".")
        at = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (fraction or "0"))
        if since <= at <= until:
            out.append((at - since, int(m.group(2)), float(m.group(4))))
    return out


def lag_line(cycles: list[tuple[float, int, float]]) -> str:
    """The cycles' worst change-to-tile latency per third of the stream: flat when no backlog grows."""
    if len(cycles) < 3:
        return f"  cycle lag: {len(cycles)} cycle(s) logged, too few to tell a trend"
    third = len(cycles) // 3
    parts = [cycles[:third], cycles[third:2 * third], cycles[2 * third:]]
    worst = [max(c[2] for c in part) for part in parts]
    changes = sum(c[1] for c in cycles)
    trend = "flat" if worst[2] <= max(worst[0], 1.0) * 1.5 else "GROWING"
    return (f"  cycle lag (watch's change-to-tile max per third of the stream): "
            f"{worst[0]:.2f} / {worst[1]:.2f} / {worst[2]:.2f} s over {len(cycles)} cycle(s), "
            f"{changes} change(s), {changes / len(cycles):.1f} a cycle: {trend}")
