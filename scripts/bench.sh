#!/usr/bin/env bash
# Runs the benchmark suite against release builds and writes BENCHMARKS.md:
#
#   scripts/bench.sh                      # every scenario, SQLite and PostgreSQL
#   scripts/bench.sh --quick              # smaller runs, for iterating
#   scripts/bench.sh --store sqlite --scenarios a,b
#   scripts/bench.sh --sustained          # adds the 60-second sustained runs
#   scripts/bench.sh --scenarios i        # run history, 1,000,000 seeded runs
#
# PostgreSQL runs in a private throwaway cluster (scripts/postgres.sh) unless
# ORK_TEST_POSTGRES_URL is set, or --store sqlite is given. Arguments go to
# `ork-bench` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p ork-cli -p ork-worker -p ork-bench

store=both
prev=""
for arg in "$@"; do
    case "$arg" in
        --store=*) store="${arg#--store=}" ;;
    esac
    if [ "$prev" = "--store" ]; then store="$arg"; fi
    prev="$arg"
done

if [ "$store" = "sqlite" ]; then
    exec target/release/ork-bench "$@"
fi
exec scripts/postgres.sh target/release/ork-bench "$@"
