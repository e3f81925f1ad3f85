// cogvideox_bench: times one CogVideoX transformer forward with random weights of a real config, on one
// GPU or, under mpirun, with Ulysses sequence parallelism over --sp GPUs.
//
//   cogvideox_bench [--config transformer.json] [--height 480 --width 720 --frames 49] [--layers L]
//                   [--repeats 5 --warmup 2] [--dtype bf16|fp32] [--device cuda|cpu]
//   mpirun -np S cogvideox_bench --sp S [--check] [same flags]
//   [--reference-ops] [--compare-reference] [--attention auto|flash|cudnn]
//
// Default: CogVideoX-5B (bench/configs/cogvideox_5b_transformer.json) at 720x480x49, the forward of one
// denoising step with classifier-free guidance batched as upstream does: latents [2, 13, 16, 60, 90]
// (the same latents twice), text [2, 226, 4096] ([negative; prompt]), timestep [2]. --layers overrides
// num_layers for quick runs. --reference-ops runs the blocks' elementwise stages as their ATen reference
// instead of the fused CUDA kernels (models/fused_ops.h); --compare-reference (sp = 1) prints how far the
// fused forward is from the reference forward (max |diff| / max |ref|, relative L2). --check (sp > 1): world rank 0 also runs the forward unsharded on its own GPU
// with the same weights and inputs and prints the difference to the sharded output.
// --attention puts that fused attention kernel first (common/torch_compat.h).
// The diffusers anchor and the device script: bench/device/diffusers_cogvideox_forward.py, cogvideox.sh.
// CPU smoke test: cogvideox_bench --device cpu --dtype fp32 --layers 1 --height 64 --width 64 --frames 9
//                 --repeats 1 --warmup 0
//
// Prints, for the slowest rank, median/min/max ms per forward, peak GPU memory (weights included) and
// achieved model TFLOP/s (ModelFlops below; with sp > 1 for the whole group and per GPU).
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include "bench/bench_mpi.h"
#include "bench/bench_util.h"
#include "common/torch_compat.h"
#include "common/json.h"
#include "common/weights.h"
#include "models/cogvideox/transformer.h"
#include "models/fused_ops.h"
#include "parallel/mpi_environment.h"
#include "parallel/parallel_runtime.h"
#include "parallel/process_groups.h"

using namespace stas;
using models::cogvideox::CogVideoXTransformerConfig;

namespace {

using bench::Arg;
using bench::Flag;
using bench::MaxOverWorld;

// Random weights under the upstream key names of a CogVideoXTransformer3DModel config (every tensor
// CogVideoXTransformer::Load reads), generated on the target device: same shapes and FLOPs as the
// checkpoint. Linear weights ~ N(0, 1/in) keep activations O(1); norms are identity.
WeightStore RandomCogVideoXWeights(const CogVideoXTransformerConfig& c, uint64_t seed, at::Device device,
                                   at::ScalarType dtype) {
  at::manual_seed(seed);
  const int64_t D = c.dim(), E = c.time_embed_dim, p = c.patch_size, pt = c.temporal_patch();
  auto opts = at::TensorOptions().device(device).dtype(dtype);
  std::map<std::string, at::Tensor> w;
  auto linear = [&](const std::string& name, int64_t out, int64_t in, bool bias = true) {
    w[name + ".weight"] = at::randn({out, in}, opts) * (1.0 / std::sqrt(static_cast<double>(in)));
    if (bias) w[name + ".bias"] = at::randn({out}, opts) * 0.02;
  };
  auto layer_norm = [&](const std::string& name, int64_t size, bool affine) {
    if (!affine) return;
    w[name + ".weight"] = at::ones({size}, opts);
    w[name + ".bias"] = at::zeros({size}, opts);
  };
  const int64_t patch_in = c.in_channels * pt * p * p;
  // A Conv2d(C, D, p, stride p) for CogVideoX 1.0, a Linear over (C, pt, p, p) patches for 1.5.
  w["patch_embed.proj.weight"] = at::randn(c.patch_size_t ? std::vector<int64_t>{D, patch_in}
                                                           : std::vector<int64_t>{D, c.in_channels, p, p},
                                           opts) *
                                 (1.0 / std::sqrt(static_cast<double>(patch_in)));
  if (c.patch_bias || c.patch_size_t) w["patch_embed.proj.bias"] = at::zeros({D}, opts);
  linear("patch_embed.text_proj", D, c.text_embed_dim);
  linear("time_embedding.linear_1", E, D);
  linear("time_embedding.linear_2", E, E);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string b = "transformer_blocks." + std::to_string(i) + ".";
    for (const char* norm : {"norm1", "norm2"}) {
      linear(b + norm + ".linear", 6 * D, E);
      layer_norm(b + norm + ".norm", D, c.norm_elementwise_affine);
    }
    for (const char* proj : {"to_q", "to_k", "to_v"}) linear(b + "attn1." + proj, D, D, c.attention_bias);
    layer_norm(b + "attn1.norm_q", c.attention_head_dim, true);
    layer_norm(b + "attn1.norm_k", c.attention_head_dim, true);
    linear(b + "attn1.to_out.0", D, D);
    linear(b + "ff.net.0.proj", 4 * D, D);
    linear(b + "ff.net.2", D, 4 * D);
  }
  layer_norm("norm_final", D, c.norm_elementwise_affine);
  linear("norm_out.linear", 2 * D, E);
  layer_norm("norm_out.norm", D, c.norm_elementwise_affine);
  linear("proj_out", c.out_channels * pt * p * p, D);
  return WeightStore::FromTensors(std::move(w));
}

