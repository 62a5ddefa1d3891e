#!/usr/bin/env bash
# Runs the lab example against a server at $WHARF_SERVER (default http://127.0.0.1:7070):
# dead-letters after 3 attempts (like SQS maxReceiveCount=3), enqueues routine labs and one
# STAT lab at a higher priority (it runs first), and one malformed lab that is dead at once.
set -euo pipefail
cd "$(dirname "$0")"
export RESULTS_DIR="${RESULTS_DIR:-$PWD/results}"
server="${WHARF_SERVER:-http://127.0.0.1:7070}"
wharf queue set labs --max-attempts 3 --lease 5m >/dev/null
wharf queue pause labs >/dev/null   # enqueue everything first, so the priorities show
for i in 1 2 3; do
    wharf enqueue labs process_pending_labs -q --payload "{\"lab_id\": \"L-10$i\", \"panel\": \"glucose\", \"values\": [95, 150, 88]}" >/dev/null
done
stat=$(wharf enqueue labs process_stat_lab -q --priority 10 --payload '{"lab_id": "L-STAT", "panel": "potassium", "values": [6.1]}')
bad=$(wharf enqueue labs process_pending_labs -q --payload '{"panel": "glucose"}')
wharf queue resume labs >/dev/null

wharf worker --queue labs --concurrency 1 --exec 'exec ./process.sh' --log-format json 2>"${WORKER_LOG:-${TMPDIR:-/tmp}/wharf-example-labs.log}" &
worker=$!
trap 'kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null || true' EXIT
wharf job "$stat" --follow
wharf job "$bad" --follow || echo "malformed lab went to the dead-letter queue, as it should"
wharf dead labs
