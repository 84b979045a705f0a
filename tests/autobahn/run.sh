#!/usr/bin/env bash
# Autobahn WebSocket conformance (wstest): our server under `wstest -m fuzzingclient`, our
# client under `wstest -m fuzzingserver`. Fails unless every case of the selected sections
# passes (see check.py).
#
# usage: tests/autobahn/run.sh [--compress] [--quick] [--mode server|client|both] [--sections "1 2 ..."]
#
#   --compress   also run sections 12 and 13 (permessage-deflate); `{compress}` in the
#                commands expands to --compress
#   --quick      of sections 12 and 13, run only the sub-cases with messages of up to 4 KiB
#                and the one fragmenting 8 KiB messages into 256-byte frames (1-5 and 11 of
#                every data set and every deflate setting: 72 of the 216 cases). The rest
#                send 1,000 messages of 8-128 KiB each and take the Python suite about 15
#                minutes per side on 2 cores; CI runs --quick.
#   --mode       test only the server or only the client (default both, the two at once)
#   --sections   the sections to run (default 1-10, plus 12 13 with --compress)
#
# The commands under test are templates (run with bash -c), so another implementation can be
# plugged in:
#   AUTOBAHN_SERVER_CMD  an echo server listening on {addr} (host:port)
#   AUTOBAHN_CLIENT_CMD  a client running Autobahn's flow against {url} (ws://host:port)
#                        as agent {agent}: /getCaseCount, /runCase?case=N&agent={agent}
#                        echoing every message, /updateReports?agent={agent}
# They default to the getty-rs echo server (examples/echo/ --transport ws) and the getty-rs
# Autobahn client (examples/autobahn_client.rs), both built in release mode.
# Other settings: AUTOBAHN_TIMEOUT (seconds per wstest run, default 3600), AUTOBAHN_PY27,
# AUTOBAHN_PY3 (see install.sh). Reports go to target/autobahn/reports/{server,client}.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/autobahn"
WORK="$ROOT/target/autobahn"
AGENT="getty-rs"
TIMEOUT="${AUTOBAHN_TIMEOUT:-3600}"

compress=0
quick=0
mode=both
sections=""
while [ $# -gt 0 ]; do
  case "$1" in
    --compress) compress=1 ;;
    --quick) quick=1 ;;
    --mode) mode="$2"; shift ;;
    --sections) sections="$2"; shift ;;
    *) echo "usage: $0 [--compress] [--quick] [--mode server|client|both] [--sections \"1 2 ...\"]" >&2; exit 2 ;;
  esac
  shift
done
case "$mode" in server|client|both) ;; *) echo "bad --mode $mode" >&2; exit 2 ;; esac
if [ -z "$sections" ]; then
  sections="1 2 3 4 5 6 7 9 10" # Autobahn has no section 8 (nor 11)
  [ "$compress" = 1 ] && sections="$sections 12 13"
fi
compress_flag=""
[ "$compress" = 1 ] && compress_flag="--compress"

EXAMPLES="$ROOT/target/release/examples"
# The suite sends messages of up to 16 MiB: raise the echo server's message limit.
DEFAULT_SERVER_CMD="$EXAMPLES/echo"' --transport ws --server {addr} --max-message 67108864 {compress}'
DEFAULT_CLIENT_CMD="$EXAMPLES/autobahn_client"' --url {url} --agent {agent} {compress}'
SERVER_CMD="${AUTOBAHN_SERVER_CMD:-$DEFAULT_SERVER_CMD}"
CLIENT_CMD="${AUTOBAHN_CLIENT_CMD:-$DEFAULT_CLIENT_CMD}"

