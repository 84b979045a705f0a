#!/usr/bin/env bash
# The short fuzz pass: every fuzz target for 20 s on the committed corpus (fuzz/run.sh).
# Skips without failing where the toolchain cannot build fuzz targets; fails on a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash fuzz/run.sh 20
