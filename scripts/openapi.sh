#!/usr/bin/env bash
# Regenerates server/openapi.json from the proto descriptors and the gateway's
# route table (server/src/api/openapi.rs). A test fails while the committed
# file differs from what this writes.
set -euo pipefail
cd "$(dirname "$0")/.."
ORK_UPDATE_OPENAPI=1 cargo test -p ork-server --lib -- api::openapi::tests::committed_document_is_current
echo "wrote server/openapi.json" >&2
