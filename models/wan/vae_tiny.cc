#include "models/wan/vae_tiny.h"

#include <cmath>

#include "common/check.h"
#include "models/wan/vae.h"

namespace stas::models::wan {

namespace {

constexpr int64_t kTinyLatentChannels = 16;

// splitmix64: a tiny, well-mixed generator whose output does not depend on the platform.
uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t HashName(const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  return h;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Uniform values with mean `center` and standard deviation `stddev`; each tensor draws from its own
// stream (seed x name), so adding a tensor never changes the others.
at::Tensor UniformTensor(const std::vector<int64_t>& shape, uint64_t seed, const std::string& name, double center,
                         double stddev) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  float* data = t.data_ptr<float>();
  uint64_t state = seed ^ HashName(name);
  const double half_width = std::sqrt(3.0) * stddev;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double u = static_cast<double>(SplitMix64(&state) >> 11) * 0x1.0p-53;  // [0, 1)
    data[i] = static_cast<float>(center + (2.0 * u - 1.0) * half_width);
  }
  return t;
}

}  // namespace

Json TinyWanVaeConfigJson() {
  Json mean = Json::array(), stdv = Json::array();
  // Mild, distinct per-channel statistics, so de-normalization is visible in tests.
  for (int64_t c = 0; c < kTinyLatentChannels; ++c) {
    mean.push_back(0.05 * static_cast<double>(c % 5 - 2));
    stdv.push_back(1.0 + 0.05 * static_cast<double>(c % 4));
  }
  return Json{{"_class_name", "AutoencoderKLWan"},
              {"base_dim", 8},
              {"decoder_base_dim", nullptr},
              {"z_dim", kTinyLatentChannels},
              {"dim_mult", {1, 2, 2, 2}},
              {"num_res_blocks", 1},
              {"attn_scales", Json::array()},
              {"temperal_downsample", {false, true, true}},
              {"dropout", 0.0},
              {"latents_mean", mean},
              {"latents_std", stdv},
              {"is_residual", false},
              {"in_channels", 3},
              {"out_channels", 3},
              {"patch_size", nullptr},
              {"scale_factor_temporal", 4},
              {"scale_factor_spatial", 8}};
}

std::map<std::string, at::Tensor> TinyWanVaeTensors(uint64_t seed) {
  auto config = WanVaeConfig::FromJson(TinyWanVaeConfigJson());
  STAS_CHECK(config.ok()) << config.status().ToString();
  auto shapes = WanVaeDecoder::WeightShapes(*config);
  STAS_CHECK(shapes.ok()) << shapes.status().ToString();
  std::map<std::string, at::Tensor> weights;
  for (const auto& [name, shape] : *shapes) {
    int64_t fan_in = 1;
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
    double center = 0.0, stddev = 0.0;
    if (EndsWith(name, ".gamma")) {
      center = 1.0;
      stddev = 0.1;
    } else if (EndsWith(name, ".bias")) {
      stddev = 0.02;
    } else {
      // Variance-preserving weights; the second conv of a residual block is damped so the residual
      // stream stays well-scaled through the stack, and the output conv is sized so most pixels land
      // inside [-1, 1] rather than on the clamp.
      double gain = 1.0;
      if (EndsWith(name, "conv2.weight")) gain = 0.5;
      if (name == "decoder.conv_out.weight") gain = 1.2;
      stddev = gain / std::sqrt(static_cast<double>(fan_in));
    }
    weights[name] = UniformTensor(shape, seed, name, center, stddev);
  }
  return weights;
}

WeightStore TinyWanVaeWeights(uint64_t seed) { return WeightStore::FromTensors(TinyWanVaeTensors(seed)); }

}  // namespace stas::models::wan
