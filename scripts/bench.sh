#!/usr/bin/env bash
# Benchmark `oar-tiles seed` end to end against what PostGIS alone needs to
# render the same tiles, and report throughput and peak memory.
#
#   scripts/bench.sh [--rows N] [--zoom A-B] [--concurrency N] [--reload]
#                    [--baseline-sessions N]
#
#   --rows N         facilities in the sample (default 100000; 1000000 is the
#                    stress figure behind the 256 MB peak RSS target)
#   --zoom A-B       zoom levels to seed (default 0-14)
#   --concurrency N  passed to `seed --concurrency` (default: the tool's own,
#                    i.e. database.pool_size of sample-config.toml)
#   --reload         reload the sample even if it looks current
#   --baseline-sessions N
#                    database sessions the server-side baseline renders in,
#                    one statement each (default: the seed's concurrency,
#                    capped at the number of cores)
#
# The sample lives in its own schema, bench_<rows>, so benchmarking never
# touches public.facilities that tests and demos use; it is (re)loaded only when
# missing or of the wrong size. This is a benchmark, not a test: it reports
# timings and asserts nothing about them. It fails only if something breaks or
# the baseline does not render the same set of tiles (then the ratio would be
# meaningless). Other work on the machine skews the figures, so the report
# shows the load average around the measurements.
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
sessions=
while (($#)); do
    case $1 in
        --rows) rows=${2:?--rows needs a value}; shift 2 ;;
        --rows=*) rows=${1#*=}; shift ;;
        --zoom) zoom=${2:?--zoom needs a value}; shift 2 ;;
        --zoom=*) zoom=${1#*=}; shift ;;
        --concurrency) concurrency=${2:?--concurrency needs a value}; shift 2 ;;
        --concurrency=*) concurrency=${1#*=}; shift ;;
        --baseline-sessions) sessions=${2:?--baseline-sessions needs a value}; shift 2 ;;
        --baseline-sessions=*) sessions=${1#*=}; shift ;;
        --reload) reload=1; shift ;;
        -h | --help) usage 0 ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done
[[ $rows =~ ^[1-9][0-9]*$ ]] || die "--rows must be a positive integer, got '$rows'"
[[ $zoom =~ ^[0-9]+(-[0-9]+)?$ ]] || die "--zoom must be A-B or N, got '$zoom'"
[[ -z $concurrency || $concurrency =~ ^[1-9][0-9]*$ ]] \
    || die "--concurrency must be a positive integer, got '$concurrency'"
[[ -z $sessions || $sessions =~ ^[1-9][0-9]*$ ]] \
    || die "--baseline-sessions must be a positive integer, got '$sessions'"

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

count=none
if [[ $(psql_ -Atc "SELECT to_regclass('$schema.facilities') IS NOT NULL") == t ]]; then
    count=$(psql_ -Atc "SELECT count(*) FROM $schema.facilities")
fi
if ((reload)) || [[ $count != "$rows" ]]; then
    log "loading $rows facilities into $schema.facilities (found: $count)"
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
[[ -n ${pool_size:-} ]] || die "could not read $ROOT/sample-config.toml"
effective_concurrency=${concurrency:-$pool_size}
cores=$(nproc)
sessions=${sessions:-$((effective_concurrency < cores ? effective_concurrency : cores))}
concurrency_args=()
if [[ -n $concurrency ]]; then concurrency_args=(--concurrency "$concurrency"); fi

# --- end-to-end seed --------------------------------------------------------------------------

seed_args=(-q seed --config "$config" --zoom "$zoom" "${concurrency_args[@]}")
# The first pass pays for cold shared buffers and page cache; only the second is measured.
log "warm-up seed (discarded)"
"$BIN" "${seed_args[@]}" --output "$WORK/warmup.mbtiles" >/dev/null
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "measured seed"
/usr/bin/time -v -o "$WORK/time.txt" "$BIN" "${seed_args[@]}" \
    --output "$WORK/bench.mbtiles" --summary-json "$WORK/summary.json" >/dev/null

# --- server-side baseline ---------------------------------------------------------------------

