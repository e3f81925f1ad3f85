// text_encoder_bench: times the T5-family text encoder with random weights of a real config.
//
//   text_encoder_bench [--model umt5-xxl|t5-v1_1-xxl] [--config text_encoder_config.json]
//                      [--batch 2] [--length 512] [--dtype bf16|fp32] [--device cuda|cpu]
//                      [--warmup 2] [--repeats 10]
//
// Default: UMT5-XXL (Wan's text encoder), 2 x 512 tokens, bf16 on cuda when available. Prints the
// median/min/max ms of one Forward and the achieved model TFLOP/s (matmuls + attention, multiply-add
// = 2 FLOPs). The reference is transformers' UMT5EncoderModel, bf16 eager, 2 x 512 tokens:
// bench/device/diffusers_stages.py times it; run it beside this in the same call to compare.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "common/json.h"
#include "models/text/t5_encoder.h"

using namespace stas;
using namespace stas::models::text;

namespace {

using bench::Arg;

// Model FLOPs of one forward: every linear (2 * in * out per token) plus QK^T and PV (2 * 2 * L * inner
// per token and layer).
double ForwardFlops(const T5EncoderConfig& c, int64_t batch, int64_t length) {
  const double tokens = static_cast<double>(batch * length);
  const double linear_params =
      4.0 * c.d_model * c.inner_dim() + (c.gated_ffn ? 3.0 : 2.0) * c.d_model * c.d_ff;
  const double per_layer = 2.0 * linear_params * tokens + 4.0 * static_cast<double>(length) * c.inner_dim() * tokens;
  return per_layer * static_cast<double>(c.num_layers);
}

}  // namespace

int main(int argc, char** argv) {
  T5EncoderConfig config = Arg(argc, argv, "--model", "umt5-xxl") == "t5-v1_1-xxl" ? T5EncoderConfig::T5V11Xxl()
                                                                                  : T5EncoderConfig::Umt5Xxl();
  const std::string config_path = Arg(argc, argv, "--config", "");
  if (!config_path.empty()) {
    auto json = ReadJsonFile(config_path);
    if (!json.ok()) {
      std::fprintf(stderr, "%s\n", json.status().ToString().c_str());
      return 2;
    }
    auto parsed = T5EncoderConfig::FromJson(*json);
    if (!parsed.ok()) {
      std::fprintf(stderr, "%s\n", parsed.status().ToString().c_str());
      return 2;
    }
    config = *parsed;
  }
  const int64_t batch = std::stoll(Arg(argc, argv, "--batch", "2"));
  const int64_t length = std::stoll(Arg(argc, argv, "--length", "512"));
  const int warmup = std::stoi(Arg(argc, argv, "--warmup", "2"));
  const int repeats = std::max(1, std::stoi(Arg(argc, argv, "--repeats", "10")));
  const bool cuda = Arg(argc, argv, "--device", at::hasCUDA() ? "cuda" : "cpu") == "cuda";
  if (cuda && !at::hasCUDA()) {
    std::fprintf(stderr, "this build has no CUDA device\n");
    return 2;
  }
  const at::Device device = cuda ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  const at::ScalarType dtype = Arg(argc, argv, "--dtype", cuda ? "bf16" : "fp32") == "fp32" ? at::kFloat : at::kBFloat16;

  auto encoder = T5Encoder::RandomForBenchmark(config, device, dtype);
  if (!encoder.ok()) {
    std::fprintf(stderr, "%s\n", encoder.status().ToString().c_str());
    return 2;
  }
  const at::Tensor ids = at::randint(2, std::min<int64_t>(config.vocab_size, 32000), {batch, length},
                                     at::TensorOptions().dtype(at::kLong).device(device));
  at::Tensor mask = at::ones({batch, length}, at::TensorOptions().dtype(at::kLong).device(device));
  // A realistic batch: the first row is a long prompt, the others short ones padded to `length`.
  if (batch > 1) mask.slice(0, 1).slice(1, std::min<int64_t>(length, 40)).zero_();

  auto run = [&] {
    auto out = encoder->Forward(ids, mask);
    if (!out.ok()) {
      std::fprintf(stderr, "%s\n", out.status().ToString().c_str());
      std::exit(1);
    }
    (void)out->sum().item<float>();  // waits for the device
  };
  for (int i = 0; i < warmup; ++i) run();
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  const double tflops = ForwardFlops(config, batch, length) / (median * 1e-3) / 1e12;
  std::printf("text_encoder %s layers=%lld d=%lld batch=%lld length=%lld dtype=%s device=%s params=%.1fM: "
              "median %.2f ms (min %.2f, max %.2f), %.1f TFLOP/s\n",
              config.variant == T5Variant::kUmt5 ? "umt5" : "t5", static_cast<long long>(config.num_layers),
              static_cast<long long>(config.d_model), static_cast<long long>(batch), static_cast<long long>(length),
              dtype == at::kFloat ? "fp32" : "bf16", cuda ? "cuda" : "cpu",
              static_cast<double>(T5EncoderParameterCount(config)) / 1e6, median, ms.front(), ms.back(), tflops);
  return 0;
}
