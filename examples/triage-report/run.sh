#!/usr/bin/env bash
# Runs the triage example against a server at $WHARF_SERVER (default http://127.0.0.1:7070):
# starts a worker (one job at a time, like prefetch=1), enqueues two conversations, follows the
# urgent one to the end, and stops the worker with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")"
export REPORTS_DIR="${REPORTS_DIR:-$PWD/reports}"
wharf worker --queue triage --concurrency 1 --exec 'exec python3 handler.py' --log-format json 2>"${WORKER_LOG:-${TMPDIR:-/tmp}/wharf-example-triage.log}" &
worker=$!
trap 'kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null || true' EXIT

wharf enqueue triage triage_conversation --key whatsapp-SM001 --payload '{"conversation_id": "c-1001",
  "messages": [{"from": "patient", "text": "I have had a fever since yesterday"}]}'
id=$(wharf enqueue triage triage_conversation --key whatsapp-SM002 -q --payload '{"conversation_id": "c-1002",
  "messages": [{"from": "patient", "text": "Chest pain when I climb stairs"}, {"from": "nurse", "text": "How long?"}]}')
wharf job "$id" --follow
wharf job "$id" --json | python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; print("report:", r["report"], "urgency:", r["urgency"])'
