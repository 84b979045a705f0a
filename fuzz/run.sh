#!/usr/bin/env bash
# Builds every fuzz target (cargo-fuzz, libFuzzer) and runs each for a bounded time,
# starting from the committed corpus in fuzz/corpus/<target>/. Exits non-zero when a
# target crashes (the input is left in fuzz/artifacts/<target>/); new inputs found go to a
# scratch directory, so the committed corpus stays as it is.
#
#   fuzz/run.sh [seconds per target, default 20] [target ...]
#
# Uses the nightly toolchain when one is installed; otherwise (or with FUZZ_STABLE=1, to see
# what a machine without nightly does) stable with RUSTC_BOOTSTRAP=1, since the sanitizer
# flags are unstable. Where fuzz targets cannot be built at all (no
# sanitizer support, no C++ compiler for libFuzzer, cargo-fuzz not installable), it says
# why and exits 0: a skip, not a failure.
set -uo pipefail
cd "$(dirname "$0")"

seconds=${1:-20}
shift || true

skip() {
    echo "fuzz: SKIPPED: $*" >&2
    exit 0
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked || skip "cargo-fuzz is not installed and cannot be installed"
fi

toolchain=()
if [ "${FUZZ_STABLE:-0}" != 1 ] && rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    echo "fuzz: using the stable toolchain with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
fi

# Can this toolchain build an address-sanitized binary at all? If not, the targets cannot
# be built whatever their code; if it can, a failed build below is a real failure.
probe=$(mktemp -d)
scratch=$(mktemp -d)
trap 'rm -rf "$probe" "$scratch"' EXIT
echo 'fn main() {}' >"$probe/probe.rs"
if ! rustc "${toolchain[@]}" -Zsanitizer=address --edition 2021 -o "$probe/probe" \
    "$probe/probe.rs" >"$probe/log" 2>&1; then
    cat "$probe/log" >&2
    skip "this toolchain cannot build sanitized binaries"
fi
command -v c++ >/dev/null 2>&1 || skip "no C++ compiler to build libFuzzer"

if [ $# -eq 0 ]; then
    mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
else
    targets=("$@")
fi

echo "fuzz: building the targets"
cargo "${toolchain[@]}" fuzz build || { echo "fuzz: the targets do not build" >&2; exit 1; }

# One target per core at a time: libFuzzer runs on one thread, so each target still gets a
# whole core for its seconds (FUZZ_JOBS overrides).
jobs_at_once=${FUZZ_JOBS:-$(nproc)}

# fuzz_target TARGET: runs it, its output in the scratch log, its exit status beside it.
fuzz_target() {
    local target="$1" extra=()
    mkdir -p "corpus/$target" "$scratch/$target"
    case $target in
        ws_request | ws_upgrade) extra=(-dict=dict/http.dict) ;;
    esac
    # New inputs go to the scratch directory (the first); the corpus is only read.
    cargo "${toolchain[@]}" fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        "${extra[@]}" >"$scratch/$target.log" 2>&1
    echo $? >"$scratch/$target.status"
}

for target in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_at_once" ]; do
        wait -n
    done
    fuzz_target "$target" &
done
wait

failed=()
for target in "${targets[@]}"; do
    echo "== fuzz $target (${seconds}s)"
    if [ "$(cat "$scratch/$target.status")" = 0 ]; then
        grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$scratch/$target.log"
    else
        tail -n 60 "$scratch/$target.log"
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"
