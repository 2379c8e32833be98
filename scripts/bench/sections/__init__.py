"""The registry of the bench's sections: name -> callable(b: Bench), in the order of bench.sh.

Each section's module is imported only when the section runs, so that one module that fails to
import (or is not written yet) breaks no other section.
"""
from __future__ import annotations

import importlib
from typing import Callable

# name -> (module under bench.sections, function)
MODULES = {
    "main": ("main", "section_main"),
    "reseed": ("reseed", "section_reseed"),
    "cluster": ("cluster", "section_cluster"),
    "tls": ("outputs", "section_tls"),
    "pmtiles": ("outputs", "section_pmtiles"),
    "pmtiles-in-place": ("pmtiles_in_place", "section_pmtiles_in_place"),
    "capture": ("capture", "section_capture"),
    "growth": ("growth", "section_growth"),
    "watch": ("watch", "section_watch"),
    "edge": ("edge", "section_edge"),
    "edge-zooms": ("edge", "section_edge_zooms"),
    "edge-cloudfront": ("cloudfront", "section_edge_cloudfront"),
    "live": ("live", "section_live"),
    "live-edge": ("live_edge", "section_live_edge"),
    "partitions": ("partitions", "section_partitions"),
    "watch-partitions": ("partitions", "section_watch_partitions"),
    "shards": ("shards", "section_shards"),
    "validate": ("validate", "section_validate"),
    "capacity": ("capacity", "section_capacity"),
    "polygons": ("polygons", "section_polygons"),
    "generalise": ("polygons", "section_generalise"),
    "moved": ("moved", "section_moved"),
    "subtrees": ("moved", "section_subtrees"),
    "changelog": ("changelog", "section_changelog"),
    "import": ("bulk_import", "section_import"),
}

# The list bench.sh's "unknown section" message names, in its order.
KNOWN_MESSAGE = ("main, reseed, cluster, tls, pmtiles, pmtiles-in-place, capture, growth, watch, edge, "
                 "edge-zooms, edge-cloudfront, live, live-edge, partitions, watch-partitions, shards, validate, "
                 "capacity, polygons, generalise, moved, subtrees, changelog, import")

# Sections that rewrite a shared sample or install change capture on one: a run with any of them
# takes the benchmark lock exclusively (others share it), as bench.sh did.
EXCLUSIVE = frozenset({"reseed", "changelog", "growth", "watch", "edge", "edge-zooms",
                       "edge-cloudfront", "watch-partitions", "live", "live-edge", "import"})


def lazy(module: str, function: str) -> Callable:
    """A callable that imports bench.sections.MODULE when called and runs FUNCTION(b)."""
    def run(b) -> None:
        getattr(importlib.import_module(f"bench.sections.{module}"), function)(b)
    run.__name__ = function
    run.__qualname__ = function
    return run


SECTIONS: dict[str, Callable] = {name: lazy(*where) for name, where in MODULES.items()}


def exclusive(sections: list[str]) -> bool:
    """Whether a run of `sections` needs the benchmark lock to itself."""
    return any(s in EXCLUSIVE for s in sections)
