#!/usr/bin/env bash
# Start a throwaway PostgreSQL (with PostGIS) on 127.0.0.1 for the tests and print its admin URL.
# Installs the Debian package when it is missing. Usage: export DP_TEST_POSTGRES_URL=$(.ci/postgres.sh)
# A server already running there is stopped and replaced. The test server skips fsync; set
# DP_TEST_POSTGRES_DURABLE=1 for a server that syncs like a production one (benchmarks).
set -euo pipefail
PORT=${DP_TEST_POSTGRES_PORT:-54329}
DATA=${DP_TEST_POSTGRES_DATA:-/tmp/dustpatrol-pg}

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || ! ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    apt-get install -y --no-install-recommends postgresql postgresql-postgis >&2
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ -f "$DATA/postmaster.pid" ]; then
    as_postgres "$BIN/pg_ctl" -D "$DATA" -m fast stop >&2 || true
fi
rm -rf "$DATA"
mkdir -p "$DATA"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$DATA"
as_postgres "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 >&2
OPTIONS="-c listen_addresses=127.0.0.1 -p $PORT -k $DATA"
if [ "${DP_TEST_POSTGRES_DURABLE:-0}" != 1 ]; then
    OPTIONS="$OPTIONS -c fsync=off -c full_page_writes=off"
fi
as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -o "$OPTIONS" start >&2
# PostGIS in the template, so every test database has it without a CREATE EXTENSION each.
as_postgres "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d template1 -q \
    -c "CREATE EXTENSION IF NOT EXISTS postgis" >&2
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
