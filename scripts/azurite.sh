#!/usr/bin/env bash
# Azurite (npm `azurite`), Microsoft's emulator of Azure Blob Storage, for the Azure output tests;
# and a venv with Microsoft's Python SDK (PyPI `azure-storage-blob`), through which the tests make
# their containers and read what the tool stored, independently of the tool's own client.
#
#   scripts/azurite.sh install       # both, once, under ~/.cache/oar-tiles (node and npm from apt)
#   scripts/azurite.sh start         # the blob service on a free loopback port, in memory; prints
#                                    # its URL, then its PID
#   scripts/azurite.sh stop PID
#   scripts/azurite.sh python        # prints the venv's python
#
# Azurite serves the well-known development account `devstoreaccount1` with its published key;
# clients reach it with AZURE_STORAGE_USE_EMULATOR=true and AZURITE_BLOB_STORAGE_URL=URL.
#
# Environment:
#   AZURITE_VERSION   the npm release (default 3.35.0)
#   AZURITE_ROOT      where it is installed (default ~/.cache/oar-tiles/azurite-VERSION)
#   AZURE_VENV        the SDK's venv (default ~/.cache/oar-tiles/azure-venv)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'azurite: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=scripts/apt.sh
. scripts/apt.sh
# shellcheck source=scripts/background.sh
. scripts/background.sh

readonly CACHE=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/oar-tiles
readonly VERSION=${AZURITE_VERSION:-3.35.0}
readonly ROOT=${AZURITE_ROOT:-$CACHE/azurite-$VERSION}
readonly VENV=${AZURE_VENV:-$CACHE/azure-venv}
readonly BLOB=$ROOT/node_modules/.bin/azurite-blob

install() {
    if [[ ! -x $BLOB ]]; then
        command -v npm >/dev/null 2>&1 || apt_install nodejs npm
        mkdir -p "$ROOT"
        npm install --prefix "$ROOT" --no-audit --no-fund --silent "azurite@$VERSION" >&2 \
            || die "cannot install the npm package azurite@$VERSION into $ROOT"
    fi
    if ! "$VENV/bin/python" -c 'import azure.storage.blob' >/dev/null 2>&1; then
        command -v python3 >/dev/null 2>&1 || apt_install python3
        rm -rf "$VENV"
        python3 -m venv "$VENV" >/dev/null 2>&1 || { apt_install python3-venv; python3 -m venv "$VENV"; }
        "$VENV/bin/pip" install -q --disable-pip-version-check "azure-storage-blob==12.*" \
            || die "cannot install azure-storage-blob into $VENV"
    fi
}

start() {
    install
    local port logfile pid
    port=$(free_port)
    logfile=$(mktemp /tmp/oar-tiles-azurite-XXXXXX.log)
    # In memory: each test run starts empty and leaves nothing on disk. --skipApiVersionCheck:
    # clients newer than the emulator send API versions it has not heard of yet.
    setsid "$BLOB" --blobHost 127.0.0.1 --blobPort "$port" --inMemoryPersistence \
        --skipApiVersionCheck --disableProductStyleUrl --silent >"$logfile" 2>&1 </dev/null &
    pid=$!
    await_port azurite-blob "$pid" "$port" "$logfile"
}

stop() {
    local pid=${1:?stop needs the PID start printed}
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
}

case ${1:-} in
    install) install ;;
    start) start ;;
    stop) stop "${2:-}" ;;
    python) install; echo "$VENV/bin/python" ;;
    *) die "usage: scripts/azurite.sh install | start | stop PID | python" ;;
esac
