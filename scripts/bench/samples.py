"""The benchmark's data: the samples (bench_<rows>.facilities and its contributors copy), the
configs derived from sample-config.toml, and the server-side baseline over a tile list."""
from __future__ import annotations

import dataclasses
import heapq
import json
import math
import os
import re
import subprocess
import time
import tomllib
from pathlib import Path

from bench import measure

DEFAULT_SIZE_BUDGET = 500 * 1024  # src/config.rs


# --- samples -------------------------------------------------------------------------------------

def ensure_sample(b, n: int) -> None:
    """Loads bench_<n>.facilities unless it holds the unmodified sample of that size (a comment
    on the table marks it as modified); --reload reloads it once per run."""
    schema = f"bench_{int(n)}"
    count, mark = "none", ""
    if b.value(f"SELECT to_regclass('{schema}.facilities') IS NOT NULL") == "t":
        count = b.value(f"SELECT count(*) FROM {schema}.facilities")
        mark = b.value(
            f"SELECT coalesce(obj_description('{schema}.facilities'::regclass, 'pg_class'), '')")
    if (b.opts.reload and schema not in b.loaded) or count != str(n) or mark:
        found = count + (f', "{mark}"' if mark else "")
        b.log(f"loading {n} facilities into {schema}.facilities (found: {found})")
        load_sample(b, n, schema)
    else:
        b.log(f"reusing {schema}.facilities ({count} rows)")
    b.loaded.add(schema)


def load_sample(b, n: int, schema: str) -> None:
    """scripts/load-sample.sh: N facilities into SCHEMA.facilities (its summary line on stdout,
    as bench.sh printed it)."""
    subprocess.run([str(b.scripts("load-sample.sh")), "--rows", str(int(n)), "--schema", schema,
                    "--table", "facilities"], check=True)


CONTRIBUTORS_RECIPE = "bench contributors 1: 1-4 of 2000, floor(2001^u) from md5(id)"

CONTRIBUTORS_SQL = """SET client_min_messages = warning;
BEGIN;
CREATE SCHEMA IF NOT EXISTS {schema};
DROP TABLE IF EXISTS {schema}.facilities;
CREATE TABLE {schema}.facilities (LIKE bench_{n}.facilities INCLUDING ALL);
ALTER TABLE {schema}.facilities ADD COLUMN contributor_ids int[];
INSERT INTO {schema}.facilities
SELECT f.*, ARRAY(SELECT DISTINCT c FROM unnest(ARRAY[
           CASE WHEN f.id % 50 = 0 THEN (f.id / 50 - 1) % 2000 + 1 ELSE floor(2001 ^ u.u1) END,
           CASE WHEN u.u0 >= 0.55 THEN floor(2001 ^ u.u2) END,
           CASE WHEN u.u0 >= 0.80 THEN floor(2001 ^ u.u3) END,
           CASE WHEN u.u0 >= 0.93 THEN floor(2001 ^ u.u4) END]::int[]) c
       WHERE c IS NOT NULL ORDER BY c)
FROM bench_{n}.facilities f
CROSS JOIN LATERAL (
    SELECT ('x' || substr(h, 1, 6))::bit(24)::int / 16777216.0::float8 AS u0,
           ('x' || substr(h, 7, 6))::bit(24)::int / 16777216.0::float8 AS u1,
           ('x' || substr(h, 13, 6))::bit(24)::int / 16777216.0::float8 AS u2,
           ('x' || substr(h, 19, 6))::bit(24)::int / 16777216.0::float8 AS u3,
           ('x' || substr(h, 25, 6))::bit(24)::int / 16777216.0::float8 AS u4
    FROM md5(f.id::text) h
) u;
CREATE INDEX ON {schema}.facilities USING gin (contributor_ids);
COMMENT ON COLUMN {schema}.facilities.contributor_ids IS '{recipe}';
COMMIT;
VACUUM ANALYZE {schema}.facilities;
"""


