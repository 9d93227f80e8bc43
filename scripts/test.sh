#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints, the Rust unit,
# conformance and end-to-end tests. CI calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the binaries the end-to-end tests run"
cargo build --workspace --bins --locked

step "buf lint (STANDARD) and buf breaking against proto/baseline"
scripts/buf.sh

step "install grpcurl for the reflection tests"
scripts/grpcurl.sh >/dev/null

step "cargo test (with a private PostgreSQL, the S3, Azure and GCS emulators, a Docker engine, a Kubernetes control plane and an OpenTelemetry Collector up)"
scripts/postgres.sh scripts/emulators.sh scripts/docker.sh scripts/kubernetes.sh scripts/otelcol.sh \
    cargo test --workspace --locked --no-fail-fast

step "generated SDK code matches proto/ (scripts/codegen.sh --check)"
./scripts/codegen.sh --check

step "python sdk (with an OpenTelemetry Collector up for the trace test)"
./scripts/test-python.sh

step "go sdk"
./scripts/test-go.sh

step "web UI: types, ui/dist drift, unit tests, browser tests (Chromium + playwright-core)"
./scripts/test-ui.sh

step "fuzz targets (cargo-fuzz on nightly), ${ORK_FUZZ_SECONDS:-15}s each"
ORK_FUZZ_SECONDS="${ORK_FUZZ_SECONDS:-15}" scripts/fuzz.sh

step "schemathesis against /openapi.json of a live ork dev (no 5xx, no schema violations)"
scripts/schemathesis.sh
