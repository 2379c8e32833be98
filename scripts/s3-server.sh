#!/usr/bin/env bash
# A real S3-compatible server on loopback for the S3-output integration tests:
# s3s-fs (crates.io, https://crates.io/crates/s3s-fs), a file-system-backed S3
# server. Every object is a plain file under DATA_DIR/BUCKET/KEY, its headers
# and ETag live in sidecar JSON files in DATA_DIR, and all writes go through a
# temp file + rename, so the store survives kill -9 and a restart on the same
# DATA_DIR serves everything that was acknowledged before.
#
#   scripts/s3-server.sh install                  # cargo install, if missing
#   pid=$(scripts/s3-server.sh start PORT DATA_DIR [BUCKET...])
#   scripts/s3-server.sh stop PID                 # SIGTERM, wait for exit
#   scripts/s3-server.sh kill PID                 # SIGKILL (crash), wait for exit
#
# `start` installs first when needed, creates DATA_DIR and the named buckets
# (a bucket is just a directory; CreateBucket works too), starts the server in
# its own session bound to 127.0.0.1:PORT, waits until it answers HTTP (timeout
# S3_SERVER_WAIT_SECS, default 20; it normally takes < 0.1 s), and prints only
# the server's own PID on stdout. Its log is appended to
# $(dirname DATA_DIR)/s3-server-PORT.log, so a restart on the same port keeps one
# log. The PORT must be free: `start` fails at once if something listens there.
#
# Client settings:
#   endpoint      http://127.0.0.1:PORT, path-style (force_path_style(true))
#   region        us-east-1 (any region is accepted; SigV4 is checked)
#   access key    oar-tiles-test          (override: S3_SERVER_ACCESS_KEY)
#   secret key    oar-tiles-test-secret   (override: S3_SERVER_SECRET_KEY)
#   Requests must be SigV4-signed with exactly this pair (wrong secret -> 403);
#   s3s-fs refuses every signed request when it runs without credentials, so
#   "any key" is not possible.
#
# Environment:
#   S3_SERVER_VERSION     s3s-fs version (default 0.14.1: 0.15+ need rustc 1.96)
#   S3_SERVER_ROOT        cargo install root (default ~/.cache/oar-tiles/s3s-fs-VERSION)
#   S3_SERVER_WAIT_SECS   start timeout (default 20)
#   S3_SERVER_RUST_LOG    server log filter (default info: errors per failed request)
#   S3_SERVER_WATCH_PID   if set, the server is killed when that process is gone
#                         (e.g. the test binary's PID, so a crashed test leaves no server)
#
# Verified with aws-sdk-s3 1.157 (Rust) and boto3 1.44: PUT/GET/HEAD keep
# Content-Type, Content-Encoding (body returned as stored, not decoded),
# Cache-Control and x-amz-meta-*; ETag = "md5 hex" of the body on PUT, HEAD and
# GET; ListObjectsV2 with Prefix, Delimiter, MaxKeys and continuation tokens;
# DeleteObject; DeleteObjects; the x-amz-checksum-crc32 both SDKs send by
# default (checked by the server); wrong secret -> 403; 20000 PUTs by aws-sdk-s3
# with the server killed (-9 and TERM) and restarted 5 times mid-run: all 20000
# then HEAD back with their headers, ETag and metadata. Start takes < 0.1 s.
#
# Limitations found in s3s-fs 0.14.1:
#   - ListObjectsV2 entries carry Key, Size and LastModified but NO ETag (and no
#     StorageClass): compare ETags with HeadObject, not from listings.
#   - Keys map to paths: "a/b" and "a" cannot both exist (file vs directory), a
#     key ending in "/" is a directory marker; ".." segments are confined to the
#     root. Tile keys (z/x/y.ext) are fine.
#   - CreateBucket on an existing bucket answers BucketAlreadyExists (409), not
#     BucketAlreadyOwnedByYou: treat both as success.
#   - An object becomes visible (its file is renamed into place) a moment before
#     its headers/ETag sidecars are written: a kill -9 in that window leaves the
#     body with missing or stale headers, for a PUT the client never saw succeed
#     (it gets a connection error and should retry). A failed Content-MD5 check
#     likewise happens after the body was stored.
#   - Listing scans the whole bucket directory per page (fine for test sizes).
#   - DeleteObject(s) leave the sidecar files and empty directories behind
#     (invisible to clients; a re-PUT rewrites the sidecars).
#   - Multipart uploads are supported by s3s-fs but were not exercised here.
#
# Install: `cargo install s3s-fs --version 0.14.1 --features binary --locked`
# into S3_SERVER_ROOT, about 3 minutes on 2 cores (compiles ~170 crates);
# afterwards `install` is a no-op. Concurrent callers are serialised with flock.
set -euo pipefail

readonly VERSION=${S3_SERVER_VERSION:-0.14.1}
readonly ROOT=${S3_SERVER_ROOT:-${HOME:-/root}/.cache/oar-tiles/s3s-fs-$VERSION}
readonly BIN=$ROOT/bin/s3s-fs
readonly ACCESS_KEY=${S3_SERVER_ACCESS_KEY:-oar-tiles-test}
readonly SECRET_KEY=${S3_SERVER_SECRET_KEY:-oar-tiles-test-secret}
readonly WAIT_SECS=${S3_SERVER_WAIT_SECS:-20}

