#!/usr/bin/env bash
# Builds ork and runs the example ETL workflow end to end on the embedded
# default (SQLite + a local object folder + subprocess tasks), then shows the
# finished run with every task's output.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building ork (release)" >&2
cargo build --release --locked -p ork-cli -p ork-worker
bin="$PWD/target/release"

data=$(mktemp -d -t ork-demo-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export ORK_SERVER="http://127.0.0.1:${port}"

echo "==> ork dev on ${ORK_SERVER} (data in ${data})" >&2
"$bin/ork" dev --listen "127.0.0.1:${port}" --data-dir "$data" examples/etl/etl.yaml 2>"$data/server.log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  "$bin/ork" workflow list >/dev/null 2>&1 && break
  sleep 0.1
done

echo "==> ork run start etl --input date=2026-11-26 --wait" >&2
if "$bin/ork" run start etl --input date=2026-11-26 --wait; then
  status=0
else
  status=$?
fi
run=$("$bin/ork" run list etl --limit 1 -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
echo "==> ork run logs ${run} --task report" >&2
"$bin/ork" run logs "$run" --task report
echo "==> the run's mirror: ${data}/objects/runs/${run}" >&2
find "$data/objects/runs/$run" -type f | sed "s|$data/objects/||" | sort | head -20
exit "$status"
