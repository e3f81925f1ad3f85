"""Writes a diffusers-format Wan2.1-T2V-1.3B checkpoint folder with random weights (the real configs,
bf16), for timing whole renders on a machine that cannot download the released weights.

Usage: python3 make_random_wan_checkpoint.py OUT_DIR SPIECE_MODEL
The tokenizer is any SentencePiece model with pad/EOS pieces (ids stay far below UMT5's vocabulary).
Needs torch, transformers and diffusers importable.
"""
import json, os, shutil, sys, time
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

out, spiece = sys.argv[1], sys.argv[2]
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
t0 = time.time()
with torch.device(dev):
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024).to(torch.bfloat16)
    transformer.save_pretrained(os.path.join(out, "transformer"), max_shard_size="2GB")
    del transformer
    text = UMT5EncoderModel(UMT5Config(
        vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
        is_encoder_decoder=False, use_cache=False, dropout_rate=0.0)).to(torch.bfloat16)
    text.save_pretrained(os.path.join(out, "text_encoder"), max_shard_size="5GB")
    del text
    AutoencoderKLWan().save_pretrained(os.path.join(out, "vae"))
os.makedirs(os.path.join(out, "tokenizer"), exist_ok=True)
shutil.copy(spiece, os.path.join(out, "tokenizer", "spiece.model"))
os.makedirs(os.path.join(out, "scheduler"), exist_ok=True)
with open(os.path.join(out, "scheduler", "scheduler_config.json"), "w") as f:
    json.dump({"_class_name": "UniPCMultistepScheduler", "num_train_timesteps": 1000, "solver_order": 2,
               "prediction_type": "flow_prediction", "predict_x0": True, "solver_type": "bh2",
               "lower_order_final": True, "use_flow_sigmas": True, "flow_shift": 3.0,
               "final_sigmas_type": "zero", "timestep_spacing": "linspace", "steps_offset": 0}, f, indent=2)
with open(os.path.join(out, "model_index.json"), "w") as f:
    json.dump({"_class_name": "WanPipeline", "text_encoder": ["transformers", "UMT5EncoderModel"],
               "tokenizer": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "WanTransformer3DModel"],
               "vae": ["diffusers", "AutoencoderKLWan"], "scheduler": ["diffusers", "UniPCMultistepScheduler"]}, f, indent=2)
print(f"wrote {out} in {time.time() - t0:.0f} s")
