#!/usr/bin/env bash
# The scaled-out service as processes on this one machine: redis-server, N API processes and
# M workers against the database, storage and broker of the settings (or of the environment).
# Usage: deploy/run-scaled.sh [API_PROCESSES] [WORKERS]   (Ctrl-C stops everything)
# Needs queue.url (e.g. DUSTPATROL_QUEUE__URL=redis://127.0.0.1:6379/0) and, for several
# machines, a shared database (PostgreSQL) and object storage (storage.url).
set -euo pipefail
cd "$(dirname "$0")/.."
API=${1:-2}
WORKERS=${2:-2}
BIN=${BIN:-.venv/bin}
LOGS=${LOGS:-var/logs}
export DUSTPATROL_QUEUE__URL=${DUSTPATROL_QUEUE__URL:-redis://127.0.0.1:6379/0}
mkdir -p "$LOGS"
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait; }
trap stop EXIT INT TERM
if [[ $DUSTPATROL_QUEUE__URL == redis://127.0.0.1:* ]] && ! "$BIN/python" -c \
    "import redis, os; redis.Redis.from_url(os.environ['DUSTPATROL_QUEUE__URL']).ping()" 2>/dev/null; then
    port=${DUSTPATROL_QUEUE__URL#redis://127.0.0.1:}; port=${port%%/*}
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no >"$LOGS/redis.log" 2>&1 &
    pids+=($!)
    sleep 0.5
fi
"$BIN/dustpatrol" serve --workers "$API" >"$LOGS/api.log" 2>&1 &
pids+=($!)
READY="http://127.0.0.1:${DUSTPATROL_SERVER__PORT:-8000}/health/ready"
until "$BIN/python" -c "import httpx, sys; sys.exit(httpx.get('$READY').status_code != 200)" \
    2>/dev/null; do
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "the API did not start: $LOGS/api.log" >&2; exit 1; }
    sleep 0.5
done
for n in $(seq 1 "$WORKERS"); do
    "$BIN/dustpatrol" worker --name "worker-$n" >"$LOGS/worker-$n.log" 2>&1 &
    pids+=($!)
done
echo "API: http://127.0.0.1:${DUSTPATROL_SERVER__PORT:-8000} ($API processes), $WORKERS workers;" \
    "logs in $LOGS/; Ctrl-C stops"
wait
