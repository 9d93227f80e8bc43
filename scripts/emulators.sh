#!/usr/bin/env bash
# Runs a command with cloud object-store emulators up, then stops them:
#
#   scripts/emulators.sh cargo test -p ork-server --test objects_conformance
#
# Starts, each on a free loopback port, with a bucket (container) `ork-test`:
#   S3     moto_server (pip `moto[server]`)     ORK_TEST_S3_ENDPOINT,       ORK_TEST_S3_BUCKET
#   ECS    the same moto (fargate tests)        ORK_TEST_MOTO_ENDPOINT
#   Azure  azurite-blob (npm, into .tools/)     ORK_TEST_AZURITE_ENDPOINT,  ORK_TEST_AZURITE_CONTAINER
#   GCS    fake-gcs-server (go, .tools/bin/)    ORK_TEST_GCS_ENDPOINT,      ORK_TEST_GCS_BUCKET
# and installs whichever is missing. The command's exit status is the script's.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
logs="$(mktemp -d "${TMPDIR:-/tmp}/ork-emulators.XXXXXX")"
FAKE_GCS_VERSION=v1.56.1
# The fixed, public development key every Azure Storage emulator accepts.
AZURITE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

say() { printf 'emulators: %s\n' "$*" >&2; }

pids=()
stop() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$logs"
}
trap stop EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_up NAME URL LOG: until anything answers HTTP on URL (any status).
wait_up() {
    for _ in $(seq 1 200); do
        if curl -s -o /dev/null "$2"; then
            return 0
        fi
        sleep 0.1
    done
    say "$1 did not start; its log:"
    cat "$3" >&2
    exit 1
}

# ---- S3: moto ----
if ! command -v moto_server >/dev/null 2>&1; then
    say "installing moto[server] with pip"
    python3 -m pip install --quiet 'moto[server]'
fi
s3_port="$(free_port)"
# moto_server, with one correction: moto reports a task container's `cpu`
# as a number, where the ECS API (and so the AWS SDK that parses it) has a
# string; left alone, no RunTask or DescribeTasks response of moto parses.
python3 - "$s3_port" >"$logs/moto.log" 2>&1 <<'PY' &
import sys
import moto.ecs.models as ecs

_init = ecs.Container.__init__

def _init_with_cpu_as_text(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    if self.cpu is not None:
        self.cpu = str(self.cpu)

ecs.Container.__init__ = _init_with_cpu_as_text
from moto.server import main
main(["-H", "127.0.0.1", "-p", sys.argv[1]])
PY
pids+=($!)
wait_up moto "http://127.0.0.1:$s3_port/" "$logs/moto.log"
# moto does not check signatures: a plain PUT creates the bucket.
curl -sf -X PUT "http://127.0.0.1:$s3_port/ork-test" -o /dev/null
export ORK_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port" ORK_TEST_S3_BUCKET=ork-test
# The same moto serves ECS (and the EC2 subnets it needs) to the fargate tests.
export ORK_TEST_MOTO_ENDPOINT="http://127.0.0.1:$s3_port"
say "s3 and ecs (moto) on $ORK_TEST_S3_ENDPOINT"

# ---- Azure Blob: azurite ----
azurite="$tools/node_modules/.bin/azurite-blob"
if [ ! -x "$azurite" ]; then
    say "installing azurite with npm into .tools/"
    npm install --silent --no-audit --no-fund --prefix "$tools" azurite >&2
fi
az_port="$(free_port)"
"$azurite" --blobHost 127.0.0.1 --blobPort "$az_port" --inMemoryPersistence --skipApiVersionCheck \
    >"$logs/azurite.log" 2>&1 &
pids+=($!)
wait_up azurite "http://127.0.0.1:$az_port/" "$logs/azurite.log"
export ORK_TEST_AZURITE_ENDPOINT="http://127.0.0.1:$az_port/devstoreaccount1" ORK_TEST_AZURITE_CONTAINER=ork-test
# Creating a container takes a SharedKey-signed request; node is here anyway.
node - "$ORK_TEST_AZURITE_ENDPOINT" "$ORK_TEST_AZURITE_CONTAINER" "$AZURITE_KEY" <<'JS'
const crypto = require("crypto");
const [endpoint, container, key] = process.argv.slice(2);
const url = new URL(`${endpoint}/${container}?restype=container`);
const date = new Date().toUTCString();
const version = "2021-08-06";
const resource = `/devstoreaccount1${url.pathname}\nrestype:container`;
const toSign = ["PUT", "", "", "", "", "", "", "", "", "", "", "",
    `x-ms-date:${date}\nx-ms-version:${version}\n${resource}`].join("\n");
const signature = crypto.createHmac("sha256", Buffer.from(key, "base64")).update(toSign, "utf8").digest("base64");
fetch(url, {
    method: "PUT",
    headers: { "x-ms-date": date, "x-ms-version": version, authorization: `SharedKey devstoreaccount1:${signature}` },
}).then(async (r) => {
    if (r.status !== 201 && r.status !== 409) {
        console.error(`creating the azurite container failed: ${r.status} ${await r.text()}`);
        process.exit(1);
    }
}, (e) => { console.error(e); process.exit(1); });
JS
say "azure (azurite) on $ORK_TEST_AZURITE_ENDPOINT"

# ---- GCS: fake-gcs-server ----
fake_gcs="$tools/bin/fake-gcs-server"
if [ ! -x "$fake_gcs" ]; then
    say "installing fake-gcs-server $FAKE_GCS_VERSION with go into .tools/bin/"
    GOBIN="$tools/bin" go install "github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION"
fi
gcs_port="$(free_port)"
# Folders under -data become buckets. ork talks to it over the JSON API,
# as Google's client libraries do (STORAGE_EMULATOR_HOST).
mkdir -p "$logs/gcs/ork-test"
"$fake_gcs" -scheme http -host 127.0.0.1 -port "$gcs_port" -public-host "127.0.0.1:$gcs_port" \
    -backend memory -data "$logs/gcs" -log-level warn >"$logs/gcs.log" 2>&1 &
pids+=($!)
wait_up fake-gcs-server "http://127.0.0.1:$gcs_port/storage/v1/b" "$logs/gcs.log"
export ORK_TEST_GCS_ENDPOINT="http://127.0.0.1:$gcs_port" ORK_TEST_GCS_BUCKET=ork-test
say "gcs (fake-gcs-server) on $ORK_TEST_GCS_ENDPOINT"

"$@"
