#!/usr/bin/env bash
# A whole 50-step Wan2.1-1.3B render (832x480x81, CFG 5) from a random-weight checkpoint folder: ours
# (render_bench, Renderer as `stas render`, no MP4 encode) and diffusers' WanPipeline in the same call.
# Usage: bench/device/render_vs_diffusers.sh [DIR]   (after bench/device/gpu_build.sh; diffusers on PYTHONPATH)
set -u
cd "$(dirname "$0")/../.."
DIR=${1:-/tmp/wan21-random}
if [ ! -f "$DIR/model_index.json" ]; then
  python3 -c "import sentencepiece" 2>/dev/null || { echo "needs sentencepiece"; exit 1; }
  # Any SentencePiece model will do as the tokenizer: ours writes the built-in tiny one.
  build-gpu/bench/render_bench --write-tiny-tokenizer /tmp/tiny_spiece.model >/dev/null
  python3 bench/device/make_random_wan_checkpoint.py "$DIR" /tmp/tiny_spiece.model
fi
python3 bench/device/diffusers_wan_pipeline.py "$DIR" --steps 50
build-gpu/bench/render_bench --model "$DIR" --steps 50 --warmup-steps 2
