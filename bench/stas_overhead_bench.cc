// stas_overhead_bench: the cost of STAS on one denoising step of the Wan transformer (random weights of a
// real config), with calibrated channels and with online detection, against the same step without STAS.
//
//   stas_overhead_bench [--height 480 --width 832 --frames 81] [--config FILE] [--layers N]
//                       [--dtype bf16|fp32] [--device cuda|cpu] [--repeats 5 --warmup 2] [--text-len 512]
//                       [--batched-cfg] [--channels 8] [--boundary-mode rows|frames] [--lambda 1.0]
//
// A step is the two CFG forwards (uncond + g (cond - uncond)), or one forward of batch 2 with
// --batched-cfg. Variants are timed interleaved (vanilla, calibrated, online, vanilla, ...) so drift hits
// all alike. Also timed alone: the hook over all blocks on a residual stream of the step's shape, which
// resolves overheads far below the step-to-step noise. Prints median ms and overhead %.
// Default config: Wan2.1-T2V-1.3B (docs/DESIGN.md#model-facts). STAS steers every step here (K = N).
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include "bench/bench_util.h"
#include "bench/wan_random_weights.h"
#include "common/fs.h"
#include "common/json.h"
#include "models/wan/transformer.h"
#include "steering/ma_channels.h"
#include "steering/stas_hook.h"

using namespace stas;

namespace {

const char* kWan21_1_3B = R"({"patch_size":[1,2,2],"num_attention_heads":12,"attention_head_dim":128,
  "in_channels":16,"out_channels":16,"text_dim":4096,"freq_dim":256,"ffn_dim":8960,"num_layers":30,
  "cross_attn_norm":true,"qk_norm":"rms_norm_across_heads","eps":1e-6,"rope_max_seq_len":1024})";

using bench::Arg;
using bench::Flag;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double TimeMs(const at::Device& device, const std::function<void()>& fn) {
  bench::Synchronize(device);
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  bench::Synchronize(device);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

[[noreturn]] void Die(const Status& st) {
  std::fprintf(stderr, "stas_overhead_bench: %s\n", st.ToString().c_str());
  std::exit(st.code() == StatusCode::kInvalidArgument ? 2 : 1);
}

}  // namespace

