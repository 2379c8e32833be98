#!/usr/bin/env bash
# A reseed at full coverage against a full seed (issue 86 item 6): per round, a full seed of the
# 100k sample into a new tree, one UPDATE moving every facility a little (every tile holding one is
# dirty), then `seed --dirty`; the ratio reseed / seed, and where the reseed's time went, from its log.
#
#   scripts/full-coverage-bench.sh BINARY [BASELINE] [ROUNDS] [ZOOMS]
#
# With BASELINE, the two binaries alternate round by round in the one run, each on a table and
# change schema of its own. ROUNDS defaults to 3, ZOOMS to 0-14. The tree lives in memory
# (/dev/shm; OUT_DIR overrides it): on a disk the same full seed's wall time varies several times
# over with the disk, and the ratio would measure the disk. Needs DATABASE_URL; leaves nothing
# behind (its tables, change schemas and trees are dropped at the end).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
binary=${1:?BINARY}
baseline=${2:-}
rounds=${3:-3}
zooms=${4:-0-14}
: "${DATABASE_URL:?DATABASE_URL must name the database holding the sample}"
out_dir=${OUT_DIR:-/dev/shm}
work=$(mktemp -d)
trees=$(mktemp -d "$out_dir/full-coverage-XXXXXX")
labels=(new)
bins=("$binary")
if [[ -n $baseline ]]; then
    labels+=(baseline)
    bins+=("$baseline")
fi
cleanup() {
    for label in "${labels[@]}"; do
        psql -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS fc_$label CASCADE" \
            -c "DROP SCHEMA IF EXISTS fc_${label}_changes CASCADE" >/dev/null 2>&1 || true
    done
    rm -rf "$work" "$trees"
}
trap cleanup EXIT

# The sample config, its layer on the label's own table and change schema, its output a tree.
config_of() {
    local label=$1
    sed -e "s|^table = \"public.facilities\"|table = \"fc_$label.facilities\"|" \
        -e "s|^schema = \"oar_tiles\"|schema = \"fc_${label}_changes\"|" \
        -e "s|^output = \"facilities.mbtiles\"|output = \"dir:$trees/$label\"|" \
        -e "s|^# tiles_url = .*|tiles_url = \"https://tiles.example.org/{z}/{x}/{y}.pbf\"|" \
        "$root/sample-config.toml" >"$work/$label.toml"
    grep -q "fc_$label.facilities" "$work/$label.toml" && grep -q "dir:$trees/$label" "$work/$label.toml" \
        || { echo "full-coverage-bench: the sample config's layout changed; edit config_of" >&2; exit 2; }
}

seconds() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.2f}")' "$1" "$2"; }

printf '| round | binary | full seed | reseed | ratio | tiles written (reseed) |\n|---|---|---|---|---|---|\n'
for ((round = 1; round <= rounds; round++)); do
    for i in "${!labels[@]}"; do
        label=${labels[$i]}
        bin=${bins[$i]}
        config_of "$label"
        "$root/scripts/load-sample.sh" --schema "fc_$label" >/dev/null 2>&1
        "$bin" -q changes install --config "$work/$label.toml" >/dev/null
        rm -rf "${trees:?}/$label"
        sync
        start=$(date +%s.%N)
        "$bin" --log-format text seed --config "$work/$label.toml" --zoom "$zooms" \
            >"$work/seed.out" 2>"$work/seed.$label.$round.err"
        seeded=$(date +%s.%N)
        psql -q "$DATABASE_URL" -c "UPDATE fc_$label.facilities SET location = ST_Translate(location, 0.0005, 0.0005)" >/dev/null
        psql -q "$DATABASE_URL" -c "VACUUM ANALYZE fc_$label.facilities" >/dev/null
        sync
        start_reseed=$(date +%s.%N)
        "$bin" --log-format text seed --config "$work/$label.toml" --zoom "$zooms" --dirty \
            --summary-json "$work/summary.json" >"$work/reseed.out" 2>"$work/reseed.$label.$round.err"
        reseeded=$(date +%s.%N)
        seed_s=$(seconds "$start" "$seeded")
        reseed_s=$(seconds "$start_reseed" "$reseeded")
        written=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["tiles_written"])' "$work/summary.json")
        ratio=$(python3 -c 'import sys; print(f"{float(sys.argv[2]) / float(sys.argv[1]):.2f}")' "$seed_s" "$reseed_s")
        printf '| %s | %s | %s s | %s s | %s | %s |\n' "$round" "$label" "$seed_s" "$reseed_s" "$ratio" "$written"
        "$bin" -q changes uninstall --config "$work/$label.toml" >/dev/null 2>&1 || true
    done
done
# Where the last round's reseeds spent their time: the log's own lines, with their timestamps.
for label in "${labels[@]}"; do
    echo
    echo "$label, round $rounds, the reseed's log:"
    sed -e 's/^/    /' "$work/reseed.$label.$rounds.err"
done
