#!/usr/bin/env bash
# Installs Autobahn's wstest (Python 2.7) into target/autobahn/ and prints the path of the
# wstest binary. Re-uses an existing installation. Sourced by run.sh; also runnable alone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="$ROOT/target/autobahn"
PY27="${AUTOBAHN_PY27:-$HOME/.pyenv/versions/2.7.18/bin/python2.7}"
PY3="${AUTOBAHN_PY3:-python3}"
WSTEST="$DIR/venv27/bin/wstest"
if [ -x "$WSTEST" ]; then echo "$WSTEST"; exit 0; fi
mkdir -p "$DIR"
[ -x "$PY27" ] || { echo "autobahn: Python 2.7 not found at $PY27 (set AUTOBAHN_PY27)" >&2; exit 1; }
if [ ! -x "$DIR/venv3/bin/virtualenv" ]; then
  "$PY3" -m venv "$DIR/venv3" >&2
  timeout 300 "$DIR/venv3/bin/pip" install --quiet 'virtualenv<20.22' >&2
fi
rm -rf "$DIR/venv27"
timeout 300 "$DIR/venv3/bin/virtualenv" --quiet -p "$PY27" "$DIR/venv27" >&2
timeout 600 "$DIR/venv27/bin/pip" install --quiet 'autobahntestsuite==25.10.1' >&2
[ -x "$WSTEST" ] || { echo "autobahn: wstest missing after install" >&2; exit 1; }
echo "$WSTEST"
