#!/usr/bin/env bash
# The soak (examples/soak.rs): TCP, TLS, WebSocket and UDP echoes with connection churn,
# a line every 10 s (RSS, descriptors, sessions, msgs/s, p99), failing on a lost or
# corrupted echo or on memory or descriptors that keep growing. Not run by CI: about 10
# minutes by default; `--minutes N` for another length.
#
#   bash tests/soak.sh               # 10 minutes
#   bash tests/soak.sh --minutes 60
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=10
if [[ "${1:-}" == "--minutes" ]]; then minutes="${2:?--minutes takes a number}"; fi
cargo build --release --example soak
exec target/release/examples/soak --minutes "$minutes"
