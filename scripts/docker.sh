#!/usr/bin/env bash
# Runs a command with a private, throwaway Docker engine up, then stops it and
# deletes everything it stored:
#
#   scripts/docker.sh cargo test -p ork-tests --test docker
#
# The engine (Debian's `docker.io`, installed with apt-get when missing) runs
# without iptables or a bridge, so it touches nothing outside its own folder;
# containers use host networking. Before the command runs, the script builds
#   ork-test/busybox:1   FROM scratch with Debian's busybox-static (sh, coreutils)
#   ork-test/python:1    a Debian rootfs with python3 (debootstrap, cached as a
#                        tarball under ${XDG_CACHE_HOME:-$HOME/.cache}/ork/)
#   ork-test/worker:1    FROM scratch with a self-contained ork-worker (what a
#                        Kubernetes init container copies into the pod)
# and a self-contained (statically linked) `ork-worker` that the Docker
# executor bind-mounts into task containers. The command sees
#   DOCKER_HOST=unix:///tmp/ork-docker.XXXX/docker.sock
#   ORK_TEST_CONTAINER_WORKER=PATH   the static ork-worker
# When DOCKER_HOST is already set and ORK_TEST_CONTAINER_WORKER too, that
# engine is used and nothing is started. The command's exit status is the
# script's.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/ork"
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR="${ORK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

say() { printf 'docker: %s\n' "$*" >&2; }

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG]..." >&2
    exit 2
fi

if [ -n "${DOCKER_HOST:-}" ] && [ -n "${ORK_TEST_CONTAINER_WORKER:-}" ]; then
    say "using the engine of DOCKER_HOST"
    exec "$@"
fi

# ---- packages -------------------------------------------------------------
missing=()
for package in docker.io busybox-static debootstrap; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${missing[@]}" >&2
fi

# ---- the static worker ----------------------------------------------------
# Task containers do not share the host's libraries, so the worker they run
# must carry its own: glibc linked statically (crt-static). A separate target
# dir keeps these flags from invalidating the normal build.
if [ -z "${ORK_TEST_CONTAINER_WORKER:-}" ]; then
    say "building a statically linked ork-worker"
    RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --locked \
        --manifest-path "$root/Cargo.toml" -p ork-worker --bin ork-worker \
        --target x86_64-unknown-linux-gnu --target-dir "$root/target/static" >&2
    export ORK_TEST_CONTAINER_WORKER="$root/target/static/x86_64-unknown-linux-gnu/debug/ork-worker"
fi

# ---- the engine -----------------------------------------------------------
dir="$(mktemp -d "${TMPDIR:-/tmp}/ork-docker.XXXXXX")"
export DOCKER_HOST="unix://$dir/docker.sock"
dockerd_pid=""
command_pid=""

stop() {
    if [ -n "$command_pid" ]; then
        kill "$command_pid" 2>/dev/null || true
        wait "$command_pid" 2>/dev/null || true
    fi
    if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
        # Containers first (with their mounts), then the engine and the
        # containerd it started.
        docker ps -aq 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
        kill "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 1 150); do
            kill -0 "$dockerd_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$dockerd_pid" 2>/dev/null || true
    fi
    # Anything still mounted under the data root (overlay layers, shm).
    grep -o " $dir/[^ ]*" /proc/mounts 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

start_engine() {
    local driver="$1"
    dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver="$driver" \
        --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
        -H "$DOCKER_HOST" >"$dir/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 1 300); do
        if docker version >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$dockerd_pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

if ! start_engine overlay2; then
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
    say "overlay2 did not work here; trying the vfs storage driver"
    rm -rf "$dir/data" "$dir/exec"
    if ! start_engine vfs; then
        cat "$dir/dockerd.log" >&2
        say "dockerd did not start"
        exit 1
    fi
fi
say "engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})') at $DOCKER_HOST"

# ---- images -----------------------------------------------------------------
build_scratch_image() {
    local tag="$1" ctx="$2"
    # The legacy builder needs no BuildKit component; its deprecation notice
    # on stderr is noise unless the build fails.
    docker build --quiet --tag "$tag" "$ctx" >/dev/null 2>"$dir/build.log" || {
        cat "$dir/build.log" >&2
        say "building $tag failed"
        exit 1
    }
}

ctx="$dir/ctx-busybox"
mkdir -p "$ctx/bin"
cp /bin/busybox "$ctx/bin/busybox"
cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY bin/busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/mkdir", "-p", "/tmp", "/root"]
ENV PATH=/bin
EOF
build_scratch_image ork-test/busybox:1 "$ctx"

ctx="$dir/ctx-worker"
mkdir -p "$ctx"
cp "$ORK_TEST_CONTAINER_WORKER" "$ctx/ork-worker"
cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY ork-worker /ork-worker
ENTRYPOINT ["/ork-worker"]
EOF
build_scratch_image ork-test/worker:1 "$ctx"

# A Debian rootfs with python3, made once and cached outside the clone.
rootfs_tar="$cache/rootfs-$DEBIAN_SUITE-python3.tar.gz"
if [ ! -s "$rootfs_tar" ]; then
    say "making a $DEBIAN_SUITE rootfs with python3 (debootstrap, once; cached in $cache)"
    mkdir -p "$cache"
    rootfs="$dir/rootfs"
    debootstrap --variant=minbase --include=python3 "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" \
        >"$dir/debootstrap.log" 2>&1 || {
        tail -n 20 "$dir/debootstrap.log" >&2
        say "debootstrap failed"
        exit 1
    }
    rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
        "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -czf "$rootfs_tar.tmp" .
    mv "$rootfs_tar.tmp" "$rootfs_tar"
    rm -rf "$rootfs"
fi
docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$rootfs_tar" ork-test/python:1 >/dev/null
say "images: $(docker images --format '{{.Repository}}:{{.Tag}}' | sort | tr '\n' ' ')"

# In the background, so that a SIGTERM to this script runs its traps at once
# (bash defers them while a foreground child runs) and nothing is left behind.
"$@" &
command_pid=$!
status=0
wait "$command_pid" || status=$?
command_pid=""
exit "$status"
