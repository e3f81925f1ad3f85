#include "models/cogvideox/vae.h"

#include <algorithm>
#include <memory>
#include <set>
#include <sstream>

#include "common/check.h"
#include "common/tracking_weight_reader.h"

namespace stas::models::cogvideox {
namespace {

constexpr double kSpatialNormEps = 1e-6;  // upstream fixes the spatial norms' GroupNorm eps
constexpr int64_t kLatentFramesPerChunk = 2;

std::string ShapeString(at::IntArrayRef sizes) {
  std::ostringstream ss;
  ss << sizes;
  return ss.str();
}

// Nearest-neighbour resize of [B, C, T, H, W] to (t, h, w), index floor(i * in / out) as torch's.
at::Tensor ResizeNearest(const at::Tensor& x, int64_t t, int64_t h, int64_t w) {
  if (x.size(2) == t && x.size(3) == h && x.size(4) == w) return x;
  return at::upsample_nearest3d(x, {t, h, w}, c10::nullopt, c10::nullopt, c10::nullopt);
}

}  // namespace

// Per-decode mutable state: one cached tensor per causal conv (its slot).
struct DecodeCache {
  std::vector<at::Tensor> slots;
};

struct CogVideoXVaeDecoder::CausalConv {
  at::Tensor weight, bias;  // [Cout, Cin, kt, kh, kw]
  int64_t kt = 1;
  int slot = -1;            // cache slot when kt > 1

  // Pads time in front with kt-1 frames (the cached ones, or copies of the first frame on the first chunk),
  // spatially with zeros, and remembers the last kt-1 padded frames for the next chunk.
  at::Tensor Forward(const at::Tensor& x, DecodeCache& cache) const {
    at::Tensor input = x;
    if (kt > 1) {
      at::Tensor& cached = cache.slots[slot];
      at::Tensor front = cached.defined() ? cached : x.narrow(2, 0, 1).expand({-1, -1, kt - 1, -1, -1});
      input = at::cat({front, x}, 2);
      cached = input.narrow(2, input.size(2) - (kt - 1), kt - 1).clone();
    }
    const int64_t ph = (weight.size(3) - 1) / 2, pw = (weight.size(4) - 1) / 2;
    return at::conv3d(input, weight, bias, {1, 1, 1}, {0, ph, pw});
  }
};

struct CogVideoXVaeDecoder::SpatialNorm {
  at::Tensor norm_weight, norm_bias;
  int64_t groups = 32;
  CausalConv conv_y, conv_b;

  // GroupNorm(f) * conv_y(zq') + conv_b(zq'), zq' = zq resized to f; an odd multi-frame f resizes the
  // first latent frame to its first frame alone, as the causal VAE keeps frame 0 separate.
  at::Tensor Forward(const at::Tensor& f, const at::Tensor& zq, DecodeCache& cache) const {
    const int64_t T = f.size(2), H = f.size(3), W = f.size(4);
    at::Tensor z;
    if (T > 1 && T % 2 == 1) {
      z = at::cat({ResizeNearest(zq.narrow(2, 0, 1), 1, H, W),
                   ResizeNearest(zq.narrow(2, 1, zq.size(2) - 1), T - 1, H, W)},
                  2);
    } else {
      z = ResizeNearest(zq, T, H, W);
    }
    at::Tensor y = conv_y.Forward(z, cache);
    at::Tensor b = conv_b.Forward(z, cache);
    return at::group_norm(f, groups, norm_weight, norm_bias, kSpatialNormEps) * y + b;
  }
};

struct CogVideoXVaeDecoder::ResnetBlock {
  SpatialNorm norm1, norm2;
  CausalConv conv1, conv2;
  at::Tensor shortcut_weight, shortcut_bias;  // 1x1x1 conv when channels change

