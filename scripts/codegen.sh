#!/usr/bin/env bash
# Regenerates every SDK's code from proto/ork/v1/*.proto, with pinned tools
# installed into .tools/ (never system-wide):
#
#   Python  sdks/python/src/ork/v1/   *_pb2.py, *_pb2_grpc.py and their .pyi
#           (grpcio-tools' bundled protoc + mypy-protobuf, pinned in
#           scripts/codegen-requirements.txt)
#   Go      sdks/go/gen/orkv1/        *.pb.go, *_grpc.pb.go (protoc-gen-go and
#           protoc-gen-go-grpc, pinned below, driven by the same protoc)
#
# Generated code is committed. `scripts/codegen.sh --check` regenerates into a
# temporary directory and fails when the result differs from the work tree, so
# the test command catches a proto change whose code was not regenerated.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
GO_MODULE=github.com/ork-run/ork/sdks/go
GO_PACKAGE_DIR=gen/orkv1

PY_OUT_REL=sdks/python/src
PY_GEN_REL=$PY_OUT_REL/ork/v1
GO_GEN_REL=sdks/go/$GO_PACKAGE_DIR

TOOLS=$PWD/.tools
VENV=$TOOLS/venv-codegen
BIN=$TOOLS/bin

usage() {
  echo "usage: scripts/codegen.sh [--check]" >&2
  exit 2
}

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) usage ;;
esac

log() { printf 'codegen: %s\n' "$*" >&2; }

# The Python tools live in their own venv, rebuilt when the pinned
# requirements change (a stamp keeps the hash of the file they came from).
ensure_python_tools() {
  local want have=""
  want=$(sha256sum scripts/codegen-requirements.txt | cut -d' ' -f1)
  [[ -f $VENV/.stamp ]] && have=$(cat "$VENV/.stamp")
  if [[ ! -x $VENV/bin/python || $want != "$have" ]]; then
    log "installing grpcio-tools and mypy-protobuf into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      -r scripts/codegen-requirements.txt
    echo "$want" >"$VENV/.stamp"
  fi
}

# The Go plugins are reinstalled when the pinned versions change.
ensure_go_tools() {
  local want="$PROTOC_GEN_GO_VERSION $PROTOC_GEN_GO_GRPC_VERSION" have=""
  [[ -f $BIN/.codegen-go-stamp ]] && have=$(cat "$BIN/.codegen-go-stamp")
  if [[ ! -x $BIN/protoc-gen-go || ! -x $BIN/protoc-gen-go-grpc || $want != "$have" ]]; then
    if ! command -v go >/dev/null; then
      echo "codegen: go is not installed; it is needed to build protoc-gen-go" >&2
      exit 1
    fi
    log "installing protoc-gen-go $PROTOC_GEN_GO_VERSION and protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC_VERSION into $BIN"
    mkdir -p "$BIN"
    GOBIN=$BIN GOFLAGS=-mod=mod go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
    GOBIN=$BIN GOFLAGS=-mod=mod go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
    echo "$want" >"$BIN/.codegen-go-stamp"
  fi
}

# generate ROOT writes the Python and Go code under ROOT, laid out as in the
# repository, so that ROOT=. updates the work tree and a temp dir checks it.
generate() {
  local root=$1
  local py_out=$root/$PY_OUT_REL py_gen=$root/$PY_GEN_REL go_gen=$root/$GO_GEN_REL
  rm -rf "$py_gen" "$go_gen"
  mkdir -p "$py_gen" "$go_gen"

  local protos=() p
  for p in proto/ork/v1/*.proto; do protos+=("${p#proto/}"); done

  # Go package of each file by mapping flags, so the protos need no
  # go_package option and stay language-neutral.
  local go_maps=() grpc_maps=()
  for p in "${protos[@]}"; do
    go_maps+=("--go_opt=M$p=$GO_MODULE/$GO_PACKAGE_DIR;orkv1")
    grpc_maps+=("--go-grpc_opt=M$p=$GO_MODULE/$GO_PACKAGE_DIR;orkv1")
  done

  local wkt
  wkt=$("$VENV/bin/python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')

  "$VENV/bin/python" -m grpc_tools.protoc \
    -I proto -I "$wkt" \
    --plugin=protoc-gen-mypy="$VENV/bin/protoc-gen-mypy" \
    --plugin=protoc-gen-mypy_grpc="$VENV/bin/protoc-gen-mypy_grpc" \
    --python_out="$py_out" --grpc_python_out="$py_out" \
    --mypy_out=quiet:"$py_out" --mypy_grpc_out=quiet:"$py_out" \
    --plugin=protoc-gen-go="$BIN/protoc-gen-go" \
    --plugin=protoc-gen-go-grpc="$BIN/protoc-gen-go-grpc" \
    --go_out="$root/sdks/go" --go_opt=module=$GO_MODULE "${go_maps[@]}" \
    --go-grpc_out="$root/sdks/go" --go-grpc_opt=module=$GO_MODULE "${grpc_maps[@]}" \
    "${protos[@]}"

  # protoc writes no package markers; `ork` itself is hand-written.
  cat >"$py_gen/__init__.py" <<'EOF'
"""Generated protobuf and gRPC code for the ork.v1 API (scripts/codegen.sh)."""
EOF
}

ensure_python_tools
ensure_go_tools

if [[ $check == 0 ]]; then
  generate .
  log "wrote $PY_GEN_REL and $GO_GEN_REL"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
generate "$tmp"
status=0
for dir in "$PY_GEN_REL" "$GO_GEN_REL"; do
  if ! diff -r -x __pycache__ "$tmp/$dir" "$dir" >"$tmp/diff.txt" 2>&1; then
    status=1
    echo "codegen: $dir is out of date with proto/ork/v1:" >&2
    head -n 40 "$tmp/diff.txt" >&2
  fi
done
if [[ $status != 0 ]]; then
  echo "codegen: run scripts/codegen.sh and commit the result" >&2
  exit 1
fi
log "generated code is up to date"
