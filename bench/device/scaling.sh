#!/usr/bin/env bash
# Multi-GPU scaling of one CFG denoising step (Wan2.1-1.3B config, random bf16 weights) on the device
# machine: 1 GPU, then sp and sp x cfg-parallel on 2 and 4 GPUs, at 480p and 720p, each parallel point
# checked against the single-GPU step (--check). Then the STAS overhead at 480p.
# Usage: bench/device/scaling.sh [max_gpus]   (run after bench/device/gpu_build.sh)
set -u
cd "$(dirname "$0")/../.."
MAX_GPUS="${1:-$(nvidia-smi -L | wc -l)}"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
B=build-gpu/bench
run() {
  local np=$1; shift
  mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$np" \
    -x NCCL_NVLS_ENABLE -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS \
    "$B/parallel_step_bench" "$@" 2>&1 | grep -E "parallel_step_bench|step |all_to_all|cfg_exchange|check|rror"
}
for size in "480 832" "720 1280"; do
  set -- $size
  run 1 --height "$1" --width "$2" --repeats 3 --warmup 1
  if [ "$MAX_GPUS" -ge 2 ]; then
    run 2 --height "$1" --width "$2" --repeats 3 --warmup 1 --sp 2 --check
    run 2 --height "$1" --width "$2" --repeats 3 --warmup 1 --cfg-parallel --check
  fi
  if [ "$MAX_GPUS" -ge 4 ]; then
    run 4 --height "$1" --width "$2" --repeats 3 --warmup 1 --sp 4 --check
    run 4 --height "$1" --width "$2" --repeats 3 --warmup 1 --sp 2 --cfg-parallel --check
  fi
done
"$B/stas_overhead_bench" --repeats 5 2>&1 | tail -8
