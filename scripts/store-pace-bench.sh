#!/usr/bin/env bash
# A first seed into a new bucket behind a throttling front (scripts/throttle-front.py), measured:
# wall time against tiles / the allowed rate, and the share of writes refused after the first 30 s.
#
#   scripts/store-pace-bench.sh KIND RATE ZOOMS [BINARY [SHARDS]]
#
# KIND is s3 (a new s3s-fs from scripts/s3-server.sh), gcs (a new fake-gcs-server keeping its
# objects in files, from scripts/fake-gcs.sh: the tests' in-memory one slows past 20,000 objects)
# or azure (a new container on $OAR_TILES_TEST_AZURITE, made with $OAR_TILES_TEST_AZURE_PYTHON's
# azure-storage-blob). The sample (public.facilities, scripts/load-sample.sh) is seeded with
# sample-config.toml's tileset at ZOOMS through the front at RATE writes a second, then
# `validate --against-db --all`. Needs DATABASE_URL. BINARY defaults to target/release/oar-tiles.
# With SHARDS > 1, `shard-plan` stores a plan, the SHARDS shards run side by side into the one bucket
# through the one front, then `finalize`; the wall time runs from the plan to the end of `finalize`,
# and the output's agg_tiles_hash is compared with that of one unsharded, unthrottled run into a
# local MBTiles file (equal hashes: the same bytes at the same tiles).
set -euo pipefail
kind=${1:?KIND}; rate=${2:?RATE}; zooms=${3:?ZOOMS}
root=$(cd "$(dirname "$0")/.." && pwd)
binary=${4:-$root/target/release/oar-tiles}
shards=${5:-1}
work=$(mktemp -d)
name="pace-bench-$$"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
env_args=()
store_table=""
case $kind in
    s3)
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        pid=$("$root/scripts/s3-server.sh" start "$port" "$work/s3" "$name")
        pids+=("$pid")
        upstream=http://127.0.0.1:$port
        output=s3://$name/facilities
        env_args=(AWS_ACCESS_KEY_ID=oar-tiles-test AWS_SECRET_ACCESS_KEY=oar-tiles-test-secret AWS_EC2_METADATA_DISABLED=true) ;;
    gcs)
        mapfile -t started < <("$root/scripts/fake-gcs.sh" start "$work/gcs")
        pids+=("${started[1]:?fake-gcs.sh start printed no PID}")
        upstream=${started[0]}
        curl -sf -X POST "$upstream/storage/v1/b" -H 'Content-Type: application/json' -d "{\"name\":\"$name\"}" >/dev/null
        output=gs://$name/facilities ;;
    azure)
        upstream=${OAR_TILES_TEST_AZURITE:?}
        "${OAR_TILES_TEST_AZURE_PYTHON:?}" -c "
import sys
from azure.storage.blob import BlobServiceClient
key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
c=f'DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint={sys.argv[1]}/devstoreaccount1;'
BlobServiceClient.from_connection_string(c).create_container(sys.argv[2])" "$upstream" "$name"
        output=az://$name/facilities ;;
    *) echo "KIND is s3, gcs or azure" >&2; exit 2 ;;
esac
python3 "$root/scripts/throttle-front.py" --kind "$kind" --rate "$rate" --upstream "$upstream" >"$work/front.out" 2>"$work/front.err" &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$work/front.out" 2>/dev/null && break; sleep 0.1; done
front=$(sed -n 's/^listening on //p' "$work/front.out")
case $kind in
    s3) store_table="[store]
endpoint = \"$front\"
force_path_style = true
region = \"us-east-1\"" ;;
    gcs) env_args=(STORAGE_EMULATOR_HOST="$front") ;;
    azure) env_args=(AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL="$front") ;;
esac
{ echo "$store_table"; sed '/^\[store\]/,/^\[/{/^\[changes\]/!d}' "$root/sample-config.toml"; } >"$work/bench.toml"
seed=("$binary" --log-format text seed --config "$work/bench.toml" --zoom "$zooms" --output "$output")
start=$(date +%s.%N)
set +e
if [ "$shards" -le 1 ]; then
    env "${env_args[@]}" "${seed[@]}" --summary-json "$work/summary.json" >"$work/seed.out" 2>"$work/seed.err"
    code=$?
