// render_bench: times a whole render (prompt -> frames) through the same Renderer as `stas render`,
// stage by stage, without the MP4 encode (so it runs on machines built without FFmpeg).
//
//   render_bench --model DIR|tiny [--height 480 --width 832 --frames 81 --steps 4] [--repeats 1]
//                [--prompt TEXT] [--stas] [--warmup-steps N] [--text-encoder-device cpu] [--vae-dtype float32]
//                [--attention auto|flash|cudnn]
//
// --write-tiny-tokenizer FILE writes the built-in tiny SentencePiece model to FILE and exits (a tokenizer
// for random-weight checkpoint folders, bench/device/make_random_wan_checkpoint.py).
// --warmup-steps N renders once with N steps before the timed runs (kernel selection, allocator, caches).
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
  Status st = worker::ParseMemoryFlags(Arg(argc, argv, "--text-encoder-device", ""), Arg(argc, argv, "--vae-dtype", ""),
                                       &options);
  if (st.ok()) st = worker::ParseAttentionFlag(Arg(argc, argv, "--attention", ""), &options);
  if (!st.ok()) {
    std::fprintf(stderr, "render_bench: %s\n", st.ToString().c_str());
    return 1;
  }
  auto renderer = worker::Renderer::Load(options);
  if (!renderer.ok()) {
    std::fprintf(stderr, "render_bench: %s\n", renderer.status().ToString().c_str());
    return 1;
  }
  const at::Device device = (*renderer)->device();
  std::printf("model %s on %s, loaded in %.1f s\n", options.model.c_str(), device.str().c_str(),
              (*renderer)->load_seconds());

  jobspec::RenderSpec spec;
  spec.model = options.model;
  spec.prompt = Arg(argc, argv, "--prompt", "a red fox running through fresh snow at dawn, cinematic lighting");
  spec.height = std::stoi(Arg(argc, argv, "--height", "480"));
  spec.width = std::stoi(Arg(argc, argv, "--width", "832"));
  spec.frames = std::stoi(Arg(argc, argv, "--frames", "81"));
  spec.steps = std::stoi(Arg(argc, argv, "--steps", "4"));
  spec.stas.enabled = Flag(argc, argv, "--stas");
  const int repeats = std::stoi(Arg(argc, argv, "--repeats", "1"));
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
  }
  return 0;
}
