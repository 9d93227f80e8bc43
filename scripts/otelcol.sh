#!/usr/bin/env bash
# Runs a command with a real OpenTelemetry Collector up, then stops it:
#
#   scripts/otelcol.sh cargo test -p ork-tests --test observability
#
# The collector receives OTLP over gRPC on a free loopback port and writes
# every span it receives as OTLP JSON lines to a file. The command gets
#   ORK_TEST_OTLP_ENDPOINT   http://127.0.0.1:PORT (OTLP/gRPC)
#   ORK_TEST_OTLP_FILE       the JSON-lines file the spans land in
# The collector is built once with the collector's own builder (ocb) from the
# Go module proxy, and cached outside the clone, like the other built tools:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/ork/otelcol-<version>/ork-otelcol
# The command's exit status is the script's.
set -euo pipefail
CORE=v0.165.0
PROVIDERS=v1.71.0
CONTRIB=v0.165.0
cache="${XDG_CACHE_HOME:-$HOME/.cache}/ork/otelcol-$CORE"
bin="$cache/ork-otelcol"

say() { printf 'otelcol: %s\n' "$*" >&2; }

if [[ ! -x $bin ]]; then
    say "building the OpenTelemetry Collector $CORE into $cache (once)"
    mkdir -p "$cache"
    build="$(mktemp -d "${TMPDIR:-/tmp}/ork-otelcol-build.XXXXXX")"
    GOBIN="$build/bin" go install "go.opentelemetry.io/collector/cmd/builder@$CORE" >&2
    cat >"$build/builder-config.yaml" <<YAML
dist:
  name: ork-otelcol
  description: OpenTelemetry Collector for ork's trace tests (OTLP in, JSON lines out)
  output_path: $build/dist
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver $CORE
exporters:
  - gomod: github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter $CONTRIB
providers:
  - gomod: go.opentelemetry.io/collector/confmap/provider/envprovider $PROVIDERS
  - gomod: go.opentelemetry.io/collector/confmap/provider/fileprovider $PROVIDERS
YAML
    # The builder only writes the sources: its own `go mod tidy` would also
    # fetch the test dependencies of every component, some of which the
    # module proxy does not serve. `go get` of the pinned components and a
    # build resolve only what the binary imports.
    "$build/bin/builder" --config "$build/builder-config.yaml" \
        --skip-get-modules --skip-compilation >&2
    (
        cd "$build/dist"
        rm -f go.mod go.sum
        go mod init ork-otelcol
        go get "go.opentelemetry.io/collector/otelcol@$CORE" \
            "go.opentelemetry.io/collector/receiver/otlpreceiver@$CORE" \
            "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter@$CONTRIB" \
            "go.opentelemetry.io/collector/confmap/provider/envprovider@$PROVIDERS" \
            "go.opentelemetry.io/collector/confmap/provider/fileprovider@$PROVIDERS"
        GOFLAGS=-mod=mod go build -trimpath -o "$bin.tmp" .
    ) >&2
    mv "$bin.tmp" "$bin"
    rm -rf "$build"
fi

if [[ $# -eq 0 ]]; then
    echo "$bin"
    exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/ork-otelcol.XXXXXX")"
pid=""
stop() {
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port="$(free_port)"
cat >"$work/config.yaml" <<YAML
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$port
exporters:
  file:
    path: $work/spans.jsonl
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
YAML
"$bin" --config "file:$work/config.yaml" >"$work/collector.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        say "the collector exited; its log:"
        cat "$work/collector.log" >&2
        exit 1
    fi
    sleep 0.1
done
touch "$work/spans.jsonl"
export ORK_TEST_OTLP_ENDPOINT="http://127.0.0.1:$port"
export ORK_TEST_OTLP_FILE="$work/spans.jsonl"
say "collector up on $ORK_TEST_OTLP_ENDPOINT, spans in $ORK_TEST_OTLP_FILE"
status=0
"$@" || status=$?
exit "$status"
