#!/usr/bin/env bash
# Benchmark `oar-tiles seed` end to end against what PostGIS alone needs to
# render the same tiles, and report throughput and peak memory.
#
#   scripts/bench.sh [--rows N] [--zoom A-B] [--concurrency N] [--reload]
#
#   --rows N         facilities in the sample (default 100000; 1000000 is the
#                    stress figure behind the 256 MB peak RSS target)
#   --zoom A-B       zoom levels to seed (default 0-14)
#   --concurrency N  passed to `seed --concurrency` (default: the tool's own,
#                    i.e. database.pool_size of sample-config.toml)
#   --reload         reload the sample even if it looks current
#
# The sample lives in its own schema, bench_<rows>, so benchmarking never
# touches public.facilities that tests and demos use; it is (re)loaded only when
# missing or of the wrong size. This is a benchmark, not a test: it reports
# timings and asserts nothing about them. It fails only if something breaks or
# the baseline does not render the same set of tiles (then the ratio would be
# meaningless).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
    exit "${1:-2}"
}
log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

rows=100000
zoom=0-14
concurrency=
reload=0
while (($#)); do
    case $1 in
        --rows) rows=${2:?--rows needs a value}; shift 2 ;;
        --rows=*) rows=${1#*=}; shift ;;
        --zoom) zoom=${2:?--zoom needs a value}; shift 2 ;;
        --zoom=*) zoom=${1#*=}; shift ;;
        --concurrency) concurrency=${2:?--concurrency needs a value}; shift 2 ;;
        --concurrency=*) concurrency=${1#*=}; shift ;;
        --reload) reload=1; shift ;;
        -h | --help) usage 0 ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done
[[ $rows =~ ^[1-9][0-9]*$ ]] || die "--rows must be a positive integer, got '$rows'"
[[ $zoom =~ ^[0-9]+(-[0-9]+)?$ ]] || die "--zoom must be A-B or N, got '$zoom'"
[[ -z $concurrency || $concurrency =~ ^[1-9][0-9]*$ ]] \
    || die "--concurrency must be a positive integer, got '$concurrency'"

# --- environment ----------------------------------------------------------------------------

url_line=$("$ROOT/scripts/setup-postgis.sh")
export DATABASE_URL=${url_line#DATABASE_URL=}

if [[ ! -x /usr/bin/time ]]; then
    # Only GNU time reports peak RSS; the shell keyword does not.
    log "installing the 'time' package for /usr/bin/time -v"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >&2; }
fi

log "building the release binary"
(cd "$ROOT" && cargo build --release --locked -q)
BIN=$ROOT/target/release/oar-tiles

