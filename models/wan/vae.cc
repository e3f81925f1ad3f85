#include "models/wan/vae.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include "common/check.h"
#include "common/torch_compat.h"
#include "models/dit.h"

namespace stas::models::wan {

namespace {

// diffusers' defaults for AutoencoderKLWan: the Wan2.1 latent statistics.
const std::vector<double> kWan21LatentsMean = {-0.7571, -0.7089, -0.9113, 0.1075,  -0.1745, 0.9653,  -0.1517, 1.5508,
                                               0.4134,  -0.0715, 0.5517,  -0.3632, -0.1922, -0.9497, 0.2503,  -0.2921};
const std::vector<double> kWan21LatentsStd = {2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                                              3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160};

// Reads `key` as T (default when missing or null); type errors name the key.
template <typename T>
T Field(const Json& j, const std::string& key, T fallback) {
  try {
    return JsonValueOr<T>(j, key, std::move(fallback));
  } catch (const std::exception& e) {
    throw std::runtime_error("field '" + key + "': " + e.what());
  }
}

std::string ShapeString(const at::Tensor& t) {
  std::ostringstream ss;
  ss << t.sizes();
  return ss.str();
}

// Where module loaders get their tensors: a WeightReader view that records every key it is asked for
// (so Load can reject checkpoint tensors the config did not account for), or, without a reader, a
// dry run that only lists the names and shapes the loaders ask for (undefined tensors come back).
class ParamSource {
 public:
  struct Shared {
    std::optional<WeightReader> reader;
    std::set<std::string> used;
    std::vector<std::pair<std::string, std::vector<int64_t>>> requested;
  };
  ParamSource(std::shared_ptr<Shared> shared, std::string prefix) : shared_(std::move(shared)), prefix_(std::move(prefix)) {}

  at::Tensor Require(const std::string& name, at::IntArrayRef shape) const {
    const std::string full = prefix_ + name;
    shared_->used.insert(full);
    shared_->requested.emplace_back(full, shape.vec());
    return shared_->reader ? shared_->reader->Require(full, shape) : at::Tensor();
  }
  // Optional tensors are loaded when present and never listed by a dry run.
  std::optional<at::Tensor> Optional(const std::string& name, at::IntArrayRef shape) const {
    if (!shared_->reader || !shared_->reader->store().Has(prefix_ + name)) return std::nullopt;
    return Require(name, shape);
  }
  ParamSource Sub(const std::string& prefix) const { return ParamSource(shared_, prefix_ + prefix); }

 private:
  std::shared_ptr<Shared> shared_;
  std::string prefix_;
};

// Per-decode mutable state: the frame caches of the causal convolutions, indexed by slot.
struct DecodeState {
  std::vector<at::Tensor> caches;
};

// A Conv3d that is causal in time: (kt - 1) frames of history before every input frame, zeros before
// the start. With a slot, the history is carried across calls, so decoding a sequence piece by piece
// equals decoding it whole.
struct CausalConv3d {
  at::Tensor weight;
  at::Tensor bias;
  int64_t history = 0;  // kt - 1 (upstream: time padding 2p in front, none behind)
  int64_t pad_h = 0;
  int64_t pad_w = 0;
  int slot = -1;

  static CausalConv3d Load(const ParamSource& r, int64_t out, int64_t in, int64_t kt, int64_t ks, int* slots) {
    CausalConv3d c;
    c.weight = r.Require("weight", {out, in, kt, ks, ks});
    c.bias = r.Require("bias", {out});
    c.history = kt - 1;
    c.pad_h = c.pad_w = (ks - 1) / 2;
    if (c.history > 0) c.slot = (*slots)++;
    return c;
  }

  at::Tensor Forward(const at::Tensor& x, DecodeState* state) const {
    if (history == 0) return at::conv3d(x, weight, bias, {1, 1, 1}, {0, pad_h, pad_w});
    STAS_CHECK(state != nullptr && slot >= 0 && slot < static_cast<int>(state->caches.size()));
    at::Tensor& cache = state->caches[slot];
    if (!cache.defined()) {
      std::vector<int64_t> shape = x.sizes().vec();
      shape[2] = history;
      cache = at::zeros(shape, x.options());
    }
    at::Tensor input = at::cat({cache, x}, 2);
    // A copy, so the cache does not pin the whole concatenated input.
    cache = input.narrow(2, input.size(2) - history, history).clone(at::MemoryFormat::Contiguous);
    return at::conv3d(input, weight, bias, {1, 1, 1}, {0, pad_h, pad_w});
  }
};

// RMS norm over the channel dimension (dim 1): x / max(||x||_2, 1e-12) * sqrt(C) * gamma (+ bias).
// The normalization runs in float32 for reduced-precision inputs, as upstream does.
struct RmsNorm {
  at::Tensor gamma;  // [C, 1, 1(, 1)]: broadcasts against [N, C, H, W] or [B, C, T, H, W]
  at::Tensor bias;   // undefined when absent
  double scale = 1.0;

