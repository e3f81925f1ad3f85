#!/usr/bin/env bash
# DiT speed on one GPU, ours beside diffusers in the same call: the Wan2.1-1.3B transformer forward at
# 480p and 720p in bf16 (eager, and replayed from a CUDA graph), with float8 linears (per-row and
# per-tensor scales, relative L2 error against the bf16 forward), the diffusers anchor eager (and under
# torch.compile(mode="max-autotune") with --max-autotune: about 200 s more), then the CogVideoX-5B CFG
# forward with the fused kernels, with their ATen reference, and diffusers eager.
# Usage: bench/device/dit_speed.sh [--max-autotune] [--no-cogvideox] [--no-720p] [--fp8-720p] [--reference-ops]
#   (builds dit_bench and cogvideox_bench into build-gpu/ unless they are there; diffusers sources in
#   .ref/src, carried with the working tree, or on PYTHONPATH)
set -u
cd "$(dirname "$0")/../.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
has() { for a in "${FLAGS[@]}"; do [ "$a" = "$1" ] && return 0; done; return 1; }
FLAGS=("$@")
[ -d .ref/src/diffusers ] && export PYTHONPATH=$PWD/.ref/src${PYTHONPATH:+:$PYTHONPATH}
if [ ! -x build-gpu/bench/dit_bench ] || [ ! -x build-gpu/bench/cogvideox_bench ]; then
  TORCH_PREFIX="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')"
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
        -DSTAS_WITH_REDIS=OFF -DSTAS_WITH_FFMPEG=OFF -DSTAS_BUILD_TESTS=OFF > /tmp/dit_speed_cmake.log 2>&1 ||
    { tail -30 /tmp/dit_speed_cmake.log; exit 1; }
  cmake --build build-gpu -j "$(nproc)" --target dit_bench cogvideox_bench 2>&1 | grep -E "error|FAILED" | head -40
fi
B=build-gpu/bench
CONFIG=bench/configs/wan21_t2v_1_3b_transformer.json
MODES=eager
has --max-autotune && MODES=eager,max-autotune
echo "== Wan2.1-1.3B 832x480x81"
$B/dit_bench --config "$CONFIG" --repeats 5 --cuda-graph --compare-reference
$B/dit_bench --config "$CONFIG" --repeats 5 --fp8 row --cuda-graph
$B/dit_bench --config "$CONFIG" --repeats 5 --fp8 tensor
python3 bench/device/diffusers_wan_forward.py "$CONFIG" 21 60 104 --modes "$MODES" 2>&1 | grep -E "^diffusers|rror"
if ! has --no-720p; then
  echo "== Wan2.1-1.3B 1280x720x81"
  $B/dit_bench --config "$CONFIG" --height 720 --width 1280 --repeats 3 --cuda-graph
  has --fp8-720p && $B/dit_bench --config "$CONFIG" --height 720 --width 1280 --repeats 3 --fp8 row
  python3 bench/device/diffusers_wan_forward.py "$CONFIG" 21 90 160 --modes eager 2>&1 | grep -E "^diffusers|rror"
fi
if ! has --no-cogvideox; then
  echo "== CogVideoX-5B 720x480x49, CFG batch"
  ARGS=(--config bench/configs/cogvideox_5b_transformer.json --repeats 5 --warmup 2)
  $B/cogvideox_bench "${ARGS[@]}" --compare-reference 2>&1 | grep -E "forward|rror"
  has --reference-ops && $B/cogvideox_bench "${ARGS[@]}" --reference-ops 2>&1 | grep -E "forward|rror"
  python3 bench/device/diffusers_cogvideox_forward.py "${ARGS[@]}" 2>&1 | grep -E "^diffusers forward|rror"
fi
