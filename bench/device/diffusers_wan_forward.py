"""Anchor: one diffusers WanTransformer3DModel forward (random weights, bf16, one GPU) for a transformer
config file and a latent shape, with per-token timesteps when asked (Wan2.2 style), eager and optionally
under torch.compile in the same process.

Usage: python3 diffusers_wan_forward.py CONFIG.json FRAMES LAT_H LAT_W [--per-token] [--profile-range]
           [--modes eager,default,max-autotune] [--repeats 3]
--modes: eager (the default), default (torch.compile()), max-autotune (torch.compile(mode="max-autotune"):
  tuned GEMMs and CUDA graphs; about 200 s to compile at 480p). Each compiled mode starts from a fresh
  dynamo cache; its first call (the compile) is timed separately.
--profile-range: one warm-up forward (eager), then one between cudaProfilerStart/Stop (for ncu), and exit.

Memory: the model is built (float32, then cast to bf16), then the peak counter is reset, so "peak" is the
forward's peak with the weights resident, and "above weights" is that peak minus the memory allocated
once the model is built (the same two figures dit_bench prints). For a compiled mode the counter is reset
after its compile and warm-up calls, so the figure is that of the timed calls (CUDA-graph pools included).
"""
import json, sys, time
import torch
from diffusers import WanTransformer3DModel


def option(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


cfg = json.load(open(sys.argv[1]))
F, H, W = (int(v) for v in sys.argv[2:5])
modes = option("--modes", "eager").split(",")
repeats = int(option("--repeats", "3"))
dev = torch.device("cuda")
GiB = 2**30
with torch.no_grad(), torch.device(dev):
    m = WanTransformer3DModel(**cfg).to(torch.bfloat16).eval()
    x = torch.randn(1, cfg["in_channels"], F, H, W, dtype=torch.bfloat16)
    ctx = torch.randn(1, 512, cfg["text_dim"], dtype=torch.bfloat16)
    tokens = F * (H // cfg["patch_size"][1]) * (W // cfg["patch_size"][2])
    t = torch.full((1, tokens), 999.0) if "--per-token" in sys.argv else torch.tensor([999.0])
    torch.cuda.synchronize()
    weights = torch.cuda.memory_allocated()  # the bf16 weights and the inputs; the float32 build is freed
    torch.cuda.reset_peak_memory_stats()

    def run(model):
        return model(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]

    if "--profile-range" in sys.argv:
        run(m); torch.cuda.synchronize()
        torch.cuda.profiler.start(); run(m); torch.cuda.synchronize(); torch.cuda.profiler.stop()
        print(f"diffusers: profiled one forward of {tokens} tokens")
        sys.exit(0)

    for mode in modes:
        compile_s = None
        if mode == "eager":
            model = m
            run(model); torch.cuda.synchronize()
        else:
            torch._dynamo.reset()
            model = torch.compile(m, mode=None if mode == "default" else mode)
            t0 = time.perf_counter(); run(model); torch.cuda.synchronize(); compile_s = time.perf_counter() - t0
            run(model); torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter(); run(model); torch.cuda.synchronize(); times.append(time.perf_counter() - t0)
        times.sort()
        peak = torch.cuda.max_memory_allocated()
        label = "eager" if mode == "eager" else f"torch.compile({mode})"
        extra = f" (first call {compile_s:.0f} s)" if compile_s is not None else ""
        print(f"diffusers forward {label} {F}x{H}x{W} latents ({tokens} tokens): median {times[len(times) // 2]*1e3:.1f} ms "
              f"min {times[0]*1e3:.1f} peak {peak/GiB:.2f} GiB = weights {weights/GiB:.2f} + forward "
              f"{(peak - weights)/GiB:.2f} GiB on {torch.cuda.get_device_name()}{extra}", flush=True)
        del model
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