  static RmsNorm Load(const ParamSource& r, int64_t channels, bool images) {
    RmsNorm n;
    std::vector<int64_t> shape = {channels, 1, 1};
    if (!images) shape.push_back(1);
    n.gamma = r.Require("gamma", shape);
    if (auto b = r.Optional("bias", shape)) n.bias = *b;
    n.scale = std::sqrt(static_cast<double>(channels));
    return n;
  }

  at::Tensor Forward(const at::Tensor& x) const {
    const bool upcast = x.scalar_type() != at::kFloat && x.scalar_type() != at::kDouble;
    at::Tensor xf = upcast ? x.to(at::kFloat) : x;
    std::vector<int64_t> channel_dim = {1};
    at::Tensor norm = at::linalg_vector_norm(xf, 2, at::IntArrayRef(channel_dim), /*keepdim=*/true);
    at::Tensor y = xf / norm.clamp_min(1e-12);
    if (upcast) y = y.to(x.scalar_type());
    y.mul_(scale).mul_(gamma);
    if (bias.defined()) y.add_(bias);
    return y;
  }
};

at::Tensor SiluInPlace(at::Tensor x) {
  at::silu_(x);
  return x;
}

struct ResidualBlock {
  RmsNorm norm1, norm2;
  CausalConv3d conv1, conv2;
  std::optional<CausalConv3d> shortcut;  // 1x1x1 when the channel count changes

  static ResidualBlock Load(const ParamSource& r, int64_t in, int64_t out, int* slots) {
    ResidualBlock b;
    b.norm1 = RmsNorm::Load(r.Sub("norm1."), in, /*images=*/false);
    b.conv1 = CausalConv3d::Load(r.Sub("conv1."), out, in, 3, 3, slots);
    b.norm2 = RmsNorm::Load(r.Sub("norm2."), out, /*images=*/false);
    b.conv2 = CausalConv3d::Load(r.Sub("conv2."), out, out, 3, 3, slots);
    if (in != out) b.shortcut = CausalConv3d::Load(r.Sub("conv_shortcut."), out, in, 1, 1, slots);
    return b;
  }

  at::Tensor Forward(const at::Tensor& x, DecodeState* state) const {
    at::Tensor h = SiluInPlace(norm1.Forward(x));
    h = conv1.Forward(h, state);
    h = SiluInPlace(norm2.Forward(h));
    h = conv2.Forward(h, state);
    return h.add_(shortcut ? shortcut->Forward(x, nullptr) : x);
  }
};

// Single-head self-attention over the pixels of each frame (no temporal mixing).
struct AttentionBlock {
  RmsNorm norm;
  at::Tensor qkv_weight, qkv_bias, proj_weight, proj_bias;

  static AttentionBlock Load(const ParamSource& r, int64_t c) {
    AttentionBlock a;
    a.norm = RmsNorm::Load(r.Sub("norm."), c, /*images=*/true);
    a.qkv_weight = r.Require("to_qkv.weight", {3 * c, c, 1, 1});
    a.qkv_bias = r.Require("to_qkv.bias", {3 * c});
    a.proj_weight = r.Require("proj.weight", {c, c, 1, 1});
    a.proj_bias = r.Require("proj.bias", {c});
    return a;
  }

  at::Tensor Forward(const at::Tensor& x) const {
    const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
    at::Tensor frames = norm.Forward(x.permute({0, 2, 1, 3, 4}).reshape({b * t, c, h, w}));
    at::Tensor qkv = at::conv2d(frames, qkv_weight, qkv_bias);                 // [bt, 3c, h, w]
    qkv = qkv.reshape({b * t, 1, 3 * c, h * w}).transpose(2, 3).contiguous();  // [bt, 1, hw, 3c]
    auto parts = qkv.chunk(3, -1);
    at::Tensor out = compat::ScaledDotProductAttention(parts[0], parts[1], parts[2], 1.0 / std::sqrt(double(c)));
    out = out.squeeze(1).transpose(1, 2).reshape({b * t, c, h, w});
    out = at::conv2d(out, proj_weight, proj_bias);
    return out.view({b, t, c, h, w}).permute({0, 2, 1, 3, 4}).add(x);
  }
};

// Nearest-neighbour 2x upsampling of [N, C, H, W] (equal to upstream's "nearest-exact" at factor 2).
at::Tensor Upsample2xNearest(const at::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  return x.view({n, c, h, 1, w, 1}).expand({n, c, h, 2, w, 2}).reshape({n, c, 2 * h, 2 * w});
}

// Spatial 2x upsampling (nearest + 3x3 conv) per frame, preceded for temporal levels by a causal
// time conv that turns every frame into two. The first latent frame is never doubled.
struct Upsampler {
  bool temporal = false;
  CausalConv3d time_conv;  // C -> 2C, kernel (3, 1, 1)
  at::Tensor conv_weight, conv_bias;

