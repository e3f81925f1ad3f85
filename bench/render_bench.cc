// render_bench: times a whole render (prompt -> frames) through the same Renderer as `stas render`,
// stage by stage, without the MP4 encode (so it runs on machines built without FFmpeg).
//
//   render_bench --model DIR|tiny [--height 480 --width 832 --frames 81 --steps 4] [--repeats 1]
//                [--prompt TEXT] [--stas] [--warmup-steps N] [--text-encoder-device cpu] [--vae-dtype float32]
//                [--attention auto|flash|cudnn] [--fp8 row|tensor [--psnr-vs-bf16]]
//
// --write-tiny-tokenizer FILE writes the built-in tiny SentencePiece model to FILE and exits (a tokenizer
// for random-weight checkpoint folders, bench/device/make_random_wan_checkpoint.py).
// --warmup-steps N renders once with N steps before the timed runs (kernel selection, allocator, caches).
// --fp8 renders with float8 linear layers; --psnr-vs-bf16 first renders the same job (same seed) in
// bfloat16 with a separately loaded model and prints each fp8 run's PSNR against that video.
// Prints the load time, then per run the manifest's stage timings (text_encode, denoise, decode), the
// time per denoising step and the peak GPU memory.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "bench/bench_util.h"
#include "models/text/prompt_encoder.h"
#include "worker/renderer.h"

using namespace stas;

namespace {
using bench::Arg;
using bench::Flag;
}  // namespace

int main(int argc, char** argv) {
  if (const std::string path = Arg(argc, argv, "--write-tiny-tokenizer", ""); !path.empty()) {
    std::ofstream(path, std::ios::binary) << models::text::TinyTokenizerModel().Serialize();
    return std::ifstream(path).good() ? 0 : 1;
  }
  worker::RendererOptions options;
  options.model = Arg(argc, argv, "--model", "tiny");
  worker::RendererFlags flags;
  flags.text_encoder_device = Arg(argc, argv, "--text-encoder-device", "");
  flags.vae_dtype = Arg(argc, argv, "--vae-dtype", "");
  flags.attention = Arg(argc, argv, "--attention", "");
  flags.fp8 = Arg(argc, argv, "--fp8", "");
  if (Status st = worker::ApplyRendererFlags(flags, &options); !st.ok()) {
    std::fprintf(stderr, "render_bench: %s\n", st.ToString().c_str());
    return 1;
  }

  jobspec::RenderSpec spec;
  spec.model = options.model;
  spec.prompt = Arg(argc, argv, "--prompt", "a red fox running through fresh snow at dawn, cinematic lighting");
  spec.height = std::stoi(Arg(argc, argv, "--height", "480"));
  spec.width = std::stoi(Arg(argc, argv, "--width", "832"));
  spec.frames = std::stoi(Arg(argc, argv, "--frames", "81"));
  spec.steps = std::stoi(Arg(argc, argv, "--steps", "4"));
  spec.stas.enabled = Flag(argc, argv, "--stas");
  const int repeats = std::stoi(Arg(argc, argv, "--repeats", "1"));

  // The bfloat16 video the float8 runs are compared with, from its own model (loaded and freed first).
  at::Tensor bf16_frames;
  if (Flag(argc, argv, "--psnr-vs-bf16")) {
    worker::RendererOptions bf16_options = options;
    bf16_options.fp8_linears.reset();
    auto bf16 = worker::Renderer::Load(bf16_options);
    auto video = bf16.ok() ? (*bf16)->RenderFrames(spec) : Result<worker::RenderedVideo>(bf16.status());
    if (!video.ok()) {
      std::fprintf(stderr, "render_bench: the bfloat16 reference: %s\n", video.status().ToString().c_str());
      return 1;
    }
    bf16_frames = video->frames;
    std::printf("bfloat16 reference: denoise %.3f s\n", video->manifest.timings_s["denoise"]);
  }

  auto renderer = worker::Renderer::Load(options);
  if (!renderer.ok()) {
    std::fprintf(stderr, "render_bench: %s\n", renderer.status().ToString().c_str());
    return 1;
  }
  const at::Device device = (*renderer)->device();
  std::printf("model %s on %s%s, loaded in %.1f s\n", options.model.c_str(), device.str().c_str(),
              options.fp8_linears ? " with float8 linears" : "", (*renderer)->load_seconds());
  const int warmup_steps = std::stoi(Arg(argc, argv, "--warmup-steps", "0"));
  if (warmup_steps > 0) {
    jobspec::RenderSpec warmup = spec;
    warmup.steps = warmup_steps;
    if (auto w = (*renderer)->RenderFrames(warmup); !w.ok()) {
      std::fprintf(stderr, "render_bench: warm-up: %s\n", w.status().ToString().c_str());
      return 1;
    }
  }

  for (int run = 0; run < repeats; ++run) {
    bench::ResetPeakMemory(device);
    auto video = (*renderer)->RenderFrames(spec);
    if (!video.ok()) {
      std::fprintf(stderr, "render_bench: %s\n", video.status().ToString().c_str());
      return 1;
    }
    const auto& t = video->manifest.timings_s;
    auto at_or_zero = [&](const char* key) { return t.count(key) ? t.at(key) : 0.0; };
    std::printf("run %d: %dx%dx%d, %d steps: total %.3f s, text_encode %.3f s, denoise %.3f s (%.1f ms/step), "
                "decode %.3f s, frames [%lld, %lld, %lld, 3], peak %.2f GiB\n",
                run, *spec.width, *spec.height, *spec.frames, *spec.steps, at_or_zero("total"), at_or_zero("text_encode"),
                at_or_zero("denoise"), 1e3 * at_or_zero("denoise") / *spec.steps, at_or_zero("decode"),
                static_cast<long long>(video->frames.size(0)), static_cast<long long>(video->frames.size(1)),
                static_cast<long long>(video->frames.size(2)), bench::PeakMemoryGiB(device));
    if (bf16_frames.defined())
      std::printf("run %d: PSNR against the bfloat16 video %.2f dB\n", run, bench::Psnr(video->frames, bf16_frames));
  }
  return 0;
}
