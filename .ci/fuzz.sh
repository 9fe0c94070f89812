#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS seconds each (default 30); fails on a crash.
# Targets (fuzz/Cargo.toml): http_request, sse_frame, simulation, auth_simulation (private
# topics under simulation, src/sim/auth.rs), auth (token/cookie/query parsing
# and JWT verification with the TEST-ONLY keys; its seeds come from fuzz/make-auth-seeds.sh).
#
# Uses `cargo +nightly fuzz` when a nightly toolchain is installed, else the stable toolchain
# with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly-only sanitizer flags). Installs cargo-fuzz
# (`cargo install cargo-fuzz --locked`) when it is missing. The committed seed corpus under
# fuzz/corpus/<target>/ is read, never written: new inputs go to a temporary directory.
# Crashes are saved under fuzz/artifacts/<target>/ (reproduce: cargo fuzz run <target> <file>).
#
# Usage: .ci/fuzz.sh [target...]        (default: every target)
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-30}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz() { cargo +nightly fuzz "$@"; }
else
    echo "fuzz.sh: no nightly toolchain; using RUSTC_BOOTSTRAP=1 with the default toolchain"
    fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(fuzz list)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

status=0
for t in "${targets[@]}"; do
    echo "fuzz.sh: $t for ${seconds}s"
    mkdir -p "$work/$t"
    if ! fuzz run "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 2>"$work/$t.log"; then
        tail -n 60 "$work/$t.log"
        echo "fuzz.sh: $t FAILED (crash input under fuzz/artifacts/$t/)"
        status=1
    else
        grep -E '^stat::number_of_executed_units|Done [0-9]+ runs' "$work/$t.log" | tail -n 2 || true
        echo "fuzz.sh: $t ok"
    fi
done
exit "$status"
