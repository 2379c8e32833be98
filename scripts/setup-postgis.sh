#!/usr/bin/env bash
# Bring up a local PostgreSQL + PostGIS server for oar-tiles development and
# tests, and print its connection URL.
#
#   eval "$(scripts/setup-postgis.sh)"     # exports nothing, sets DATABASE_URL
#   export DATABASE_URL; cargo test
#   scripts/setup-postgis.sh --packages-only   # install the packages, start nothing
#                                              # (an image build; the tests of this script)
#
# Idempotent and cheap when everything is already in place, so tests and CI can
# call it unconditionally. It installs the Debian packages if needed, creates
# and starts the "main" cluster of the newest installed PostgreSQL (there is no
# systemd in CI containers, so it drives pg_ctlcluster directly), and ensures a
# superuser role and a PostGIS-enabled database.
#
# Environment:
#   OAR_PG_PORT             TCP port of the cluster (default 5432)
#   OAR_PG_DB               database name (default oar_tiles)
#   OAR_PG_FAST=1           trade durability for speed (fsync etc. off);
#   OAR_PG_FAST=0           back to the durable defaults; when unset, keep
#                           what the last run chose (durable on a new cluster)
#   OAR_PG_MAX_CONNECTIONS  default 300 (tests open many pools in parallel)
#   OAR_PG_WAIT_SECS        how long to wait for the server (default 60)
#   OAR_PG_ROOT             where installed server files are looked for
#                           (default /; the tests point it at an empty tree)
#
# Only the URL line goes to stdout; all logs go to stderr. Runs as root (as in
# CI) or as a user with passwordless sudo. On a fresh image without package
# lists it runs apt-get update first. Any failure ends with one line saying
# what failed.
set -Eeuo pipefail

# Keep the real stdout on fd 3 for the final URL line so that nothing else
# (apt, pg_ctlcluster, psql notices) can pollute what callers eval.
exec 3>&1 1>&2

readonly ROLE=oar_tiles
readonly PASSWORD=oar_tiles
readonly CLUSTER=main
PORT=${OAR_PG_PORT:-5432}
DB=${OAR_PG_DB:-oar_tiles}
FAST=${OAR_PG_FAST:-}
MAX_CONNECTIONS=${OAR_PG_MAX_CONNECTIONS:-300}
WAIT_SECS=${OAR_PG_WAIT_SECS:-60}

log() { printf 'setup-postgis: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# Whatever set -e stops on says where, instead of ending the script silently.
trap 'die "line $LINENO: \`$BASH_COMMAND\` failed with status $?"' ERR

PACKAGES_ONLY=0
case ${1:-} in
    "") ;;
    --packages-only) PACKAGES_ONLY=1 ;;
    *) die "unknown argument '$1' (the only option is --packages-only)" ;;
esac
PG_ROOT=${OAR_PG_ROOT:-}
PG_ROOT=${PG_ROOT%/}

[[ -z $FAST || $FAST == [01] ]] || die "OAR_PG_FAST must be 0 or 1, got '$FAST'"
[[ $PORT =~ ^[0-9]+$ ]] || die "OAR_PG_PORT must be a number, got '$PORT'"
if ! [[ $MAX_CONNECTIONS =~ ^[0-9]+$ ]] || ((MAX_CONNECTIONS < 200)); then
    die "OAR_PG_MAX_CONNECTIONS must be a number >= 200, got '$MAX_CONNECTIONS'"
