// Random weights with the upstream key names of a WanTransformer3DModel config, generated directly
// on the target device (benchmarks of the real configs need no checkpoint: same FLOPs, same shapes).
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>

#include "common/weights.h"
#include "models/wan/transformer.h"

namespace stas::bench {

inline WeightStore RandomWanTransformerWeights(const models::wan::WanTransformerConfig& c, uint64_t seed,
                                               at::Device device, at::ScalarType dtype) {
  at::manual_seed(seed);
  const int64_t D = c.dim();
  auto opts = at::TensorOptions().device(device).dtype(dtype);
  std::map<std::string, at::Tensor> w;
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    w[name + ".weight"] = at::randn({out, in}, opts) * (1.0 / std::sqrt(static_cast<double>(in)));
    w[name + ".bias"] = at::randn({out}, opts) * 0.02;
  };
  auto norm = [&](const std::string& name) { w[name] = at::ones({D}, opts); };
  w["patch_embedding.weight"] =
      at::randn({D, c.in_channels, c.patch_size[0], c.patch_size[1], c.patch_size[2]}, opts) * 0.05;
  w["patch_embedding.bias"] = at::zeros({D}, opts);
  linear("condition_embedder.time_embedder.linear_1", D, c.freq_dim);
  linear("condition_embedder.time_embedder.linear_2", D, D);
  linear("condition_embedder.time_proj", 6 * D, D);
  linear("condition_embedder.text_embedder.linear_1", D, c.text_dim);
  linear("condition_embedder.text_embedder.linear_2", D, D);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    for (const char* attn : {"attn1", "attn2"}) {
      for (const char* proj : {"to_q", "to_k", "to_v", "to_out.0"}) linear(b + attn + "." + proj, D, D);
      norm(b + attn + ".norm_q.weight");
      norm(b + attn + ".norm_k.weight");
    }
    if (c.cross_attn_norm) {
      norm(b + "norm2.weight");
      w[b + "norm2.bias"] = at::zeros({D}, opts);
    }
    linear(b + "ffn.net.0.proj", c.ffn_dim, D);
    linear(b + "ffn.net.2", D, c.ffn_dim);
    w[b + "scale_shift_table"] = at::randn({1, 6, D}, opts) / std::sqrt(static_cast<double>(D));
  }
  w["scale_shift_table"] = at::randn({1, 2, D}, opts) / std::sqrt(static_cast<double>(D));
  linear("proj_out", c.out_channels * c.patch_volume(), D);
  return WeightStore::FromTensors(std::move(w));
}

}  // namespace stas::bench