# The written tiles, each with the buffered envelope in degrees that the tool binds as $4..$7,
# computed as src/tile.rs and src/render/mod.rs do. PostGIS cannot produce it directly:
# ST_TileEnvelope(margin => ...) clamps y to the Mercator square and ST_Transform wraps x at the
# antimeridian, both of which change edge tiles. Tiles are dealt to the baseline's sessions
# largest first, each to the least loaded one, so no session idles while another finishes a z0
# tile (uncompressed size stands in for render cost). Also prints the total uncompressed MVT
# bytes, so that the baseline's output can be compared with the seed's.
mvt_bytes=$(python3 - "$WORK/bench.mbtiles" "$WORK/tiles.csv" "$buffer" "$extent" "$sessions" <<'PY'
import csv, gzip, heapq, math, sqlite3, sys
mbtiles, out = sys.argv[1:3]
buffer, extent, sessions = map(int, sys.argv[3:6])
HALF, R = 20_037_508.342_789_244, 6_378_137.0
margin = buffer / extent
lon = lambda v: math.degrees(v / R)
lat = lambda v: math.degrees(math.atan(math.sinh(v / R)))
tiles = []
with sqlite3.connect(mbtiles) as db:
    for z, col, row, data in db.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"):
        y = (1 << z) - 1 - row  # MBTiles rows count from the south (TMS)
        size = 2 * HALF / (1 << z)
        west, north = -HALF + col * size, HALF - y * size
        e = [west - margin * size, north - size - margin * size,
             west + size + margin * size, north + margin * size]
        dx, dy = (e[2] - e[0]) * 1e-9, (e[3] - e[1]) * 1e-9  # the tool's hair of slack
        env = [lon(e[0] - dx), lat(e[1] - dy), lon(e[2] + dx), lat(e[3] + dy)]
        n = len(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
        tiles.append((n, z, col, y, env))
# 512 bytes is a rough equivalent of a tile's fixed cost (statement, index descent).
load = [(0, k) for k in range(sessions)]
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    for n, z, col, y, env in sorted(tiles, key=lambda t: -t[0]):
        total, k = heapq.heappop(load)
        heapq.heappush(load, (total + n + 512, k))
        w.writerow([z, col, y, *map(repr, env), k])
print(sum(t[0] for t in tiles))
PY
)

psql_ <<SQL
CREATE UNLOGGED TABLE $tiles_table
    (z int, x int, y int, w float8, s float8, e float8, n float8, session int);
\copy $tiles_table FROM '$WORK/tiles.csv' WITH (FORMAT csv)
ANALYZE $tiles_table;
SQL

# The per-tile work is the tool's render statement: same MVT layer, columns, feature ids and
# order, same index predicate; only the tool's extra feature count and COALESCE are left out.
# LATERAL keeps everything server-side; it also keeps PostgreSQL 15 from running the rendering in
# parallel workers, hence one session per connection of the seed. JIT is off because the tool's
# small per-tile statements never reach the JIT threshold either.
baseline_sql() {
    cat <<SQL
SET jit = off;
SELECT count(*) FILTER (WHERE length(m.mvt) > 0), coalesce(sum(length(m.mvt)), 0)
FROM $tiles_table b
CROSS JOIN LATERAL (
    SELECT ST_AsMVT(q, '$layer', $extent, 'geom', 'id' ORDER BY q.id) AS mvt
    FROM (SELECT ST_AsMVTGeom(ST_Transform(t.location, 3857), ST_TileEnvelope(b.z, b.x, b.y),
                              $extent, $buffer, true) AS geom,
                 t.id, t.os_id, t.name, t.address, t.country_code::text AS country_code,
                 t.contributors
          FROM $schema.facilities t
          WHERE t.location && ST_MakeEnvelope(b.w, b.s, b.e, b.n, 4326)) q
) m
WHERE b.session = $1;
SQL
}
now() { date +%s.%N; }
# Twice, keeping the faster: the first run also warms the caches for this access pattern.
best=
for run in 1 2; do
    log "server-side baseline, run $run of 2 ($sessions session(s))"
    pids=()
    t0=$(now)
    for ((k = 0; k < sessions; k++)); do
        psql_ -At -f <(baseline_sql "$k") >"$WORK/baseline.$k" &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    t1=$(now)
    best=$(python3 -c 'import sys; d = float(sys.argv[2]) - float(sys.argv[1]); b = sys.argv[3]
print(f"{min(d, float(b)) if b else d:.6f}")' "$t0" "$t1" "$best")
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
read -r baseline_tiles baseline_bytes < <(
    awk -F'|' '{ t += $1; b += $2 } END { printf "%.0f %.0f\n", t, b }' "$WORK"/baseline.*)

# --- report -----------------------------------------------------------------------------------

BENCH_ROWS=$rows BENCH_ZOOM=$zoom BENCH_CONCURRENCY=${concurrency:-"$pool_size (tool default)"} \
BASE_TILES=$baseline_tiles BASE_BYTES=$baseline_bytes BASE_SECS=$best BASE_SESSIONS=$sessions \
SEED_MVT_BYTES=$mvt_bytes LOAD_BEFORE=$load_before LOAD_AFTER=$load_after CORES=$cores \
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
# The tool's own CPU time tells whether the client side or the database limits throughput.
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
rows = int(env["BENCH_ROWS"])
written = s["tiles_written"]
base_tiles, base_bytes = int(env["BASE_TILES"]), int(env["BASE_BYTES"])
base_secs = float(env["BASE_SECS"])
e2e_rate = written / wall
base_rate = base_tiles / base_secs
sessions = int(env["BASE_SESSIONS"])

print(f"oar-tiles benchmark: {rows} facilities, zoom {env['BENCH_ZOOM']}, "
      f"concurrency {env['BENCH_CONCURRENCY']}, {env['CORES']} cores")
print(f"  end-to-end seed:   {written} tiles written in {wall:.2f} s = {e2e_rate:.0f} tiles/s"
      f"  (queried {s['tiles_queried']}, peak RSS {rss_mb:.1f} MB)")
print(f"                     probed {s['tiles_probed']}; oar-tiles CPU {cpu:.2f} s ="
      f" {cpu / wall:.0%} of one core; tool's own timer {s['seconds']:.2f} s")
print(f"  PostGIS alone:     {base_tiles} tiles in {base_secs:.2f} s = {base_rate:.0f} tiles/s"
      f" (server-side, one statement in each of {sessions} concurrent session(s); faster of 2 runs)")
print(f"  ratio end-to-end / server-side tiles/s: {e2e_rate / base_rate:.2f}   (target >= 0.85)")
print(f"  peak RSS target (< 256 MB at 1,000,000 facilities): {rss_mb:.1f} MB at {rows}")
same_tiles = base_tiles == written
seed_mvt = int(env["SEED_MVT_BYTES"])
print(f"  baseline tiles {'match' if same_tiles else 'DIFFER FROM'} tiles_written"
      f" ({base_tiles} vs {written}); uncompressed MVT bytes"
      f" {'identical' if base_bytes == seed_mvt else 'DIFFERENT'}"
      f" (baseline {base_bytes}, seed {seed_mvt}); stored gzip {s['bytes_written']}")
print(f"  load average before seed / after baseline: {env['LOAD_BEFORE']} / {env['LOAD_AFTER']}")
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
