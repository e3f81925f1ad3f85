"""Reference times of the stages of a Wan2.1-1.3B render, with random weights of the real configs, bf16,
on one GPU: the Wan VAE decode of 21 latent frames at 480p (81 frames), the UMT5-XXL text encoder
(transformers) on 2 prompts, the DiT forward at 480p (batch 1, and batch 2 as a batched CFG step), and a
bf16 8192^3 matmul as the card's GEMM ceiling. Run it in the same call as bench/render_bench or
bench/text_encoder_bench to compare.

Usage: python3 bench/device/diffusers_stages.py [--stages vae,text,dit,matmul] [--text-len 512]
  (diffusers sources on PYTHONPATH; transformers and torch installed)
--text-len: tokens per prompt given to the encoder. The pipelines pad every prompt to 512 and encode all
512 positions; stas encodes up to the longest prompt and pads afterwards, so pass that length to time the
same work.
"""
import argparse
import time

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--stages", default="vae,text,dit,matmul")
parser.add_argument("--text-len", type=int, default=512)
args = parser.parse_args()
stages = set(args.stages.split(","))
device = torch.device("cuda")


def seconds_per_call(fn, repeats):
    fn()  # warm-up: allocator, cuDNN/cuBLAS heuristics
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def reset_peak():
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def peak_gib():
    return torch.cuda.max_memory_allocated() / 2**30


print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
with torch.no_grad():
    if "vae" in stages:
        from diffusers import AutoencoderKLWan
        vae = AutoencoderKLWan().to(device, torch.bfloat16).eval()  # the default config is Wan2.1's
        latents = torch.randn(1, 16, 21, 60, 104, device=device, dtype=torch.bfloat16)
        reset_peak()
        s = seconds_per_call(lambda: vae.decode(latents), repeats=1)
        print(f"wan_vae_decode 21 latent frames -> 81 x 480 x 832, bf16: {s * 1e3:.0f} ms, "
              f"peak {peak_gib():.2f} GiB (weights included, reset after loading)")
        del vae, latents
        torch.cuda.empty_cache()
    if "text" in stages:
        from transformers import UMT5Config, UMT5EncoderModel
        config = UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                            relative_attention_num_buckets=32, relative_attention_max_distance=128,
                            feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
                            dropout_rate=0.0)
        with torch.device(device):
            encoder = UMT5EncoderModel(config).to(torch.bfloat16).eval()
        ids = torch.randint(2, 1000, (2, args.text_len), device=device)
        mask = torch.ones_like(ids)
        s = seconds_per_call(lambda: encoder(input_ids=ids, attention_mask=mask), repeats=5)
        print(f"umt5_xxl_encode 2 x {args.text_len} tokens, bf16: {s * 1e3:.1f} ms")
        del encoder
        torch.cuda.empty_cache()
    if "dit" in stages:
        from diffusers import WanTransformer3DModel
        config = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                      out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                      cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
        model = WanTransformer3DModel(**config).to(device, torch.bfloat16).eval()
        x = torch.randn(1, 16, 21, 60, 104, device=device, dtype=torch.bfloat16)
        text = torch.randn(1, 512, 4096, device=device, dtype=torch.bfloat16)
        t = torch.tensor([999.0], device=device)
        reset_peak()
        one = seconds_per_call(lambda: model(hidden_states=x, timestep=t, encoder_hidden_states=text,
                                             return_dict=False), repeats=5)
        print(f"dit_forward 832x480x81 batch 1: {one * 1e3:.1f} ms, peak {peak_gib():.2f} GiB")
        x2, text2, t2 = x.repeat(2, 1, 1, 1, 1), text.repeat(2, 1, 1), t.repeat(2)
        two = seconds_per_call(lambda: model(hidden_states=x2, timestep=t2, encoder_hidden_states=text2,
                                             return_dict=False), repeats=3)
        print(f"dit_forward 832x480x81 batch 2 (a batched CFG step): {two * 1e3:.1f} ms")
        del model
        torch.cuda.empty_cache()
    if "matmul" in stages:
        a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        b = torch.randn_like(a)
        s = seconds_per_call(lambda: a @ b, repeats=10)
        print(f"bf16 matmul 8192^3: {2 * 8192**3 / s / 1e12:.0f} TFLOP/s")