def ensure_contributors(b, n: int) -> None:
    """bench_<n>_contributors.facilities: a copy of the unmodified bench_<n> sample with a column
    contributor_ids int[] (and a GIN index on it) that no other section sees. Each row belongs to
    1 (55%), 2 (25%), 3 (13%) or 4 (7%) of 2,000 contributors; each draw takes contributor r with
    probability about 1/r (floor(2001^u), u uniform: Zipf with s = 1), so contributor 1 holds
    about 15% of the 100k rows and the smallest hold a handful. The draws come from md5 of the id
    (a 24-bit slice per draw), so the column is the same on every run and row i's value does not
    depend on the size; one row in 50 takes the contributor of its own number (id / 50 modulo
    2,000) as its first, so at 100k rows every one of the 2,000 holds rows. Rebuilt (about a
    second at 100k rows) when missing, of the wrong size, of another recipe or marked as
    modified."""
    n = int(n)
    schema = f"bench_{n}_contributors"
    ensure_sample(b, n)
    state = "missing"
    if b.value(f"SELECT to_regclass('{schema}.facilities') IS NOT NULL") == "t":
        state = b.value(f"""SELECT (SELECT count(*) FROM {schema}.facilities)::text || '|'
            || coalesce(obj_description('{schema}.facilities'::regclass, 'pg_class'), '') || '|'
            || coalesce((SELECT col_description(attrelid, attnum) FROM pg_attribute
                         WHERE attrelid = '{schema}.facilities'::regclass
                           AND attname = 'contributor_ids'), '')""")
    if state == f"{n}||{CONTRIBUTORS_RECIPE}" and not b.opts.reload:
        b.log(f"reusing {schema}.facilities ({n} rows with contributor_ids)")
        return
    b.log(f"copying bench_{n}.facilities to {schema}.facilities with contributor_ids (found: {state})")
    b.psql(CONTRIBUTORS_SQL.format(schema=schema, n=n, recipe=CONTRIBUTORS_RECIPE), out=None)


# --- configs -------------------------------------------------------------------------------------

@dataclasses.dataclass
class SampleConfig:
    """What the sections read from a derived config (bench.sh's make_config globals)."""
    extent: int
    buffer: int
    layer: str
    pool_size: int
    size_budget: int


HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?$")


def derive_config(text: str, table: str, changes_schema: str,
                  cluster: tuple[int, int, str] | None, src: str = "the sample config"
                  ) -> tuple[str, SampleConfig]:
    """The sample config TEXT pointed at TABLE, with clustering set exactly as asked (CLUSTER =
    (maxzoom, cell, position), or None: unclustered) whatever TEXT says, and `[changes] schema =
    CHANGES_SCHEMA`; and what the sections read from it. Fails unless the result parses to
    exactly that."""
    out: list[str] = []
    section = None
    tables = 0
    has_changes = False
    for line in text.splitlines(keepends=True):
        m = HEADER.match(line)
        if m:
            section = m.group(1)
            out.append(line)
            if section == "changes":
                has_changes = True
                out.append(f'schema = "{changes_schema}"\n')
            continue
        if section == "tileset.layer" and re.match(r"\s*cluster_[A-Za-z_]*\s*=", line):
            continue  # set below, exactly as asked
        if section == "changes" and re.match(r"\s*schema\s*=", line):
            continue
        m = re.match(r'(\s*table\s*=\s*)"[^"]*"', line)
        if m and section == "tileset.layer":
            tables += 1
            out.append(f'{m.group(1)}"{table}"\n')
            if cluster:
                out.append(f"cluster_maxzoom = {cluster[0]}\n")
                out.append(f"cluster_cell = {cluster[1]}\n")
                out.append(f'cluster_position = "{cluster[2]}"\n')
            continue
        out.append(line)
    if tables != 1:
        measure.fail(f"expected exactly one `table = ...` line in a [[tileset.layer]] of {src}, found {tables}")
    new = "".join(out)
    if not has_changes:
        new += f'\n[changes]\nschema = "{changes_schema}"\n'
    return new, check_config(new, table, changes_schema, cluster, src)


def check_config(new: str, table: str, changes_schema: str,
                 cluster: tuple[int, int, str] | None, src: str) -> SampleConfig:
    """What a derived config says, after checking that it says what was meant."""
    cfg = tomllib.loads(new)
    if len(cfg.get("tileset", [])) != 1 or len(cfg["tileset"][0].get("layer", [])) != 1:
        measure.fail(f"{src}: the benchmark expects one tileset with one layer")
    ts = cfg["tileset"][0]
    layer = ts["layer"][0]
    got = {k: v for k, v in layer.items() if k.startswith("cluster_")}
    want = {} if cluster is None else {
        "cluster_maxzoom": cluster[0], "cluster_cell": cluster[1], "cluster_position": cluster[2]}
    if got != want or layer["table"] != table or cfg["changes"]["schema"] != changes_schema:
        measure.fail(f"generated config is not what was meant ({got} vs {want})")
    return SampleConfig(extent=ts.get("extent", 4096), buffer=ts.get("buffer", 64),
                        layer=layer["name"],
                        pool_size=cfg.get("database", {}).get("pool_size", os.cpu_count()),
                        size_budget=ts.get("size_budget", DEFAULT_SIZE_BUDGET))


