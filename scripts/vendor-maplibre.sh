#!/usr/bin/env bash
# Re-fetches the MapLibre GL JS files that `oar-tiles serve` embeds (src/serve/assets/) from the npm
# registry, after checking the tarball against the integrity hash the registry publishes for it.
# Usage: scripts/vendor-maplibre.sh [VERSION]   (default: the version vendored now)
#
# Why 5.24: 5.x is the last major whose dist has the UMD bundle `maplibre-gl.js`, which one <script>
# tag loads and which starts its own workers from a blob (6.x ships ES modules only, with a separate
# worker module), and 5.5 added `map.refreshTiles`, which the page calls for the tiles the output's
# changes feed lists.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

log() { printf 'vendor-maplibre.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
trap 'die "line $LINENO: \`$BASH_COMMAND\` failed with status $?"' ERR

version=${1:-5.24.1}
assets=src/serve/assets
command -v npm >/dev/null 2>&1 || die "npm not found: install Node.js (Debian: apt-get install npm)"
command -v openssl >/dev/null 2>&1 || die "openssl not found (it checks the tarball's sha512)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
expected=$(npm view "maplibre-gl@$version" dist.integrity 2>/dev/null)
[[ $expected == sha512-* ]] || die "the registry names no sha512 integrity for maplibre-gl@$version"
(cd "$work" && npm pack --silent "maplibre-gl@$version" >/dev/null 2>&1) \
    || die "npm pack maplibre-gl@$version failed"
tarball=$work/maplibre-gl-$version.tgz
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
[[ $actual == "$expected" ]] || die "integrity mismatch: registry says $expected, tarball is $actual"

tar -xzf "$tarball" -C "$work" package/dist/maplibre-gl.js package/dist/maplibre-gl.css package/LICENSE.txt
cp "$work/package/dist/maplibre-gl.js" "$work/package/dist/maplibre-gl.css" "$assets/"
cp "$work/package/LICENSE.txt" "$assets/maplibre-gl-LICENSE.txt"
printf '%s\n' "maplibre-gl@$version $expected" >"$assets/maplibre-gl-VERSION.txt"
log "vendored maplibre-gl@$version into $assets ($expected)"
