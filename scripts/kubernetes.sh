#!/usr/bin/env bash
# Runs a command with a private, throwaway Kubernetes control plane up, then
# stops it and deletes its data:
#
#   scripts/kubernetes.sh cargo test -p ork-tests --test kubernetes
#
# Started on loopback, on free ports: etcd, kube-apiserver (client-cert auth,
# certificates made with openssl at start), kube-controller-manager (Jobs,
# garbage collection, service accounts) and kube-scheduler, all real and
# built from the Go module proxy the first time (a wrapper module requiring
# k8s.io/kubernetes with its staging modules replaced by the published k8s.io/*
# of the same release), cached by version under
# ${XDG_CACHE_HOME:-$HOME/.cache}/ork/. Pods are scheduled onto one node that
# kwok (sigs.k8s.io/kwok) plays: it moves pods through their phases without
# running containers, as the stages in scripts/kwok-stages.yaml say (a kubelet
# needs a container runtime this machine's sandbox does not give it; see
# ARCHITECTURE.md). The command sees
#   KUBECONFIG=/tmp/ork-kubernetes.XXXX/kubeconfig   (cluster-admin)
#   ORK_TEST_KUBE_NODE=ork-kwok-node
# When KUBECONFIG is set and ORK_TEST_KUBE_NODE too, that cluster is used and
# nothing is started. The command's exit status is the script's.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/ork"
K8S_VERSION=v1.36.3
K8S_STAGING_VERSION=v0.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
NODE=ork-kwok-node

say() { printf 'kubernetes: %s\n' "$*" >&2; }

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG]..." >&2
    exit 2
fi
if [ -n "${KUBECONFIG:-}" ] && [ -n "${ORK_TEST_KUBE_NODE:-}" ]; then
    say "using the cluster of KUBECONFIG"
    exec "$@"
fi

# ---- binaries, built once per version ----------------------------------------
k8s_bin="$cache/kubernetes-$K8S_VERSION/bin"
etcd_bin="$cache/etcd-$ETCD_VERSION/bin"
kwok_bin="$cache/kwok-$KWOK_VERSION/bin"

build_kubernetes() {
    local work="$cache/kubernetes-$K8S_VERSION/module"
    mkdir -p "$work" "$k8s_bin"
    say "building kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION (once; several minutes)"
    (
        cd "$work"
        cat >go.mod <<EOF
module ork.local/kubernetes

go 1.25

require k8s.io/kubernetes $K8S_VERSION
EOF
        cat >tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
EOF
        # k8s.io/kubernetes replaces its staging modules by local paths; a
        # module that requires it must name their published versions.
        go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >download.json
        gomod=$(python3 -c 'import json,sys; print(json.load(open("download.json"))["GoMod"])')
        grep -E '^\s+k8s\.io/[^ ]+ => \./staging/' "$gomod" | awk -v v="$K8S_STAGING_VERSION" '{print "replace " $1 " => " $1 " " v}' >>go.mod
        go mod tidy >tidy.log 2>&1 || { cat tidy.log >&2; exit 1; }
        for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
            go build -trimpath -o "$k8s_bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
            mv "$k8s_bin/$cmd.tmp" "$k8s_bin/$cmd"
        done
    )
}

build_etcd() {
    local work="$cache/etcd-$ETCD_VERSION/module"
    mkdir -p "$work" "$etcd_bin"
    say "building etcd $ETCD_VERSION (once)"
    (
        cd "$work"
        cat >go.mod <<EOF
module ork.local/etcd

go 1.25

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
        printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
        go mod tidy >tidy.log 2>&1 || { cat tidy.log >&2; exit 1; }
        go build -trimpath -o "$etcd_bin/etcd.tmp" go.etcd.io/etcd/server/v3
        mv "$etcd_bin/etcd.tmp" "$etcd_bin/etcd"
    )
}

build_kwok() {
    mkdir -p "$kwok_bin"
    say "building kwok $KWOK_VERSION (once)"
    GOBIN="$kwok_bin" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
}

started=$(date +%s)
for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    [ -x "$k8s_bin/$cmd" ] || { build_kubernetes; break; }
done
[ -x "$etcd_bin/etcd" ] || build_etcd
[ -x "$kwok_bin/kwok" ] || build_kwok
built=$(($(date +%s) - started))
[ "$built" -lt 5 ] || say "binaries built in ${built}s"
command -v openssl >/dev/null || {
    say "installing openssl with apt-get"
    apt-get update -qq >&2 && apt-get install -y -qq openssl >&2
}

