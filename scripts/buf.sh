#!/usr/bin/env bash
# Runs `buf` (from npm, installed into the project-local .tools/ on first use)
# in proto/. Without arguments: `buf lint` and `buf breaking` against the
# committed baseline image of the last released contract.
#
#   scripts/buf.sh                 lint + breaking (what scripts/test.sh runs)
#   scripts/buf.sh build -o x.binpb   any other buf command, run in proto/
#   scripts/buf.sh refresh-baseline   on a release: make the current proto the
#                                     new baseline (proto/baseline/ork-v1.binpb)
#                                     and commit it with the release
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
buf_version="1.75.0"
buf="$tools/node_modules/.bin/buf"
if [[ ! -x "$buf" ]] || [[ "$("$buf" --version 2>/dev/null)" != "$buf_version" ]]; then
    echo "installing @bufbuild/buf@$buf_version into .tools/" >&2
    npm install --silent --no-audit --no-fund --prefix "$tools" "@bufbuild/buf@$buf_version" >&2
fi
cd "$root/proto"
baseline="baseline/ork-v1.binpb"
case "${1:-check}" in
    check)
        "$buf" lint
        "$buf" breaking --against "$baseline"
        ;;
    refresh-baseline)
        "$buf" build --exclude-source-info -o "$baseline"
        echo "wrote proto/$baseline; commit it with the release" >&2
        ;;
    *)
        exec "$buf" "$@"
        ;;
esac
