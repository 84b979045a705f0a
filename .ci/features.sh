#!/usr/bin/env bash
# Lints, tests and documents each crate under the feature combinations that matter, so an
# optional dependency that leaks into code meant to build without it fails here, not for a
# user. Quiet on success (one line per step); on failure prints the step's log and exits 1.
# Each step is bounded by STEP_TIMEOUT seconds (default 1200) and says how long it took.
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
    local started=$SECONDS
    if timeout "$STEP_TIMEOUT" "$@" >"$LOG" 2>&1; then
        echo "ok ($((SECONDS - started)) s)"
    else
        local rc=$?
        echo "FAILED (exit $rc)"
        tail -n 80 "$LOG"
        exit 1
    fi
}

# flags_for PACKAGE FEATURES: the cargo flags of PACKAGE under FEATURES (a comma list, ""
# = none) and nothing else; the default set is covered by the workspace's own build and tests.
flags_for() {
    flags=(-p "$1" --no-default-features)
    [[ -n "$2" ]] && flags+=(--features "$2")
    label="${2:-no features}"
}

# check_crate PACKAGE FEATURES...: under each FEATURES, lints every target (which builds
# them: tests, benches, examples) and documents the crate with broken links as errors.
check_crate() {
    check_targets "$1" --all-targets "${@:2}"
}

# check_targets PACKAGE TARGETS FEATURES...: check_crate for the targets TARGETS selects
# (cargo's flags, such as "--lib --examples").
check_targets() {
    local package="$1" targets features flags label
    read -ra targets <<<"$2"
    shift 2
    for features in "$@"; do
        flags_for "$package" "$features"
        step "$package [$label]: clippy ${targets[*]}" \
            cargo clippy -q "${flags[@]}" "${targets[@]}" -- -D warnings
        step "$package [$label]: rustdoc" \
            env RUSTDOCFLAGS="-D warnings" cargo doc -q --no-deps "${flags[@]}"
    done
}

# test_crate PACKAGE FEATURES...: under each FEATURES, runs the crate's unit and
# integration tests (those that need a feature left out are skipped by their
# `required-features` or `cfg`). Built once per combination, then cached.
test_crate() {
    local package="$1" features flags label
    shift
    for features in "$@"; do
        flags_for "$package" "$features"
        step "$package [$label]: test" cargo test -q "${flags[@]}" --lib --tests
    done
}

# test_binaries PACKAGE FEATURES BINARY...: runs only the named integration test binaries
# of PACKAGE under FEATURES.
test_binaries() {
    local package="$1" features="$2" flags label
    shift 2
    flags_for "$package" "$features"
    local targets=() binary
    for binary in "$@"; do
        targets+=(--test "$binary")
    done
    step "$package [$label]: test ($# binaries)" cargo test -q "${flags[@]}" "${targets[@]}"
}

# doc_test_crate PACKAGE FEATURES...: under each FEATURES, runs the crate's doc tests
# (compiled anew on every run, as one binary per crate under the 2024 edition).
doc_test_crate() {
    local package="$1" features flags label
    shift
    for features in "$@"; do
        flags_for "$package" "$features"
        step "$package [$label]: doc tests" cargo test -q "${flags[@]}" --doc
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

# The optional dependencies: none of them is pulled in without default features.
OPTIONAL=(rustls ring tungstenite httparse flate2 zlib-rs miniz_oxide rand)

# Every combination that changes what compiles is linted (which builds every target) and
# documented. Tests (unit, integration and doc tests) run with no features, where an
# example that uses a gated item without saying so fails, and with `ws` alone, the one
# combination that changes behaviour rather than only removing code (without deflate the
# WebSocket declines permessage-deflate, and a wss:// URL is refused); tls and deflate
# alone only take code away, which the lint of every target already builds. The default
# build's tests cover every feature turned on.

# getty-codec: tls, ws and deflate are independent, except that permessage-deflate needs
# both ws and deflate. All three together are the default build, whose tests the
# workspace's own run covers.
no_dependency getty-codec "${OPTIONAL[@]}"
check_crate getty-codec "" tls ws deflate ws,deflate tls,ws,deflate
test_crate getty-codec "" ws
doc_test_crate getty-codec "" ws

# getty-transports and the facade: the same features, passed down to getty-codec. The
# crate's `fuzzing` feature (the queue models' entry points for fuzz/, a hidden module) only
# adds code, so it is linted and documented alone, where it has the least to lean on.
no_dependency getty-transports "${OPTIONAL[@]}" arbitrary
check_crate getty-transports "" tls ws deflate ws,deflate fuzzing
test_crate getty-transports "" ws
doc_test_crate getty-transports "" ws

# The facade's integration tests take minutes per combination (real sockets, timeouts).
# Every one of them is built under each combination by the lint of all targets above. With
# no features, the plain transports' own suites run end to end (TCP, UDP, unix, the byte
# path, the session lifecycle): the code that only a build without features has is a few
# stubs (no TLS name to check, no stream compression), which the crates' unit tests under
# no features run; the rest is the code the default build's run tests. tls and deflate
# alone only take code away.
#
# With `ws` alone (see above), the WebSocket suites run: the upgrade, echoes, hostile frames, the
# clients, and interop with Python's websockets, which offers permessage-deflate and is
# declined. The other suites with WebSocket sessions in them (flow control, groups,
# limits, ...) drive the same framing code as in the default build's run, where no
# permessage-deflate was agreed unless the test asked for it (those tests need deflate).
#
# Every target of the facade (its 60-odd test suites and its examples) is linted with no
# features and with `ws`, the combinations whose tests run below. Under tls, deflate and
# ws,deflate, which only take code away, the library and the examples are, not the
# suites: linting every suite again under each of these three took a minute. What that
# leaves unchecked: a suite that gates some of its tests with `#[cfg(feature = ...)]`
# could stop compiling under one of these three alone, which only a developer running
# the tests that way would see (they were all clean when this was decided).
no_dependency getty "${OPTIONAL[@]}"
check_crate getty "" ws
check_targets getty "--lib --examples" tls deflate ws,deflate
test_binaries getty "" tcp udp unix byte_path lifecycle
test_binaries getty ws ws ws_interop ws_hostile ws_fast_path_wire upgrade_hostile clients
doc_test_crate getty "" ws
