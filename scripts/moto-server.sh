#!/usr/bin/env bash
# moto's server (PyPI `moto[server]`), the local implementation of AWS APIs the CloudFront tests
# talk to: CreateDistribution, CreateInvalidation, ListInvalidations and GetInvalidation work as
# AWS documents them. Started through scripts/moto_cloudfront.py, invalidations behave as
# CloudFront's: each stays `InProgress` for its distribution's propagation time (`propagation=N`
# in the distribution's Comment, which `distribution` sets to NAME; else the environment's
# MOTO_CLOUDFRONT_PROPAGATION_SECONDS; else 0), and `CreateInvalidation` answers
# `TooManyInvalidationsInProgress` past 3,000 file paths or 15 wildcard paths in progress per
# distribution. Nothing is ever cached, so nothing is really invalidated.
#
#   scripts/moto-server.sh install        # a venv with moto[server], if missing
#   scripts/moto-server.sh start          # on a free loopback port; prints its URL, then its PID
#   scripts/moto-server.sh stop PID
#   scripts/moto-server.sh distribution URL NAME   # creates a distribution, prints its id
#                                                  # (NAME "t1 propagation=30": 30 s invalidations)
#   scripts/moto-server.sh propagation URL ID SECONDS  # sets distribution ID's propagation time,
#                                                  # for the invalidations in flight too
#
# `distribution` goes through boto3: moto's CreateDistribution answer is not one the Rust SDK
# parses (its root element and booleans differ from AWS's), while its invalidation calls are.
#
# Environment:
#   MOTO_VERSION   the moto release (default 5.1.*)
#   MOTO_VENV      the venv (default ~/.cache/oar-tiles/moto-venv)
#   MOTO_CLOUDFRONT_PROPAGATION_SECONDS   (start) how long an invalidation is in progress
#                  on a distribution whose Comment names none (default 0)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'moto-server: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=scripts/apt.sh
. scripts/apt.sh
# shellcheck source=scripts/background.sh
. scripts/background.sh

readonly VERSION=${MOTO_VERSION:-5.1.*}
readonly VENV=${MOTO_VENV:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/oar-tiles/moto-venv}

install() {
    if "$VENV/bin/python" -c 'import moto.server' >/dev/null 2>&1; then
        return
    fi
    command -v python3 >/dev/null 2>&1 || apt_install python3
    rm -rf "$VENV"
    python3 -m venv "$VENV" >/dev/null 2>&1 || { apt_install python3-venv; python3 -m venv "$VENV"; }
    "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$VERSION" \
        || die "cannot install moto[server] into $VENV"
}

start() {
    install
    local port
    port=$(free_port)
    local logfile
    logfile=$(mktemp /tmp/oar-tiles-moto-XXXXXX.log)
    setsid "$VENV/bin/python" scripts/moto_cloudfront.py -H 127.0.0.1 -p "$port" \
        >"$logfile" 2>&1 </dev/null &
    local pid=$!
    await_port moto_server "$pid" "$port" "$logfile"
}

distribution() {
    local url=$1 name=$2
    "$VENV/bin/python" - "$url" "$name" <<'PY'
import sys, boto3
cf = boto3.client("cloudfront", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
origin = {"Id": "tiles", "DomainName": "tiles.example.org",
          "CustomOriginConfig": {"HTTPPort": 80, "HTTPSPort": 443,
                                 "OriginProtocolPolicy": "https-only"}}
behavior = {"TargetOriginId": "tiles", "ViewerProtocolPolicy": "allow-all",
            "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
            "MinTTL": 0, "TrustedSigners": {"Enabled": False, "Quantity": 0}}
config = {"CallerReference": sys.argv[2], "Comment": sys.argv[2], "Enabled": True,
          "Origins": {"Quantity": 1, "Items": [origin]}, "DefaultCacheBehavior": behavior}
print(cf.create_distribution(DistributionConfig=config)["Distribution"]["Id"])
PY
}

propagation() {
    local url=$1 id=$2 seconds=$3
    "$VENV/bin/python" - "$url" "$id" "$seconds" <<'PY'
import re, sys, boto3
cf = boto3.client("cloudfront", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
found = cf.get_distribution_config(Id=sys.argv[2])
config = found["DistributionConfig"]
comment = re.sub(r"\s*propagation=\S+", "", config.get("Comment", ""))
config["Comment"] = f"{comment} propagation={sys.argv[3]}".strip()
cf.update_distribution(Id=sys.argv[2], IfMatch=found["ETag"], DistributionConfig=config)
PY
}

case ${1:-} in
    install) install ;;
    start) start ;;
    distribution) (($# == 3)) || die "usage: $0 distribution URL NAME"; distribution "$2" "$3" ;;
    propagation) (($# == 4)) || die "usage: $0 propagation URL ID SECONDS"; propagation "$2" "$3" "$4" ;;
    stop) (($# == 2)) || die "usage: $0 stop PID"; kill "$2" 2>/dev/null || true ;;
    *) die "usage: $0 install | start | stop PID | distribution URL NAME | propagation URL ID SECONDS" ;;
esac
