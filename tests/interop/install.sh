#!/usr/bin/env bash
# Installs the Python `websockets` package (a WebSocket implementation no one here wrote)
# into target/interop-venv and prints the venv's python. Re-uses an existing installation.
# Used by tests/ws_interop.rs and by .ci/run; also runnable alone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/target/interop-venv"
PY3="${INTEROP_PY3:-python3}"
VERSION="15.0.1"
if "$VENV/bin/python" -c "import websockets, sys; sys.exit(websockets.__version__ != '$VERSION')" 2>/dev/null; then
  echo "$VENV/bin/python"
  exit 0
fi
rm -rf "$VENV"
"$PY3" -m venv "$VENV" >&2
timeout 300 "$VENV/bin/pip" install --quiet "websockets==$VERSION" >&2
echo "$VENV/bin/python"
