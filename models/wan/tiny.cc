#include "models/wan/tiny.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <iterator>

namespace stas::models::wan {
namespace {

// Architecture.
constexpr int64_t kDim = 128, kHeads = 8, kHeadDim = 16, kFfn = 256, kLayers = 3;
constexpr int64_t kLatentChannels = 16, kTextDim = 32, kFreqDim = 256;
constexpr int64_t kPatchInputs = kLatentChannels * 4;  // patch (1, 2, 2)

// Residual-stream layout of the planted mechanism (block 0):
//  - noise channels [0, 64): the latent patch, permuted with signs and scaled down;
//  - probe channels [64, 94): a local average of the noise over a window that is narrower at the
//    first latent frame and at the first/last row of a frame (edge tokens have fewer neighbours);
//  - reference channels [94, 124): the same noise averaged over the token's own row only;
//  - planted channels 124..126: a multiple of the probes' share of the probe+reference energy.
// The averages' energy goes like the sum of squared attention weights, so it is larger where the
// window is cut off; dividing by the reference (through the LayerNorm) cancels the 1/columns factor,
// which keeps the hierarchy independent of the resolution.
constexpr int64_t kNoiseCount = 64;
constexpr int64_t kProbeBegin = 64, kReferenceBegin = 94, kProbeCount = 30;
constexpr int64_t kPlanted[] = {124, 125, 126};
constexpr double kPlantedGain[] = {36.0, -28.0, 22.0};
constexpr double kNoiseScale = 0.05;
// Reference energy 4x the probe's interior energy: the probe's share stays nearly proportional to the
// probe energy, so the LayerNorm compresses the hierarchy little.
constexpr double kReferenceValueScale = 2.0;
constexpr double kDetectorGain = 0.5;  // FFN units gelu(+g x) + gelu(-g x) ~ 0.8 g^2 x^2
// Planted gate = kGateBase + kGateTime * silu(silu(4 sin(t / 1000))): ~1.08 at t = 999, 0.3 at t = 0.
constexpr double kGateBase = 0.3, kGateTime = 0.25;
constexpr int64_t kSlowSinFeature = kFreqDim / 2 + 96;  // sin(t * 10000^(-96/128)) = sin(t / 1000)

// RoPE pairs inside a head of 16: frame axis pairs (0,1) (2,3) ... with frequencies 1, 0.1, 0.01,
// 0.001; row axis (8,9) 1 and (10,11) 0.01; column axis (12,13) 1 and (14,15) 0.01.
constexpr int64_t kFramePair = 2, kRowPairFast = 8, kRowPairSlow = 10;

// A pair with q = (a, 0) and k = (b cos phi, b sin phi) scores a b cos(theta d - phi) before the
// 1/sqrt(16) scale, d = query position - key position: a peak at d = phi / theta, about
// -A theta^2 (d - d0)^2 / 2 around it with A = a b / 4.
struct WindowPair {
  int64_t dim;
  double amplitude;  // A, in softmax-score units
  double phase;
};

// Probe window: frames {same, previous} (centre 0.5, curvature 8), rows +-1 (about e^-1 per row, the
// 0.01-frequency pair suppresses the fast pair's aliasing at 2 pi rows), columns uniform.
const WindowPair kProbeWindow[] = {
    {kFramePair, 800.0, 0.05}, {kRowPairFast, 1.0 / (1.0 - std::cos(1.0)), 0.0}, {kRowPairSlow, 2200.0, 0.0}};
// Reference window: the token's own frame and row (neighbours below e^-8), columns uniform.
const WindowPair kReferenceWindow[] = {
    {kFramePair, 1600.0, 0.0}, {kRowPairFast, 8.0 / (1.0 - std::cos(1.0)), 0.0}, {kRowPairSlow, 4400.0, 0.0}};

class Random {
 public:
  explicit Random(uint64_t seed) : generator_(at::detail::createCPUGenerator(seed)) {}
  at::Tensor Normal(at::IntArrayRef shape, double stddev) {
    return at::randn(shape, generator_, at::TensorOptions().dtype(at::kFloat)) * stddev;
  }
  at::Tensor Permutation(int64_t n) { return at::randperm(n, generator_, at::TensorOptions().dtype(at::kLong)); }
  at::Tensor Signs(int64_t n) {
    return at::randint(0, 2, {n}, generator_, at::TensorOptions().dtype(at::kFloat)) * 2 - 1;
  }

