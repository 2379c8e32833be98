#!/usr/bin/env bash
# A real HTTP cache for the CDN tests: Debian's Varnish in front of the S3 test server.
#
#   scripts/varnish.sh install                     # apt-get install varnish, if missing
#   pid=$(scripts/varnish.sh start PORT S3_PORT)   # varnishd on 127.0.0.1:PORT
#   pid=$(scripts/varnish.sh start PORT ORIGIN_PORT TTL)
#                                                  # the same in front of any HTTP origin, keeping
#                                                  # every answer (a 204 too) for TTL (e.g. 1d),
#                                                  # whatever its Cache-Control says
#   pid=$(scripts/varnish.sh start PORT ORIGIN_PORT TTL CACHE_CONTROL)
#                                                  # the same, answering every object with this
#                                                  # Cache-Control (e.g. "public, max-age=86400":
#                                                  # what browsers get from an origin that sends it)
#   scripts/varnish.sh stop PID                    # stop it and remove its working folder
#
# The cache behaves as a CDN in front of a bucket does: it keeps each object as long as its
# Cache-Control says (tiles are stored with max-age=86400 in the tests, so only a purge makes a
# change visible), accepts PURGE (one URL) and BAN (every URL under a path) from loopback only, and
# answers X-Cache: HIT or MISS. The S3 test server accepts only signed requests, so clients fetch
# through the cache with presigned URLs: the cache keys objects by path alone (the query string
# only authenticates the fetch from S3) and forwards the S3 server's Host, which the signature
# covers.
#
# Environment:
#   VARNISH_WAIT_SECS   start timeout (default 30; the VCL is compiled with cc first)
#   VARNISH_STORAGE     the cache's memory (default 64m; a benchmark's whole pyramid needs more)
#   VARNISH_KEY_QUERY   yes: key objects on the path and the query string (a CDN set up for a
#                       versioned changes feed, whose maps ask tiles with ?v=VERSION); by default
#                       the path alone, as a CDN that ignores query strings
#   VARNISH_PASS_HEAD   yes: never keep a changes feed's head.json (a CDN that honours its short
#                       max-age), whatever TTL keeps the rest
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'varnish: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=scripts/apt.sh
. scripts/apt.sh

readonly WAIT_SECS=${VARNISH_WAIT_SECS:-30}
readonly STORAGE=${VARNISH_STORAGE:-64m}
[[ $STORAGE =~ ^[0-9]+[kmg]$ ]] || die "VARNISH_STORAGE '$STORAGE' is not like 64m or 1g"

install() {
    command -v varnishd >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
    if ! command -v varnishd >/dev/null 2>&1; then
        apt_install varnish
    fi
}

vcl() {
    local s3_port=$1 ttl=${2:-} cache_control=${3:-}
    local keep="" header="" key='regsub(req.url, "\?.*$", "")' pass_head=""
    [[ ${VARNISH_KEY_QUERY:-} == yes ]] && key='req.url'
    [[ ${VARNISH_PASS_HEAD:-} == yes ]] && pass_head='if (bereq.url ~ "/changes/head\.json") { set beresp.ttl = 0s; set beresp.uncacheable = true; return (deliver); }' 
    # The header browsers get, as if the origin had sent it.
    [[ -n $cache_control ]] && header="set beresp.http.Cache-Control = \"$cache_control\";"
    # A CDN configured to keep an origin's answers for TTL, as one in front of a static origin is.
    [[ -n $ttl ]] && keep="set beresp.ttl = $ttl; set beresp.grace = 0s; return (deliver);"
    cat <<VCL
vcl 4.1;

backend origin {
    .host = "127.0.0.1";
    .port = "$s3_port";
}

acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "PURGE not allowed"));
        }
        return (purge);
    }
    if (req.method == "BAN") {
        if (client.ip !~ purgers) {
            return (synth(405, "BAN not allowed"));
        }
        ban("obj.http.x-path ~ ^" + regsub(req.url, "\?.*$", ""));
        return (synth(200, "Banned"));
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # Tiles are stored gzip and served as stored: one variant per path, as CDNs normalise
    # Accept-Encoding (an origin's Vary would otherwise split a browser's and a client's copies).
    unset req.http.Accept-Encoding;
    return (hash);
}

sub vcl_hash {
    hash_data($key);
    return (lookup);
}

sub vcl_backend_fetch {
    # A loopback address names the cache itself: the origin gets its own (the S3 test server's
    # signatures cover it). A name (a page's public host, mapped to loopback by the browser) goes
    # to the origin as it is, as a CDN forwards it, so the origin builds its URLs on it.
    if (bereq.http.host ~ "^(127\\.0\\.0\\.1|localhost)(:|$)") {
        set bereq.http.host = "127.0.0.1:$s3_port";
    }
}

sub vcl_backend_response {
    set beresp.http.x-path = regsub(bereq.url, "\?.*$", "");
    $header
    $pass_head
    $keep
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    unset resp.http.x-path;
}
VCL
}

start() {
    local port=$1 s3_port=$2 ttl=${3:-} cache_control=${4:-}
    [[ -z $ttl || $ttl =~ ^[0-9]+[smhd]$ ]] || die "TTL '$ttl' is not like 1d or 300s"
    [[ -z $cache_control || $cache_control =~ ^[A-Za-z0-9=,\ -]+$ ]] \
        || die "CACHE_CONTROL '$cache_control' is not like public, max-age=86400"
    install
    local work=/tmp/oar-tiles-varnish-$port
    rm -rf "$work"
    mkdir -p "$work"
    vcl "$s3_port" "$ttl" "$cache_control" >"$work/default.vcl"
    # Stored bytes as they are (tiles are gzip already); a small store; no ban lurker delay.
    /usr/sbin/varnishd -a "127.0.0.1:$port" -f "$work/default.vcl" -n "$work/n" -P "$work/pid" \
        -s "malloc,$STORAGE" -p http_gzip_support=off -p ban_lurker_sleep=0.01 \
        >"$work/varnishd.log" 2>&1 || die "varnishd did not start: $(cat "$work/varnishd.log")"
    local waited=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        ((waited < WAIT_SECS * 10)) || die "varnishd does not answer on port $port"
        sleep 0.1
        waited=$((waited + 1))
    done
    log "varnishd $(cat "$work/pid") on http://127.0.0.1:$port in front of 127.0.0.1:$s3_port"
    cat "$work/pid"
}

stop() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    local work
    for work in /tmp/oar-tiles-varnish-*; do
        [[ -f $work/pid && $(cat "$work/pid") == "$pid" ]] && rm -rf "$work"
    done
    true
}

case ${1:-} in
    install) install ;;
    start) (($# >= 3 && $# <= 5)) || die "usage: $0 start PORT ORIGIN_PORT [TTL [CACHE_CONTROL]]"
        start "$2" "$3" "${4:-}" "${5:-}" ;;
    stop) (($# == 2)) || die "usage: $0 stop PID"; stop "$2" ;;
    *) die "usage: $0 install | start PORT ORIGIN_PORT [TTL [CACHE_CONTROL]] | stop PID" ;;
esac