  static Upsampler Load(const ParamSource& r, int64_t c, int64_t out, bool temporal, int* slots) {
    Upsampler u;
    u.temporal = temporal;
    u.conv_weight = r.Require("resample.1.weight", {out, c, 3, 3});
    u.conv_bias = r.Require("resample.1.bias", {out});
    if (temporal) {
      ParamSource tr = r.Sub("time_conv.");
      u.time_conv.weight = tr.Require("weight", {2 * c, c, 3, 1, 1});
      u.time_conv.bias = tr.Require("bias", {2 * c});
      u.time_conv.history = 2;
      u.time_conv.slot = (*slots)++;
    }
    return u;
  }

  at::Tensor Forward(at::Tensor x, DecodeState* state, bool first_chunk) const {
    const int64_t b = x.size(0), c = x.size(1), h = x.size(3), w = x.size(4);
    if (temporal && !first_chunk) {
      const int64_t t = x.size(2);
      at::Tensor y = time_conv.Forward(x, state);  // [b, 2c, t, h, w]: channel halves are frame pairs
      x = y.view({b, 2, c, t, h, w}).permute({0, 2, 3, 1, 4, 5}).reshape({b, c, 2 * t, h, w});
    }
    const int64_t t = x.size(2);
    at::Tensor frames = x.permute({0, 2, 1, 3, 4}).reshape({b * t, c, h, w});
    frames = at::conv2d(Upsample2xNearest(frames), conv_weight, conv_bias, {1, 1}, {1, 1});
    return frames.view({b, t, frames.size(1), 2 * h, 2 * w}).permute({0, 2, 1, 3, 4});
  }
};

// Wan2.2's parameter-free shortcut around a residual up block: channels duplicated, then folded into
// time (factor_t) and space (factor_s) like a pixel shuffle. On the first chunk the extra leading
// frames are dropped, matching the upsampler that does not double the first frame.
struct DupUpShortcut {
  int64_t out_channels = 0, factor_t = 1, factor_s = 1, repeats = 1;

  at::Tensor Forward(const at::Tensor& x, bool first_chunk) const {
    const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
    at::Tensor y = x.unsqueeze(2).expand({b, c, repeats, t, h, w}).reshape({b, c * repeats, t, h, w});
    y = y.view({b, out_channels, factor_t, factor_s, factor_s, t, h, w})
            .permute({0, 1, 5, 2, 6, 3, 7, 4})
            .reshape({b, out_channels, t * factor_t, h * factor_s, w * factor_s});
    if (first_chunk && factor_t > 1) y = y.narrow(2, factor_t - 1, y.size(2) - (factor_t - 1));
    return y;
  }
};

struct UpBlock {
  std::vector<ResidualBlock> resnets;
  std::optional<Upsampler> upsampler;
  std::optional<DupUpShortcut> shortcut;  // Wan2.2 only

  at::Tensor Forward(const at::Tensor& input, DecodeState* state, bool first_chunk) const {
    at::Tensor x = input;
    for (const auto& r : resnets) x = r.Forward(x, state);
    if (upsampler) x = upsampler->Forward(x, state, first_chunk);
    if (shortcut) x = x + shortcut->Forward(input, first_chunk);
    return x;
  }
};

at::Tensor Unpatchify(const at::Tensor& x, int64_t p) {
  if (p == 1) return x;
  const int64_t b = x.size(0), c = x.size(1) / (p * p), t = x.size(2), h = x.size(3), w = x.size(4);
  // Channel c*p*p + i*p + j lands at (row offset j, column offset i), as upstream lays it out.
  return x.view({b, c, p, p, t, h, w}).permute({0, 1, 4, 5, 3, 6, 2}).reshape({b, c, t, h * p, w * p});
}

}  // namespace

struct WanVaeDecoder::Impl {
  WanVaeConfig config;
  at::TensorOptions options;
  int num_slots = 0;
  CausalConv3d post_quant_conv;
  CausalConv3d conv_in;
  ResidualBlock mid_resnet0, mid_resnet1;
  AttentionBlock mid_attention;
  std::vector<UpBlock> up_blocks;
  RmsNorm norm_out;
  CausalConv3d conv_out;