fi
# The name is interpolated into a URL and passed to psql as an identifier;
# restricting it avoids having to URL-encode or quote it everywhere.
[[ $DB =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "OAR_PG_DB must be a plain identifier, got '$DB'"

cd "$(dirname "$0")/.."
# shellcheck source=scripts/apt.sh
. scripts/apt.sh
# shellcheck source=scripts/proc.sh
. scripts/proc.sh

# Peer authentication over the Unix socket needs the postgres OS user. Run from
# / so that psql does not complain about an unreadable working directory.
# (Callers pass -U postgres explicitly: PGUSER may be set in the environment.)
as_postgres() {
    if [[ $(id -un) == postgres ]]; then
        (cd / && "$@")
    elif ((EUID == 0)); then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && sudo -u postgres -- "$@")
    fi
}

# Serialise concurrent invocations (parallel test binaries may all call us):
# CREATE DATABASE / CREATE EXTENSION / restarts must not race each other.
LOCK_FILE=${TMPDIR:-/tmp}/oar-tiles-setup-postgis.lock
if command -v flock >/dev/null && exec 9>>"$LOCK_FILE"; then
    chmod a+rw "$LOCK_FILE" 2>/dev/null || true  # shared by root and users
    flock -w 300 9 || die "timed out waiting for $LOCK_FILE"
fi

# --- packages ---------------------------------------------------------------

newest_server_version() {
    local d v best=
    for d in "$PG_ROOT"/usr/lib/postgresql/*/bin/postgres; do
        [[ -x $d ]] || continue
        v=${d#"$PG_ROOT"/usr/lib/postgresql/}
        v=${v%%/*}
        if [[ -z $best ]] || ((v > best)); then best=$v; fi
    done
    printf '%s' "$best"
}

# postgis for a major version is packaged as postgresql-<major>-postgis-3 (the
# plain "postgis" package only holds the shp2pgsql etc. client tools and drags
# in GDAL, so it is deliberately not installed).
VER=$(newest_server_version)
if [[ -z $VER ]] || ! command -v pg_ctlcluster >/dev/null; then
    # Ask apt which major version "postgresql" currently maps to, so postgis
    # can be installed in the same transaction.
    apt_depends_version postgresql postgresql
    VER=$APT_VERSION
    [[ -n $VER ]] || die "apt knows no package 'postgresql' (check /etc/apt/sources.list*)"
    apt_install postgresql postgresql-contrib "postgresql-$VER-postgis-3"
    VER=$(newest_server_version)
    [[ -n $VER ]] || die "PostgreSQL server binaries missing after installation"
fi
if [[ ! -f $PG_ROOT/usr/share/postgresql/$VER/extension/postgis.control ]]; then
    apt_install "postgresql-$VER-postgis-3"
fi
if ((PACKAGES_ONLY)); then
    log "PostgreSQL $VER and PostGIS are installed (--packages-only: no cluster started)"
    exit 0
fi
BIN=/usr/lib/postgresql/$VER/bin
log "using PostgreSQL $VER"

# --- cluster ----------------------------------------------------------------

CONF_DIR=/etc/postgresql/$VER/$CLUSTER
DATA_DIR=/var/lib/postgresql/$VER/$CLUSTER
if [[ -f $CONF_DIR/postgresql.conf ]]; then
    DATA_DIR=$(as_root pg_conftool -s "$VER" "$CLUSTER" show data_directory 2>/dev/null || echo "$DATA_DIR")
fi
if [[ -f $CONF_DIR/postgresql.conf && ! -f $DATA_DIR/PG_VERSION ]]; then
    # Config without data (e.g. /var/lib wiped): nothing to lose, start over.
    log "cluster $VER/$CLUSTER has no data directory; recreating it"
    as_root pg_dropcluster --stop "$VER" "$CLUSTER" || true
fi
if [[ ! -f $CONF_DIR/postgresql.conf ]]; then
    log "creating cluster $VER/$CLUSTER"
    as_root pg_createcluster --locale=C.UTF-8 --encoding=UTF8 --port="$PORT" \
        "$VER" "$CLUSTER" >&2
    DATA_DIR=$(as_root pg_conftool -s "$VER" "$CLUSTER" show data_directory)
fi

# Settings live in a conf.d drop-in (Debian clusters include conf.d last, so it
# wins over postgresql.conf) that is rewritten on every run; removing a line
# from here therefore reverts the setting.
DROPIN=$CONF_DIR/conf.d/90-oar-tiles.conf
# Unset OAR_PG_FAST keeps the current mode, so that a plain run (e.g. from
# load-sample.sh) does not undo what the test harness asked for.
if [[ -z $FAST ]]; then
    if grep -qs '^fsync = off' "$DROPIN"; then FAST=1; else FAST=0; fi
fi
desired_conf() {
    printf '# Managed by oar-tiles scripts/setup-postgis.sh; rewritten on every run.\n'
    printf 'port = %s\n' "$PORT"
    printf 'max_connections = %s\n' "$MAX_CONNECTIONS"
    if [[ $FAST == 1 ]]; then
        # Throwaway test server: losing data on an OS crash is acceptable.
        printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n'
    fi
}
conf_changed=0
if [[ "$(cat "$DROPIN" 2>/dev/null || true)" != "$(desired_conf)" ]]; then
    log "writing $DROPIN"
    as_root install -d -o postgres -g postgres "$CONF_DIR/conf.d"
    desired_conf | as_root tee "$DROPIN.tmp" >/dev/null
    as_root chown postgres:postgres "$DROPIN.tmp"
    as_root mv -f "$DROPIN.tmp" "$DROPIN"
    conf_changed=1
fi

PIDFILE=$DATA_DIR/postmaster.pid
LOG_FILE=/var/log/postgresql/postgresql-$VER-$CLUSTER.log

# A stale lock file naming a recycled PID would make postgres refuse to start.
live_postgres() { live_process "$1" postgres; }
# Line $2 of lock file $1, empty if there is none. The data directory is only
# readable by postgres, hence as_root.
lock_line() { as_root sed -n "$2p" "$1" 2>/dev/null || true; }
lock_pid() { lock_line "$1" 1; }
postmaster_running() { live_postgres "$(lock_pid "$PIDFILE")"; }
# Port and socket directory of the running server, from its pid file (the
# config may already say something else if we just changed it).
running_port() { lock_line "$PIDFILE" 4; }
running_socket_dir() { lock_line "$PIDFILE" 5; }

fail_with_log() {
    tail -n 20 "$LOG_FILE" >&2 || true
    die "$* (server log above: $LOG_FILE)"
}

# Remove lock files of a dead server: the data directory's postmaster.pid and
# the Unix socket lock (which survives in /var/run/postgresql unless the
# machine rebooted).
clear_stale_locks() {
    local dirs lock pid i
    dirs=$(as_root pg_conftool -s "$VER" "$CLUSTER" show unix_socket_directories 2>/dev/null \
        || echo /var/run/postgresql)
    for lock in "$PIDFILE" ${dirs//,/ }; do
        [[ $lock == "$PIDFILE" ]] || lock=$lock/.s.PGSQL.$PORT.lock
        pid=$(lock_pid "$lock")
        [[ -n $pid ]] || continue
        # A just-killed postmaster may linger as a zombie until reaped; postgres
        # counts that as alive, so give the reaper a moment.
        for ((i = 0; i < 50; i++)); do
            [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] || break
            sleep 0.2
        done
        if ! live_postgres "$pid"; then
            log "removing stale lock file $lock (PID $pid is not a running postgres)"
            as_root rm -f "$lock"
        fi
    done
}

pg_ctl_cluster() {
    without_extra_fds as_root pg_ctlcluster "$VER" "$CLUSTER" "$1" >&2 \
        || fail_with_log "pg_ctlcluster $VER $CLUSTER $1 failed"
}

admin_psql() {
    as_postgres "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -U postgres \
        -h "$(running_socket_dir)" -p "$(running_port)" "$@"
}

# Wait until the server accepts connections on host $1 port $2 (it may still be
# in crash recovery after having been killed).
wait_ready() {
    local deadline=$((SECONDS + WAIT_SECS))
    until "$BIN/pg_isready" -q -h "$1" -p "$2" -t 2; do
        ((SECONDS < deadline)) \
            || fail_with_log "server at $1:$2 not accepting connections after ${WAIT_SECS}s"
        sleep 0.3
    done
}

if ! postmaster_running; then
    clear_stale_locks
    log "starting cluster $VER/$CLUSTER"
    pg_ctl_cluster start
elif ((conf_changed)); then
    wait_ready "$(running_socket_dir)" "$(running_port)"
    # port and max_connections only take effect on restart, the rest on reload.
    # Compare with the live values rather than trusting pending_restart, which
    # is only updated asynchronously after a reload.
    if [[ $(running_port) != "$PORT" ||
          $(admin_psql -d postgres -Atc 'show max_connections') != "$MAX_CONNECTIONS" ]]; then
        log "restarting cluster $VER/$CLUSTER to apply port/max_connections"
        pg_ctl_cluster restart
    else
        log "reloading configuration"
        admin_psql -d postgres -Atc 'select pg_reload_conf()' >/dev/null
    fi
fi

wait_ready 127.0.0.1 "$PORT"
postmaster_running || die "something answers on port $PORT but cluster $VER/$CLUSTER is not running"
[[ $(running_port) == "$PORT" ]] \
    || die "cluster $VER/$CLUSTER runs on port $(running_port), but another server holds port $PORT"

# --- role, database, extension ----------------------------------------------

# Only touch the catalogs when something is missing, so the common path is a
# single read-only query.
state=$(admin_psql -d postgres -Atv role="$ROLE" -v db="$DB" <<'SQL'
select coalesce((select rolsuper and rolcanlogin from pg_roles where rolname = :'role'), false),
       coalesce((select pg_get_userbyid(datdba) = :'role' from pg_database where datname = :'db'), false),
       exists (select from pg_database where datname = :'db')
SQL
)
IFS='|' read -r role_ok owner_ok db_exists <<<"$state"

set_password=0
if [[ $role_ok != t ]]; then
    log "creating/updating role $ROLE"
    admin_psql -d postgres -v role="$ROLE" -v pw="$PASSWORD" <<'SQL'
select format('create role %I', :'role') where not exists (select from pg_roles where rolname = :'role') \gexec
select format('alter role %I with login superuser password %L', :'role', :'pw') \gexec
SQL
fi
if [[ $db_exists != t ]]; then
    log "creating database $DB"
    # template0 + explicit C.UTF-8 so the database is UTF-8 with byte-order
    # collation whatever locale the cluster was created with; this also keeps
    # ORDER BY on text identical across machines.
    admin_psql -d postgres -v role="$ROLE" -v db="$DB" <<'SQL'
select format('create database %I owner %I encoding %L locale %L template template0',
              :'db', :'role', 'UTF8', 'C.UTF-8') \gexec
SQL
elif [[ $owner_ok != t ]]; then
    admin_psql -d postgres -v role="$ROLE" -v db="$DB" <<'SQL'
select format('alter database %I owner to %I', :'db', :'role') \gexec
SQL
fi

URL="postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
url_psql() { (cd / && "$BIN/psql" -X -q -v ON_ERROR_STOP=1 "$URL" "$@"); }

# Doing this through the URL checks TCP + password auth at the same time. If
# the password was changed behind our back, reset it once and retry.
if ! url_psql -c 'set client_min_messages = warning; create extension if not exists postgis' 2>/dev/null; then
    set_password=1
fi
if ((set_password)); then
    log "resetting password of role $ROLE"
    admin_psql -d postgres -v role="$ROLE" -v pw="$PASSWORD" <<'SQL'
select format('alter role %I with login superuser password %L', :'role', :'pw') \gexec
SQL
    url_psql -c 'set client_min_messages = warning; create extension if not exists postgis' \
        || die "cannot connect with $URL (check pg_hba.conf for 127.0.0.1 password auth)"
fi

version=$(url_psql -Atc 'select postgis_full_version()') \
    || die "postgis_full_version() failed on $URL"
log "ready: ${version:0:120}"

printf 'DATABASE_URL=%s\n' "$URL" >&3
