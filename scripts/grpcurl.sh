#!/usr/bin/env bash
# Installs grpcurl (Go) into the project-local .tools/bin, once, and prints its
# path. The gateway tests use it to explore the server through reflection.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="v1.9.4"
bin="$root/.tools/bin"
if [[ ! -x "$bin/grpcurl" ]]; then
    echo "installing grpcurl $version into .tools/bin" >&2
    GOBIN="$bin" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$version" >&2
fi
echo "$bin/grpcurl"
