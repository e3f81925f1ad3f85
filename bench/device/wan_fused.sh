#!/usr/bin/env bash
# Wan2.1-T2V-1.3B transformer forward (random bf16 weights) with the fused CUDA kernels, with their ATen
# reference (--reference-ops), and the diffusers anchor, in one call on one GPU; 480p, then 720p.
# Usage: bench/device/wan_fused.sh   (after bench/device/gpu_build.sh; diffusers sources on PYTHONPATH)
set -u
cd "$(dirname "$0")/../.."
CONFIG=bench/configs/wan21_t2v_1_3b_transformer.json
build-gpu/bench/dit_bench --config "$CONFIG" --compare-reference --cfg --repeats 5
build-gpu/bench/dit_bench --config "$CONFIG" --reference-ops --repeats 5
python3 bench/device/diffusers_wan_forward.py "$CONFIG" 21 60 104
build-gpu/bench/dit_bench --config "$CONFIG" --height 720 --width 1280 --repeats 3
python3 bench/device/diffusers_wan_forward.py "$CONFIG" 21 90 160
