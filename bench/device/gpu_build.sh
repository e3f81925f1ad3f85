#!/usr/bin/env bash
# GPU build on the device machine (Ubuntu 24.04, pip torch + CUDA, system NCCL/Open MPI), for benchmarks.
# Usage: bench/device/gpu_build.sh [extra cmake args]; builds into build-gpu/.
set -euo pipefail
cd "$(dirname "$0")/../.."
TORCH_PREFIX="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
      -DSTAS_WITH_REDIS=OFF -DSTAS_WITH_FFMPEG=OFF -DSTAS_BUILD_TESTS=OFF "$@"
cmake --build build-gpu -j "$(nproc)"
