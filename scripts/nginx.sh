#!/usr/bin/env bash
# Debian's nginx, for the test that serves a seeded tree with the server block the user guide gives
# (docs/src/outputs.md, "Serving a tree from nginx").
#
#   scripts/nginx.sh install    # apt-get install nginx, if missing; prints the nginx binary's path
#
# The test runs its own nginx (one process, in the foreground, on a free port, from a folder of
# its own); the package's service is never needed, and Debian's policy in containers keeps it
# from starting.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'nginx: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=scripts/apt.sh
. scripts/apt.sh

find_nginx() {
    command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; }
}

case ${1:-} in
    install)
        find_nginx >/dev/null || apt_install nginx
        find_nginx || die "nginx is not on the PATH nor in /usr/sbin after installing it"
        ;;
    *) die "usage: scripts/nginx.sh install" ;;
esac
