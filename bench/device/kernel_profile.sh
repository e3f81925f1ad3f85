#!/usr/bin/env bash
# Where the time of one Wan2.1-1.3B transformer forward goes, ours beside diffusers': ncu times every
# kernel of one forward (2 of the 30 blocks, 832x480x81 = 32,760 tokens; the blocks are identical, so
# the per-block picture is the whole model's), and ncu_summary.py groups the kernels by class.
# Usage: bench/device/kernel_profile.sh   (after bench/device/gpu_build.sh; diffusers on PYTHONPATH)
set -u
cd "$(dirname "$0")/../.."
CONFIG=/tmp/wan21_1_3b_2blocks.json
python3 -c "import json; json.dump(dict(patch_size=[1,2,2], num_attention_heads=12, attention_head_dim=128,
  in_channels=16, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=2, cross_attn_norm=True,
  qk_norm='rms_norm_across_heads', eps=1e-6, rope_max_seq_len=1024), open('$CONFIG', 'w'))"
NCU=(ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --csv --print-units base)
"${NCU[@]}" build-gpu/bench/dit_bench --config "$CONFIG" --profile-range > /tmp/ncu_stas.csv 2>/tmp/ncu_stas.err
"${NCU[@]}" --target-processes all python3 bench/device/diffusers_wan_forward.py "$CONFIG" 21 60 104 --profile-range \
  > /tmp/ncu_diffusers.csv 2>/tmp/ncu_diffusers.err
tail -n 2 /tmp/ncu_stas.err /tmp/ncu_diffusers.err
python3 bench/device/ncu_summary.py stas=/tmp/ncu_stas.csv diffusers=/tmp/ncu_diffusers.csv
