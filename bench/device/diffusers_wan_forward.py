"""Anchor: one diffusers WanTransformer3DModel forward (random weights, bf16, one GPU) for a transformer
config file and a latent shape, with per-token timesteps when asked (Wan2.2 style).

Usage: python3 diffusers_wan_forward.py CONFIG.json FRAMES LAT_H LAT_W [--per-token] [--profile-range]
--profile-range: one warm-up forward, then one between cudaProfilerStart/Stop (for ncu), and exit.
"""
import json, sys, time
import torch
from diffusers import WanTransformer3DModel

cfg = json.load(open(sys.argv[1]))
F, H, W = (int(v) for v in sys.argv[2:5])
dev = torch.device("cuda")
with torch.no_grad(), torch.device(dev):
    m = WanTransformer3DModel(**cfg).to(torch.bfloat16).eval()
    x = torch.randn(1, cfg["in_channels"], F, H, W, dtype=torch.bfloat16)
    ctx = torch.randn(1, 512, cfg["text_dim"], dtype=torch.bfloat16)
    tokens = F * (H // cfg["patch_size"][1]) * (W // cfg["patch_size"][2])
    t = torch.full((1, tokens), 999.0) if "--per-token" in sys.argv else torch.tensor([999.0])
    def fwd():
        return m(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
    fwd(); torch.cuda.synchronize()
    if "--profile-range" in sys.argv:
        torch.cuda.profiler.start(); fwd(); torch.cuda.synchronize(); torch.cuda.profiler.stop()
        print(f"diffusers: profiled one forward of {tokens} tokens")
        sys.exit(0)
    times = []
    for _ in range(3):
        t0 = time.perf_counter(); fwd(); torch.cuda.synchronize(); times.append(time.perf_counter() - t0)
    times.sort()
    print(f"diffusers forward {F}x{H}x{W} latents ({tokens} tokens): median {times[1]*1e3:.1f} ms "
          f"peak {torch.cuda.max_memory_allocated()/2**30:.2f} GiB on {torch.cuda.get_device_name()}")