else
    env "${env_args[@]}" "$binary" shard-plan --config "$work/bench.toml" --zoom "$zooms" --output "$output" \
        --shards "$shards" >"$work/seed.out" 2>"$work/seed.err"
    code=$?
    shard_pids=()
    for ((i = 0; i < shards; i++)); do
        [ "$code" = 0 ] || break
        env "${env_args[@]}" "${seed[@]}" --shard "$i/$shards" --summary-json "$work/summary.$i.json" \
            >"$work/seed.$i.out" 2>"$work/seed.$i.err" &
        shard_pids+=($!)
    done
    for ((i = 0; i < ${#shard_pids[@]}; i++)); do
        wait "${shard_pids[$i]}" || { code=$?; echo "shard $i/$shards exited $code" >&2; }
        tail -n 2 "$work/seed.$i.out" "$work/seed.$i.err" >&2 || true
    done
    if [ "$code" = 0 ]; then
        env "${env_args[@]}" "$binary" --log-format text finalize --config "$work/bench.toml" --output "$output" \
            >>"$work/seed.out" 2>>"$work/seed.err"
        code=$?
    fi
fi
end=$(date +%s.%N)
stats=$(curl -s "$front/__throttle_front__/stats")
tail -n 5 "$work/seed.out" "$work/seed.err" >&2 || true
env "${env_args[@]}" "$binary" validate --json --config "$work/bench.toml" --against-db --all "$output" >"$work/validate.json" 2>"$work/validate.err"
vcode=$?
# What validate found is gone with the work folder: shown here when it is not clean.
[ "$vcode" = 0 ] || tail -n 20 "$work/validate.err" "$work/validate.json" >&2 || true
reference_hash=""
if [ "$shards" -gt 1 ]; then
    "$binary" --log-format text seed --config "$work/bench.toml" --zoom "$zooms" --output "$work/one.mbtiles" \
        >"$work/one.out" 2>"$work/one.err" \
        && "$binary" validate --json "$work/one.mbtiles" >"$work/one.json" 2>>"$work/one.err" \
        && reference_hash=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['outputs'][0]['agg_tiles_hash'])" "$work/one.json")
fi
set -e
python3 - "$kind" "$rate" "$zooms" "$shards" "$code" "$vcode" "$start" "$end" "$stats" "$work" "$reference_hash" <<'PY'
import glob, json, sys
kind, rate, zooms, shards, code, vcode, start, end, stats, work, reference_hash = sys.argv[1:]
wall = float(end) - float(start)
stats = json.loads(stats)
summaries = []
for path in sorted(glob.glob(f"{work}/summary*.json")):
    try:
        summaries.append(json.load(open(path))[0])
    except (OSError, ValueError, IndexError):
        pass
written = sum(summary["tiles_written"] for summary in summaries)
ideal = written / float(rate)
try:
    validation = json.load(open(f"{work}/validate.json"))
    stored = sum(output["tiles"] for output in validation["outputs"])
    problems = validation["problems"]
    output_hash = validation["outputs"][0]["agg_tiles_hash"]
except (OSError, ValueError, IndexError, KeyError):
    stored = problems = output_hash = None
result = {"kind": kind, "rate": float(rate), "zooms": zooms, "shards": int(shards), "exit": int(code),
          "validate_exit": int(vcode), "validate_problems": problems,
          "tiles_written": written, "tiles_stored": stored,
          "wall_seconds": round(wall, 1), "tiles_over_rate_seconds": round(ideal, 1),
          "wall_over_ideal": round(wall / ideal, 3) if ideal else None,
          "front": stats, "summary_throttled": [s.get("stored", {}).get("throttled") for s in summaries]}
if int(shards) > 1:
    result["agg_tiles_hash"] = output_hash
    result["equal_to_one_run"] = bool(reference_hash) and output_hash == reference_hash
print(json.dumps(result))
PY
