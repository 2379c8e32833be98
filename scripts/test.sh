#!/usr/bin/env bash
# Runs the whole test suite against a real PostgreSQL + PostGIS server, which it installs and starts
# first when needed. Extra arguments go to `cargo test` (e.g. scripts/test.sh --test seed).
set -euo pipefail
cd "$(dirname "$0")/.."

# Durability is irrelevant for throwaway test schemas; speed is not.
export OAR_PG_FAST=1
url_line=$(scripts/setup-postgis.sh)
export OAR_TILES_TEST_DATABASE_URL="${url_line#DATABASE_URL=}"

if ! command -v ogrinfo >/dev/null 2>&1; then
  echo "test.sh: installing gdal-bin (ogrinfo reads the outputs as an independent reader)" >&2
  apt-get install -y -qq gdal-bin >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq gdal-bin >/dev/null; }
fi

# The S3 tests talk to a real S3-compatible server process (s3s-fs, built from crates.io once).
scripts/s3-server.sh install

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked "$@" 2>&1 | tee "$log" || status=$?
# One closing line over all test binaries, for people and CI logs alike.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
