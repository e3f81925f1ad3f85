// dit_bench: times the Wan transformer on one device with random weights of a real config.
//
//   dit_bench [--height 480 --width 832 --frames 81] [--repeats 5 --warmup 2] [--dtype bf16|fp32]
//             [--config transformer_config.json] [--text-len 512] [--cfg] [--device cuda|cpu]
//             [--spatial 8] [--per-token] [--profile-range] [--reference-ops] [--compare-reference]
//             [--fp8 row|tensor] [--cuda-graph] [--attention auto|flash|cudnn]
//
// --reference-ops runs the DiT's elementwise stages as their ATen reference instead of the fused CUDA
// kernels (models/fused_ops.h), for an A/B in one call; --compare-reference prints how far the fused
// forward is from the reference forward (max |diff| / max |ref| and the relative L2 error).
// --profile-range runs one warm-up forward, then one forward between cudaProfilerStart/Stop (for
// `ncu --profile-from-start off`, bench/device/kernel_profile.sh), and exits.
// --fp8 quantizes the blocks' linear layers to float8 e4m3 (WanTransformer::UseFp8Linears, per-row or
// per-tensor scales) after one bf16 forward, and prints the relative L2 error of the float8 forward
// against it; the timings are then the float8 model's. It fails with a clear error where float8 cannot
// run (CPU, LibTorch < 2.5).
// --cuda-graph captures one forward (static inputs) in a CUDA graph after the warm-up and times its
// replays beside the eager forward, checking that a replay reproduces the eager output.
// --attention puts that fused attention kernel first (common/torch_compat.h); the line "attention"
// names the kernel LibTorch picks for the model's self-attention layout, and for a kernel other than
// flash the relative L2 error of the forward against the forward with FlashAttention.
// --spatial is the VAE's spatial compression (16 for Wan2.2); --per-token gives every token its own
// timestep, as Wan2.2 does.
//
// Prints median/min/max ms of one forward (and with --cfg of one denoising step: two forwards plus the
// guidance combine), peak GPU memory (counter reset after loading; with the part above the resident
// weights and inputs, as bench/device/diffusers_wan_forward.py prints it), and achieved model TFLOP/s
// with the FLOP count of docs/DESIGN.md#flop-count (matmuls + attention, multiply-add = 2 FLOPs).
#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#if STAS_HAVE_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_profiler_api.h>
#endif

#include "bench/bench_util.h"
#include "bench/wan_random_weights.h"
#include "common/json.h"
#include "common/torch_compat.h"
#include "models/fp8_linear.h"
#include "models/fused_ops.h"
#include "models/wan/transformer.h"

using namespace stas;

namespace {

const char* kWan21_1_3B = R"({"patch_size":[1,2,2],"num_attention_heads":12,"attention_head_dim":128,
  "in_channels":16,"out_channels":16,"text_dim":4096,"freq_dim":256,"ffn_dim":8960,"num_layers":30,
  "cross_attn_norm":true,"qk_norm":"rms_norm_across_heads","eps":1e-6,"rope_max_seq_len":1024})";

using bench::Arg;
using bench::Flag;

}  // namespace

