#!/usr/bin/env bash
# CogVideoX-5B transformer (random bf16 weights) at 720x480x49, one forward of the CFG batch (latents
# [2, 13, 16, 60, 90], text [2, 226, 4096]): the diffusers anchor and ours on the same GPU, the ratio
# ours/diffusers, then, with 2 GPUs visible, ours with sp=2 checked against rank 0's unsharded forward.
# Usage: bench/device/cogvideox.sh [--layers L] [--repeats R --warmup W] [--height H --width W --frames F]
#   (after bench/device/gpu_build.sh; the extra flags go to both benchmarks; diffusers sources in .ref/src,
#   carried with the working tree, or on PYTHONPATH)
set -u
cd "$(dirname "$0")/../.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ARGS=(--config bench/configs/cogvideox_5b_transformer.json --repeats 5 --warmup 2 "$@")
median() { sed -n "s/.*median[= ]\([0-9.]*\) ms.*/\1/p" <<<"$1" | head -1; }

anchor=$(python3 bench/device/diffusers_cogvideox_forward.py "${ARGS[@]}" 2>&1)
echo "$anchor" | grep -E "^diffusers forward|rror" || echo "$anchor" | tail -20
ours=$(build-gpu/bench/cogvideox_bench "${ARGS[@]}" 2>&1)
echo "$ours"
a=$(median "$anchor") o=$(median "$ours")
if [ -n "$a" ] && [ -n "$o" ]; then
  awk -v o="$o" -v a="$a" 'BEGIN { printf "ratio        ours/diffusers = %.3f (%.1f ms / %.1f ms, 1 GPU)\n", o / a, o, a }'
fi
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  sp2=$(mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 \
    -x NCCL_NVLS_ENABLE -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS \
    build-gpu/bench/cogvideox_bench "${ARGS[@]}" --sp 2 --check 2>&1)
  echo "$sp2" | grep -E "cogvideox_bench|forward|check|rror"
  s=$(median "$sp2")
  if [ -n "$s" ] && [ -n "$o" ]; then
    awk -v s="$s" -v o="$o" 'BEGIN { printf "speedup      sp=2 vs 1 GPU = %.2fx (%.1f ms / %.1f ms)\n", o / s, o, s }'
  fi
fi
