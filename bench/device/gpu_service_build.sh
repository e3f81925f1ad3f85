#!/usr/bin/env bash
# The GPU build WITH the service's Redis and FFmpeg (bench/device/gpu_build.sh leaves both out): on the
# device (Ubuntu 24.04, pip torch + CUDA, system Open MPI), against the prefix that
# bench/device/fetch_service_deps.sh made on a Debian 12 host and that travels with the tree.
# Usage: bench/device/gpu_service_build.sh PREFIX [extra cmake args]; builds stas, render_bench,
# vae_bench, dit_bench and cogvideox_bench (or the targets in $TARGETS) into $BUILD_DIR (default
# build-gpu-service/). Source bench/device/service_env.sh PREFIX
# before running them.
set -euo pipefail
cd "$(dirname "$0")/../.."
PREFIX="$(cd "$1" && pwd)"; shift
BUILD="${BUILD_DIR:-build-gpu-service}"
. bench/device/service_env.sh "$PREFIX"
TORCH_PREFIX="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')"
# -rpath-link: the linker follows FFmpeg's own library dependencies inside the prefix.
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$PREFIX" \
      -DSTAS_WITH_REDIS=ON -DSTAS_WITH_FFMPEG=ON -DSTAS_BUILD_TESTS=OFF \
      -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$PREFIX/lib" -DCMAKE_SHARED_LINKER_FLAGS="-Wl,-rpath-link,$PREFIX/lib" "$@"
# shellcheck disable=SC2086
cmake --build "$BUILD" -j "$(nproc)" --target ${TARGETS:-stas render_bench vae_bench dit_bench cogvideox_bench}