// Model FLOPs of one forward (multiply-add = 2 FLOPs), per batch row times B. Each of the n blocks runs
// over the joint sequence L = L_text + L_video: q, k, v and out projections 2·L·4D², the feed-forward
// (D -> 4D -> D) 2·L·8D², attention QKᵀ and PV 2·2·L²·D. Outside the blocks: the patch embedding
// 2·Lv·(C·pt·p²)·D, the text projection 2·Lt·text_dim·D and proj_out 2·Lv·D·(C_out·pt·p²). Not counted:
// the timestep embedder and adaLN modulation linears (O(D·E) per row, independent of L), norms, RoPE and
// other elementwise work. Under sequence parallelism the replicated text tokens count once.
double ModelFlops(const CogVideoXTransformerConfig& c, double batch, double video_tokens, double text_tokens) {
  const double D = static_cast<double>(c.dim()), L = video_tokens + text_tokens;
  const double patch = static_cast<double>(c.temporal_patch() * c.patch_size * c.patch_size);
  const double per_block = 2 * L * 12 * D * D + 4 * L * L * D;
  const double outside = 2 * video_tokens * patch * D * static_cast<double>(c.in_channels + c.out_channels) +
                         2 * text_tokens * static_cast<double>(c.text_embed_dim) * D;
  return batch * (static_cast<double>(c.num_layers) * per_block + outside);
}

