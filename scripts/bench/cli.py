"""The bench's command line: every option of scripts/bench.sh, with its names, defaults and
validation messages, parsed into an Options.

Parsed by hand from a table rather than with argparse, so that the old interface holds exactly:
`--opt VALUE` and (for most options) `--opt=VALUE`, a later option overriding an earlier one, an
empty VALUE after `--opt` refused, and the first invalid option reported in bash's order.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys

from bench.help_text import HELP

DEFAULT_SECTIONS = ("main,reseed,cluster,tls,pmtiles,capture,growth,watch,edge,live,partitions,"
                    "watch-partitions,shards,validate,capacity")

# Every option taking a value, with its default; bash spelled them as variables of these names.
DEFAULTS = {
    "sections": DEFAULT_SECTIONS,
    "partition-by": "contributor_ids",
    "partition-zoom": "0-14",
    "partition-rounds": "1",
    "shard-rows": "1000000",
    "shard-runs": "3",
    "capture-rounds": "5",
    "growth-rows": "100000,1000000",
    "capacity-rows": "100000,1000000",
    "baseline-bin": "",
    "polygon-world-zoom": "0-8",
    "polygon-nyc-zoom": "0-14",
    "generalise-nyc-zoom": "0-16",
    "generalise-rounds": "3",
    "moved-zoom": "0-14",
    "subtrees-zoom": "0-14",
    "import-rows": "100000",
    "import-zoom": "0-14",
    "rows": "100000",
    "zoom": "0-14",
    "concurrency": "",
    "baseline-sessions": "",
    "reseed-rows": "100000",
    "reseed-changes": "100",
    "cluster-rows": "",
    "cluster-zoom": "0-11",
    "cluster-position": "centroid",
}
# bench.sh took no `--opt=VALUE` form of these two; kept so (see the report of the port).
NO_EQUALS_FORM = {"capture-rounds", "growth-rows"}

POSITIVE = re.compile(r"[1-9][0-9]*")
POSITIVE_LIST = re.compile(r"[1-9][0-9]*(,[1-9][0-9]*)*")
ZOOM_RANGE = re.compile(r"([0-9]+)-([0-9]+)")


@dataclasses.dataclass
class Options:
    """The parsed and validated options; attribute = long option with '-' as '_'."""
    rows: int = 100000
    zoom: str = "0-14"
    concurrency: int | None = None
    reload: bool = False
    baseline_sessions: int | None = None
    reseed_rows: int = 100000
    reseed_changes: int = 100
    cluster_rows: list[int] = dataclasses.field(default_factory=lambda: [100000])
    cluster_zoom: str = "0-11"
    cluster_position: str = "centroid"
    capture_rounds: int = 5
    growth_rows: list[int] = dataclasses.field(default_factory=lambda: [100000, 1000000])
    partition_by: str = "contributor_ids"
    partition_zoom: str = "0-14"
    partition_rounds: int = 1
    shard_rows: int = 1000000
    shard_runs: int = 3
    capacity_rows: list[int] = dataclasses.field(default_factory=lambda: [100000, 1000000])
    baseline_bin: str | None = None
    polygon_world_zoom: str = "0-8"
    polygon_nyc_zoom: str = "0-14"
    generalise_nyc_zoom: str = "0-16"
    generalise_rounds: int = 3
    moved_zoom: str = "0-14"
    subtrees_zoom: str = "0-14"
    import_rows: int = 100000
    import_zoom: str = "0-14"
    sections: list[str] = dataclasses.field(default_factory=lambda: DEFAULT_SECTIONS.split(","))


class CliError(Exception):
    """The command line cannot run: `message` (if any) is logged as 'bench: MESSAGE', the help
    text follows when `show_help`, and the process exits with `status`."""

    def __init__(self, message: str | None, status: int = 1, show_help: bool = False):
        super().__init__(message or "")
        self.message = message
        self.status = status
        self.show_help = show_help


def scan(argv: list[str]) -> tuple[dict[str, str], bool]:
    """The raw values of the options in `argv` (defaults filled in) and whether --reload was given."""
    values = dict(DEFAULTS)
    reload = False
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, inline = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if arg in ("-h", "--help"):
            raise CliError(None, status=0, show_help=True)
        if arg == "--reload":
            reload = True
        elif name in DEFAULTS and not eq:
            if not args or not args[0]:
                raise CliError(f"--{name} needs a value")
            values[name] = args.pop(0)
        elif name in DEFAULTS and name not in NO_EQUALS_FORM:
            values[name] = inline
        else:
            raise CliError(f"unknown argument: {arg}", status=2, show_help=True)
    return values, reload


def invalid(message: str) -> CliError:
    """A validation failure, logged as bench.sh's die() logged it."""
    return CliError(f"ERROR: {message}")


def is_range(value: str) -> bool:
    """Whether `value` is A-B with A <= B."""
    m = ZOOM_RANGE.fullmatch(value)
    return bool(m) and int(m.group(1)) <= int(m.group(2))


def split_sections(value: str) -> list[str]:
    """The sections of --sections as bash's `IFS=, read -a` split them: one trailing comma adds no
    empty section, any other empty field is kept (and then refused as unknown)."""
    if value.endswith(","):
        value = value[:-1]
    return value.split(",") if value else []


