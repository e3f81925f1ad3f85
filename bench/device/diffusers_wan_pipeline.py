"""Anchor: a whole diffusers WanPipeline render from a diffusers-format checkpoint folder (e.g. the
random-weight one of make_random_wan_checkpoint.py), as diffusers' Wan example runs it: transformer and
text encoder in bf16, VAE in float32, UniPC, CFG. Prompt embeddings are made once with the folder's
text encoder from random token ids (the folder's tokenizer may be a bare spiece.model), and the timed
call is the pipeline from embeddings to decoded frames.

Usage: python3 diffusers_wan_pipeline.py DIR [--steps 50] [--height 480 --width 832 --frames 81]
"""
import argparse, time
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5EncoderModel

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--steps", type=int, default=50)
ap.add_argument("--height", type=int, default=480)
ap.add_argument("--width", type=int, default=832)
ap.add_argument("--frames", type=int, default=81)
ap.add_argument("--guidance", type=float, default=5.0)
a = ap.parse_args()
dev = torch.device("cuda")
with torch.no_grad():
    te = UMT5EncoderModel.from_pretrained(f"{a.dir}/text_encoder", torch_dtype=torch.bfloat16).to(dev).eval()
    ids = torch.randint(2, 1000, (2, 512), device=dev)
    embeds = te(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    prompt, negative = embeds[:1], embeds[1:]
    del te
    pipe = WanPipeline(
        tokenizer=None, text_encoder=None,
        transformer=WanTransformer3DModel.from_pretrained(f"{a.dir}/transformer", torch_dtype=torch.bfloat16),
        vae=AutoencoderKLWan.from_pretrained(f"{a.dir}/vae", torch_dtype=torch.float32),
        scheduler=UniPCMultistepScheduler.from_pretrained(f"{a.dir}/scheduler")).to(dev)
    pipe.set_progress_bar_config(disable=True)
    def render(steps):
        return pipe(prompt_embeds=prompt, negative_prompt_embeds=negative, height=a.height, width=a.width,
                    num_frames=a.frames, num_inference_steps=steps, guidance_scale=a.guidance, output_type="np")
    render(2); torch.cuda.synchronize()  # warm-up
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter(); out = render(a.steps); torch.cuda.synchronize(); total = time.perf_counter() - t0
    print(f"diffusers pipeline {a.width}x{a.height}x{a.frames}, {a.steps} steps, CFG {a.guidance}: total {total:.3f} s "
          f"({total / a.steps * 1e3:.1f} ms/step incl. decode), frames {tuple(out.frames.shape)}, "
          f"peak {torch.cuda.max_memory_allocated()/2**30:.2f} GiB on {torch.cuda.get_device_name()}")