int Fail(int rank, const std::string& message) {
  if (rank == 0) std::fprintf(stderr, "cogvideox_bench: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  auto env = parallel::MpiEnvironment::Initialize(&argc, &argv);
  if (!env.ok()) {
    std::fprintf(stderr, "cogvideox_bench: %s\n", env.status().ToString().c_str());
    return 1;
  }
  const int rank = (*env)->world_rank();
  try {
    const int sp = std::stoi(Arg(argc, argv, "--sp", "1"));
    const int height = std::stoi(Arg(argc, argv, "--height", "480"));
    const int width = std::stoi(Arg(argc, argv, "--width", "720"));
    const int frames = std::stoi(Arg(argc, argv, "--frames", "49"));
    const int repeats = std::max(1, std::stoi(Arg(argc, argv, "--repeats", "5")));
    const int warmup = std::max(0, std::stoi(Arg(argc, argv, "--warmup", "2")));
    const int layers = std::stoi(Arg(argc, argv, "--layers", "0"));
    const bool check = Flag(argc, argv, "--check");
    const std::string dtype_name = Arg(argc, argv, "--dtype", STAS_HAVE_CUDA ? "bf16" : "fp32");
    const std::string device_name = Arg(argc, argv, "--device", STAS_HAVE_CUDA ? "cuda" : "cpu");
    const std::string config_path = Arg(argc, argv, "--config", STAS_BENCH_CONFIGS "/cogvideox_5b_transformer.json");
    if (dtype_name != "bf16" && dtype_name != "fp32") return Fail(rank, "--dtype must be bf16 or fp32");
    const bool cuda = device_name == "cuda";
    if (!cuda && device_name != "cpu") return Fail(rank, "--device must be cuda or cpu");
    if (cuda && at::getNumGPUs() == 0) return Fail(rank, "--device cuda but no CUDA device is visible");
    const at::ScalarType dtype = dtype_name == "bf16" ? at::kBFloat16 : at::kFloat;

    auto config_json = ReadJsonFile(config_path);
    if (!config_json.ok()) return Fail(rank, config_json.status().ToString());
    if (layers > 0) (*config_json)["num_layers"] = layers;
    auto config = CogVideoXTransformerConfig::FromJson(*config_json);
    if (!config.ok()) return Fail(rank, config.status().ToString());

    // The latent grid of the VAE (4x temporal, 8x spatial compression), as CogVideoXPipeline.prepare_latents.
    const int64_t tcr = config->temporal_compression_ratio;
    if (frames < 1 || (frames - 1) % tcr != 0) return Fail(rank, "--frames must be " + std::to_string(tcr) + "k+1");
    const int64_t lat_f = (frames - 1) / tcr + 1, lat_h = height / 8, lat_w = width / 8;
    if (height % 8 != 0 || width % 8 != 0 || lat_f % config->temporal_patch() != 0)
      return Fail(rank, "--height and --width must be multiples of 8 (and the latent frames of patch_size_t)");
    auto rope = models::cogvideox::ComputeRotaryTables(*config, lat_f, lat_h, lat_w);
    if (!rope.ok()) return Fail(rank, rope.status().ToString());

    // Process groups of sp ranks, the device of this rank, and its Ulysses attention (null when sp == 1).
    auto groups = parallel::ProcessGroups::Create(MPI_COMM_WORLD, sp, /*cfg=*/1);
    if (!groups.ok()) return Fail(rank, groups.status().ToString());
    const at::Device device = parallel::ParallelRuntime::DeviceForRank(*groups, cuda);
    auto runtime = parallel::ParallelRuntime::Create(*groups, device, config->num_attention_heads);
    if (!runtime.ok()) return Fail(rank, runtime.status().ToString());

    auto weights = RandomCogVideoXWeights(*config, /*seed=*/0, device, dtype);
    auto model = models::cogvideox::CogVideoXTransformer::Load(*config, weights, device, dtype);
    if (!model.ok()) return Fail(rank, model.status().ToString());
    weights = WeightStore();  // the model holds its own copies

    // Inputs drawn on the CPU from one seed, so every rank holds the same ones. CFG batch as upstream:
    // the latents twice, text [negative; prompt], the timestep expanded to the batch.
    at::manual_seed(1234);
    const at::Tensor x = at::randn({1, lat_f, config->in_channels, lat_h, lat_w});
    const at::Tensor latents = at::cat({x, x}).to(device, dtype);
    const at::Tensor text = at::randn({2, config->max_text_seq_length, config->text_embed_dim}).to(device, dtype);
    const at::Tensor timestep = at::full({2}, 999.0, at::TensorOptions().device(device));
    rope->cos = rope->cos.to(device);
    rope->sin = rope->sin.to(device);

    models::ForwardContext context;
    context.parallel = (*runtime)->sequence_parallel();
    auto forward = [&](const models::ForwardContext& ctx) {
      auto out = model->Forward(latents, timestep, text, *rope, ctx);
      if (!out.ok()) {
        std::fprintf(stderr, "cogvideox_bench rank %d: %s\n", rank, out.status().ToString().c_str());
        std::exit(1);  // peers are stuck in a collective: ending this process ends the job
      }
      return *out;
    };

    if (Flag(argc, argv, "--reference-ops")) models::SetFusedKernelsEnabled(false);
    const std::string attention = Arg(argc, argv, "--attention", "auto");
    const auto kernel = compat::ParseAttentionKernel(attention);
    const std::string kernel_error =
        kernel ? compat::PreferAttentionKernel(*kernel) : "expected auto, flash or cudnn, got '" + attention + "'";
    if (!kernel_error.empty()) {
      std::fprintf(stderr, "cogvideox_bench --attention: %s\n", kernel_error.c_str());
      return 2;
    }
    double fused_max_rel = -1, fused_l2_rel = -1;
    if (Flag(argc, argv, "--compare-reference") && sp == 1) {
      const bool fused = models::FusedKernelsEnabled();
      models::SetFusedKernelsEnabled(true);
      const at::Tensor with_kernels = forward(context);
      models::SetFusedKernelsEnabled(false);
      const at::Tensor reference = forward(context);
      models::SetFusedKernelsEnabled(fused);
      fused_max_rel = ((with_kernels - reference).abs().max() / reference.abs().max()).item<double>();
      fused_l2_rel = ((with_kernels - reference).norm() / reference.norm()).item<double>();
    }

    bench::Synchronize(device);
    const double resident_gib = MaxOverWorld(bench::AllocatedMemoryGiB(device));
    bench::ResetPeakMemory(device);
    const bench::Summary timing = bench::TimeIt(device, warmup, repeats, [&] { forward(context); });
    const double peak_gib = MaxOverWorld(bench::PeakMemoryGiB(device));

    // Correctness under sp > 1: the sharded output against rank 0's unsharded forward of the same inputs.
    double max_abs_diff = -1, rel_l2 = -1, max_abs_ref = -1;
    if (check && sp > 1) {
      const at::Tensor sharded = forward(context);
      if (rank == 0) {
        const at::Tensor reference = forward(models::ForwardContext{});
        max_abs_diff = (sharded - reference).abs().max().item<double>();
        rel_l2 = ((sharded - reference).norm() / reference.norm()).item<double>();
        max_abs_ref = reference.abs().max().item<double>();
      }
    }

    // The slowest rank sets the pace of its group.
    const double median = MaxOverWorld(timing.median_ms), min = MaxOverWorld(timing.min_ms),
                 max = MaxOverWorld(timing.max_ms);
    if (rank == 0) {
      const int64_t video_tokens = (lat_f / config->temporal_patch()) * (lat_h / config->patch_size) *
                                   (lat_w / config->patch_size);
      const int64_t text_tokens = text.size(1);
      const double flops = ModelFlops(*config, 2, static_cast<double>(video_tokens), static_cast<double>(text_tokens));
      const double tflops = flops / (median / 1e3) / 1e12;
      std::printf("cogvideox_bench device=%s dtype=%s world=%d sp=%d size=%dx%dx%d latents=2x%lldx%lldx%lldx%lld "
                  "tokens=%lld+%lld layers=%lld heads=%lld fused_ops=%s\n",
                  cuda ? "cuda" : "cpu", dtype_name.c_str(), (*env)->world_size(), sp, width, height, frames,
                  static_cast<long long>(lat_f), static_cast<long long>(config->in_channels),
                  static_cast<long long>(lat_h), static_cast<long long>(lat_w), static_cast<long long>(video_tokens),
                  static_cast<long long>(text_tokens), static_cast<long long>(config->num_layers),
                  static_cast<long long>(config->num_attention_heads), models::FusedKernelsEnabled() ? "on" : "off");
      std::printf("forward      median=%.1f ms min=%.1f max=%.1f (slowest rank, %d repeats after %d warmup) "
                  "model_flops=%.1f TFLOP achieved=%.0f TFLOP/s (%.0f per GPU) peak_mem=%.2f GiB "
                  "= weights %.2f + forward %.2f GiB\n",
                  median, min, max, repeats, warmup, flops / 1e12, tflops, tflops / sp, peak_gib, resident_gib,
                  peak_gib - resident_gib);
      if (fused_l2_rel >= 0)
        std::printf("fused vs reference forward: max_rel=%.3e l2_rel=%.3e (fused kernels %s)\n", fused_max_rel,
                    fused_l2_rel, models::HaveFusedKernels() ? "built" : "not built");
      if (check && sp > 1)
        std::printf("check        sharded (sp=%d) vs unsharded forward on rank 0: max_abs_diff=%.3e rel_l2=%.3e "
                    "(max_abs_ref=%.3e)\n",
                    sp, max_abs_diff, rel_l2, max_abs_ref);
      else if (check)
        std::printf("check        nothing to compare with sp=1\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cogvideox_bench rank %d: %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return 0;
}
