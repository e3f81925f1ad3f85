#!/usr/bin/env bash
# The project's test command: installs dependencies, builds, starts what the tests need (a Redis
# server on loopback), and runs every CPU test label. Fails on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh
BUILD_DIR="${STAS_BUILD_DIR:-build}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
cd "$BUILD_DIR"
ctest --output-on-failure -j 2 -L "unit|parity|mpi|redis|service|security" "$@"