  at::Tensor Forward(const at::Tensor& x, const at::Tensor& zq, DecodeCache& cache) const {
    at::Tensor h = conv1.Forward(at::silu(norm1.Forward(x, zq, cache)), cache);
    h = conv2.Forward(at::silu(norm2.Forward(h, zq, cache)), cache);
    at::Tensor skip = shortcut_weight.defined() ? at::conv3d(x, shortcut_weight, shortcut_bias) : x;
    return h + skip;
  }
};

struct CogVideoXVaeDecoder::UpBlock {
  std::vector<ResnetBlock> resnets;
  bool upsample = false;
  bool compress_time = false;
  at::Tensor up_weight, up_bias;  // Conv2d 3x3, padding 1, applied per frame

  at::Tensor Forward(const at::Tensor& x, const at::Tensor& zq, DecodeCache& cache) const {
    at::Tensor h = x;
    for (const auto& r : resnets) h = r.Forward(h, zq, cache);
    if (!upsample) return h;
    const int64_t T = h.size(2), H = h.size(3), W = h.size(4);
    if (compress_time && T > 1 && T % 2 == 1) {
      // Frame 0 stays single; the rest double in time.
      h = at::cat({ResizeNearest(h.narrow(2, 0, 1), 1, 2 * H, 2 * W),
                   ResizeNearest(h.narrow(2, 1, T - 1), 2 * (T - 1), 2 * H, 2 * W)},
                  2);
    } else if (compress_time && T > 1) {
      h = ResizeNearest(h, 2 * T, 2 * H, 2 * W);
    } else {
      h = ResizeNearest(h, T, 2 * H, 2 * W);
    }
    const int64_t B = h.size(0), C = h.size(1), T2 = h.size(2);
    at::Tensor frames = h.permute({0, 2, 1, 3, 4}).reshape({B * T2, C, 2 * H, 2 * W});
    frames = at::conv2d(frames, up_weight, up_bias, {1, 1}, {1, 1});
    return frames.reshape({B, T2, frames.size(1), 2 * H, 2 * W}).permute({0, 2, 1, 3, 4});
  }
};

struct CogVideoXVaeDecoder::Modules {
  CausalConv conv_in;
  std::vector<ResnetBlock> mid;
  std::vector<UpBlock> up;
  SpatialNorm norm_out;
  CausalConv conv_out;
  int num_cache_slots = 0;
};

// ---------------------------------------------------------------------------------------------------------
// Config

Result<CogVideoXVaeConfig> CogVideoXVaeConfig::FromJson(const Json& json) {
  if (!json.is_object()) return InvalidArgument("CogVideoX VAE config must be a JSON object");
  CogVideoXVaeConfig c;
  std::vector<std::string> up_types;
  std::string act = "silu";
  bool post_quant = false, has_shift = false, has_stats = false, invert = false;
  Status parsed = CatchConfigErrors("CogVideoX VAE config", [&] {
    c.out_channels = JsonValueOr<int64_t>(json, "out_channels", c.out_channels);
    c.block_out_channels = JsonValueOr<std::vector<int64_t>>(json, "block_out_channels", c.block_out_channels);
    c.latent_channels = JsonValueOr<int64_t>(json, "latent_channels", c.latent_channels);
    c.layers_per_block = JsonValueOr<int64_t>(json, "layers_per_block", c.layers_per_block);
    c.norm_num_groups = JsonValueOr<int64_t>(json, "norm_num_groups", c.norm_num_groups);
    c.temporal_compression_ratio = JsonValueOr<int64_t>(json, "temporal_compression_ratio", c.temporal_compression_ratio);
    c.scaling_factor = JsonValueOr<double>(json, "scaling_factor", c.scaling_factor);
    up_types = JsonValueOr<std::vector<std::string>>(json, "up_block_types",
                                                     std::vector<std::string>(c.block_out_channels.size(),
                                                                              "CogVideoXUpBlock3D"));
    act = JsonValueOr<std::string>(json, "act_fn", act);
    post_quant = JsonValueOr<bool>(json, "use_post_quant_conv", false);
    has_shift = json.contains("shift_factor") && !json["shift_factor"].is_null();
    has_stats = (json.contains("latents_mean") && !json["latents_mean"].is_null()) ||
                (json.contains("latents_std") && !json["latents_std"].is_null());
    invert = JsonValueOr<bool>(json, "invert_scale_latents", false);
  });
  STAS_RETURN_IF_ERROR(parsed);
  if (post_quant) return NotImplemented("CogVideoX VAE: use_post_quant_conv is not supported");
  if (has_shift || has_stats || invert)
    return NotImplemented("CogVideoX VAE: shift_factor, latents_mean/std and invert_scale_latents are not supported");
  if (act != "silu" && act != "swish")
    return NotImplemented("CogVideoX VAE: act_fn '" + act + "' is not supported (only silu)");
  if (c.block_out_channels.empty()) return InvalidArgument("CogVideoX VAE: block_out_channels is empty");
  if (up_types.size() != c.block_out_channels.size())
    return InvalidArgument("CogVideoX VAE: up_block_types and block_out_channels differ in length");
  for (const auto& t : up_types)
    if (t != "CogVideoXUpBlock3D")
      return NotImplemented("CogVideoX VAE: up block type '" + t + "' is not supported (CogVideoXUpBlock3D)");
  if (c.norm_num_groups <= 0) return InvalidArgument("CogVideoX VAE: norm_num_groups must be positive");
  for (int64_t ch : c.block_out_channels)
    if (ch <= 0 || ch % c.norm_num_groups != 0)
      return InvalidArgument("CogVideoX VAE: every block_out_channels entry must be a positive multiple of "
                             "norm_num_groups (" + std::to_string(c.norm_num_groups) + "), got " + std::to_string(ch));
  if (c.latent_channels <= 0 || c.out_channels <= 0 || c.layers_per_block < 0)
    return InvalidArgument("CogVideoX VAE: latent_channels, out_channels must be positive, layers_per_block >= 0");
  if (c.temporal_compression_ratio <= 0 || (c.temporal_compression_ratio & (c.temporal_compression_ratio - 1)) != 0)
    return InvalidArgument("CogVideoX VAE: temporal_compression_ratio must be a power of two, got " +
                           std::to_string(c.temporal_compression_ratio));
  if (!(c.scaling_factor > 0)) return InvalidArgument("CogVideoX VAE: scaling_factor must be positive");
  return c;
}

// ---------------------------------------------------------------------------------------------------------
// Loading

Result<CogVideoXVaeDecoder> CogVideoXVaeDecoder::Load(const CogVideoXVaeConfig& config, const WeightStore& weights,
                                                      at::TensorOptions options) {
  return LoadModelWeights<CogVideoXVaeDecoder>(
      "CogVideoX VAE decoder from " + weights.Describe(), [&]() -> Result<CogVideoXVaeDecoder> {
        auto modules = std::make_shared<Modules>();
        TrackingWeightReader reader(weights.WithPrefix("decoder."), options);
        int slots = 0;
        auto conv = [&](const std::string& prefix, int64_t cin, int64_t cout, int64_t k) {
          CausalConv c;
          c.weight = reader.Require(prefix + ".conv.weight", {cout, cin, k, k, k});
          c.bias = reader.Require(prefix + ".conv.bias", {cout});
          c.kt = k;
          if (k > 1) c.slot = slots++;
          return c;
        };
        const int64_t zc = config.latent_channels;
        const int64_t groups = config.norm_num_groups;
        auto norm = [&](const std::string& prefix, int64_t channels) {
          SpatialNorm n;
          n.norm_weight = reader.Require(prefix + ".norm_layer.weight", {channels});
          n.norm_bias = reader.Require(prefix + ".norm_layer.bias", {channels});
          n.groups = groups;
          n.conv_y = conv(prefix + ".conv_y", zc, channels, 1);
          n.conv_b = conv(prefix + ".conv_b", zc, channels, 1);
          return n;
        };
        auto resnet = [&](const std::string& prefix, int64_t cin, int64_t cout) {
          ResnetBlock r;
          r.norm1 = norm(prefix + ".norm1", cin);
          r.conv1 = conv(prefix + ".conv1", cin, cout, 3);
          r.norm2 = norm(prefix + ".norm2", cout);
          r.conv2 = conv(prefix + ".conv2", cout, cout, 3);
          if (cin != cout) {
            r.shortcut_weight = reader.Require(prefix + ".conv_shortcut.weight", {cout, cin, 1, 1, 1});
            r.shortcut_bias = reader.Require(prefix + ".conv_shortcut.bias", {cout});
          }
          return r;
        };
        std::vector<int64_t> channels(config.block_out_channels.rbegin(), config.block_out_channels.rend());
        modules->conv_in = conv("conv_in", zc, channels[0], 3);
        for (int i = 0; i < 2; ++i)
          modules->mid.push_back(resnet("mid_block.resnets." + std::to_string(i), channels[0], channels[0]));
        int64_t temporal_levels = 0;
        while ((int64_t{1} << (temporal_levels + 1)) <= config.temporal_compression_ratio) ++temporal_levels;
        int64_t prev = channels[0];
        for (size_t i = 0; i < channels.size(); ++i) {
          const std::string p = "up_blocks." + std::to_string(i);
          UpBlock up;
          for (int64_t j = 0; j <= config.layers_per_block; ++j) {
            up.resnets.push_back(resnet(p + ".resnets." + std::to_string(j), j == 0 ? prev : channels[i], channels[i]));
          }
          up.upsample = i + 1 < channels.size();
          up.compress_time = static_cast<int64_t>(i) < temporal_levels;
          if (up.upsample) {
            up.up_weight = reader.Require(p + ".upsamplers.0.conv.weight", {channels[i], channels[i], 3, 3});
            up.up_bias = reader.Require(p + ".upsamplers.0.conv.bias", {channels[i]});
          }
          modules->up.push_back(std::move(up));
          prev = channels[i];
        }
        modules->norm_out = norm("norm_out", channels.back());
        modules->conv_out = conv("conv_out", channels.back(), config.out_channels, 3);
        modules->num_cache_slots = slots;

        STAS_RETURN_IF_ERROR(reader.CheckAllUsed("CogVideoX VAE decoder (decoder.*)"));
        CogVideoXVaeDecoder d;
        d.config_ = config;
        d.options_ = options;
        d.modules_ = std::move(modules);
        return d;
      });
}

// ---------------------------------------------------------------------------------------------------------
// Decode

Result<at::Tensor> CogVideoXVaeDecoder::Decode(const at::Tensor& latents) const {
  if (latents.dim() != 5 || latents.size(1) != config_.latent_channels || latents.size(2) < 1)
    return InvalidArgument("CogVideoX VAE: latents must be [B, " + std::to_string(config_.latent_channels) +
                           ", F, h, w], got " + ShapeString(latents.sizes()));
  const Modules& m = *modules_;
  const at::Tensor z = latents.to(options_.device(), options_.dtype().toScalarType());
  const int64_t F = z.size(2);
  // Chunks of kLatentFramesPerChunk latent frames; the first takes the remainder (upstream's split).
  const int64_t chunks = std::max<int64_t>(F / kLatentFramesPerChunk, 1);
  const int64_t remainder = F % kLatentFramesPerChunk;
  DecodeCache cache;
  cache.slots.resize(m.num_cache_slots);
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t begin = kLatentFramesPerChunk * i + (i == 0 ? 0 : remainder);
    const int64_t end = std::min<int64_t>(kLatentFramesPerChunk * (i + 1) + remainder, F);
    const at::Tensor zq = z.narrow(2, begin, end - begin);
    at::Tensor h = m.conv_in.Forward(zq, cache);
    for (const auto& r : m.mid) h = r.Forward(h, zq, cache);
    for (const auto& up : m.up) h = up.Forward(h, zq, cache);
    h = at::silu(m.norm_out.Forward(h, zq, cache));
    out.push_back(m.conv_out.Forward(h, cache));
  }
  return at::cat(out, 2).to(at::kFloat);
}

at::Tensor CogVideoXVideoToFrames(const at::Tensor& video) {
  return (video.to(at::kFloat) * 0.5 + 0.5).clamp(0, 1).permute({0, 2, 1, 3, 4}).contiguous();
}

}  // namespace stas::models::cogvideox
