#!/usr/bin/env bash
# Vets and tests the Go SDK (sdks/go) against a real `ork dev`, which its
# tests start themselves from target/debug/ork (or $ORK_BIN). The binary is
# built first only when it is missing; scripts/test.sh builds it anyway.
# Go modules come through the Go proxy into the usual module cache.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null; then
  echo "test-go: go is not installed; get it from https://go.dev/dl/" >&2
  exit 1
fi

if [[ -z ${ORK_BIN:-} && ! -x target/debug/ork ]]; then
  echo "test-go: building target/debug/ork" >&2
  cargo build --bins -p ork-cli -p ork-worker
fi

cd sdks/go
export GOFLAGS=-mod=mod
go vet ./...
go test -count=1 ./...
