#!/usr/bin/env bash
# Runs examples/containers/containers.yaml end to end: `docker` tasks in a
# private Docker engine (scripts/docker.sh starts it and builds the images the
# example names), next to a subprocess task, then shows the run's outputs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${ORK_TEST_CONTAINER_WORKER:-}" ]; then
    exec scripts/docker.sh "$0" "$@"
fi

echo "==> building ork (release)" >&2
cargo build --release --locked -p ork-cli -p ork-worker
bin="$PWD/target/release"

data=$(mktemp -d -t ork-demo-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export ORK_SERVER="http://127.0.0.1:${port}"

echo "==> ork dev on ${ORK_SERVER} with Docker at ${DOCKER_HOST}" >&2
"$bin/ork" dev --listen "127.0.0.1:${port}" --data-dir "$data" \
    --container-worker "$ORK_TEST_CONTAINER_WORKER" \
    examples/containers/containers.yaml 2>"$data/server.log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
    "$bin/ork" workflow list >/dev/null 2>&1 && break
    sleep 0.1
done

echo "==> ork run start containers --wait" >&2
status=0
"$bin/ork" run start containers --wait || status=$?
run=$("$bin/ork" run list containers --limit 1 -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
"$bin/ork" run status "$run"
echo "==> ork run logs ${run} --task stats" >&2
"$bin/ork" run logs "$run" --task stats
exit "$status"
