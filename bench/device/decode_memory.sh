#!/usr/bin/env bash
# Whole-render peak memory and decode time with the bfloat16 streamed VAE decode, and the VAE decode
# alone at 480p and 720p (float32 beside bfloat16, PSNR between them).
# Usage: bench/device/decode_memory.sh DIR   (DIR: make_random_wan_checkpoint.py's folder; the
# binaries in $BUILD_DIR, default build-gpu-service, and service_env.sh already sourced)
set -u
cd "$(dirname "$0")/../.."
DIR="$1"
B="${BUILD_DIR:-build-gpu-service}/bench"
nvidia-smi -L
# 480p whole render, 2 steps (the peak and the decode do not depend on the step count).
timeout 120 "$B/render_bench" --model "$DIR" --steps 2 --warmup-steps 1
timeout 150 "$B/render_bench" --model "$DIR" --steps 2 --text-encoder-device cpu
timeout 60 "$B/vae_bench" --float32-too --repeats 2
timeout 60 "$B/vae_bench" --height 720 --width 1280 --float32-too --repeats 1
timeout 90 "$B/vae_bench" --config wan22 --height 704 --width 1280 --frames 121 --repeats 1