def parse_cluster(spec: str) -> tuple[int, int, str]:
    """(maxzoom, cell, position) of a MAXZOOM,CELL,POSITION spec (Bench.cluster_spec)."""
    maxzoom, cell, position = spec.split(",")
    return int(maxzoom), int(cell), position


def write_config(b, dst: Path, table: str, changes_schema: str, cluster: str | None = None
                 ) -> SampleConfig:
    """Writes DST: sample-config.toml pointed at TABLE, clustered as CLUSTER (a cluster spec such
    as b.cluster_spec, or None: unclustered), with `[changes] schema = CHANGES_SCHEMA`."""
    src = b.root / "sample-config.toml"
    new, cfg = derive_config(src.read_text(encoding="utf-8"), table, changes_schema,
                             parse_cluster(cluster) if cluster else None, str(src))
    Path(dst).write_text(new, encoding="utf-8")
    return cfg


def make_config(b, rows, variant: str, dst: Path) -> SampleConfig:
    """sample-config.toml pointed at bench_<rows>.facilities (ROWS may be '100000_contributors'),
    `clustered` (b.cluster_spec) or `unclustered`, with b.CHANGES_SCHEMA."""
    if variant not in ("clustered", "unclustered"):
        raise ValueError(f"make_config: variant {variant!r}")
    if not re.fullmatch(r"[0-9]+(_contributors)?", str(rows)):
        raise ValueError(f"make_config: rows {rows!r}")
    return write_config(b, dst, f"bench_{rows}.facilities", b.CHANGES_SCHEMA,
                        b.cluster_spec if variant == "clustered" else None)


def default_sessions(b, cfg: SampleConfig) -> int:
    """Sessions of the server-side baseline: --baseline-sessions, else the seed's concurrency
    capped at the number of cores."""
    if b.opts.baseline_sessions:
        return b.opts.baseline_sessions
    return min(b.opts.concurrency or cfg.pool_size, b.cores)


# --- tile lists and the server-side baseline -----------------------------------------------------

def write_tile_list(tiles, out: Path, buffer: int, extent: int, sessions: int) -> None:
    """Writes the CSV the server-side statements load: per tile z, x, y, the buffered envelope in
    degrees that the tool binds as $4..$7 (computed as src/tile.rs and src/render/mod.rs do;
    PostGIS cannot produce it directly: ST_TileEnvelope(margin => ...) clamps y to the Mercator
    square and ST_Transform wraps x at the antimeridian, both of which change edge tiles), and a
    session. Tiles are dealt to sessions largest first, each to the least loaded one, so no session
    idles while another finishes a z0 tile (MVT size stands in for render cost, plus 512 bytes for
    a tile's fixed cost). `tiles` holds (z, x, y, mvt_size)."""
    with open(out, "w") as f:
        for line in tile_list_lines(tiles, buffer, extent, sessions):
            f.write(line + "\n")


def tile_list_lines(tiles, buffer: int, extent: int, sessions: int):
    """The CSV lines of write_tile_list()."""
    half, radius = 20_037_508.342_789_244, 6_378_137.0
    margin = buffer / extent
    lon = lambda v: math.degrees(v / radius)  # noqa: E731
    lat = lambda v: math.degrees(math.atan(math.sinh(v / radius)))  # noqa: E731
    load = [(0, k) for k in range(sessions)]
    for z, col, y, size_bytes in sorted(tiles, key=lambda t: -t[3]):
        size = 2 * half / (1 << z)
        west, north = -half + col * size, half - y * size
        e = [west - margin * size, north - size - margin * size,
             west + size + margin * size, north + margin * size]
        dx, dy = (e[2] - e[0]) * 1e-9, (e[3] - e[1]) * 1e-9  # the tool's hair of slack
        env = [lon(e[0] - dx), lat(e[1] - dy), lon(e[2] + dx), lat(e[3] + dy)]
        total, k = heapq.heappop(load)
        heapq.heappush(load, (total + size_bytes + 512, k))
        yield ",".join([str(z), str(col), str(y), *map(repr, env), str(k)])


def tile_list(mbtiles: Path, buffer: int, extent: int, sessions: int, out: Path) -> int:
    """Writes OUT, the tile list of every tile of MBTILES (write_tile_list); returns their total
    MVT bytes."""
    tiles = [(z, x, y, len(mvt)) for z, x, y, mvt in measure.mbtiles_tiles(mbtiles)]
    write_tile_list(tiles, out, buffer, extent, sessions)
    return sum(t[3] for t in tiles)


