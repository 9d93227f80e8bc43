#!/usr/bin/env bash
# Fuzzes what clients send to ork with cargo-fuzz (libFuzzer, which needs the
# nightly toolchain): workflow YAML, templates, types (the JSON-Schema
# subset), cron expressions and the REST gateway's JSON decoding. Each target
# runs for a bounded time from its committed seed corpus (fuzz/corpus/NAME);
# new inputs it finds go to a temporary folder, so the tree stays clean. A
# crash fails the script and leaves its input in fuzz/artifacts/NAME/.
#
#   scripts/fuzz.sh                      every target, ORK_FUZZ_SECONDS each (default 20)
#   ORK_FUZZ_SECONDS=600 scripts/fuzz.sh yaml cron    longer, on chosen targets
#
# cargo-fuzz (pinned below) is installed into .tools/ on first use, and the
# nightly toolchain with rustup when it is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
CARGO_FUZZ_VERSION=0.13.2
TARGETS=(yaml template types cron rest_json)
seconds="${ORK_FUZZ_SECONDS:-20}"
say() { printf 'fuzz: %s\n' "$*" >&2; }

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    say "installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal >&2
fi
fuzz="$root/.tools/bin/cargo-fuzz"
if [[ ! -x "$fuzz" ]] || [[ "$("$fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION into .tools/"
    cargo install --quiet --locked --root "$root/.tools" "cargo-fuzz@$CARGO_FUZZ_VERSION" >&2
fi

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${TARGETS[@]}")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
say "building the fuzz targets (nightly, with AddressSanitizer)"
(cd fuzz && rustup run nightly "$fuzz" build --release >&2)
for target in "${targets[@]}"; do
    say "$target for ${seconds}s"
    mkdir -p "$work/$target"
    (cd fuzz && rustup run nightly "$fuzz" run --release "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>"$work/$target.log") || {
        tail -40 "$work/$target.log" >&2
        say "$target FAILED; the input is under fuzz/artifacts/$target/"
        exit 1
    }
    grep -E '^stat::number_of_executed_units|^Done' "$work/$target.log" | sed "s/^/fuzz: $target: /" >&2 || true
done
say "every target ran clean"