 private:
  at::Generator generator_;
};

at::Tensor Zeros(at::IntArrayRef shape) { return at::zeros(shape, at::kFloat); }
at::Tensor Ones(at::IntArrayRef shape) { return at::ones(shape, at::kFloat); }

// Zeroes the rows of `weight` ([out, in]) that write the planted channels, so a block passes them through.
at::Tensor SparePlantedRows(at::Tensor weight) {
  for (int64_t c : kPlanted) weight[c].zero_();
  return weight;
}

// Self-attention q/k of block 0: constant (zero weights, a bias) so the scores depend on relative
// position only. RMSNorm maps a 0/1 bias b to b / rms(b) * weight, so the norm weight sets each value.
void PlantWindowQk(std::map<std::string, at::Tensor>& t, const std::string& prefix) {
  at::Tensor q = Zeros({kDim}), k = Zeros({kDim});
  auto place = [&](int64_t head, const WindowPair* pairs, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      const double magnitude = std::sqrt(4.0 * pairs[i].amplitude);  // a = b, a b / 4 = A
      const int64_t d = head * kHeadDim + pairs[i].dim;
      q[d] = magnitude;
      k[d] = magnitude * std::cos(pairs[i].phase);
      k[d + 1] = magnitude * std::sin(pairs[i].phase);
    }
  };
  place(0, kProbeWindow, 3);
  place(1, kProbeWindow, 3);
  place(2, kReferenceWindow, 3);
  place(3, kReferenceWindow, 3);
  for (auto [name, values] : {std::pair<const char*, at::Tensor>{"q", q}, {"k", k}}) {
    at::Tensor used = (values != 0).to(at::kFloat);
    const double rms = std::sqrt(used.sum().item<double>() / kDim);
    t[prefix + "to_" + name + ".weight"] = Zeros({kDim, kDim});
    t[prefix + "to_" + name + ".bias"] = used;
    t[prefix + "norm_" + name + ".weight"] = at::where(values != 0, values * rms, Ones({kDim}));
  }
}

void RandomAttention(std::map<std::string, at::Tensor>& t, const std::string& prefix, Random& rng, bool silent) {
  const double s = 1.0 / std::sqrt(static_cast<double>(kDim));
  for (const char* p : {"to_q", "to_k", "to_v"}) {
    t[prefix + p + ".weight"] = rng.Normal({kDim, kDim}, s);
    t[prefix + p + ".bias"] = Zeros({kDim});
  }
  t[prefix + "norm_q.weight"] = Ones({kDim});
  t[prefix + "norm_k.weight"] = Ones({kDim});
  t[prefix + "to_out.0.weight"] = silent ? Zeros({kDim, kDim}) : SparePlantedRows(rng.Normal({kDim, kDim}, s));
  t[prefix + "to_out.0.bias"] = Zeros({kDim});
}

void PlantingBlock(std::map<std::string, at::Tensor>& t, Random& rng) {
  const std::string b = "blocks.0.";
  PlantWindowQk(t, b + "attn1.");
  // Values: heads 0-1 (probe, dims 0..29) and 2-3 (reference, dims 32..61) copy noise channels.
  const at::Tensor perm = rng.Permutation(kNoiseCount);
  const at::Tensor signs = rng.Signs(kNoiseCount);
  const auto perm_of = perm.accessor<int64_t, 1>();
  const auto sign_of = signs.accessor<float, 1>();
  at::Tensor v = Zeros({kDim, kDim}), out = Zeros({kDim, kDim});
  auto v_at = v.accessor<float, 2>();
  auto out_at = out.accessor<float, 2>();
  for (int64_t r = 0; r < kProbeCount; ++r) {
    const int64_t probe_dim = r, reference_dim = 2 * kHeadDim + r;
    v_at[probe_dim][perm_of[r]] = sign_of[r];
    // The same noise channel as the probe: the two energies then fluctuate together, which steadies
    // their ratio from token to token.
    v_at[reference_dim][perm_of[r]] = static_cast<float>(sign_of[r] * kReferenceValueScale);
    out_at[kProbeBegin + r][probe_dim] = 1.0f;
    out_at[kReferenceBegin + r][reference_dim] = 1.0f;
  }
  t[b + "attn1.to_v.weight"] = v;
  t[b + "attn1.to_v.bias"] = Zeros({kDim});
  t[b + "attn1.to_out.0.weight"] = out;
  t[b + "attn1.to_out.0.bias"] = Zeros({kDim});
  RandomAttention(t, b + "attn2.", rng, /*silent=*/true);
  t[b + "norm2.weight"] = Ones({kDim});
  t[b + "norm2.bias"] = Zeros({kDim});
  // Energy detector: units +-g x_c per probe channel; their GELUs sum to ~0.8 g^2 x_c^2.
  at::Tensor ffn_in = Zeros({kFfn, kDim}), ffn_out = Zeros({kDim, kFfn});
  auto ffn_in_at = ffn_in.accessor<float, 2>();
  for (int64_t c = 0; c < kProbeCount; ++c) {
    ffn_in_at[2 * c][kProbeBegin + c] = static_cast<float>(kDetectorGain);
    ffn_in_at[2 * c + 1][kProbeBegin + c] = static_cast<float>(-kDetectorGain);
  }
  for (size_t i = 0; i < std::size(kPlanted); ++i) ffn_out[kPlanted[i]].narrow(0, 0, 2 * kProbeCount).fill_(kPlantedGain[i]);
  t[b + "ffn.net.0.proj.weight"] = ffn_in;
  t[b + "ffn.net.0.proj.bias"] = Zeros({kFfn});
  t[b + "ffn.net.2.weight"] = ffn_out;
  t[b + "ffn.net.2.bias"] = Zeros({kDim});
  // Modulation: no shift/scale; gate 1 on the probe/reference channels, the planted channels' FFN gate.
  at::Tensor table = Zeros({1, 6, kDim});
  table[0][2].narrow(0, kProbeBegin, 2 * kProbeCount).fill_(1.0);
  for (int64_t c : kPlanted) table[0][5][c] = kGateBase;
  t[b + "scale_shift_table"] = table;
}

void GenericBlock(std::map<std::string, at::Tensor>& t, int64_t index, Random& rng) {
  const std::string b = "blocks." + std::to_string(index) + ".";
  RandomAttention(t, b + "attn1.", rng, /*silent=*/false);
  RandomAttention(t, b + "attn2.", rng, /*silent=*/false);
  t[b + "norm2.weight"] = Ones({kDim});
  t[b + "norm2.bias"] = Zeros({kDim});
  t[b + "ffn.net.0.proj.weight"] = rng.Normal({kFfn, kDim}, 1.0 / std::sqrt(static_cast<double>(kDim)));
  t[b + "ffn.net.0.proj.bias"] = Zeros({kFfn});
  t[b + "ffn.net.2.weight"] = SparePlantedRows(rng.Normal({kDim, kFfn}, 1.0 / std::sqrt(static_cast<double>(kFfn))));
  t[b + "ffn.net.2.bias"] = Zeros({kDim});
  t[b + "scale_shift_table"] = rng.Normal({1, 6, kDim}, 1.0 / std::sqrt(static_cast<double>(kDim)));
}

}  // namespace