def load_tile_list(b, table: str, csv: Path) -> None:
    """A tile list CSV into a new unlogged TABLE."""
    path = str(csv).replace("'", "''")
    b.psql(f"""CREATE UNLOGGED TABLE {table} (z int, x int, y int, w float8, s float8, e float8, n float8, session int);
\\copy {table} FROM '{path}' WITH (FORMAT csv)
ANALYZE {table};
""", out=None)


def tile_list_sql(table: str, schema: str, condition: str, columns: str, cfg: SampleConfig) -> str:
    """One statement rendering the tiles of TABLE that meet CONDITION from SCHEMA.facilities,
    selecting COLUMNS over their MVTs `m.mvt`. The per-tile work is the tool's render statement:
    same MVT layer, columns, feature ids and order, same index predicate; only the tool's extra
    feature count and COALESCE are left out. LATERAL keeps everything server-side; it also keeps
    PostgreSQL 15 from running the rendering in parallel workers, hence one session per
    connection of the seed. Run it with JIT off: the tool's small per-tile statements never reach
    the JIT threshold either."""
    return f"""SELECT {columns}
FROM {table} b
CROSS JOIN LATERAL (
    SELECT ST_AsMVT(q, '{cfg.layer}', {cfg.extent}, 'geom', 'id' ORDER BY q.id) AS mvt
    FROM (SELECT ST_AsMVTGeom(ST_Transform(t.location, 3857), ST_TileEnvelope(b.z, b.x, b.y),
                              {cfg.extent}, {cfg.buffer}, true) AS geom,
                 t.id, t.os_id, t.name, t.address, t.country_code::text AS country_code,
                 t.contributors
          FROM {schema}.facilities t
          WHERE t.location && ST_MakeEnvelope(b.w, b.s, b.e, b.n, 4326)) q
) m
WHERE {condition};
"""


def baseline_sql(table: str, schema: str, condition: str, cfg: SampleConfig, how: str) -> str:
    """The baseline's script for one session: the MVTs counted server-side (`count`), or shipped
    to the client as issue 14 defines the baseline (`copy`: one binary COPY per session, as the
    issue's own measurement did)."""
    if how == "copy":
        select = tile_list_sql(table, schema, condition, "b.x, b.y, m.mvt", cfg).rstrip("\n")
        return f"SET jit = off;\nCOPY (\n{select.removesuffix(';')}\n) TO STDOUT (FORMAT binary);\n"
    return "SET jit = off;\n" + tile_list_sql(
        table, schema, condition,
        "count(*) FILTER (WHERE length(m.mvt) > 0), coalesce(sum(length(m.mvt)), 0)", cfg)


def run_baseline(b, table: str, schema: str, cfg: SampleConfig, n: int, how: str = "count"
                 ) -> tuple[float, float]:
    """The baseline over the tile list TABLE split over N concurrent sessions (N = 1: the one
    statement over the whole list that the issue defines); twice, returning the faster wall time
    and the server CPU of its backends (the first run also warms the caches for this access
    pattern). With `count`, each session's counts land in WORK/baseline.N.K."""
    best: tuple[float, float] | None = None
    for run in (1, 2):
        b.log(f"server-side baseline ({how}), run {run} of 2 ({n} session(s))")
        procs, outputs = [], []
        started = time.time()
        for k in range(n):
            condition = f"b.session = {k}" if n > 1 else "true"
            sql = b.work / f"baseline-session.{k}.sql"
            sql.write_text(baseline_sql(table, schema, condition, cfg, how))
            out = open(os.devnull if how == "copy" else b.work / f"baseline.{n}.{k}", "wb")
            outputs.append(out)
            procs.append(b.psql_measured(b.work / f"baseline-session.{k}.json",
                                         ["-At", "-f", str(sql)], stdout=out))
        codes = [p.wait() for p in procs]
        secs = time.time() - started
        for out in outputs:
            out.close()
        if any(codes):
            raise subprocess.CalledProcessError(max(codes), "psql (server-side baseline)")
        # The CPU of the sessions' own backends, whatever else the server serves meanwhile.
        cpu = round(sum(json.loads((b.work / f"baseline-session.{k}.json").read_text())["backends"]
                        for k in range(n)), 2)
        for k in range(n):
            for suffix in ("sql", "json"):
                (b.work / f"baseline-session.{k}.{suffix}").unlink(missing_ok=True)
        if best is None or secs < best[0]:
            best = (secs, cpu)
    return best