# Processes we started (each the leader of its own process group), ended on exit.
# SIDES: the two sides' subshells (--mode both) not yet waited for; a subshell is no
# group leader, so it is signalled by its PID, which stays ours until it is waited for.
PIDS=()
SIDES=()
cleanup() {
  for pid in "${SIDES[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for pid in "${SIDES[@]}" "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
# Ended by a signal, exit through the EXIT trap, whose waits then hold until all is gone.
trap 'exit 143' TERM
trap 'exit 130' INT

start() { # start LOGFILE CMD...: runs CMD in its own process group; sets STARTED
  local log="$1"; shift
  setsid "$@" >"$log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}

stop() { # stop PID
  kill -TERM -- "-$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_listening() { # wait_listening PORT PID: up to 60 s
  local port="$1" pid="$2" i
  for i in $(seq 600); do
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(('127.0.0.1', $port)))" 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "autobahn: process $pid exited before listening on $port" >&2; return 1; }
    sleep 0.1
  done
  echo "autobahn: nothing listening on $port after 60 s" >&2
  return 1
}

expand() { # expand TEMPLATE ADDR URL
  local t="$1" a='{addr}' u='{url}' g='{agent}' c='{compress}'
  t="${t//"$a"/$2}"
  t="${t//"$u"/$3}"
  t="${t//"$g"/$AGENT}"
  t="${t//"$c"/$compress_flag}"
  printf '%s' "$t"
}

cases_json() {
  local out="" s n
  for s in $sections; do
    if [ "$quick" = 1 ] && { [ "$s" = 12 ] || [ "$s" = 13 ]; }; then
      # wstest matches a pattern at the start of a case id only: anchor its end.
      for n in 1 2 3 4 5 11; do out="$out\"$s.*.$n\$\", "; done
    else
      out="$out\"$s.*\", "
    fi
  done
  printf '[%s]' "${out%, }"
}

WSTEST="$("$HERE/install.sh")"
if [ -z "${AUTOBAHN_SERVER_CMD:-}" ] || [ -z "${AUTOBAHN_CLIENT_CMD:-}" ]; then
  (cd "$ROOT" && cargo build --release --example echo --example autobahn_client)
fi
mkdir -p "$WORK/reports"

# Our server under wstest's fuzzing client. Fails unless every case passed.
test_server() {
  local port addr cmd server_pid status=0
  port="$(free_port)"
  addr="127.0.0.1:$port"
  rm -rf "$WORK/reports/server"
  cat >"$WORK/fuzzingclient.json" <<EOF
{
  "outdir": "$WORK/reports/server",
  "servers": [{"agent": "$AGENT", "url": "ws://$addr"}],
  "cases": $(cases_json),
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF
  cmd="$(expand "$SERVER_CMD" "$addr" "ws://$addr")"
  echo "== server under test: $cmd"
  start "$WORK/server.log" bash -c "exec $cmd"
  server_pid=$STARTED
  wait_listening "$port" "$server_pid" || return 1
  echo "== wstest -m fuzzingclient, sections: $sections"
  start "$WORK/fuzzingclient.log" bash -c "cd '$WORK' && exec timeout '$TIMEOUT' '$WSTEST' -m fuzzingclient -s '$WORK/fuzzingclient.json'"
  wait "$STARTED" ||
    { echo "autobahn: wstest fuzzingclient failed or timed out (see $WORK/fuzzingclient.log)"; status=1; }
  stop "$server_pid"
  python3 "$HERE/check.py" "$WORK/reports/server/index.json" "$AGENT" $sections || status=1
  return "$status"
}

# Our client against wstest's fuzzing server. Fails unless every case passed.
test_client() {
  local port url cmd wstest_pid status=0
  port="$(free_port)"
  url="ws://127.0.0.1:$port"
  rm -rf "$WORK/reports/client"
  cat >"$WORK/fuzzingserver.json" <<EOF
{
  "url": "$url",
  "outdir": "$WORK/reports/client",
  "cases": $(cases_json),
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF
  echo "== wstest -m fuzzingserver on $url, sections: $sections"
  start "$WORK/fuzzingserver.log" bash -c "cd '$WORK' && exec '$WSTEST' -m fuzzingserver -u 0 -s '$WORK/fuzzingserver.json'"
  wstest_pid=$STARTED
  wait_listening "$port" "$wstest_pid" || return 1
  cmd="$(expand "$CLIENT_CMD" "127.0.0.1:$port" "$url")"
  echo "== client under test: $cmd"
  start "$WORK/client.log" timeout "$TIMEOUT" bash -c "exec $cmd"
  wait "$STARTED" ||
    { echo "autobahn: the client failed or timed out (see $WORK/client.log)"; status=1; }
  stop "$wstest_pid"
  python3 "$HERE/check.py" "$WORK/reports/client/index.json" "$AGENT" $sections || status=1
  return "$status"
}

# in_background NAME FUNCTION: runs FUNCTION in a subshell, which ends the processes it
# started when it exits (or is told to end), with its output in $WORK/NAME.out; sets STARTED.
in_background() {
  (
    PIDS=()
    SIDES=()
    trap cleanup EXIT
    trap 'exit 143' TERM
    "$2"
  ) >"$WORK/$1.out" 2>&1 &
  STARTED=$!
  SIDES+=("$STARTED")
}

# Both sides at once when both are asked for: each side's time is mostly wstest's own (one
# Python process each, pacing its cases), so together they take about as long as one.
status=0
case "$mode" in
  server) test_server || status=1 ;;
  client) test_client || status=1 ;;
  both)
    in_background server-side test_server
    server_side=$STARTED
    in_background client-side test_client
    client_side=$STARTED
    wait "$server_side" || status=1
    SIDES=("$client_side")
    cat "$WORK/server-side.out"
    wait "$client_side" || status=1
    SIDES=()
    cat "$WORK/client-side.out"
    ;;
esac

exit "$status"
