#!/usr/bin/env bash
# Tests the Python SDK against a real `ork dev`: creates (or updates) the venv
# .tools/venv-py with the SDK installed editable, type-checks the hand-written
# code with mypy --strict, and runs pytest with the venv first on PATH, so that
# launched `.py` tasks (run as `python3` by ork-worker) can import `ork`.
#
# Needs target/debug/ork and target/debug/ork-worker (or ORK_BIN); extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# The trace tests need a real OpenTelemetry Collector: start one unless the
# caller (scripts/test.sh) already did.
if [[ -z ${ORK_TEST_OTLP_ENDPOINT:-} ]]; then
  exec scripts/otelcol.sh "$0" "$@"
fi

VENV=$PWD/.tools/venv-py
log() { printf 'test-python: %s\n' "$*" >&2; }

# Reinstall when the package's metadata or the test tools change; the stamp
# holds a hash of what the venv was built from.
want=$(cat sdks/python/pyproject.toml scripts/test-python.sh | sha256sum | cut -d' ' -f1)
have=""
[[ -f $VENV/.stamp ]] && have=$(cat "$VENV/.stamp")
if [[ ! -x $VENV/bin/python || $want != "$have" ]]; then
  log "installing the SDK and the test tools into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    -e 'sdks/python[pydantic,otel]' \
    'opentelemetry-sdk==1.45.2' 'opentelemetry-exporter-otlp-proto-grpc==1.45.2' \
    'pytest==9.2.0' 'pytest-timeout==2.4.0' 'mypy==2.4.1' 'types-protobuf==7.35.1.20260906' 'grpc-stubs==1.53.0.6'
  echo "$want" >"$VENV/.stamp"
fi

export PATH=$VENV/bin:$PATH

log "mypy --strict on sdks/python/src/ork"
(cd sdks/python && mypy)

log "pytest sdks/python/tests"
status=0
pytest sdks/python/tests "$@" || status=$?
if [[ $status == 5 ]]; then
  echo "test-python: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
