#!/usr/bin/env bash
# The chat example in a real browser (tests/browser/chat.mjs): installs Debian's chromium if
# /usr/bin/chromium is missing, and, with the machine's Node.js and npm, playwright-core (the
# version tests/browser/package.json pins) under target/browser-node/; starts the chat
# example (a release build: `.ci/run` has built the release library for the echo example
# by then), runs the test under a timeout, and stops the server by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed=()
if [ "$(id -u)" -ne 0 ]; then sudo_if_needed=(sudo); fi

if [ ! -x /usr/bin/chromium ]; then
    echo "installing chromium"
    "${sudo_if_needed[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_if_needed[@]}" apt-get install -y -qq chromium >/dev/null
fi
# The machine's Node.js (playwright-core needs 20 or later; Debian's own is older).
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ] || ! command -v npm >/dev/null; then
    echo "the browser test needs Node.js 20 or later and npm (found: $(node --version 2>&1))"
    exit 1
fi

node_dir=target/browser-node
playwright_version=$(node -p 'require("./tests/browser/package.json").dependencies["playwright-core"]')
installed=$(node -p "try { require('./$node_dir/node_modules/playwright-core/package.json').version } catch { '' }")
if [ "$installed" != "$playwright_version" ]; then
    echo "installing playwright-core $playwright_version under $node_dir"
    mkdir -p "$node_dir"
    npm install --loglevel=error --no-audit --no-fund --prefix "$node_dir" "playwright-core@$playwright_version" >/dev/null
fi

cargo build --release --example chat
chat_binary="$(cargo metadata --format-version 1 --no-deps |
    node -p 'JSON.parse(require("fs").readFileSync(0)).target_directory')/release/examples/chat"

log=$(mktemp)
server_pid=
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap 'stop_server; rm -f "$log"' EXIT

# run_test REACTORS: starts the server on REACTORS reactors, runs the browser test against
# it, stops it; fails if either fails.
run_test() {
    echo "== the chat example on $1 reactor(s) in headless Chromium (tests/browser/chat.mjs)"
    "$chat_binary" --server 127.0.0.1:0 --reactors "$1" >"$log" 2>&1 &
    server_pid=$!
    local url= status=0
    for _ in $(seq 100); do
        url=$(grep -o 'ws://[0-9.:]*/' "$log" | head -n 1 || true)
        [ -n "$url" ] && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$url" ]; then
        echo "the chat server did not start:"
        cat "$log"
        return 1
    fi
    timeout 150 node tests/browser/chat.mjs "$url" || status=$?
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "the chat server died during the test:"
        cat "$log"
        status=1
    else
        # Its CPU time: user + system, the 12th and 13th fields after the name's ')'.
        local ticks
        ticks=$(sed 's/.*) //' "/proc/$server_pid/stat" | awk '{print $12 + $13}')
        echo "chat server: $(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}') s of CPU"
    fi
    stop_server
    return "$status"
}

# One reactor (the default), then two: a room's members on both, the room on one.
run_test 1
run_test 2
