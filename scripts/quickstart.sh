#!/usr/bin/env bash
# One command on a fresh Debian/Ubuntu machine: install and start PostgreSQL + PostGIS, load the
# sample facilities, build oar-tiles, and seed zooms 0-14 into facilities.mbtiles.
# ROWS=1000000 scripts/quickstart.sh loads a larger sample.
set -euo pipefail
cd "$(dirname "$0")/.."

url_line=$(scripts/setup-postgis.sh)
export DATABASE_URL="${url_line#DATABASE_URL=}"
scripts/load-sample.sh --rows "${ROWS:-100000}"
cargo build --release --locked
target/release/oar-tiles seed --config sample-config.toml --zoom 0-14 --output facilities.mbtiles
echo "quickstart: wrote facilities.mbtiles" >&2
