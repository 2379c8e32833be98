#!/usr/bin/env bash
# Bring up the production-like PostgreSQL servers the test suite needs, beside the cluster of
# scripts/setup-postgis.sh (which it runs first), and print their coordinates:
#
#   - TLS on that cluster, with certificates from a throw-away CA made here (a server certificate
#     for `localhost` only, a client certificate, and an unrelated CA for "wrong certificate"
#     cases), and pg_hba.conf lines with hostssl, cert and clientcert=verify-full;
#   - PgBouncer in transaction pooling mode on loopback, without TLS: Debian's package with
#     max_prepared_statements = 0, and one keeping prepared statements (built from Debian 13's
#     source package when the installed one is older than 1.21);
#   - a hot standby made with pg_basebackup -R;
#   - a cluster of its own for the watch test that stops and restarts PostgreSQL (never the
#     shared one), with PostGIS and the oar_tiles role.
#
#   scripts/pg-test-servers.sh    # prints OAR_TILES_TEST_*=… lines for scripts/test.sh
#
# Idempotent and cheap when everything is in place. Logs go to stderr; stdout has only the
# NAME=value lines. Any failure ends with one line saying what failed.
#
# Environment:
#   OAR_PG_EXTRAS_DIR      where certificates and PgBouncer's files live (default /var/tmp/oar-tiles-pg)
#   OAR_PG_STANDBY_PORT    port of the standby (default 5434)
#   OAR_PG_WATCH_PORT      port of the watch test's cluster (default 5435)
#   OAR_PG_BOUNCER_PORT    port of PgBouncer with max_prepared_statements = 0 (default 6432); the
#                          one keeping prepared statements (100) listens on the next port
set -Eeuo pipefail
exec 3>&1 1>&2

