#!/usr/bin/env bash
# Wan2.2-TI2V-5B transformer (random bf16 weights) at 1280x704x121 (latents 31x44x80, 16x spatial
# compression, per-token timesteps): one GPU forward and CFG step, the diffusers anchor in the same call,
# then one CFG step with sp=2 checked against the single-GPU step.
# Usage: bench/device/wan22.sh   (after bench/device/gpu_build.sh; diffusers sources on PYTHONPATH)
set -u
cd "$(dirname "$0")/../.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
CONFIG=bench/configs/wan22_ti2v_5b_transformer.json
SIZE=(--height 704 --width 1280 --frames 121 --spatial 16)
build-gpu/bench/dit_bench --config "$CONFIG" "${SIZE[@]}" --per-token --cfg --repeats 3 --warmup 1
python3 bench/device/diffusers_wan_forward.py "$CONFIG" 31 44 80 --per-token
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 \
    -x NCCL_NVLS_ENABLE -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS \
    build-gpu/bench/parallel_step_bench --config "$CONFIG" "${SIZE[@]}" --repeats 3 --warmup 1 --sp 2 --check 2>&1 |
    grep -E "parallel_step_bench|step |all_to_all|check|rror"
fi
