#!/usr/bin/env bash
# The short fuzz pass: every fuzz target for 8 s on the committed corpus (fuzz/run.sh, one
# target per core at a time), which replays the corpus first: twelve targets, under a minute
# of fuzzing in the CI budget of 30.
# Skips without failing where the toolchain cannot build fuzz targets; fails on a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash fuzz/run.sh 8
