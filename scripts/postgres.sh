#!/usr/bin/env bash
# Runs a command with a private, throwaway PostgreSQL cluster up, then stops
# and deletes it:
#
#   scripts/postgres.sh cargo test -p ork-server --test state_conformance
#
# The cluster listens on a free loopback port with trust authentication, and
# the command sees it as
#   ORK_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:PORT/postgres
# (tests create and drop their own databases in it), with
#   ORK_TEST_POSTGRES_RESTART=PATH, a script that restarts the server. When
# ORK_TEST_POSTGRES_URL is already set, that server is used and nothing is
# started. PostgreSQL (15 preferred) is installed with apt-get when missing.
# The command's exit status is the script's.
set -euo pipefail

say() { printf 'postgres: %s\n' "$*" >&2; }

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG]..." >&2
    exit 2
fi

if [ -n "${ORK_TEST_POSTGRES_URL:-}" ]; then
    say "using the server of ORK_TEST_POSTGRES_URL"
    exec "$@"
fi

# The newest installed server binaries, preferring 15 (what production targets).
find_bin() {
    if [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
        echo /usr/lib/postgresql/15/bin
        return
    fi
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$found" ] && [ -x "$found/pg_ctl" ]; then
        echo "$found"
    fi
}

bin="$(find_bin)"
if [ -z "$bin" ]; then
    say "PostgreSQL is not installed; installing it with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql-15 >&2 || apt-get install -y -qq postgresql >&2
    bin="$(find_bin)"
    if [ -z "$bin" ]; then
        say "no PostgreSQL server binaries under /usr/lib/postgresql after installing"
        exit 1
    fi
fi

# PostgreSQL refuses to run as root: run the server as a dedicated user.
run_as=()
if [ "$(id -u)" -eq 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    fi
    run_as=(runuser -u postgres --)
fi

dir="$(mktemp -d "${TMPDIR:-/tmp}/ork-postgres.XXXXXX")"
chmod 755 "$dir"
if [ "${#run_as[@]}" -gt 0 ]; then
    chown postgres: "$dir"
fi

stop() {
    if [ -f "$dir/data/postmaster.pid" ]; then
        "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

"${run_as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    say "initdb failed"
    exit 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Durability is pointless for a throwaway test cluster; speed is not.
started=""
for _ in 1 2 3 4 5; do
    port="$(free_port)"
    if "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
        "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=500 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        >/dev/null 2>&1; then
        started=yes
        break
    fi
done
if [ -z "$started" ]; then
    cat "$dir/server.log" >&2 || true
    say "the server did not start"
    exit 1
fi

export ORK_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
# For tests of connection loss: restarts the server (same port), dropping
# every connection.
cat >"$dir/restart.sh" <<RESTART
#!/usr/bin/env bash
exec ${run_as[*]} "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 restart >/dev/null
RESTART
chmod 755 "$dir/restart.sh"
export ORK_TEST_POSTGRES_RESTART="$dir/restart.sh"
say "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') up at $ORK_TEST_POSTGRES_URL"
status=0
"$@" || status=$?
exit "$status"
