"""Anchor: one diffusers CogVideoXTransformer3DModel forward (random weights, bf16, one GPU) with the shapes
of bench/cogvideox_bench.cc: the CFG batch of CogVideoXPipeline (latents twice, text [negative; prompt],
timestep expanded to the batch) and the RoPE tables the pipeline computes (its
_prepare_rotary_positional_embeddings, with diffusers' own get_3d_rotary_pos_embed and
get_resize_crop_region_for_grid).

Usage: python3 bench/device/diffusers_cogvideox_forward.py [--config bench/configs/cogvideox_5b_transformer.json]
           [--height 480 --width 720 --frames 49] [--repeats 5 --warmup 2] [--layers L]
           [--diffusers-src DIR]
Default 720x480x49: hidden_states [2, 13, 16, 60, 90], encoder_hidden_states [2, 226, 4096], timestep [2].
--diffusers-src: the directory holding the diffusers package (default: the repository's .ref/src, else
.ref/diffusers/src, else the installed diffusers / PYTHONPATH).
"""
import argparse, json, os, sys, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ap = argparse.ArgumentParser()
ap.add_argument("--config", default=os.path.join(ROOT, "bench/configs/cogvideox_5b_transformer.json"))
ap.add_argument("--height", type=int, default=480)
ap.add_argument("--width", type=int, default=720)
ap.add_argument("--frames", type=int, default=49)
ap.add_argument("--repeats", type=int, default=5)
ap.add_argument("--warmup", type=int, default=2)
ap.add_argument("--layers", type=int, default=0, help="override num_layers (0: the config's)")
ap.add_argument("--diffusers-src", default=None)
args = ap.parse_args()
src = args.diffusers_src or next((os.path.join(ROOT, d) for d in (".ref/src", ".ref/diffusers/src")
                                  if os.path.isdir(os.path.join(ROOT, d, "diffusers"))), None)
if src:
    sys.path.insert(0, src)

import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

cfg = json.load(open(args.config))
if args.layers > 0:
    cfg["num_layers"] = args.layers
VAE_SPATIAL = 8  # CogVideoXPipeline.vae_scale_factor_spatial for the CogVideoX VAE
F = (args.frames - 1) // cfg["temporal_compression_ratio"] + 1
H, W = args.height // VAE_SPATIAL, args.width // VAE_SPATIAL
p, p_t = cfg["patch_size"], cfg.get("patch_size_t")
dev = torch.device("cuda")


def rotary_tables():
    """CogVideoXPipeline._prepare_rotary_positional_embeddings(height, width, num_frames=F, device)."""
    grid_h, grid_w = args.height // (VAE_SPATIAL * p), args.width // (VAE_SPATIAL * p)
    base_w, base_h = cfg["sample_width"] // p, cfg["sample_height"] // p
    if p_t is None:  # CogVideoX 1.0
        crops = get_resize_crop_region_for_grid((grid_h, grid_w), base_w, base_h)
        return get_3d_rotary_pos_embed(embed_dim=cfg["attention_head_dim"], crops_coords=crops,
                                       grid_size=(grid_h, grid_w), temporal_size=F, device=dev)
    return get_3d_rotary_pos_embed(embed_dim=cfg["attention_head_dim"], crops_coords=None, grid_size=(grid_h, grid_w),
                                   temporal_size=(F + p_t - 1) // p_t, grid_type="slice", max_size=(base_h, base_w),
                                   device=dev)


torch.manual_seed(0)
with torch.no_grad(), torch.device(dev):
    m = CogVideoXTransformer3DModel.from_config(cfg).to(torch.bfloat16).eval()
    x = torch.randn(1, F, cfg["in_channels"], H, W, dtype=torch.bfloat16)
    latents = torch.cat([x] * 2)  # CFG: the latents twice
    text = torch.randn(2, cfg["max_text_seq_length"], cfg["text_embed_dim"], dtype=torch.bfloat16)  # [negative; prompt]
    t = torch.tensor(999).expand(2)  # a scheduler timestep (int64) expanded to the batch
    rope = rotary_tables()
    tokens = ((F + (p_t or 1) - 1) // (p_t or 1)) * (H // p) * (W // p)

    def fwd():
        return m(hidden_states=latents, encoder_hidden_states=text, timestep=t, image_rotary_emb=rope,
                 return_dict=False)[0]

    torch.cuda.synchronize()
    weights = torch.cuda.memory_allocated()  # bf16 weights and inputs, as cogvideox_bench counts them
    torch.cuda.reset_peak_memory_stats()  # weights stay counted; the float32 construction does not
    for _ in range(args.warmup):
        fwd()
    torch.cuda.synchronize()
    times = []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter(); fwd(); torch.cuda.synchronize(); times.append(time.perf_counter() - t0)
    times.sort()
    print(f"diffusers forward 2x{F}x{cfg['in_channels']}x{H}x{W} latents ({tokens}+{text.shape[1]} tokens, "
          f"{cfg['num_layers']} layers): median {times[len(times) // 2] * 1e3:.1f} ms min {times[0] * 1e3:.1f} "
          f"max {times[-1] * 1e3:.1f} peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB "
          f"= weights {weights / 2**30:.2f} + forward {(torch.cuda.max_memory_allocated() - weights) / 2**30:.2f} GiB "
          f"on {torch.cuda.get_device_name()}")