int main(int argc, char** argv) {
  const int height = std::stoi(Arg(argc, argv, "--height", "480"));
  const int width = std::stoi(Arg(argc, argv, "--width", "832"));
  const int frames = std::stoi(Arg(argc, argv, "--frames", "81"));
  const int repeats = std::stoi(Arg(argc, argv, "--repeats", "5"));
  const int warmup = std::stoi(Arg(argc, argv, "--warmup", "2"));
  const int text_len = std::stoi(Arg(argc, argv, "--text-len", "512"));
  const bool cfg = Flag(argc, argv, "--cfg");
  const std::string dtype_name = Arg(argc, argv, "--dtype", STAS_HAVE_CUDA ? "bf16" : "fp32");
  const std::string device_name = Arg(argc, argv, "--device", STAS_HAVE_CUDA ? "cuda" : "cpu");
  const std::string config_path = Arg(argc, argv, "--config", "");

  Json config_json;
  if (config_path.empty()) {
    config_json = Json::parse(kWan21_1_3B);
  } else {
    auto j = ReadJsonFile(config_path);
    if (!j.ok()) {
      std::fprintf(stderr, "%s\n", j.status().ToString().c_str());
      return 2;
    }
    config_json = *j;
  }
  auto config = models::wan::WanTransformerConfig::FromJson(config_json);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 2;
  }
  const at::Device device(device_name);
  const at::ScalarType dtype = dtype_name == "bf16" ? at::kBFloat16 : at::kFloat;
  const std::string fp8 = Arg(argc, argv, "--fp8", "");
  if (!fp8.empty()) {  // refuse before loading anything
    auto scaling = models::ParseFp8Scaling(fp8);
    const Status support = scaling.ok() ? models::Fp8LinearSupport(device) : scaling.status();
    if (!support.ok()) {
      std::fprintf(stderr, "dit_bench --fp8: %s\n", support.ToString().c_str());
      return 2;
    }
  }

  bench::ResetPeakMemory(device);
  auto weights = bench::RandomWanTransformerWeights(*config, /*seed=*/0, device, dtype);
  auto model = models::wan::WanTransformer::Load(*config, weights, device, dtype);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  weights = WeightStore();  // the model holds its own copies

  const int spatial = std::stoi(Arg(argc, argv, "--spatial", "8"));
  const int64_t lat_f = (frames - 1) / 4 + 1, lat_h = height / spatial, lat_w = width / spatial;
  auto gen_opts = at::TensorOptions().device(device).dtype(at::kFloat);
  at::Tensor latents = at::randn({1, config->in_channels, lat_f, lat_h, lat_w}, gen_opts);
  at::Tensor text = at::randn({1, text_len, config->text_dim}, gen_opts).to(dtype);
  at::Tensor text_uncond = at::randn({1, text_len, config->text_dim}, gen_opts).to(dtype);
  const int64_t tokens = lat_f * (lat_h / 2) * (lat_w / 2);
  at::Tensor t = Flag(argc, argv, "--per-token") ? at::full({1, tokens}, 999.0, gen_opts) : at::full({1}, 999.0, gen_opts);

  const double L = static_cast<double>(tokens);
  const double D = static_cast<double>(config->dim()), n = static_cast<double>(config->num_layers);
  const double ffn = static_cast<double>(config->ffn_dim), T = text_len;
  const double flops = 2 * L * (4 * D * D + 2 * D * ffn) * n + 4 * L * L * D * n + 2 * L * (2 * D * D) * n +
                       4 * L * T * D * n + 2 * T * 2 * D * D * n;

  auto forward = [&](const at::Tensor& ctx) {
    auto out = model->Forward(latents, t, ctx);
    if (!out.ok()) {
      std::fprintf(stderr, "%s\n", out.status().ToString().c_str());
      std::exit(1);
    }
    return *out;
  };
  if (Flag(argc, argv, "--reference-ops")) models::SetFusedKernelsEnabled(false);
  const std::string attention_name = Arg(argc, argv, "--attention", "auto");
  const auto attention = compat::ParseAttentionKernel(attention_name);
  if (!attention) {
    std::fprintf(stderr, "dit_bench --attention: expected auto, flash or cudnn, got '%s'\n", attention_name.c_str());
    return 2;
  }
  {
    // The self-attention layout of the model: [B, L, H, Dh] viewed as [B, H, L, Dh].
    const int64_t H = config->num_attention_heads, Dh = config->attention_head_dim;
    auto probe = [&] { return at::randn({1, tokens, H, Dh}, gen_opts.dtype(dtype)).transpose(1, 2); };
    const at::Tensor q = probe(), k = probe(), v = probe();
    at::Tensor flash_out;
    if (*attention == compat::AttentionKernel::kCudnn) {
      compat::PreferAttentionKernel(compat::AttentionKernel::kFlash);
      flash_out = forward(text);
    }
    const std::string error = compat::PreferAttentionKernel(*attention);
    if (!error.empty()) {
      std::fprintf(stderr, "dit_bench --attention: %s\n", error.c_str());
      return 2;
    }
    std::printf("attention    requested=%s picked=%s", attention_name.c_str(), compat::AttentionKernelFor(q, k, v).c_str());
    if (flash_out.defined()) {
      const at::Tensor out = forward(text);
      std::printf(" l2_rel_vs_flash=%.3e", ((out - flash_out).norm() / flash_out.norm()).item<double>());
    }
    std::printf("\n");
  }
  if (!fp8.empty()) {
    auto scaling = models::ParseFp8Scaling(fp8);
    const at::Tensor bf16 = forward(text);
    const Status quantized = model->UseFp8Linears(*scaling);
    if (!quantized.ok()) {
      std::fprintf(stderr, "dit_bench --fp8: %s\n", quantized.ToString().c_str());
      return 2;
    }
    const at::Tensor f8 = forward(text);
    std::printf("fp8 (%s scales) vs bf16 forward: l2_rel=%.3e max_rel=%.3e\n", fp8.c_str(),
                ((f8 - bf16).norm() / bf16.norm()).item<double>(),
                ((f8 - bf16).abs().max() / bf16.abs().max()).item<double>());
  }
  if (Flag(argc, argv, "--compare-reference")) {
    const at::Tensor fused = forward(text);
    models::SetFusedKernelsEnabled(false);
    const at::Tensor reference = forward(text);
    models::SetFusedKernelsEnabled(!Flag(argc, argv, "--reference-ops"));
    const double max_rel = ((fused - reference).abs().max() / reference.abs().max()).item<double>();
    const double l2_rel = ((fused - reference).norm() / reference.norm()).item<double>();
    std::printf("fused vs reference forward: max_rel=%.3e l2_rel=%.3e (fused kernels %s)\n", max_rel, l2_rel,
                models::HaveFusedKernels() ? "built" : "not built");
  }
  if (Flag(argc, argv, "--profile-range")) {
    forward(text);
    bench::Synchronize(device);
#if STAS_HAVE_CUDA
    cudaProfilerStart();
#endif
    forward(text);
    bench::Synchronize(device);
#if STAS_HAVE_CUDA
    cudaProfilerStop();
#endif
    std::printf("dit_bench: profiled one forward of %.0f tokens\n", L);
    return 0;
  }
  bench::Synchronize(device);
  const double resident = bench::AllocatedMemoryGiB(device);
  bench::ResetPeakMemory(device);
  auto fwd = bench::TimeIt(device, warmup, repeats, [&] { forward(text); });
  const double peak = bench::PeakMemoryGiB(device);
  std::printf("dit_bench device=%s dtype=%s size=%dx%dx%d tokens=%.0f layers=%lld fused_ops=%s linears=%s\n",
              bench::DeviceName(device).c_str(), dtype_name.c_str(), width, height, frames, L,
              static_cast<long long>(config->num_layers), models::FusedKernelsEnabled() ? "on" : "off",
              model->uses_fp8_linears() ? ("fp8-" + fp8).c_str() : dtype_name.c_str());
  std::printf("forward      median=%.1f ms min=%.1f max=%.1f  model_flops=%.1f TFLOP achieved=%.0f TFLOP/s peak_mem=%.2f GiB "
              "= weights %.2f + forward %.2f GiB\n",
              fwd.median_ms, fwd.min_ms, fwd.max_ms, flops / 1e12, flops / (fwd.median_ms / 1e3) / 1e12, peak, resident,
              peak - resident);
  if (Flag(argc, argv, "--cuda-graph")) {
#if STAS_HAVE_CUDA
    // Capture one forward on a side stream (static inputs: latents, t, text), then replay it.
    const at::Tensor eager = forward(text);
    at::Tensor captured;
    at::cuda::CUDAGraph graph;
    {
      c10::cuda::CUDAStreamGuard on_side_stream(c10::cuda::getStreamFromPool(false, device.index()));
      graph.capture_begin();
      captured = forward(text);
      graph.capture_end();
    }
    graph.replay();
    bench::Synchronize(device);
    const double graph_diff = (captured - eager).abs().max().item<double>();
    auto replay = bench::TimeIt(device, 1, repeats, [&] { graph.replay(); });
    std::printf("cuda_graph   median=%.1f ms min=%.1f max=%.1f (%.2fx of eager) replay max|diff| vs eager=%.3g peak_mem=%.2f GiB\n",
                replay.median_ms, replay.min_ms, replay.max_ms, replay.median_ms / fwd.median_ms, graph_diff,
                bench::PeakMemoryGiB(device));
#else
    std::fprintf(stderr, "dit_bench --cuda-graph: this build has no CUDA\n");
    return 2;
#endif
  }
  if (cfg) {
    const double guidance = 5.0;
    auto step = bench::TimeIt(device, 1, repeats, [&] {
      at::Tensor cond = forward(text);
      at::Tensor uncond = forward(text_uncond);
      at::Tensor pred = uncond + guidance * (cond - uncond);
      (void)pred;
    });
    std::printf("cfg_step     median=%.1f ms min=%.1f max=%.1f peak_mem=%.2f GiB\n", step.median_ms, step.min_ms,
                step.max_ms, bench::PeakMemoryGiB(device));
  }
  return 0;
}
