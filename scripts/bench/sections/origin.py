"""The origin the edge and live sections put behind a real cache: `oar-tiles serve` over a tree,
Debian's Varnish in front of it (scripts/varnish.sh), and the cache warmed with the tree's tiles."""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from bench.sections.watch import free_port, stop_quietly, wait_for

if TYPE_CHECKING:
    from bench.context import Bench


class Origin:
    """`serve` over SERVED and, once `cache` is called, Varnish in front of it; both are stopped at
    exit unless `stop` stopped them first."""

    def __init__(self, b: Bench, served: Path, log: Path, serve_args: tuple[str, ...] = ()):
        self.b = b
        self.port = free_port()
        self.varnish_pid: str | None = None
        self._unvarnish = None
        sys.stdout.flush()
        with open(log, "wb") as out:
            self.serve = subprocess.Popen(
                [str(b.bin), "-q", "serve", f"dir:{served}", "--listen", f"127.0.0.1:{self.port}",
                 *serve_args], stdout=out, stderr=subprocess.STDOUT)
        self._unserve = b.on_cleanup(lambda: stop_quietly(self.serve))
        wait_for(b, self.url, "health", path="/index.json")
        self.name = first_tileset(f"{self.url}/index.json")

    @property
    def url(self) -> str:
        """The origin's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def cache(self, cache_control: str = "", settings: dict[str, str] | None = None) -> int:
        """Starts Varnish in front of the origin, keeping every answer a day (and handing browsers
        CACHE_CONTROL if not empty; SETTINGS are scripts/varnish.sh's variables, such as
        VARNISH_KEY_QUERY); returns its port."""
        b = self.b
        vport = free_port()
        argv = [str(b.scripts("varnish.sh")), "start", str(vport), str(self.port), "1d"]
        if cache_control:
            argv.append(cache_control)
        env = {**os.environ, "VARNISH_STORAGE": "1g", **(settings or {})}
        self.varnish_pid = subprocess.run(argv, env=env, check=True, stdout=subprocess.PIPE,
                                          text=True).stdout.strip()
        pid = self.varnish_pid
        self._unvarnish = b.on_cleanup(lambda: stop_varnish(b, pid, check=False))
        return vport

    def stop(self) -> None:
        """Stops serve, then Varnish, as the section ends normally."""
        stop_quietly(self.serve)
        self._unserve()
        if self.varnish_pid is not None:
            stop_varnish(self.b, self.varnish_pid, check=True)
            self._unvarnish()
            self.varnish_pid = None


def install_varnish(b: Bench) -> None:
    """scripts/varnish.sh install (apt-get install varnish, if missing)."""
    subprocess.run([str(b.scripts("varnish.sh")), "install"], check=True)


def stop_varnish(b: Bench, pid: str, check: bool) -> None:
    """scripts/varnish.sh stop PID."""
    subprocess.run([str(b.scripts("varnish.sh")), "stop", pid], check=check)


def first_tileset(index_url: str) -> str:
    """The name of the first tileset serve's index lists."""
    with urllib.request.urlopen(index_url) as r:
        return json.load(r)["tilesets"][0]["name"]


def tree_tiles(root: Path, ext: str) -> list[str]:
    """Every tile of the tree ROOT as z/x/y.EXT."""
    paths = []
    for z in os.listdir(root):
        if not z.isdigit():
            continue
        for x in os.listdir(root / z):
            for name in os.listdir(root / z / x):
                if name.endswith("." + ext):
                    paths.append(f"{z}/{x}/{name}")
    return paths


def status_of(url: str) -> int | None:
    """The HTTP status of a GET of URL (its body read), None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def warm(b: Bench, section: str, root: Path, ext: str, base: str) -> int:
    """Fetches every tile of the tree ROOT through BASE (the cache, with the tileset's path), 8 at
    a time, so the cache holds the whole pyramid before the changes start; returns how many."""
    paths = tree_tiles(root, ext)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda p: status_of(f"{base}/{p}"), paths))
    bad = sum(1 for s in statuses if s != 200)
    if bad:
        b.die(f"{section}: {bad} of {len(paths)} tiles did not come through {base}")
    return len(paths)