# ---- the cluster ----------------------------------------------------------------
dir="$(mktemp -d "${TMPDIR:-/tmp}/ork-kubernetes.XXXXXX")"
pids=()
command_pid=""
stop() {
    local pid
    if [ -n "$command_pid" ]; then
        kill "$command_pid" 2>/dev/null || true
        wait "$command_pid" 2>/dev/null || true
    fi
    # In the reverse order of their start, etcd last: a kube-apiserver whose
    # etcd is gone can wait for it for minutes. Each gets 10 s, then SIGKILL.
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid="${pids[i]}"
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Certificates: a CA, the apiserver's serving certificate, a cluster-admin
# client certificate, and the service-account signing key.
pki="$dir/pki"
mkdir -p "$pki"
(
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=ork-test-ca" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\n' >san.ext
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 2 -extfile san.ext 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=ork-test-admin" 2>/dev/null
    # An extension makes it an X.509 v3 certificate, which rustls requires.
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 2 -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)

etcd_port=$(free_port)
etcd_peer=$(free_port)
"$etcd_bin/etcd" --data-dir "$dir/etcd" --name ork \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "ork=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync \
    >"$dir/etcd.log" 2>&1 &
pids+=($!)

api_port=$(free_port)
"$k8s_bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --endpoint-reconciler-type=none \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range 10.0.0.0/24 --authorization-mode Node,RBAC \
    --cert-dir "$dir/apiserver-certs" \
    >"$dir/apiserver.log" 2>&1 &
pids+=($!)

export KUBECONFIG="$dir/kubeconfig"
cat >"$KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ork-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: ork-test
  context: {cluster: ork-test, user: admin, namespace: default}
current-context: ork-test
EOF

api() {
    curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
        "https://127.0.0.1:$api_port$1" "${@:2}"
}
# Generous: a first start bootstraps its RBAC roles, slow on a busy machine.
ready=""
for _ in $(seq 1 1800); do
    if api /readyz >/dev/null 2>&1; then
        ready=yes
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    tail -n 30 "$dir/etcd.log" "$dir/apiserver.log" >&2
    say "kube-apiserver did not become ready"
    exit 1
fi

"$k8s_bin/kube-controller-manager" --kubeconfig "$KUBECONFIG" --leader-elect=false \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=false --bind-address 127.0.0.1 --secure-port 0 \
    >"$dir/controller-manager.log" 2>&1 &
pids+=($!)
"$k8s_bin/kube-scheduler" --kubeconfig "$KUBECONFIG" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 0 \
    >"$dir/scheduler.log" 2>&1 &
pids+=($!)

# One node, played by kwok with ork's stages.
api /api/v1/nodes -X POST -H 'Content-Type: application/json' -d @- >/dev/null <<EOF
{"apiVersion": "v1", "kind": "Node",
 "metadata": {"name": "$NODE", "annotations": {"kwok.x-k8s.io/node": "fake"},
              "labels": {"kubernetes.io/hostname": "$NODE", "type": "kwok"}},
 "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}}}
EOF
"$kwok_bin/kwok" --kubeconfig "$KUBECONFIG" --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --config "$root/scripts/kwok-stages.yaml" \
    --node-ip 127.0.0.1 --node-lease-duration-seconds 40 \
    >"$dir/kwok.log" 2>&1 &
pids+=($!)

# Ready when the default service account exists (pods need it) and the node
# is Ready.
for _ in $(seq 1 1800); do
    if api /api/v1/namespaces/default/serviceaccounts/default >/dev/null 2>&1 &&
        api "/api/v1/nodes/$NODE" 2>/dev/null | python3 -c '
import json, sys
node = json.load(sys.stdin)
ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))
sys.exit(0 if ready else 1)'; then
        ready=done
        break
    fi
    sleep 0.1
done
if [ "$ready" != done ]; then
    tail -n 20 "$dir/controller-manager.log" "$dir/kwok.log" >&2
    api /api/v1/namespaces/default/serviceaccounts/default >&2 || say "no default service account"
    api "/api/v1/nodes/$NODE" >&2 || true
    say "the cluster did not become ready"
    exit 1
fi
export ORK_TEST_KUBE_NODE="$NODE"
say "Kubernetes $K8S_VERSION up at https://127.0.0.1:$api_port (etcd $ETCD_VERSION, kwok $KWOK_VERSION node $NODE)"

# In the background, so that a SIGTERM to this script runs its traps at once
# (bash defers them while a foreground child runs) and nothing is left behind.
"$@" &
command_pid=$!
status=0
wait "$command_pid" || status=$?
command_pid=""
exit "$status"
