#!/bin/sh
# Processes a batch of pending lab results: a `wharf worker --exec` handler in plain sh.
#
# Mirrors an ML batch worker fed by SQS (job types with priorities, a dead-letter queue after
# three receives). The payload is {"lab_id": "...", "panel": "...", "values": [numbers]}; the
# handler flags values outside the panel's reference range and writes a summary to
# $RESULTS_DIR/<lab_id>.json (same file on every attempt: idempotent).
#
# Exit codes: 0 done; 100 the payload is unusable (dead at once, no retry); other codes retry.
set -eu
payload=$(cat)
field() { printf '%s' "$payload" | sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p"; }
lab_id=$(field lab_id)
panel=$(field panel)
values=$(printf '%s' "$payload" | sed -n 's/.*"values": *\[\([^]]*\)\].*/\1/p' | tr ',' ' ')
if [ -z "$lab_id" ] || [ -z "$values" ]; then
    echo "lab payload lacks lab_id or values: $payload" >&2
    exit 100
fi
case "$panel" in
    glucose) low=70; high=140 ;;
    potassium) low=3; high=5 ;;
    *) low=0; high=1000 ;;
esac

wharf progress 20 --stage "checking $panel"
flagged=0; count=0
for v in $values; do
    count=$((count + 1))
    whole=${v%.*}
    if [ "$whole" -lt "$low" ] || [ "$whole" -ge "$high" ]; then flagged=$((flagged + 1)); fi
done
wharf progress 80 --stage writing
mkdir -p "${RESULTS_DIR:-results}"
summary="{\"lab_id\": \"$lab_id\", \"panel\": \"$panel\", \"values\": $count, \"flagged\": $flagged, \"priority_job\": \"$WHARF_KIND\"}"
printf '%s\n' "$summary" > "${RESULTS_DIR:-results}/$lab_id.json"
echo "lab $lab_id: $flagged of $count values out of range"
wharf result "$summary"
