#!/usr/bin/env bash
# Configures and builds the CPU build into ./build (or $STAS_BUILD_DIR) with ninja.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${STAS_BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${STAS_BUILD_TYPE:-RelWithDebInfo}" "$@"
cmake --build "$BUILD_DIR" -j "$(nproc)"
