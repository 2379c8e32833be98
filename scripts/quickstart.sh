#!/usr/bin/env bash
# One command on a fresh Debian/Ubuntu machine: install and start PostgreSQL + PostGIS, load the
# sample facilities, build oar-tiles, and seed zooms 0-14 into facilities.mbtiles.
# ROWS=1000000 scripts/quickstart.sh loads a larger sample.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

log() { printf 'quickstart: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
trap 'die "line $LINENO: \`$BASH_COMMAND\` failed with status $?"' ERR

command -v cargo >/dev/null 2>&1 \
    || die "cargo not found: install Rust (https://rustup.rs) and open a new shell, or run '. ~/.cargo/env'"

url_line=$(scripts/setup-postgis.sh)
export DATABASE_URL="${url_line#DATABASE_URL=}"
scripts/load-sample.sh --rows "${ROWS:-100000}"
log "building oar-tiles (release; the first build takes a few minutes)"
cargo build --release --locked
target/release/oar-tiles seed --config sample-config.toml --zoom 0-14 --output facilities.mbtiles
log "wrote facilities.mbtiles (look inside: target/release/oar-tiles inspect facilities.mbtiles)"
