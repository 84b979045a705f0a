#!/usr/bin/env bash
# The kv example against Redis's own clients: installs Debian's redis-tools (redis-cli,
# redis-benchmark) if they are missing, then runs tests/kv.rs with GETTY_REQUIRE_REDIS=1,
# so a missing tool fails the run instead of skipping its tests. A debug build, as the
# README's test command makes: after that command nothing is compiled again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-cli >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "installing redis-tools"
    sudo_if_needed=()
    if [ "$(id -u)" -ne 0 ]; then sudo_if_needed=(sudo); fi
    "${sudo_if_needed[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_if_needed[@]}" apt-get install -y -qq redis-tools >/dev/null
fi

echo "== the kv example under redis-cli and redis-benchmark (tests/kv.rs)"
# --workspace: the features of the test command, whose build this reuses (the facade alone
# unifies its dependencies' features differently, and rebuilt them for 12 s).
GETTY_REQUIRE_REDIS=1 cargo test --workspace --test kv