int main(int argc, char** argv) {
  const int height = std::stoi(Arg(argc, argv, "--height", "480"));
  const int width = std::stoi(Arg(argc, argv, "--width", "832"));
  const int frames = std::stoi(Arg(argc, argv, "--frames", "81"));
  const int repeats = std::max(1, std::stoi(Arg(argc, argv, "--repeats", "5")));
  const int warmup = std::max(0, std::stoi(Arg(argc, argv, "--warmup", "2")));
  const int text_len = std::stoi(Arg(argc, argv, "--text-len", "512"));
  const int num_channels = std::stoi(Arg(argc, argv, "--channels", "8"));
  const bool batched_cfg = Flag(argc, argv, "--batched-cfg");
  const std::string dtype_name = Arg(argc, argv, "--dtype", STAS_HAVE_CUDA ? "bf16" : "fp32");
  const std::string device_name = Arg(argc, argv, "--device", STAS_HAVE_CUDA ? "cuda" : "cpu");
  const std::string config_path = Arg(argc, argv, "--config", "");
  const std::string layers = Arg(argc, argv, "--layers", "");

  Json config_json = Json::parse(kWan21_1_3B);
  if (!config_path.empty()) {
    auto j = ReadJsonFile(config_path);
    if (!j.ok()) Die(j.status());
    config_json = *j;
  }
  if (!layers.empty()) config_json["num_layers"] = std::stoi(layers);  // quick runs on small machines
  auto config = models::wan::WanTransformerConfig::FromJson(config_json);
  if (!config.ok()) Die(config.status());
  const at::Device device(device_name);
  const at::ScalarType dtype = dtype_name == "bf16" ? at::kBFloat16 : at::kFloat;
  const int num_layers = static_cast<int>(config->num_layers);

  auto model = [&] {
    auto weights = bench::RandomWanTransformerWeights(*config, /*seed=*/0, device, dtype);
    auto m = models::wan::WanTransformer::Load(*config, weights, device, dtype);
    if (!m.ok()) Die(m.status());
    return std::move(m).value();
  }();

  const int64_t lat_f = (frames - 1) / 4 + 1, lat_h = height / 8, lat_w = width / 8;
  auto gen_opts = at::TensorOptions().device(device).dtype(at::kFloat);
  at::manual_seed(1);
  const at::Tensor latents = at::randn({1, config->in_channels, lat_f, lat_h, lat_w}, gen_opts);
  const at::Tensor text = at::randn({1, text_len, config->text_dim}, gen_opts).to(dtype);
  const at::Tensor text_uncond = at::randn({1, text_len, config->text_dim}, gen_opts).to(dtype);
  const at::Tensor both_text = at::cat({text, text_uncond});
  const at::Tensor both_latents = at::cat({latents, latents});
  const models::TokenGrid grid = model.GridFor(latents.sizes());

  // A calibration file with `num_channels` channels spread over the hidden size (random weights have no
  // real MAs; the cost of the update does not depend on which channels they are).
  const std::string channels_path =
      (std::filesystem::temp_directory_path() / ("stas_bench_channels_" + std::to_string(::getpid()) + ".json")).string();
  {
    steering::MaChannelSet set;
    set.model = "bench";
    set.hidden_dim = config->dim();
    set.num_blocks = num_layers;
    set.k = std::max(1, num_channels);
    for (int i = 0; i < num_channels; ++i) {
      set.global.channels.push_back((i * 2654435761ll) % config->dim());
      set.global.peak_median_ratios.push_back(1000.0);
    }
    std::sort(set.global.channels.begin(), set.global.channels.end());
    set.global.channels.erase(std::unique(set.global.channels.begin(), set.global.channels.end()), set.global.channels.end());
    set.global.peak_median_ratios.resize(set.global.channels.size());
    if (Status st = set.Save(channels_path); !st.ok()) Die(st);
  }

  steering::StasOptions base;
  base.enabled = true;
  base.steps = 1000;  // steer every step
  base.lambda = std::stod(Arg(argc, argv, "--lambda", "1.0"));
  if (Arg(argc, argv, "--boundary-mode", "rows") == "frames") base.boundary_mode = steering::BoundaryMode::kFrames;
  steering::StasOptions calibrated = base;
  calibrated.channels_file = channels_path;
  const steering::StasModelInfo info{"bench", config->dim(), num_layers};
  auto calibrated_hook = steering::MakeStasHook(calibrated, info);
  if (!calibrated_hook.ok()) Die(calibrated_hook.status());
  auto online_hook = steering::MakeStasHook(base, info);
  if (!online_hook.ok()) Die(online_hook.status());
  std::filesystem::remove(channels_path);

  const double guidance = 5.0;
  auto step = [&](models::ResidualHook* hook) {
    models::ForwardContext ctx;
    ctx.hook = hook;
    ctx.step = 0;
    ctx.num_steps = 50;
    const at::Tensor t1 = at::full({1}, 999.0, gen_opts);
    at::Tensor cond, uncond;
    if (batched_cfg) {
      ctx.branches = {models::CfgBranch::kCond, models::CfgBranch::kUncond};
      auto out = model.Forward(both_latents, at::full({2}, 999.0, gen_opts), both_text, ctx);
      if (!out.ok()) Die(out.status());
      cond = out->narrow(0, 0, 1);
      uncond = out->narrow(0, 1, 1);
    } else {
      ctx.branches = {models::CfgBranch::kCond};
      auto c = model.Forward(latents, t1, text, ctx);
      if (!c.ok()) Die(c.status());
      ctx.branches = {models::CfgBranch::kUncond};
      auto u = model.Forward(latents, t1, text_uncond, ctx);
      if (!u.ok()) Die(u.status());
      cond = *c;
      uncond = *u;
    }
    at::Tensor pred = uncond + (cond - uncond) * guidance;
    (void)pred;
  };

  // The hook alone, on a residual stream of the step's shape, over all blocks (x2 forwards unbatched).
  const int64_t rows = batched_cfg ? 2 : 1;
  at::Tensor hidden = at::randn({rows, grid.count(), config->dim()}, gen_opts).to(dtype);
  auto hooks_only = [&](models::ResidualHook* hook) {
    models::BlockContext ctx;
    ctx.step = 0;
    ctx.num_steps = 50;
    ctx.num_blocks = num_layers;
    ctx.grid = grid;
    ctx.shard = models::ShardLayout::For(grid.count(), 0, 1);
    for (int forward = 0; forward < (batched_cfg ? 1 : 2); ++forward) {
      ctx.branches = batched_cfg ? std::vector<models::CfgBranch>{models::CfgBranch::kCond, models::CfgBranch::kUncond}
                                 : std::vector<models::CfgBranch>{forward == 0 ? models::CfgBranch::kCond
                                                                               : models::CfgBranch::kUncond};
      for (int b = 0; b < num_layers; ++b) {
        ctx.block = b;
        hook->AfterBlock(hidden, ctx);
      }
    }
  };

  for (int i = 0; i < warmup; ++i) {
    step(nullptr);
    step(calibrated_hook->get());
    step(online_hook->get());
    hooks_only(calibrated_hook->get());
    hooks_only(online_hook->get());
  }
  std::vector<double> vanilla_ms, calibrated_ms, online_ms, hook_cal_ms, hook_online_ms;
  for (int r = 0; r < repeats; ++r) {
    vanilla_ms.push_back(TimeMs(device, [&] { step(nullptr); }));
    calibrated_ms.push_back(TimeMs(device, [&] { step(calibrated_hook->get()); }));
    online_ms.push_back(TimeMs(device, [&] { step(online_hook->get()); }));
    hook_cal_ms.push_back(TimeMs(device, [&] { hooks_only(calibrated_hook->get()); }));
    hook_online_ms.push_back(TimeMs(device, [&] { hooks_only(online_hook->get()); }));
  }
  const double v = Median(vanilla_ms), c = Median(calibrated_ms), o = Median(online_ms);
  const double hc = Median(hook_cal_ms), ho = Median(hook_online_ms);
  std::printf("stas_overhead_bench device=%s dtype=%s size=%dx%dx%d tokens=%lld layers=%d cfg=%s channels=%d "
              "mask=%s repeats=%d\n",
              bench::DeviceName(device).c_str(), dtype_name.c_str(), width, height, frames,
              static_cast<long long>(grid.count()), num_layers, batched_cfg ? "batched" : "two-forwards", num_channels,
              base.boundary_mode == steering::BoundaryMode::kRows ? "rows" : "frames", repeats);
  std::printf("step vanilla          median=%9.2f ms\n", v);
  std::printf("step stas calibrated  median=%9.2f ms  overhead=%+.2f%%\n", c, 100.0 * (c - v) / v);
  std::printf("step stas online      median=%9.2f ms  overhead=%+.2f%%\n", o, 100.0 * (o - v) / v);
  std::printf("hooks only calibrated median=%9.3f ms  = %.3f%% of the vanilla step\n", hc, 100.0 * hc / v);
  std::printf("hooks only online     median=%9.3f ms  = %.3f%% of the vanilla step\n", ho, 100.0 * ho / v);
  std::printf("steered calls: calibrated %lld, online %lld\n",
              static_cast<long long>(calibrated_hook.value()->steered_calls()),
              static_cast<long long>(online_hook.value()->steered_calls()));
  return 0;
}