Json TinyWanTransformerConfigJson() {
  return Json{{"_class_name", "WanTransformer3DModel"},
              {"patch_size", {1, 2, 2}},
              {"num_attention_heads", kHeads},
              {"attention_head_dim", kHeadDim},
              {"in_channels", kLatentChannels},
              {"out_channels", kLatentChannels},
              {"text_dim", kTextDim},
              {"freq_dim", kFreqDim},
              {"ffn_dim", kFfn},
              {"num_layers", kLayers},
              {"cross_attn_norm", true},
              {"qk_norm", "rms_norm_across_heads"},
              {"eps", 1e-6},
              {"image_dim", nullptr},
              {"added_kv_proj_dim", nullptr},
              {"rope_max_seq_len", 1024}};
}

std::vector<int64_t> TinyWanPlantedChannels() { return std::vector<int64_t>(std::begin(kPlanted), std::end(kPlanted)); }

std::map<std::string, at::Tensor> TinyWanTransformerTensors(uint64_t seed) {
  Random rng(seed);
  std::map<std::string, at::Tensor> t;

  // Patch embedding: each noise channel is one latent patch value (permuted, signed, scaled down so
  // the probes dominate block 0's second LayerNorm); the other channels start at zero.
  at::Tensor patch = Zeros({kDim, kPatchInputs});
  const at::Tensor perm = rng.Permutation(kPatchInputs);
  const at::Tensor signs = rng.Signs(kPatchInputs);
  auto patch_at = patch.accessor<float, 2>();
  for (int64_t c = 0; c < kNoiseCount; ++c)
    patch_at[c][perm.accessor<int64_t, 1>()[c]] = static_cast<float>(signs.accessor<float, 1>()[c] * kNoiseScale);
  t["patch_embedding.weight"] = patch.reshape({kDim, kLatentChannels, 1, 2, 2});
  t["patch_embedding.bias"] = Zeros({kDim});

  // Time: embedding channel 0 = silu(4 sin(t / 1000)) drives the planted gate; the rest is small noise.
  const std::string ce = "condition_embedder.";
  at::Tensor time_in = rng.Normal({kDim, kFreqDim}, 0.02);
  time_in[0].zero_();
  time_in[0][kSlowSinFeature] = 4.0;
  at::Tensor time_out = rng.Normal({kDim, kDim}, 0.02);
  time_out[0].zero_();
  time_out[0][0] = 1.0;
  at::Tensor time_proj = Zeros({6 * kDim, kDim});
  for (int64_t c : kPlanted) time_proj[5 * kDim + c][0] = kGateTime;
  t[ce + "time_embedder.linear_1.weight"] = time_in;
  t[ce + "time_embedder.linear_1.bias"] = Zeros({kDim});
  t[ce + "time_embedder.linear_2.weight"] = time_out;
  t[ce + "time_embedder.linear_2.bias"] = Zeros({kDim});
  t[ce + "time_proj.weight"] = time_proj;
  t[ce + "time_proj.bias"] = Zeros({6 * kDim});
  t[ce + "text_embedder.linear_1.weight"] = rng.Normal({kDim, kTextDim}, 1.0 / std::sqrt(static_cast<double>(kTextDim)));
  t[ce + "text_embedder.linear_1.bias"] = Zeros({kDim});
  t[ce + "text_embedder.linear_2.weight"] = rng.Normal({kDim, kDim}, 1.0 / std::sqrt(static_cast<double>(kDim)));
  t[ce + "text_embedder.linear_2.bias"] = Zeros({kDim});

  PlantingBlock(t, rng);
  for (int64_t i = 1; i < kLayers; ++i) GenericBlock(t, i, rng);

  // Output: the planted channels do not feed the projection directly (only through the LayerNorm).
  t["scale_shift_table"] = rng.Normal({1, 2, kDim}, 1.0 / std::sqrt(static_cast<double>(kDim)));
  at::Tensor proj = rng.Normal({kLatentChannels * 4, kDim}, 4.0 / std::sqrt(static_cast<double>(kDim)));
  for (int64_t c : kPlanted) proj.select(1, c).zero_();
  t["proj_out.weight"] = proj;
  t["proj_out.bias"] = Zeros({kLatentChannels * 4});
  return t;
}

WeightStore TinyWanTransformerWeights(uint64_t seed) { return WeightStore::FromTensors(TinyWanTransformerTensors(seed)); }

}  // namespace stas::models::wan