def validate(v: dict[str, str], reload: bool) -> Options:
    """Options from raw values, checked in bench.sh's order (the first failure is reported)."""
    if not v["cluster-rows"]:
        v["cluster-rows"] = v["rows"]

    def positive(name: str) -> int:
        """Option NAME as a positive integer."""
        if not POSITIVE.fullmatch(v[name]):
            raise invalid(f"--{name} must be a positive integer, got '{v[name]}'")
        return int(v[name])

    def positive_list(name: str) -> list[int]:
        """Option NAME as a comma-separated list of positive integers."""
        if not POSITIVE_LIST.fullmatch(v[name]):
            raise invalid(f"--{name} must be a comma-separated list of positive integers, got '{v[name]}'")
        return [int(n) for n in v[name].split(",")]

    def zoom_range(name: str, label: str | None = None) -> str:
        """Option NAME as A-B with A <= B (LABEL names it in the message)."""
        if not is_range(v[name]):
            raise invalid(f"--{label or name} must be A-B with A <= B, got '{v[name]}'")
        return v[name]

    def optional_positive(name: str) -> int | None:
        """Option NAME as a positive integer, or None when empty."""
        return positive(name) if v[name] else None

    o = Options()
    o.rows = positive("rows")
    if not re.fullmatch(r"[0-9]+(-[0-9]+)?", v["zoom"]):
        raise invalid(f"--zoom must be A-B or N, got '{v['zoom']}'")
    o.zoom = v["zoom"]
    o.concurrency = optional_positive("concurrency")
    o.baseline_sessions = optional_positive("baseline-sessions")
    o.capacity_rows = positive_list("capacity-rows")
    if v["baseline-bin"] and not os.access(v["baseline-bin"], os.X_OK):
        raise invalid(f"--baseline-bin: {v['baseline-bin']} is not an executable")
    o.baseline_bin = v["baseline-bin"] or None
    o.shard_rows = positive("shard-rows")
    o.shard_runs = positive("shard-runs")
    o.reseed_rows = positive("reseed-rows")
    if not POSITIVE.fullmatch(v["reseed-changes"]) or int(v["reseed-changes"]) < 4:
        raise invalid(f"--reseed-changes must be an integer >= 4, got '{v['reseed-changes']}'")
    o.reseed_changes = int(v["reseed-changes"])
    o.cluster_rows = positive_list("cluster-rows")
    o.cluster_zoom = zoom_range("cluster-zoom")
    if v["cluster-position"] not in ("centroid", "cell-center"):
        raise invalid(f"--cluster-position must be centroid or cell-center, got '{v['cluster-position']}'")
    o.cluster_position = v["cluster-position"]
    o.partition_zoom = zoom_range("partition-zoom")
    o.polygon_world_zoom = zoom_range("polygon-world-zoom", "polygon-world-zoom and --polygon-nyc-zoom")
    o.polygon_nyc_zoom = zoom_range("polygon-nyc-zoom", "polygon-world-zoom and --polygon-nyc-zoom")
    o.generalise_nyc_zoom = zoom_range("generalise-nyc-zoom")
    o.moved_zoom = zoom_range("moved-zoom")
    o.subtrees_zoom = zoom_range("subtrees-zoom")
    o.import_rows = positive("import-rows")
    o.import_zoom = zoom_range("import-zoom")
    o.generalise_rounds = positive("generalise-rounds")
    if not POSITIVE.fullmatch(v["partition-rounds"]) or int(v["partition-rounds"]) > 3:
        raise invalid(f"--partition-rounds must be 1, 2 or 3, got '{v['partition-rounds']}'")
    o.partition_rounds = int(v["partition-rounds"])
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", v["partition-by"]):
        raise invalid(f"--partition-by must be a column name, got '{v['partition-by']}'")
    o.partition_by = v["partition-by"]
    # bench.sh passed these two on unchecked; they reach SQL and psql variables, so they are
    # checked here like the other sizes.
    o.capture_rounds = positive("capture-rounds")
    o.growth_rows = positive_list("growth-rows")
    o.reload = reload
    o.sections = check_sections(split_sections(v["sections"]))
    return o


def check_sections(sections: list[str]) -> list[str]:
    """`sections` if every one is known (importing the registry lazily keeps this module light)."""
    from bench.sections import KNOWN_MESSAGE, SECTIONS
    if not sections:
        raise invalid("--sections is empty")
    for s in sections:
        if s not in SECTIONS:
            raise invalid(f"unknown section '{s}' (expected {KNOWN_MESSAGE})")
    return sections


def parse(argv: list[str]) -> Options:
    """Options from the command line `argv` (without the program name); raises CliError."""
    values, reload = scan(argv)
    return validate(values, reload)


def parse_or_exit(argv: list[str]) -> Options:
    """parse(), printing what bench.sh printed and exiting as it did when the line cannot run."""
    try:
        return parse(argv)
    except CliError as e:
        if e.message:
            print(f"bench: {e.message}", file=sys.stderr)
        if e.show_help:
            sys.stderr.write(HELP)
        sys.exit(e.status)
