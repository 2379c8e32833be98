"""Small fixture files for the bench's unit tests: /usr/bin/time -v reports, seed summaries and
MBTiles files made with sqlite3."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path


def time_v_text(wall: str = "0:01.50", user: float = 0.5, system: float = 0.25,
                rss_kb: int = 51200) -> str:
    """A /usr/bin/time -v report with the fields the bench reads."""
    return f"""\tCommand being timed: "oar-tiles -q seed"
\tUser time (seconds): {user}
\tSystem time (seconds): {system}
\tPercent of CPU this job got: 50%
\tElapsed (wall clock) time (h:mm:ss or m:ss): {wall}
\tMaximum resident set size (kbytes): {rss_kb}
\tExit status: 0
"""


def write_time_v(path: Path, **kw) -> Path:
    """Writes time_v_text(**kw) to PATH."""
    path.write_text(time_v_text(**kw))
    return path


def write_mbtiles(path: Path, tiles: dict[tuple[int, int, int], bytes]) -> Path:
    """An MBTiles file holding TILES: (z, column, TMS row) -> stored bytes."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE tiles (zoom_level int, tile_column int, tile_row int, tile_data blob)")
        db.executemany("INSERT INTO tiles VALUES (?, ?, ?, ?)",
                       [(z, x, y, d) for (z, x, y), d in tiles.items()])
    return path


def seed_summary(**overrides) -> dict:
    """One tileset's entry of a seed's --summary-json, with OVERRIDES."""
    s = {"tiles_written": 3, "tiles_queried": 4, "tiles_probed": 0, "bytes_written": 3000,
         "seconds": 1.25, "changes_read": 0, "over_budget": [],
         "stored": {"changed": 2, "unchanged": 1, "deleted": 0},
         "per_zoom": [{"zoom": 0, "queried": 1, "written": 1, "bytes": 1024, "render_ms_p50": 1.0,
                       "render_ms_p95": 2.0, "render_ms_max": 3.0,
                       "largest_tile": {"tile": "0/0/0", "bytes": 1024}},
                      {"zoom": 1, "queried": 3, "written": 2, "bytes": 1976, "render_ms_p50": 0.5,
                       "render_ms_p95": 0.9, "render_ms_max": 1.0, "largest_tile": None}],
         "slowest_tiles": [{"tile": "0/0/0", "ms": 3.0}]}
    s.update(overrides)
    return s


def write_summary(path: Path, *entries: dict) -> Path:
    """A --summary-json file of ENTRIES (one seed_summary() by default)."""
    path.write_text(json.dumps(list(entries) or [seed_summary()]))
    return path