  // Builds the module tree from `root` (weights, or a dry run that lists names and shapes).
  static std::shared_ptr<Impl> Build(const WanVaeConfig& config, const ParamSource& root, at::TensorOptions options) {
    auto impl = std::make_shared<Impl>();
    impl->config = config;
    impl->options = options;
    ParamSource dec = root.Sub("decoder.");
    int* slots = &impl->num_slots;
    const int64_t z = config.z_dim, n = config.num_levels(), base = config.decoder_base_dim;
    impl->post_quant_conv = CausalConv3d::Load(root.Sub("post_quant_conv."), z, z, 1, 1, slots);

    // Channels per level, deepest first: the mid block works at dims[0], up block i maps dims[i] to dims[i+1].
    std::vector<int64_t> dims = {base * config.dim_mult[n - 1]};
    for (int64_t i = n - 1; i >= 0; --i) dims.push_back(base * config.dim_mult[i]);

    impl->conv_in = CausalConv3d::Load(dec.Sub("conv_in."), dims[0], z, 3, 3, slots);
    impl->mid_resnet0 = ResidualBlock::Load(dec.Sub("mid_block.resnets.0."), dims[0], dims[0], slots);
    impl->mid_attention = AttentionBlock::Load(dec.Sub("mid_block.attentions.0."), dims[0]);
    impl->mid_resnet1 = ResidualBlock::Load(dec.Sub("mid_block.resnets.1."), dims[0], dims[0], slots);

    for (int64_t i = 0; i < n; ++i) {
      ParamSource r = dec.Sub("up_blocks." + std::to_string(i) + ".");
      // Wan2.1 upsamplers halve the channels, so the following block starts from half.
      const int64_t in = (i > 0 && !config.is_residual) ? dims[i] / 2 : dims[i];
      const int64_t out = dims[i + 1];
      const bool up = i != n - 1;
      const bool temporal = up && config.temperal_downsample[n - 2 - i];
      UpBlock block;
      int64_t c = in;
      for (int64_t j = 0; j <= config.num_res_blocks; ++j) {
        block.resnets.push_back(ResidualBlock::Load(r.Sub("resnets." + std::to_string(j) + "."), c, out, slots));
        c = out;
      }
      if (up) {
        if (config.is_residual) {
          block.upsampler = Upsampler::Load(r.Sub("upsampler."), out, out, temporal, slots);
          DupUpShortcut s;
          s.out_channels = out;
          s.factor_t = temporal ? 2 : 1;
          s.factor_s = 2;
          s.repeats = out * s.factor_t * s.factor_s * s.factor_s / in;
          block.shortcut = s;
        } else {
          block.upsampler = Upsampler::Load(r.Sub("upsamplers.0."), out, out / 2, temporal, slots);
        }
      }
      impl->up_blocks.push_back(std::move(block));
    }
    impl->norm_out = RmsNorm::Load(dec.Sub("norm_out."), dims[n], /*images=*/false);
    impl->conv_out = CausalConv3d::Load(dec.Sub("conv_out."), config.out_channels, dims[n], 3, 3, slots);
    return impl;
  }

