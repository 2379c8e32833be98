#!/usr/bin/env bash
# Load a deterministic, OAR-shaped sample facilities table into PostGIS.
#
#   scripts/load-sample.sh [--rows N] [--schema S] [--table T]
#
# Defaults: 100000 rows into public.facilities. The table is dropped and
# recreated in one transaction (concurrent readers wait, then see the new one).
# The data is generated inside the server by scripts/sample-facilities.sql and
# is identical on every run; row i does not even depend on N, so a smaller
# table is a prefix of a bigger one. Uses $DATABASE_URL, or starts the local
# test server with scripts/setup-postgis.sh when it is unset. Logs go to stderr.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
    exit "${1:-2}"
}

rows=100000
schema=public
table=facilities
while (($#)); do
    case $1 in
        --rows) rows=${2:?--rows needs a value}; shift 2 ;;
        --rows=*) rows=${1#*=}; shift ;;
        --schema) schema=${2:?--schema needs a value}; shift 2 ;;
        --schema=*) schema=${1#*=}; shift ;;
        --table) table=${2:?--table needs a value}; shift 2 ;;
        --table=*) table=${1#*=}; shift ;;
        -h | --help) usage 0 ;;
        *) printf 'load-sample: unknown argument: %s\n' "$1" >&2; usage ;;
    esac
done
[[ $rows =~ ^[1-9][0-9]*$ ]] || { echo "load-sample: --rows must be a positive integer" >&2; exit 2; }
# os_id suffixes are a bijection onto 36^6 values, so more rows cannot stay unique.
((rows < 2176782336)) || { echo "load-sample: --rows must be below 36^6" >&2; exit 2; }
# The index name is derived from the table name and PostgreSQL truncates
# identifiers at 63 bytes.
((${#table} <= 48)) || { echo "load-sample: --table name too long" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)

if [[ -z ${DATABASE_URL:-} ]]; then
    line=$("$here/setup-postgis.sh")
    DATABASE_URL=${line#DATABASE_URL=}
fi

command -v psql >/dev/null \
    || { echo "load-sample: psql not found (apt-get install postgresql-client)" >&2; exit 1; }

# The word lists contain non-ASCII names and the caller's locale may be C.
export PGCLIENTENCODING=UTF8
psql_() { psql -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" "$@"; }

usecs() { echo "${EPOCHREALTIME//[!0-9]/}"; }
t0=$(usecs)
psql_ -v rows="$rows" -v schema="$schema" -v table="$table" -f "$here/sample-facilities.sql"
t1=$(usecs)

summary=$(psql_ -At -v schema="$schema" -v table="$table" <<'SQL'
select format('%s rows, %s countries, extent %s',
              count(*), count(distinct country_code),
              coalesce(replace(replace(st_extent(location)::text, 'BOX(', '('), ',', ' .. '), 'empty'))
from :"schema".:"table"
SQL
)
ms=$(((t1 - t0) / 1000))
printf 'load-sample: %s.%s: %s; loaded in %d.%03ds\n' "$schema" "$table" "$summary" \
    $((ms / 1000)) $((ms % 1000)) >&2
