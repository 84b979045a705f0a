#!/usr/bin/env bash
# Lints, tests and documents each crate under every feature combination that matters, so an
# optional dependency that leaks into code meant to build without it fails here, not for a
# user. Quiet on success (one line per step); on failure prints the step's log and exits 1.
# Each step is bounded by STEP_TIMEOUT seconds (default 1200).
set -euo pipefail
cd "$(dirname "$0")/.."

STEP_TIMEOUT="${STEP_TIMEOUT:-1200}"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

# step DESCRIPTION COMMAND...: runs COMMAND quietly; on failure shows its output and stops.
step() {
    local what="$1"
    shift
    printf '%-64s ' "$what"
    if timeout "$STEP_TIMEOUT" "$@" >"$LOG" 2>&1; then
        echo ok
    else
        local rc=$?
        echo "FAILED (exit $rc)"
        tail -n 80 "$LOG"
        exit 1
    fi
}

# check_crate PACKAGE FEATURES...: each FEATURES is a comma list ("" = none); the default
# set is covered by the workspace's own build and tests.
check_crate() {
    local package="$1"
    shift
    local features
    for features in "$@"; do
        local flags=(-p "$package" --no-default-features)
        [[ -n "$features" ]] && flags+=(--features "$features")
        local label="${features:-no features}"
        step "$package [$label]: clippy" \
            cargo clippy -q "${flags[@]}" --all-targets -- -D warnings
        step "$package [$label]: test" cargo test -q "${flags[@]}"
        step "$package [$label]: rustdoc" \
            env RUSTDOCFLAGS="-D warnings" cargo doc -q --no-deps "${flags[@]}"
    done
}

# no_dependency PACKAGE CRATE...: PACKAGE without default features pulls in none of CRATEs.
no_dependency() {
    local package="$1"
    shift
    local tree
    tree="$(cargo tree -q -p "$package" --no-default-features -e normal --prefix none)"
    local crate
    for crate in "$@"; do
        if grep -q "^$crate v" <<<"$tree"; then
            echo "$package --no-default-features still depends on $crate:"
            echo "$tree"
            exit 1
        fi
    done
    printf '%-64s %s\n' "$package [no features]: none of $*" ok
}

# getty-codec: tls, ws and deflate are independent, except that permessage-deflate needs
# both ws and deflate.
no_dependency getty-codec rustls ring tungstenite httparse flate2 zlib-rs miniz_oxide rand
check_crate getty-codec "" tls ws deflate ws,deflate tls,ws,deflate
