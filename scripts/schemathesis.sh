#!/usr/bin/env bash
# Property-based tests of the REST gateway: schemathesis (PyPI, installed
# into .tools/venv on first use) generates requests from the served
# /openapi.json and runs them against a live `ork dev` on a free port. It must
# find no 5xx, no response that breaks the documented schema, status or
# content type.
#
#   scripts/schemathesis.sh             bounded run (ORK_ST_EXAMPLES per operation, default 30)
#   ORK_ST_EXAMPLES=200 scripts/schemathesis.sh
#
# Needs the binaries: cargo build --workspace --bins
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/.tools/venv"
st_version="4.32.5"
if [[ ! -x "$venv/bin/st" ]] || ! "$venv/bin/python" -m pip show schemathesis 2>/dev/null | grep -qx "Version: $st_version"; then
    echo "installing schemathesis $st_version into .tools/venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$st_version" >&2
fi

ork="$root/target/debug/ork"
[[ -x "$ork" ]] || { echo "missing $ork: run cargo build --workspace --bins" >&2; exit 2; }
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
data="$(mktemp -d)"
"$ork" dev --listen "127.0.0.1:$port" --data-dir "$data" >"$data/dev.log" 2>&1 &
dev_pid=$!
cleanup() { kill "$dev_pid" 2>/dev/null || true; wait "$dev_pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
healthy() { python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "http://127.0.0.1:$port/healthz" 2>/dev/null; }
for _ in $(seq 200); do
    healthy && break
    sleep 0.1
done
healthy || { echo "ork dev did not answer /healthz:" >&2; cat "$data/dev.log" >&2; exit 1; }

# A deployed workflow and a run, so some generated requests hit real data.
ORK_SERVER="http://127.0.0.1:$port" "$ork" workflow deploy examples/etl/etl.yaml >/dev/null

# From the temporary folder, so schemathesis's cache stays out of the tree.
cd "$data"
"$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "${ORK_ST_EXAMPLES:-30}" \
    --request-timeout 10 \
    --no-color
