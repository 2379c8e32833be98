#!/usr/bin/env bash
# A reseed at full coverage against a full seed (issue 86 item 6): the 100k sample twice, each seeded
# once into a tree, then one UPDATE moving every facility a little (every tile holding one is
# dirty) on both; timed: `seed --dirty` of the one, against a full seed of the other's changed data
# into a new tree (the operator's other choice after such an import). Each table has its own cluster
# cells, so each run brings its own up to date, as it would alone. Prints the ratio reseed / seed,
# and where the last round's runs spent their time, from their logs.
#
#   scripts/full-coverage-bench.sh BINARY [BASELINE] [ROUNDS] [ZOOMS]
#
# With BASELINE, the two binaries alternate round by round in the one run, each on tables and
# change schemas of its own; within a round, which of seed and reseed runs first alternates too.
# ROUNDS defaults to 3, ZOOMS to 0-14. The trees live in memory (/dev/shm; OUT_DIR overrides it):
# on a disk the same full seed's wall time varies several times over with the disk, and the ratio
# would measure the disk. Needs DATABASE_URL; leaves nothing behind (its tables, change schemas and
# trees are dropped at the end).
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
# Schemas: fc_LABEL_reseed and fc_LABEL_seed, each with its own change schema (suffix _changes).
names() { local label=$1; echo "fc_${label}_reseed fc_${label}_seed"; }
cleanup() {
    for label in "${labels[@]}"; do
        for name in $(names "$label"); do
            psql -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS $name CASCADE" \
                -c "DROP SCHEMA IF EXISTS ${name}_changes CASCADE" >/dev/null 2>&1 || true
        done
    done
    rm -rf "$work" "$trees"
}
trap cleanup EXIT

# The sample config, its layer on NAME's table and change schema, its output a tree.
config_of() {
    local name=$1
    sed -e "s|^table = \"public.facilities\"|table = \"$name.facilities\"|" \
        -e "s|^schema = \"oar_tiles\"|schema = \"${name}_changes\"|" \
        -e "s|^output = \"facilities.mbtiles\"|output = \"dir:$trees/$name\"|" \
        -e "s|^# tiles_url = .*|tiles_url = \"https://tiles.example.org/{z}/{x}/{y}.pbf\"|" \
        "$root/sample-config.toml" >"$work/$name.toml"
    grep -q "$name.facilities" "$work/$name.toml" && grep -q "dir:$trees/$name" "$work/$name.toml" \
        || { echo "full-coverage-bench: the sample config's layout changed; edit config_of" >&2; exit 2; }
}

# Wall seconds of a command, its stderr kept in the file named first.
timed() {
    local err=$1; shift
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null 2>"$err"
    end=$(date +%s.%N)
    python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.2f}")' "$start" "$end"
}

printf '| round | binary | full seed of the changed data | reseed | ratio | tiles written (reseed) |\n|---|---|---|---|---|---|\n'
for ((round = 1; round <= rounds; round++)); do
    for i in "${!labels[@]}"; do
        label=${labels[$i]}
        bin=${bins[$i]}
        read -r for_reseed for_seed <<<"$(names "$label")"
        for name in "$for_reseed" "$for_seed"; do
            config_of "$name"
            "$root/scripts/load-sample.sh" --schema "$name" >/dev/null 2>&1
            "$bin" -q changes install --config "$work/$name.toml" >/dev/null
            rm -rf "${trees:?}/$name"
            "$bin" -q seed --config "$work/$name.toml" --zoom "$zooms" >/dev/null
            psql -q "$DATABASE_URL" \
                -c "UPDATE $name.facilities SET location = ST_Translate(location, 0.0005, 0.0005)" \
                -c "VACUUM ANALYZE $name.facilities" >/dev/null
        done
        rm -rf "${trees:?}/new-$for_seed"
        sync
        seed=(timed "$work/seed.$label.$round.err" env RUST_LOG=oar_tiles=debug "$bin" --log-format text
            seed --config "$work/$for_seed.toml" --zoom "$zooms" --output "dir:$trees/new-$for_seed")
        reseed=(timed "$work/reseed.$label.$round.err" env RUST_LOG=oar_tiles=debug "$bin" --log-format text
            seed --config "$work/$for_reseed.toml" --zoom "$zooms" --dirty --summary-json "$work/summary.json")
        if ((round % 2)); then
            seed_s=$("${seed[@]}"); reseed_s=$("${reseed[@]}")
        else
            reseed_s=$("${reseed[@]}"); seed_s=$("${seed[@]}")
        fi
        written=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["tiles_written"])' "$work/summary.json")
        ratio=$(python3 -c 'import sys; print(f"{float(sys.argv[2]) / float(sys.argv[1]):.2f}")' "$seed_s" "$reseed_s")
        printf '| %s | %s | %s s | %s s | %s | %s |\n' "$round" "$label" "$seed_s" "$reseed_s" "$ratio" "$written"
        for name in "$for_reseed" "$for_seed"; do
            "$bin" -q changes uninstall --config "$work/$name.toml" >/dev/null 2>&1 || true
        done
    done
done
# Where the last round's runs spent their time: their own log lines (statements and progress left out).
for label in "${labels[@]}"; do
    for run in seed reseed; do
        echo
        echo "$label, round $rounds, the $run's log:"
        grep -v -e ' statement: ' -e 'tiles queried' "$work/$run.$label.$rounds.err" | cut -c1-240 | sed -e 's/^/    /'
    done
done