log() { printf 's3-server: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() {
    sed -n '9,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

installed() {
    [[ -x $BIN ]] && [[ $("$BIN" --version 2>/dev/null) == "s3s-fs $VERSION" ]]
}

cmd_install() {
    installed && return 0
    command -v cargo >/dev/null 2>&1 || die "cargo not found (needed to install s3s-fs from crates.io)"
    command -v flock >/dev/null 2>&1 || die "flock not found (util-linux)"
    mkdir -p "$ROOT"
    local lock=$ROOT/.install.lock
    exec 9>"$lock"
    flock 9
    # Another caller may have finished the install while we waited.
    if ! installed; then
        local out=$ROOT/install.log
        log "installing s3s-fs $VERSION from crates.io into $ROOT (cargo install; ~3 min on 2 cores, log: $out)"
        local t0=$SECONDS
        if ! env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR \
            cargo install s3s-fs --version "$VERSION" --features binary --locked \
            --root "$ROOT" --force >"$out" 2>&1; then
            tail -n 30 "$out" >&2
            die "cargo install s3s-fs $VERSION failed (full log: $out)"
        fi
        installed || die "installed $BIN does not report version $VERSION"
        log "installed s3s-fs $VERSION in $((SECONDS - t0)) s"
    fi
    flock -u 9
    exec 9>&-
}

# Answers an HTTP request on 127.0.0.1:$1 (any status)?
http_answers() {
    # shellcheck disable=SC2016
    timeout 2 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" >&3
        IFS= read -r -t 2 line <&3 || exit 1
        [[ $line == HTTP/* ]]' _ "$1" 2>/dev/null
}

# Does anything accept TCP connections on 127.0.0.1:$1?
port_busy() {
    # shellcheck disable=SC2016
    timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# Is PID a live (not zombie) process?
alive() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

cmd_start() {
    (($# >= 2)) || usage
    local port=$1 data=$2
    shift 2
    if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
        die "PORT must be 1-65535, got '$port'"
    fi
    [[ $WAIT_SECS =~ ^[0-9]+$ ]] || die "S3_SERVER_WAIT_SECS must be a number, got '$WAIT_SECS'"
    if port_busy "$port"; then
        die "127.0.0.1:$port is already in use (a server left running?)"
    fi
    cmd_install

    mkdir -p "$data"
    data=$(cd "$data" && pwd -P)
    local bucket
    for bucket in "$@"; do
        [[ $bucket =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "invalid bucket name '$bucket'"
        mkdir -p "$data/$bucket"
    done
    local logfile
    logfile=$(dirname "$data")/s3-server-$port.log

    printf '\n==== %s s3-server.sh start: port=%s data=%s\n' "$(date -u +%FT%TZ)" "$port" "$data" >>"$logfile"
    # setsid: own session, so the caller's terminal/process-group signals do not
    # reach it; all fds redirected so a caller capturing our stdout is not held open.
    # In a non-interactive script the background child is not a group leader, so
    # setsid execs in place and $! is the server's PID.
    RUST_LOG=${S3_SERVER_RUST_LOG:-info} setsid "$BIN" --host 127.0.0.1 --port "$port" \
        --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" "$data" \
        </dev/null >>"$logfile" 2>&1 &
    local pid=$!

    local deadline=$((SECONDS + WAIT_SECS))
    until http_answers "$port"; do
        if ! alive "$pid"; then
            tail -n 20 "$logfile" >&2
            die "s3s-fs exited during startup (log: $logfile)"
        fi
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            tail -n 20 "$logfile" >&2
            die "s3s-fs did not answer on 127.0.0.1:$port within ${WAIT_SECS}s (log: $logfile)"
        fi
        sleep 0.05
    done
    alive "$pid" || die "s3s-fs exited right after starting (log: $logfile)"

    if [[ -n ${S3_SERVER_WATCH_PID:-} ]]; then
        local watch=$S3_SERVER_WATCH_PID
        [[ $watch =~ ^[0-9]+$ ]] || die "S3_SERVER_WATCH_PID must be a PID, got '$watch'"
        # shellcheck disable=SC2016
        setsid bash -c '
            while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
            if [[ $(cat /proc/$2/comm 2>/dev/null) == s3s-fs ]]; then kill -KILL "$2"; fi
        ' _ "$watch" "$pid" </dev/null >/dev/null 2>&1 &
    fi

    log "s3s-fs $VERSION pid $pid on http://127.0.0.1:$port data $data log $logfile"
    printf '%s\n' "$pid"
}

stop_with() {
    local sig=$1 pid=$2
    [[ $pid =~ ^[0-9]+$ ]] || die "PID must be a number, got '$pid'"
    if ! alive "$pid"; then
        log "pid $pid is not running"
        return 0
    fi
    local comm
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [[ $comm == s3s-fs ]] || die "pid $pid is '$comm', not s3s-fs: not stopping it"
    kill "-$sig" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while alive "$pid"; do
        if ((SECONDS >= deadline)); then
            log "pid $pid still running after SIG$sig, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 15))
            sig=KILL
        fi
        sleep 0.05
    done
    log "stopped pid $pid (SIG$sig)"
}

case ${1:-} in
install) cmd_install ;;
start) shift; cmd_start "$@" ;;
stop) (($# == 2)) || usage; stop_with TERM "$2" ;;
kill) (($# == 2)) || usage; stop_with KILL "$2" ;;
*) usage ;;
esac