  // Runs up block `index` onwards on `x`, splitting it into pieces of at most `max_frames` frames
  // (every layer is per-frame or causal, so pieces in order give the same result), then the head.
  Status RunUpBlocks(size_t index, const at::Tensor& x, bool first_chunk, int64_t max_frames, DecodeState* state,
                     int64_t* next_frame, const WanVaeFrameSink& sink) const {
    if (max_frames > 0 && x.size(2) > max_frames) {
      for (int64_t begin = 0; begin < x.size(2); begin += max_frames) {
        const int64_t len = std::min(max_frames, x.size(2) - begin);
        STAS_RETURN_IF_ERROR(RunUpBlocks(index, x.narrow(2, begin, len), first_chunk, max_frames, state, next_frame, sink));
      }
      return Status::Ok();
    }
    if (index < up_blocks.size()) {
      at::Tensor y = up_blocks[index].Forward(x, state, first_chunk);
      return RunUpBlocks(index + 1, y, first_chunk, max_frames, state, next_frame, sink);
    }
    at::Tensor y = conv_out.Forward(SiluInPlace(norm_out.Forward(x)), state);
    y = Unpatchify(y, config.patch_size).clamp_(-1.0, 1.0);
    const int64_t frames = y.size(2);
    STAS_RETURN_IF_ERROR(sink(*next_frame, y));
    *next_frame += frames;
    return Status::Ok();
  }
};

// ---------------------------------------------------------------------------------------------------
// Config

Result<WanVaeConfig> WanVaeConfig::FromJson(const Json& json) {
  WanVaeConfig c;
  Status parsed = CatchConfigErrors("wan vae config", [&] {
    if (!json.is_object()) throw std::runtime_error("not a JSON object");
    c.base_dim = Field<int64_t>(json, "base_dim", 96);
    c.decoder_base_dim = Field<int64_t>(json, "decoder_base_dim", c.base_dim);
    c.z_dim = Field<int64_t>(json, "z_dim", 16);
    c.dim_mult = Field<std::vector<int64_t>>(json, "dim_mult", {1, 2, 4, 4});
    c.num_res_blocks = Field<int64_t>(json, "num_res_blocks", 2);
    c.attn_scales = Field<std::vector<double>>(json, "attn_scales", {});
    c.temperal_downsample = Field<std::vector<bool>>(json, "temperal_downsample", {false, true, true});
    c.latents_mean = Field<std::vector<double>>(json, "latents_mean", kWan21LatentsMean);
    c.latents_std = Field<std::vector<double>>(json, "latents_std", kWan21LatentsStd);
    c.is_residual = Field<bool>(json, "is_residual", false);
    c.in_channels = Field<int64_t>(json, "in_channels", 3);
    c.out_channels = Field<int64_t>(json, "out_channels", 3);
    c.patch_size = Field<int64_t>(json, "patch_size", 1);
    c.scale_factor_temporal = Field<int64_t>(json, "scale_factor_temporal", 4);
    c.scale_factor_spatial = Field<int64_t>(json, "scale_factor_spatial", 8);
  });
  STAS_RETURN_IF_ERROR(parsed);
  Status valid = c.Validate();
  if (!valid.ok()) return valid.WithContext("wan vae config");
  return c;
}

Status WanVaeConfig::Validate() const {
  auto bad = [](const std::string& m) { return InvalidArgument(m); };
  if (base_dim < 1 || decoder_base_dim < 1) return bad("base_dim and decoder_base_dim must be positive");
  if (z_dim < 1) return bad("z_dim must be positive, got " + std::to_string(z_dim));
  if (dim_mult.empty()) return bad("dim_mult must not be empty");
  for (int64_t m : dim_mult)
    if (m < 1) return bad("dim_mult entries must be positive");
  if (num_res_blocks < 0) return bad("num_res_blocks must be >= 0");
  if (temperal_downsample.size() + 1 != dim_mult.size())
    return bad("temperal_downsample has " + std::to_string(temperal_downsample.size()) +
               " entries; dim_mult has " + std::to_string(dim_mult.size()) + " levels, so it needs " +
               std::to_string(dim_mult.size() - 1));
  if (num_levels() > 8) return bad("dim_mult has more than 8 levels");
  if (patch_size < 1) return bad("patch_size must be >= 1 (or null)");
  if (in_channels < 1 || out_channels < 1) return bad("in_channels and out_channels must be positive");
  if (out_channels % (patch_size * patch_size) != 0)
    return bad("out_channels " + std::to_string(out_channels) + " is not divisible by patch_size^2 = " +
               std::to_string(patch_size * patch_size));
  const int64_t n = num_levels();
  if (is_residual) {
    // The duplicate-upsample shortcut spreads in_dim channels over out_dim x factor positions.
    for (int64_t i = 0; i + 1 < n; ++i) {
      const int64_t in = decoder_base_dim * (i == 0 ? dim_mult[n - 1] : dim_mult[n - i]);
      const int64_t out = decoder_base_dim * dim_mult[n - 1 - i];
      const int64_t factor = (temperal_downsample[n - 2 - i] ? 2 : 1) * 4;
      if ((out * factor) % in != 0)
        return bad("residual up block " + std::to_string(i) + ": " + std::to_string(out) + " x " +
                   std::to_string(factor) + " channels are not a multiple of its " + std::to_string(in) +
                   " input channels");
    }
  } else {
    for (int64_t i = 1; i < n; ++i)
      if ((decoder_base_dim * dim_mult[n - i]) % 2 != 0)
        return bad("Wan2.1-style up blocks halve the channels; decoder_base_dim x dim_mult must be even");
  }
  return Status::Ok();
}

int64_t WanVaeConfig::temporal_upsampling() const {
  int64_t f = 1;
  for (bool t : temperal_downsample)
    if (t) f *= 2;
  return f;
}

int64_t WanVaeConfig::spatial_upsampling() const { return (int64_t{1} << (num_levels() - 1)) * patch_size; }

int64_t WanVaeConfig::UpBlocksReach() const {
  // Counted in pixels of the last level (2^(n-1) per latent position), where every reach is whole:
  // each up block's 2 (num_res_blocks + 1) 3x3 convolutions at its level, each upsampler's 3x3
  // convolution one level up, and conv_out. Unpatchify and Wan2.2's shortcut only rearrange.
  const int64_t n = num_levels();
  int64_t pixels = 1;  // conv_out
  for (int64_t i = 0; i < n; ++i) {
    pixels += 2 * (num_res_blocks + 1) * (int64_t{1} << (n - 1 - i));
    if (i < n - 1) pixels += int64_t{1} << (n - 2 - i);
  }
  const int64_t per_latent = int64_t{1} << (n - 1);
  return (pixels + per_latent - 1) / per_latent;
}

int64_t WanVaeConfig::OutputFrames(int64_t latent_frames) const {
  return latent_frames < 1 ? 0 : 1 + temporal_upsampling() * (latent_frames - 1);
}

// ---------------------------------------------------------------------------------------------------
// Helpers for pipelines

Result<at::Tensor> DenormalizeWanLatents(const at::Tensor& latents, const WanVaeConfig& config) {
  if (!latents.defined() || latents.dim() != 5)
    return InvalidArgument("latents must be [B, C, F, H, W], got " + (latents.defined() ? ShapeString(latents) : "none"));
  if (!c10::isFloatingType(latents.scalar_type())) return InvalidArgument("latents must be floating point");
  const auto z = static_cast<size_t>(config.z_dim);
  if (latents.size(1) != config.z_dim)
    return InvalidArgument("latents have " + std::to_string(latents.size(1)) + " channels, the vae z_dim is " +
                           std::to_string(config.z_dim));
  if (config.latents_mean.size() != z || config.latents_std.size() != z)
    return InvalidArgument("vae config latents_mean/latents_std have " + std::to_string(config.latents_mean.size()) +
                           "/" + std::to_string(config.latents_std.size()) + " values, z_dim is " +
                           std::to_string(config.z_dim));
  for (double s : config.latents_std)
    if (!(s != 0.0) || !std::isfinite(s)) return InvalidArgument("vae config latents_std must be finite and non-zero");
  // Upstream builds float32 tensors from the lists, casts them to the latents' dtype and divides by
  // the reciprocal of std; the same steps keep results bit-compatible.
  std::vector<float> mean(config.latents_mean.begin(), config.latents_mean.end());
  std::vector<float> stdv(config.latents_std.begin(), config.latents_std.end());
  const auto opts = latents.options();
  at::Tensor mean_t = at::tensor(at::ArrayRef<float>(mean)).view({1, config.z_dim, 1, 1, 1}).to(opts);
  at::Tensor inv_std = at::tensor(at::ArrayRef<float>(stdv)).view({1, config.z_dim, 1, 1, 1}).to(opts).reciprocal();
  return latents / inv_std + mean_t;
}

at::Tensor WanVideoToFrames(const at::Tensor& video) {
  STAS_CHECK(video.dim() == 5) << "video must be [B, C, T, H, W], got " << video.sizes();
  return (video * 0.5 + 0.5).clamp(0.0, 1.0).permute({0, 2, 1, 3, 4}).contiguous();
}

// ---------------------------------------------------------------------------------------------------
// Decoder

Result<WanVaeDecoder> WanVaeDecoder::Load(const WanVaeConfig& config, const WeightStore& weights,
                                          at::TensorOptions options) {
  Status valid = config.Validate();
  if (!valid.ok()) return valid.WithContext("wan vae config");
  auto shared = std::make_shared<ParamSource::Shared>();
  shared->reader = WeightReader(weights, options);
  auto loaded = LoadModelWeights<std::shared_ptr<Impl>>("wan vae decoder from " + weights.Describe(), [&] {
    return Impl::Build(config, ParamSource(shared, ""), options);
  });
  if (!loaded.ok()) return loaded.status();

  std::vector<std::string> unused;
  for (const auto& name : weights.WithPrefix("decoder.").Names())
    if (!shared->used.count("decoder." + name)) unused.push_back("decoder." + name);
  if (!unused.empty()) {
    std::string list;
    for (size_t i = 0; i < unused.size() && i < 5; ++i) list += (i ? ", " : "") + unused[i];
    if (unused.size() > 5) list += ", ... (" + std::to_string(unused.size()) + " in all)";
    return InvalidArgument("wan vae decoder: " + weights.Describe() + " has decoder weights the config does not use (" +
                           list + "); does the config match the checkpoint?");
  }
  return WanVaeDecoder(std::move(loaded).value());
}

Result<std::vector<std::pair<std::string, std::vector<int64_t>>>> WanVaeDecoder::WeightShapes(
    const WanVaeConfig& config) {
  Status valid = config.Validate();
  if (!valid.ok()) return valid.WithContext("wan vae config");
  auto shared = std::make_shared<ParamSource::Shared>();
  Impl::Build(config, ParamSource(shared, ""), at::TensorOptions());
  return std::move(shared->requested);
}

const WanVaeConfig& WanVaeDecoder::config() const { return impl_->config; }
at::TensorOptions WanVaeDecoder::options() const { return impl_->options; }
int64_t WanVaeDecoder::num_cached_convs() const { return impl_->num_slots; }

Status WanVaeDecoder::DecodeStreaming(const at::Tensor& latents, const WanVaeDecodeOptions& options,
                                      const WanVaeFrameSink& sink) const {
  const WanVaeConfig& config = impl_->config;
  if (!latents.defined() || latents.dim() != 5)
    return InvalidArgument("wan vae decode: latents must be [B, z_dim, F, h, w], got " +
                           (latents.defined() ? ShapeString(latents) : std::string("none")));
  if (latents.size(1) != config.z_dim)
    return InvalidArgument("wan vae decode: latents have " + std::to_string(latents.size(1)) +
                           " channels, the vae z_dim is " + std::to_string(config.z_dim));
  if (latents.size(0) < 1 || latents.size(2) < 1 || latents.size(3) < 1 || latents.size(4) < 1)
    return InvalidArgument("wan vae decode: empty latents " + ShapeString(latents));
  if (!c10::isFloatingType(latents.scalar_type())) return InvalidArgument("wan vae decode: latents must be floating point");
  if (options.max_chunk_frames < 0) return InvalidArgument("wan vae decode: max_chunk_frames must be >= 0");
  if (!sink) return InvalidArgument("wan vae decode: no frame sink");
  const int64_t h = latents.size(3), w = latents.size(4);
  const LatentTile tile = options.tile.value_or(LatentTile{0, h, 0, w});
  if (tile.top < 0 || tile.top >= tile.bottom || tile.bottom > h || tile.left < 0 || tile.left >= tile.right ||
      tile.right > w)
    return InvalidArgument("wan vae decode: tile rows [" + std::to_string(tile.top) + ", " +
                           std::to_string(tile.bottom) + ") columns [" + std::to_string(tile.left) + ", " +
                           std::to_string(tile.right) + ") is empty or outside the " + std::to_string(h) + "x" +
                           std::to_string(w) + " latents");
  const int64_t halo = options.halo.value_or(config.UpBlocksReach());
  if (halo < 0) return InvalidArgument("wan vae decode: halo must be >= 0");
  // The latent window the up blocks see, and where the tile sits in its output.
  const int64_t top = std::max<int64_t>(0, tile.top - halo), bottom = std::min(h, tile.bottom + halo);
  const int64_t left = std::max<int64_t>(0, tile.left - halo), right = std::min(w, tile.right + halo);
  const bool windowed = top > 0 || bottom < h || left > 0 || right < w;
  const bool cropped = windowed || tile.top > 0 || tile.bottom < h || tile.left > 0 || tile.right < w;
  const int64_t s = config.spatial_upsampling();
  const WanVaeFrameSink tile_sink = [&](int64_t first, const at::Tensor& frames) {
    return sink(first, frames.narrow(3, (tile.top - top) * s, (tile.bottom - tile.top) * s)
                           .narrow(4, (tile.left - left) * s, (tile.right - tile.left) * s));
  };
  try {
    const Impl& m = *impl_;
    at::Tensor z = latents.to(m.options.device(), m.options.dtype().toScalarType());
    DecodeState state;
    state.caches.resize(m.num_slots);
    int64_t next_frame = 0;
    for (int64_t f = 0; f < z.size(2); ++f) {
      // post_quant_conv is 1x1x1, so applying it per frame equals applying it to the whole sequence.
      at::Tensor x = m.post_quant_conv.Forward(z.narrow(2, f, 1), nullptr);
      x = m.conv_in.Forward(x, &state);
      x = m.mid_resnet0.Forward(x, &state);
      x = m.mid_attention.Forward(x);
      x = m.mid_resnet1.Forward(x, &state);
      if (windowed) x = x.narrow(3, top, bottom - top).narrow(4, left, right - left).contiguous();
      STAS_RETURN_IF_ERROR(m.RunUpBlocks(0, x, /*first_chunk=*/f == 0, options.max_chunk_frames, &state, &next_frame,
                                         cropped ? tile_sink : sink));
    }
    if (next_frame != config.OutputFrames(z.size(2)))
      return Internal("wan vae decode produced " + std::to_string(next_frame) + " frames, expected " +
                      std::to_string(config.OutputFrames(z.size(2))));
    return Status::Ok();
  } catch (const std::exception& e) {
    return Internal(std::string("wan vae decode: ") + e.what());
  }
}

std::vector<LatentTile> SplitIntoBands(int64_t h, int64_t w, int parts) {
  const bool by_rows = h > w;
  const int64_t length = by_rows ? h : w;
  std::vector<LatentTile> bands;
  if (parts < 1 || length < parts) return bands;
  int64_t begin = 0;
  for (int i = 0; i < parts; ++i) {
    const int64_t end = begin + length / parts + (i < length % parts ? 1 : 0);
    bands.push_back(by_rows ? LatentTile{begin, end, 0, w} : LatentTile{0, h, begin, end});
    begin = end;
  }
  return bands;
}

Status WanVaeDecoder::DecodeShared(const at::Tensor& latents, const WanVaeDecodeOptions& options,
                                   SequenceParallel& group, const WanVaeFrameSink& sink) const {
  if (options.tile) return InvalidArgument("wan vae shared decode: the bands are its own; leave the tile unset");
  if (!latents.defined() || latents.dim() != 5)
    return InvalidArgument("wan vae shared decode: latents must be [B, z_dim, F, h, w]");
  const int64_t h = latents.size(3), w = latents.size(4);
  const std::vector<LatentTile> bands = SplitIntoBands(h, w, group.size());
  if (bands.empty())
    return InvalidArgument("wan vae shared decode: " + std::to_string(h) + "x" + std::to_string(w) +
                           " latents cannot be split over " + std::to_string(group.size()) + " ranks");
  const bool by_rows = h > w;
  const int dim = by_rows ? 3 : 4;
  const int64_t s = impl_->config.spatial_upsampling();
  const int64_t widest = (by_rows ? bands[0].bottom - bands[0].top : bands[0].right - bands[0].left) * s;
  WanVaeDecodeOptions mine = options;
  mine.tile = bands[group.rank()];
  Status sink_error = Status::Ok();
  Status decoded = DecodeStreaming(latents, mine, [&](int64_t first, const at::Tensor& band) -> Status {
    // Bands travel padded to the widest one, flattened: the group gathers equal shapes.
    std::vector<int64_t> padded_shape = band.sizes().vec();
    padded_shape[dim] = widest;
    at::Tensor padded = at::zeros(padded_shape, band.options());
    padded.narrow(dim, 0, band.size(dim)).copy_(band);
    at::Tensor gathered = group.GatherSequence(padded.view({1, -1}));
    std::vector<int64_t> stacked_shape = {static_cast<int64_t>(bands.size())};
    stacked_shape.insert(stacked_shape.end(), padded_shape.begin(), padded_shape.end());
    at::Tensor stacked = gathered.view(stacked_shape);
    std::vector<at::Tensor> parts;
    for (size_t r = 0; r < bands.size(); ++r) {
      const LatentTile& b = bands[r];
      parts.push_back(stacked[static_cast<int64_t>(r)].narrow(dim, 0, (by_rows ? b.bottom - b.top : b.right - b.left) * s));
    }
    if (sink_error.ok()) sink_error = sink(first, at::cat(parts, dim));
    return Status::Ok();
  });
  STAS_RETURN_IF_ERROR(decoded);
  return sink_error;
}

Result<at::Tensor> WanVaeDecoder::Decode(const at::Tensor& latents, const WanVaeDecodeOptions& options) const {
  const WanVaeConfig& config = impl_->config;
  if (!latents.defined() || latents.dim() != 5)
    return InvalidArgument("wan vae decode: latents must be [B, z_dim, F, h, w], got " +
                           (latents.defined() ? ShapeString(latents) : std::string("none")));
  const int64_t s = config.spatial_upsampling();
  at::TensorOptions out_options = impl_->options;
  if (options.output_device) out_options = out_options.device(*options.output_device);
  if (options.output_dtype) out_options = out_options.dtype(*options.output_dtype);
  at::Tensor video;
  try {
    const LatentTile tile = options.tile.value_or(LatentTile{0, latents.size(3), 0, latents.size(4)});
    video = at::empty({latents.size(0), config.video_channels(), config.OutputFrames(latents.size(2)),
                       std::max<int64_t>(0, tile.bottom - tile.top) * s, std::max<int64_t>(0, tile.right - tile.left) * s},
                      out_options);
  } catch (const std::exception& e) {
    return Internal(std::string("wan vae decode: allocating the output: ") + e.what());
  }
  Status st = DecodeStreaming(latents, options, [&](int64_t first, const at::Tensor& frames) -> Status {
    if (first < 0 || first + frames.size(2) > video.size(2) ||
        frames.sizes() != video.narrow(2, first, frames.size(2)).sizes())
      return Internal("wan vae decode: piece of shape " + ShapeString(frames) + " does not fit the output " +
                      ShapeString(video));
    video.narrow(2, first, frames.size(2)).copy_(frames);
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return video;
}

// ---------------------------------------------------------------------------------------------------
// Fixture runner

Result<std::map<std::string, at::Tensor>> RunWanVaeDecoderFixture(const Fixture& fixture) {
  STAS_ASSIGN_OR_RETURN(WanVaeConfig config, WanVaeConfig::FromJson(fixture.config()));
  STAS_ASSIGN_OR_RETURN(WanVaeDecoder decoder,
                        WanVaeDecoder::Load(config, fixture.weights(), at::TensorOptions().dtype(at::kFloat)));
  STAS_ASSIGN_OR_RETURN(at::Tensor latents, fixture.Io("latents"));
  STAS_ASSIGN_OR_RETURN(at::Tensor video, decoder.Decode(latents));
  return std::map<std::string, at::Tensor>{{"video", video}};
}

}  // namespace stas::models::wan
