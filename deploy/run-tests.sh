#!/usr/bin/env bash
# The project's test command: installs dependencies, builds, starts what the tests need (a Redis
# server on loopback), and runs every CPU test label. Fails on any failure.
# Redis and FFmpeg are required here, not optional: the build is configured with them ON (a missing
# package fails the configure step) and STAS_REQUIRE_REDIS/STAS_REQUIRE_FFMPEG turn the tests that
# would skip without them into failures. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh -DSTAS_WITH_REDIS=ON -DSTAS_WITH_FFMPEG=ON
BUILD_DIR="${STAS_BUILD_DIR:-build}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export STAS_REQUIRE_REDIS=1 STAS_REQUIRE_FFMPEG=1
cd "$BUILD_DIR"
ctest --output-on-failure -j 2 -L "unit|parity|mpi|redis|service|security" "$@"
