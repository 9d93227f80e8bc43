#!/usr/bin/env bash
# Checks and tests the web UI (ui/):
#   - installs its npm packages from the committed lockfile (into ui/node_modules),
#   - type-checks the sources and the unit tests (tsc),
#   - checks that the committed ui/dist/ is what the sources build (the server
#     embeds ui/dist/, so `cargo build` needs no Node.js),
#   - runs the unit tests (node --test),
#   - runs the browser tests: Debian's Chromium, driven by playwright-core,
#     against a real `ork dev` on an ephemeral port (ui/tests/), with a
#     Python SDK pool worker attached for the workers page.
# Chromium is installed with apt-get when missing; no browser is downloaded.
# The `ork` binaries come from target/debug (or $ORK_BIN_DIR), built first
# when missing; scripts/test.sh builds them anyway.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'test-ui: %s\n' "$*" >&2; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  say "Node.js (node, npm) is not installed"
  exit 1
fi

export ORK_CHROMIUM=${ORK_CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $ORK_CHROMIUM ]]; then
  say "Chromium is not installed; installing Debian's chromium with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq chromium >&2
fi

if [[ -z ${ORK_BIN_DIR:-} && ! ( -x target/debug/ork && -x target/debug/ork-worker ) ]]; then
  say "building target/debug/ork and ork-worker"
  cargo build --bins -p ork-cli -p ork-worker
fi

# The pool worker the browser tests attach is the Python SDK's: use the venv
# scripts/test-python.sh keeps when it has the SDK, else make a small one.
if [[ -z ${ORK_UI_PYTHON:-} ]]; then
  ORK_UI_PYTHON=$PWD/.tools/venv-py/bin/python
  if ! "$ORK_UI_PYTHON" -c 'import ork' 2>/dev/null; then
    venv=$PWD/.tools/venv-ui
    if ! "$venv/bin/python" -c 'import ork' 2>/dev/null; then
      say "installing the Python SDK into $venv (for the pool worker the tests attach)"
      rm -rf "$venv"
      python3 -m venv "$venv"
      "$venv/bin/pip" install --quiet --disable-pip-version-check -e sdks/python
    fi
    ORK_UI_PYTHON=$venv/bin/python
  fi
fi
export ORK_UI_PYTHON

cd ui
# Packages' install scripts are not needed (esbuild finds its binary package
# by itself) and are not run.
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
npm run --silent check
npm run --silent test:unit
npm run --silent test:browser