log() { printf 'pg-test-servers: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
trap 'die "line $LINENO: \`$BASH_COMMAND\` failed with status $?"' ERR

cd "$(dirname "$0")/.."
# shellcheck source=scripts/apt.sh
. scripts/apt.sh
# shellcheck source=scripts/proc.sh
. scripts/proc.sh

DIR=${OAR_PG_EXTRAS_DIR:-/var/tmp/oar-tiles-pg}
STANDBY_PORT=${OAR_PG_STANDBY_PORT:-5434}
WATCH_PORT=${OAR_PG_WATCH_PORT:-5435}
BOUNCER_PORT=${OAR_PG_BOUNCER_PORT:-6432}
readonly ROLE=oar_tiles PASSWORD=oar_tiles

url_line=$(scripts/setup-postgis.sh)
URL=${url_line#DATABASE_URL=}
PORT=${URL##*:}; PORT=${PORT%%/*}
DB=${URL##*/}

LOCK_FILE=${TMPDIR:-/tmp}/oar-tiles-pg-test-servers.lock
exec 9>>"$LOCK_FILE"
flock -w 300 9 || die "timed out waiting for $LOCK_FILE"

command -v openssl >/dev/null || apt_install openssl
[[ -x /usr/sbin/pgbouncer ]] || apt_install pgbouncer

VER=$(pg_lsclusters -h | awk '$2 == "main" { print $1 }' | sort -n | tail -n 1)
[[ -n $VER ]] || die "no main cluster after setup-postgis.sh"
BIN=/usr/lib/postgresql/$VER/bin
CONF_DIR=/etc/postgresql/$VER/main
SOCKET_DIR=/var/run/postgresql

as_postgres() { (cd / && runuser -u postgres -- "$@"); }
admin_psql() {
    as_postgres "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -U postgres -h "$SOCKET_DIR" -p "${2:-$PORT}" \
        -d postgres -Atc "$1"
}
# Writes stdin to $1 (owned by $2, mode $3) when it differs; returns 0 when it changed.
update_file() {
    local tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
    install -o "$2" -g "$2" -m "$3" "$tmp" "$1"
    rm -f "$tmp"
}

# --- certificates -----------------------------------------------------------------------------

CERTS=$DIR/certs
mkdir -p "$CERTS"
chmod 755 "$DIR" "$CERTS"

fresh() { [[ -f $1 ]] && openssl x509 -checkend 2592000 -noout -in "$1" >/dev/null 2>&1; }

make_ca() { # name, common name
    fresh "$CERTS/$1.crt" && return 0
    log "making test CA $1"
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$CERTS/$1.key" -out "$CERTS/$1.crt" -days 825 -sha256 -config /dev/stdin <<EOF 2>/dev/null
[req]
distinguished_name = dn
x509_extensions = ext
prompt = no
[dn]
CN = $2
[ext]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
EOF
    rm -f "$CERTS"/*.leaf-of-"$1"
}

make_leaf() { # name, CA name, common name, extendedKeyUsage, subjectAltName (optional)
    local name=$1 ca=$2 cn=$3 eku=$4 san=${5:-}
    [[ -f $CERTS/$name.leaf-of-$ca ]] && fresh "$CERTS/$name.crt" && return 0
    log "making certificate $name (CN=$cn) signed by $ca"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$CERTS/$name.key" -subj "/CN=$cn" -out "$CERTS/$name.csr" 2>/dev/null
    {
        printf 'basicConstraints = CA:false\nkeyUsage = critical,digitalSignature,keyEncipherment\n'
        printf 'extendedKeyUsage = %s\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid,issuer\n' "$eku"
        [[ -z $san ]] || printf 'subjectAltName = %s\n' "$san"
    } >"$CERTS/$name.ext"
    openssl x509 -req -in "$CERTS/$name.csr" -CA "$CERTS/$ca.crt" -CAkey "$CERTS/$ca.key" \
        -CAcreateserial -days 825 -sha256 -extfile "$CERTS/$name.ext" -out "$CERTS/$name.crt" 2>/dev/null
    chmod 600 "$CERTS/$name.key"
    rm -f "$CERTS/$name.csr" "$CERTS/$name.ext"
    touch "$CERTS/$name.leaf-of-$ca"
}

make_ca ca "oar-tiles test CA"
make_ca other-ca "unrelated test CA"
# DNS:localhost only: connecting to 127.0.0.1 with verify-full is a name mismatch.
make_leaf server ca localhost serverAuth DNS:localhost
make_leaf client ca oar_tiles_cert clientAuth
make_leaf clientcert ca oar_tiles_clientcert clientAuth
make_leaf client-wrong other-ca oar_tiles_cert clientAuth

# --- TLS on the main cluster ------------------------------------------------------------------

reload=0
SERVER_TLS=$CONF_DIR/oar-tiles-tls
install -d -o postgres -g postgres -m 700 "$SERVER_TLS"
update_file "$SERVER_TLS/server.crt" postgres 644 <"$CERTS/server.crt" && reload=1
update_file "$SERVER_TLS/server.key" postgres 600 <"$CERTS/server.key" && reload=1
update_file "$SERVER_TLS/ca.crt" postgres 644 <"$CERTS/ca.crt" && reload=1
update_file "$CONF_DIR/conf.d/91-oar-tiles-tls.conf" postgres 644 <<EOF && reload=1
# Managed by oar-tiles scripts/pg-test-servers.sh; rewritten on every run.
ssl = on
ssl_cert_file = '$SERVER_TLS/server.crt'
ssl_key_file = '$SERVER_TLS/server.key'
ssl_ca_file = '$SERVER_TLS/ca.crt'
EOF
# A standby made without a replication slot must find the WAL it still needs.
update_file "$CONF_DIR/conf.d/92-oar-tiles-standby.conf" postgres 644 <<EOF && reload=1
# Managed by oar-tiles scripts/pg-test-servers.sh; rewritten on every run.
wal_keep_size = 512MB
EOF

HBA=$CONF_DIR/pg_hba.conf
{
    cat <<'EOF'
# BEGIN oar-tiles test servers (managed by scripts/pg-test-servers.sh)
local     all  oar_tiles                  scram-sha-256
hostssl   all  oar_tiles_cert        all  cert
hostssl   all  oar_tiles_tls         all  scram-sha-256
hostnossl all  oar_tiles_tls         all  reject
hostssl   all  oar_tiles_clientcert  all  scram-sha-256 clientcert=verify-full
# END oar-tiles test servers
EOF
    sed '/^# BEGIN oar-tiles test servers/,/^# END oar-tiles test servers/d' "$HBA"
} | update_file "$HBA" postgres 640 && reload=1

# Each role's password is its name (oar_tiles_cert authenticates by certificate alone).
admin_psql "do \$\$ declare r text; begin
  foreach r in array array['oar_tiles_cert', 'oar_tiles_tls', 'oar_tiles_clientcert'] loop
    if not exists (select from pg_roles where rolname = r) then
      execute format('create role %I login superuser', r);
    end if;
  end loop;
  alter role oar_tiles_tls password 'oar_tiles_tls';
  alter role oar_tiles_clientcert password 'oar_tiles_clientcert';
end \$\$" >/dev/null
if ((reload)); then
    log "reloading cluster $VER/main for TLS settings"
    admin_psql 'select pg_reload_conf()' >/dev/null
    sleep 0.5
fi
tls_check=$(cd / && "$BIN/psql" -X -Atc 'select ssl from pg_stat_ssl where pid = pg_backend_pid()' \
    "host=localhost port=$PORT dbname=$DB user=oar_tiles_tls password=oar_tiles_tls sslmode=verify-full sslrootcert=$CERTS/ca.crt") \
    || die "no verify-full TLS connection to localhost:$PORT with the test CA"
[[ $tls_check == t ]] || die "the TLS check connection is not encrypted"

# --- PgBouncer ----------------------------------------------------------------------------------

BOUNCER_DIR=$DIR/pgbouncer
install -d -o postgres -g postgres -m 700 "$BOUNCER_DIR"
printf '"%s" "%s"\n' "$ROLE" "$PASSWORD" | update_file "$BOUNCER_DIR/userlist.txt" postgres 600 || true
bouncer_version=$(/usr/sbin/pgbouncer --version | awk 'NR == 1 { print $2 }')
log "PgBouncer $bouncer_version"

# Starts (or restarts when its config changed) a PgBouncer named $1 on port $2 with extra settings $3,
# from binary $4 (default: the package's).
bouncer() {
    local name=$1 port=$2 extra=$3 binary=${4:-/usr/sbin/pgbouncer} ini=$BOUNCER_DIR/$1.ini pid changed=0
    update_file "$ini" postgres 600 <<EOF && changed=1
; $binary
[databases]
* = host=127.0.0.1 port=$PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $BOUNCER_DIR/userlist.txt
admin_users = $ROLE
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
pidfile = $BOUNCER_DIR/$name.pid
logfile = $BOUNCER_DIR/$name.log
$extra
EOF
    pid=$(cat "$BOUNCER_DIR/$name.pid" 2>/dev/null || true)
    if live_process "$pid" pgbouncer; then
        ((changed)) || return 0
        log "restarting PgBouncer $name (config changed)"
        kill "$pid"
        for _ in $(seq 50); do live_process "$pid" pgbouncer || break; sleep 0.1; done
    fi
    rm -f "$BOUNCER_DIR/$name.pid"
    log "starting PgBouncer $name on 127.0.0.1:$port"
    without_extra_fds as_postgres "$binary" -d "$ini"
    for _ in $(seq 100); do
        (cd / && "$BIN/psql" -X -Atc 'select 1' "postgresql://$ROLE:$PASSWORD@127.0.0.1:$port/$DB") \
            >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tail -n 20 "$BOUNCER_DIR/$name.log" >&2 || true
    die "PgBouncer $name does not answer on 127.0.0.1:$port"
}
# A PgBouncer that keeps prepared statements (max_prepared_statements, new in 1.21). Debian 12 ships
# 1.18, so there the source package of Debian 13 is fetched with apt (checked against its signed
# index, through apt's own proxy settings) and built once, without TLS or c-ares (loopback only).
newer_bouncer() {
    local src=$DIR/pgbouncer-src build=$DIR/pgbouncer-build tarball version
    NEWER_BOUNCER=$(compgen -G "$build/*/bin/pgbouncer" | sort -V | tail -n 1 || true)
    [[ -z $NEWER_BOUNCER ]] || return 0
    log "building PgBouncer with max_prepared_statements from Debian 13's source package"
    command -v cc >/dev/null || apt_install gcc
    command -v make >/dev/null || apt_install make
    command -v pkg-config >/dev/null || apt_install pkg-config
    dpkg -s libevent-dev >/dev/null 2>&1 || apt_install libevent-dev
    rm -rf "$src"
    mkdir -p "$src/lists/partial"
    echo "deb-src http://deb.debian.org/debian trixie main" >"$src/sources.list"
    local apt_src=(-o "Dir::Etc::SourceList=$src/sources.list" -o Dir::Etc::SourceParts=-
                   -o "Dir::State::Lists=$src/lists" -o APT::Get::List-Cleanup=0)
    apt-get "${apt_src[@]}" -q update >&2
    (cd "$src" && apt-get "${apt_src[@]}" -q source --download-only pgbouncer >&2)
    tarball=$(compgen -G "$src/pgbouncer_*.orig.tar.gz" | head -n 1)
    [[ -n $tarball ]] || die "apt-get source pgbouncer fetched no source tarball"
    version=${tarball##*/pgbouncer_}; version=${version%.orig.tar.gz}
    tar -xzf "$tarball" -C "$src"
    (cd "$src/pgbouncer-$version" \
        && ./configure --prefix="$build/$version" --without-openssl --without-cares >/dev/null \
        && make -j"$(nproc)" >/dev/null && make install >/dev/null) \
        || die "building PgBouncer $version failed"
    rm -rf "$src"
    NEWER_BOUNCER=$build/$version/bin/pgbouncer
}

bouncer pgbouncer "$BOUNCER_PORT" ""
prepared_port=$((BOUNCER_PORT + 1))
if printf '1.21\n%s\n' "$bouncer_version" | sort -V -C; then
    NEWER_BOUNCER=/usr/sbin/pgbouncer
else
    newer_bouncer
fi
bouncer pgbouncer-prepared "$prepared_port" "max_prepared_statements = 100" "$NEWER_BOUNCER"

# --- hot standby ----------------------------------------------------------------------------------

STANDBY_CONF=/etc/postgresql/$VER/standby
STANDBY_DATA=/var/lib/postgresql/$VER/standby
standby_ready() {
    [[ $(admin_psql 'select pg_is_in_recovery()' "$STANDBY_PORT" 2>/dev/null) == t ]]
}
start_standby() {
    local pid
    pid=$(sed -n 1p "$STANDBY_DATA/postmaster.pid" 2>/dev/null || true)
    if [[ -n $pid ]] && ! live_process "$pid" postgres; then rm -f "$STANDBY_DATA/postmaster.pid"; fi
    live_process "$pid" postgres || without_extra_fds pg_ctlcluster "$VER" standby start
    for _ in $(seq 300); do standby_ready && return 0; sleep 0.2; done
    return 1
}
make_standby() {
    log "making the standby $VER/standby on port $STANDBY_PORT with pg_basebackup"
    pg_ctlcluster "$VER" standby stop -m immediate >/dev/null 2>&1 || true
    pg_dropcluster "$VER" standby >/dev/null 2>&1 || true
    pg_createcluster --port="$STANDBY_PORT" "$VER" standby >/dev/null
    update_file "$STANDBY_CONF/conf.d/90-oar-tiles-standby.conf" postgres 644 <<EOF || true
# Managed by oar-tiles scripts/pg-test-servers.sh.
hot_standby = on
max_connections = $(admin_psql 'show max_connections')
fsync = off
EOF
    rm -rf "${STANDBY_DATA:?}"
    as_postgres "$BIN/pg_basebackup" -h "$SOCKET_DIR" -p "$PORT" -U postgres -D "$STANDBY_DATA" \
        -R -X stream -c fast
    start_standby || die "the standby on port $STANDBY_PORT does not come up (see /var/log/postgresql/postgresql-$VER-standby.log)"
}
# A standby can be up and yet stuck: once the primary has recycled WAL it still needs (a bulk load
# of more than wal_keep_size while it lagged), it never streams again, and the tests that wait for
# replay time out. Streaming (or catching up) is what the tests need.
standby_streaming() {
    local state
    for _ in $(seq 50); do
        state=$(admin_psql "select string_agg(state, ',') from pg_stat_replication" 2>/dev/null || true)
        [[ $state == *streaming* || $state == *catchup* ]] && return 0
        sleep 0.2
    done
    return 1
}
if ! standby_ready; then
    if [[ ! -f $STANDBY_CONF/postgresql.conf ]] || ! start_standby; then
        make_standby
    fi
fi
if ! standby_streaming; then
    log "the standby on port $STANDBY_PORT does not stream from the primary (see /var/log/postgresql/postgresql-$VER-standby.log)"
    make_standby
    standby_streaming || die "the standby on port $STANDBY_PORT does not stream from the primary (see /var/log/postgresql/postgresql-$VER-standby.log)"
fi
# A test that paused replay and died before resuming it would leave every later run waiting.
if [[ $(admin_psql 'select pg_is_wal_replay_paused()' "$STANDBY_PORT") == t ]]; then
    admin_psql 'select pg_wal_replay_resume()' "$STANDBY_PORT" >/dev/null
fi

# --- the watch test's own cluster ----------------------------------------------------------------

# The test stops and starts it (pg_ctlcluster VER watch stop|start) to see /health turn 503 and back.
WATCH_CONF=/etc/postgresql/$VER/watch
watch_ready() { admin_psql 'select 1' "$WATCH_PORT" >/dev/null 2>&1; }
if ! watch_ready; then
    if [[ ! -f $WATCH_CONF/postgresql.conf ]]; then
        log "making the watch test's cluster $VER/watch on port $WATCH_PORT"
        pg_createcluster --port="$WATCH_PORT" "$VER" watch >/dev/null
        update_file "$WATCH_CONF/conf.d/90-oar-tiles-watch.conf" postgres 644 <<EOF || true
# Managed by oar-tiles scripts/pg-test-servers.sh.
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    fi
    pid=$(sed -n 1p "/var/lib/postgresql/$VER/watch/postmaster.pid" 2>/dev/null || true)
    if [[ -n $pid ]] && ! live_process "$pid" postgres; then rm -f "/var/lib/postgresql/$VER/watch/postmaster.pid"; fi
    without_extra_fds pg_ctlcluster "$VER" watch start
    for _ in $(seq 100); do watch_ready && break; sleep 0.1; done
    watch_ready || die "the watch test's cluster on port $WATCH_PORT does not come up"
fi
admin_psql "do \$\$ begin
  if not exists (select from pg_roles where rolname = '$ROLE') then
    create role $ROLE login superuser password '$PASSWORD';
  end if;
end \$\$" "$WATCH_PORT" >/dev/null
if [[ $(admin_psql "select 1 from pg_database where datname = '$DB'" "$WATCH_PORT") != 1 ]]; then
    admin_psql "create database $DB owner $ROLE" "$WATCH_PORT" >/dev/null
fi
as_postgres "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -U postgres -h "$SOCKET_DIR" -p "$WATCH_PORT" -d "$DB" \
    -c 'create extension if not exists postgis' >/dev/null

printf 'OAR_TILES_TEST_TLS_DIR=%s\n' "$CERTS" >&3
printf 'OAR_TILES_TEST_PGBOUNCER_URL=postgresql://%s:%s@127.0.0.1:%s/%s\n' "$ROLE" "$PASSWORD" "$BOUNCER_PORT" "$DB" >&3
printf 'OAR_TILES_TEST_PGBOUNCER_PREPARED_URL=postgresql://%s:%s@127.0.0.1:%s/%s\n' \
    "$ROLE" "$PASSWORD" "$prepared_port" "$DB" >&3
printf 'OAR_TILES_TEST_STANDBY_URL=postgresql://%s:%s@127.0.0.1:%s/%s\n' "$ROLE" "$PASSWORD" "$STANDBY_PORT" "$DB" >&3
printf 'OAR_TILES_TEST_WATCH_URL=postgresql://%s:%s@127.0.0.1:%s/%s\n' "$ROLE" "$PASSWORD" "$WATCH_PORT" "$DB" >&3
printf 'OAR_TILES_TEST_WATCH_CLUSTER=%s/watch\n' "$VER" >&3
