#!/usr/bin/env bash
# A first seed into a new bucket behind a throttling front (scripts/throttle-front.py), measured:
# wall time against tiles / the allowed rate, and the share of writes refused after the first 30 s.
#
#   scripts/store-pace-bench.sh KIND RATE ZOOMS [BINARY]
#
# KIND is s3 (a new s3s-fs from scripts/s3-server.sh), gcs (a new bucket on $OAR_TILES_TEST_GCS)
# or azure (a new container on $OAR_TILES_TEST_AZURITE, made with $OAR_TILES_TEST_AZURE_PYTHON's
# azure-storage-blob). The sample (public.facilities, scripts/load-sample.sh) is seeded with
# sample-config.toml's tileset at ZOOMS through the front at RATE writes a second, then
# `validate --against-db --all`. Needs DATABASE_URL. BINARY defaults to target/release/oar-tiles.
set -euo pipefail
kind=${1:?KIND}; rate=${2:?RATE}; zooms=${3:?ZOOMS}
root=$(cd "$(dirname "$0")/.." && pwd)
binary=${4:-$root/target/release/oar-tiles}
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
        upstream=${OAR_TILES_TEST_GCS:?}
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
start=$(date +%s.%N)
set +e
env "${env_args[@]}" "$binary" --log-format text seed --config "$work/bench.toml" --zoom "$zooms" --output "$output" \
    --summary-json "$work/summary.json" >"$work/seed.out" 2>"$work/seed.err"
code=$?
set -e
end=$(date +%s.%N)
stats=$(curl -s "$front/__throttle_front__/stats")
tail -n 5 "$work/seed.out" "$work/seed.err" >&2 || true
written=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[0]['tiles_written'])" "$work/summary.json" 2>/dev/null || echo 0)
env "${env_args[@]}" "$binary" validate --json --config "$work/bench.toml" --against-db --all "$output" >"$work/validate.json" 2>"$work/validate.err"
vcode=$?
python3 - "$kind" "$rate" "$zooms" "$code" "$vcode" "$start" "$end" "$written" "$stats" "$work/summary.json" <<'PY'
import json, sys
kind, rate, zooms, code, vcode, start, end, written, stats, summary = sys.argv[1:]
wall = float(end) - float(start)
stats = json.loads(stats)
ideal = int(written) / float(rate)
throttled = json.load(open(summary))[0]["stored"].get("throttled") if code == "0" else None
print(json.dumps({"kind": kind, "rate": float(rate), "zooms": zooms, "exit": int(code),
                  "validate_exit": int(vcode), "tiles_written": int(written),
                  "wall_seconds": round(wall, 1), "tiles_over_rate_seconds": round(ideal, 1),
                  "wall_over_ideal": round(wall / ideal, 3) if ideal else None,
                  "front": stats, "summary_throttled": throttled}))
PY
