#!/usr/bin/env bash
# The project's test command: installs dependencies, builds, starts what the tests need (a Redis
# server on loopback), and runs every CPU test label. Fails on any failure.
# Redis and FFmpeg are required here, not optional: the build is configured with them ON (a missing
# package fails the configure step) and STAS_REQUIRE_REDIS/STAS_REQUIRE_FFMPEG turn the tests that
# would skip without them into failures. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase reports its time, so a slow CI run shows where its minutes went.
phase_start=$SECONDS
phase_done() { echo "run-tests: $1 took $((SECONDS - phase_start)) s"; phase_start=$SECONDS; }
deploy/install-deps.sh
phase_done "installing packages"
# A CI machine starts with an empty compiler cache: every lookup misses and only adds a preprocessing
# pass per file (about a second each), so ccache is left out there.
if [ "${CI:-}" = "true" ]; then export CCACHE_DISABLE=1; fi
deploy/build.sh -DSTAS_WITH_REDIS=ON -DSTAS_WITH_FFMPEG=ON
phase_done "the build"
BUILD_DIR="${STAS_BUILD_DIR:-build}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export STAS_REQUIRE_REDIS=1 STAS_REQUIRE_FFMPEG=1
cd "$BUILD_DIR"
status=0
ctest --output-on-failure -j 2 -L "unit|parity|mpi|redis|service|security" "$@" || status=$?
phase_done "the tests"
exit $status
