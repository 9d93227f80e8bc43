#!/usr/bin/env bash
# Lists the files of the day. A plain command: input JSON in $ORK_INPUT,
# output JSON to $ORK_OUTPUT, stdout and stderr become the task's log.
set -euo pipefail
date=$(python3 -c 'import json, os; print(json.load(open(os.environ["ORK_INPUT"]))["date"])')
echo "discovering files for ${date}"
cat > "$ORK_OUTPUT" <<JSON
{"date": "${date}", "files": ["orders-${date}.csv", "refunds-${date}.csv", "visits-${date}.csv"]}
JSON