WORK=$(mktemp -d "${TMPDIR:-/tmp}/oar-tiles-bench.XXXXXX")
schema=bench_$rows
# Unique per run so that concurrent benchmarks of the same size cannot collide.
tiles_table="$schema.bench_tiles_$$"
psql_() { (cd / && psql -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" "$@"); }
cleanup() {
    psql_ -c "DROP TABLE IF EXISTS $tiles_table" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- sample data ----------------------------------------------------------------------------

have=$(psql_ -Atc "SELECT to_regclass('$schema.facilities') IS NOT NULL")
count=-1
if [[ $have == t ]]; then
    count=$(psql_ -Atc "SELECT count(*) FROM $schema.facilities")
fi
if ((reload)) || [[ $count != "$rows" ]]; then
    log "loading $rows facilities into $schema.facilities (found: ${count/#-1/none})"
    "$ROOT/scripts/load-sample.sh" --rows "$rows" --schema "$schema" --table facilities
else
    log "reusing $schema.facilities ($count rows)"
fi

# Same config as the sample, pointed at the benchmark schema. Also reads back what the report and
# the baseline need to agree with the tool: extent, buffer, layer name and default concurrency.
config=$WORK/bench-config.toml
read -r extent buffer layer pool_size < <(
    python3 - "$ROOT/sample-config.toml" "$config" "$schema.facilities" <<'PY'
import os, re, sys, tomllib
src, dst, table = sys.argv[1:]
text = open(src, encoding="utf-8").read()
new, n = re.subn(r'(?m)^(\s*table\s*=\s*)"[^"]*"', lambda m: f'{m.group(1)}"{table}"', text)
if n != 1:
    sys.exit(f"bench: expected exactly one `table = ...` line in {src}, found {n}")
open(dst, "w", encoding="utf-8").write(new)
cfg = tomllib.loads(new)
ts = cfg["tileset"][0]
print(ts.get("extent", 4096), ts.get("buffer", 64), ts["layer"][0]["name"],
      cfg.get("database", {}).get("pool_size", os.cpu_count()))
PY
)
effective_concurrency=${concurrency:-$pool_size}
concurrency_args=()
[[ -n $concurrency ]] && concurrency_args=(--concurrency "$concurrency")

# --- end-to-end seed --------------------------------------------------------------------------

seed() {
    "$BIN" -q seed --config "$config" --zoom "$zoom" "${concurrency_args[@]}" "$@"
}
# The first pass pays for cold shared buffers and page cache; only the second is measured.
log "warm-up seed (discarded)"
seed --output "$WORK/warmup.mbtiles" --summary-json "$WORK/warmup.json" >/dev/null
log "measured seed"
/usr/bin/time -v -o "$WORK/time.txt" \
    "$BIN" -q seed --config "$config" --zoom "$zoom" "${concurrency_args[@]}" \
    --output "$WORK/bench.mbtiles" --summary-json "$WORK/summary.json" >/dev/null

# --- server-side baseline ---------------------------------------------------------------------

# The written tiles with the buffered envelope in degrees that the tool binds as $4..$7, computed
# the same way as src/tile.rs and src/render/mod.rs do. PostGIS cannot produce it directly:
# ST_TileEnvelope(margin => ...) clamps y to the Mercator square and ST_Transform wraps x at the
# antimeridian, both of which change the edge tiles. Also sums the uncompressed MVT bytes, so the
# baseline's output can be compared byte for byte in total.
mvt_bytes=$(python3 - "$WORK/bench.mbtiles" "$WORK/tiles.csv" "$buffer" "$extent" <<'PY'
import csv, gzip, math, sqlite3, sys
mbtiles, out, buffer, extent = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
HALF, R = 20_037_508.342_789_244, 6_378_137.0
margin = buffer / extent
total = 0
with sqlite3.connect(mbtiles) as db, open(out, "w", newline="") as f:
    w = csv.writer(f)
    for z, col, row, data in db.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"):
        y = (1 << z) - 1 - row  # MBTiles rows count from the south (TMS)
        size = 2 * HALF / (1 << z)
        west, north = -HALF + col * size, HALF - y * size
        e = [west - margin * size, north - size - margin * size,
             west + size + margin * size, north + margin * size]
        dx, dy = (e[2] - e[0]) * 1e-9, (e[3] - e[1]) * 1e-9  # the tool's hair of slack
        e = [e[0] - dx, e[1] - dy, e[2] + dx, e[3] + dy]
        lon = lambda v: math.degrees(v / R)
        lat = lambda v: math.degrees(math.atan(math.sinh(v / R)))
        w.writerow([z, col, y, repr(lon(e[0])), repr(lat(e[1])), repr(lon(e[2])), repr(lat(e[3]))])
        total += len(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
print(total)
PY
)

# Parallel query gives the single statement as many processes as the tool has connections (up to
# the cores), so that the ratio compares like with like; the per-tile work is the tool's render
# statement: same MVT layer, columns, feature ids and order, same index predicate. JIT is off
# because the tool's small per-tile statements never reach the JIT threshold either.
cores=$(nproc)
baseline_procs=$((effective_concurrency < cores ? effective_concurrency : cores))
# Unlogged, not temporary: parallel workers cannot read a temporary table.
psql_ <<SQL
CREATE UNLOGGED TABLE $tiles_table (z int, x int, y int, w float8, s float8, e float8, n float8);
\copy $tiles_table FROM '$WORK/tiles.csv' WITH (FORMAT csv)
ALTER TABLE $tiles_table SET (parallel_workers = $((baseline_procs - 1)));
ANALYZE $tiles_table;
SQL
baseline_sql="
SELECT count(*) FILTER (WHERE length(m.mvt) > 0), coalesce(sum(length(m.mvt)), 0)
FROM $tiles_table b
CROSS JOIN LATERAL (
    SELECT ST_AsMVT(q, '$layer', $extent, 'geom', 'id' ORDER BY q.id) AS mvt
    FROM (SELECT ST_AsMVTGeom(ST_Transform(t.location, 3857), ST_TileEnvelope(b.z, b.x, b.y),
                              $extent, $buffer, true) AS geom,
                 t.id, t.os_id, t.name, t.address, t.country_code::text AS country_code, t.contributors
          FROM $schema.facilities t
          WHERE t.location && ST_MakeEnvelope(b.w, b.s, b.e, b.n, 4326)) q
) m"
baseline_settings="SET jit = off; SET max_parallel_workers_per_gather = $((baseline_procs - 1));
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;"
workers_planned=$(psql_ -At -c "$baseline_settings" -c "EXPLAIN $baseline_sql" \
    | sed -n 's/^ *Workers Planned: \([0-9]*\)$/\1/p' | head -n1)
# Run twice and keep the faster: the first also warms the caches for this access pattern.
best=
for run in 1 2; do
    log "server-side baseline, run $run of 2"
    t0=$(date +%s.%N)
    result=$(psql_ -At -c "$baseline_settings" -c "$baseline_sql")
    t1=$(date +%s.%N)
    secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.6f}')" "$t0" "$t1")
    if [[ -z $best ]] || python3 -c "import sys; sys.exit(not float(sys.argv[1]) < float(sys.argv[2]))" "$secs" "$best"; then
        best=$secs
    fi
done
IFS='|' read -r baseline_tiles baseline_bytes <<<"$result"

# --- report -----------------------------------------------------------------------------------

BENCH_ROWS=$rows BENCH_ZOOM=$zoom BENCH_CONCURRENCY=${concurrency:-"$pool_size (tool default)"} \
BASE_TILES=$baseline_tiles BASE_BYTES=$baseline_bytes BASE_SECS=$best BASE_PROCS=$baseline_procs \
BASE_WORKERS=${workers_planned:-0} SEED_MVT_BYTES=$mvt_bytes \
python3 - "$WORK/summary.json" "$WORK/time.txt" <<'PY'
import json, os, re, sys
summary = json.load(open(sys.argv[1]))
time_v = open(sys.argv[2]).read()
if len(summary) != 1:
    sys.exit(f"bench: expected one tileset in the summary, got {len(summary)}")
s = summary[0]
env = os.environ

def field(label):
    m = re.search(r"^\s*" + re.escape(label) + r": (.+)$", time_v, re.M)
    if not m:
        sys.exit(f"bench: /usr/bin/time -v printed no '{label}'")
    return m.group(1).strip()

wall = 0.0
for part in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"):
    wall = wall * 60 + float(part)
rss_mb = int(field("Maximum resident set size (kbytes)")) / 1024
rows = int(env["BENCH_ROWS"])
written = s["tiles_written"]
base_tiles, base_bytes = int(env["BASE_TILES"]), int(env["BASE_BYTES"])
base_secs = float(env["BASE_SECS"])
e2e_rate = written / wall
base_rate = base_tiles / base_secs

print(f"oar-tiles benchmark: {rows} facilities, zoom {env['BENCH_ZOOM']}, concurrency {env['BENCH_CONCURRENCY']}")
print(f"  end-to-end seed:   {written} tiles written in {wall:.2f} s = {e2e_rate:.0f} tiles/s"
      f"  (queried {s['tiles_queried']}, probed {s['tiles_probed']}, peak RSS {rss_mb:.1f} MB;"
      f" tool's own timer {s['seconds']:.2f} s)")
print(f"  PostGIS alone:     {base_tiles} tiles in {base_secs:.2f} s = {base_rate:.0f} tiles/s"
      f" (one statement, server-side, {env['BASE_PROCS']} process(es) = leader + {env['BASE_WORKERS']}"
      f" parallel worker(s) planned; faster of 2 runs)")
print(f"  ratio end-to-end / server-side tiles/s: {e2e_rate / base_rate:.2f}   (target >= 0.85)")
print(f"  peak RSS target (< 256 MB at 1,000,000 facilities): {rss_mb:.1f} MB at {rows}")
same_tiles = base_tiles == written
seed_mvt = int(env["SEED_MVT_BYTES"])
print(f"  baseline tile count {'matches' if same_tiles else 'DIFFERS from'} tiles_written"
      f" ({base_tiles} vs {written}); uncompressed MVT bytes: baseline {base_bytes},"
      f" seed {seed_mvt} ({'identical' if base_bytes == seed_mvt else 'different'});"
      f" stored (gzip) {s['bytes_written']}")
print()
print("  zoom   queried   written   stored KB  p95 ms  largest tile")
for z in s["per_zoom"]:
    big = z.get("largest_tile")
    big = f"{big['tile']} ({big['bytes'] / 1024:.1f} KB)" if big else "-"
    print(f"  {z['zoom']:>4} {z['queried']:>9} {z['written']:>9} {z['bytes'] / 1024:>11.1f}"
          f" {z['render_ms_p95']:>7.1f}  {big}")
slow = ", ".join(f"{t['tile']} {t['ms']:.0f} ms" for t in s["slowest_tiles"][:3])
print(f"  slowest tiles: {slow or '-'}")
# A different tile set makes the ratio meaningless: say so through the exit status too.
sys.exit(0 if same_tiles else 3)
PY
