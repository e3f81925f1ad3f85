#include "models/cogvideox/transformer.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include "common/check.h"
#include "common/tracking_weight_reader.h"
#include "common/torch_compat.h"
#include "models/fused_ops.h"

namespace stas::models::cogvideox {
namespace {

constexpr double kRopeTheta = 10000.0;
constexpr double kTimestepMaxPeriod = 10000.0;
constexpr double kQkNormEps = 1e-6;  // upstream fixes the q/k LayerNorm eps, independent of norm_eps
// Attention scores held at once by the unfused (LibTorch 1.x) attention: 64 Mi floats = 256 MiB. The 5B
// model's full sequence (17776 tokens, 48 heads) would otherwise need 60 GB of scores.
constexpr int64_t kMaxUnfusedScores = int64_t{1} << 26;
constexpr int64_t kFeedForwardChunkRows = 16384;  // as the Wan blocks (models/wan/transformer.cc)

std::string ShapeString(at::IntArrayRef sizes) {
  std::ostringstream ss;
  ss << sizes;
  return ss.str();
}

Status CheckPositive(const char* name, int64_t value) {
  if (value <= 0) return InvalidArgument(std::string(name) + " must be positive, got " + std::to_string(value));
  return Status::Ok();
}

// LayerNorm over the last dim, computed in float32 and returned in `out_dtype`.
at::Tensor LayerNormF32(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps,
                        at::ScalarType out_dtype) {
  at::Tensor w = weight.defined() ? weight.to(at::kFloat) : at::Tensor();
  at::Tensor b = bias.defined() ? bias.to(at::kFloat) : at::Tensor();
  return at::layer_norm(x.to(at::kFloat), {x.size(-1)}, w, b, eps).to(out_dtype);
}

// Sinusoidal timestep features as diffusers' Timesteps: f_i = exp(-ln(10000) i / (half - shift)),
// [sin, cos] or, with flip, [cos, sin]; float32 [N, dim].
at::Tensor TimestepSinusoid(const at::Tensor& t, int64_t dim, bool flip_sin_to_cos, double freq_shift) {
  const int64_t half = dim / 2;
  at::Tensor exponent = at::arange(0, half, t.options().dtype(at::kFloat)) * (-std::log(kTimestepMaxPeriod));
  exponent = exponent / (static_cast<double>(half) - freq_shift);
  at::Tensor args = t.to(at::kFloat).unsqueeze(1) * at::exp(exponent).unsqueeze(0);
  at::Tensor emb = flip_sin_to_cos ? at::cat({at::cos(args), at::sin(args)}, 1)
                                   : at::cat({at::sin(args), at::cos(args)}, 1);
  if (dim % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1});
  return emb;
}

// softmax(q k^T scale) v over [B, H, L, hd]; without a fused kernel, in slices of query rows so the
// score matrix stays bounded (rows are independent, so the result is the same).
at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  const int64_t Lq = q.size(2);
  const int64_t row_cost = std::max<int64_t>(q.size(0) * q.size(1) * k.size(2), 1);
  const int64_t rows = std::max<int64_t>(kMaxUnfusedScores / row_cost, 1);
  if (compat::kHasFusedSdpa || rows >= Lq) return compat::ScaledDotProductAttention(q, k, v, scale);
  std::vector<at::Tensor> parts;
  for (int64_t begin = 0; begin < Lq; begin += rows)
    parts.push_back(compat::ScaledDotProductAttention(q.narrow(2, begin, std::min(rows, Lq - begin)), k, v, scale));
  return at::cat(parts, 2);
}

// The feed-forward's first linear and its GELU: the tanh GELU in the GEMM's epilogue where it can.
at::Tensor LinearGelu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, bool tanh_approximation) {
  if (tanh_approximation) return LinearGeluTanh(x, weight, bias);
  return at::gelu(at::linear(x, weight, bias), "none");
}

LayerNormAffine Affine(const at::Tensor& weight, const at::Tensor& bias) { return {weight, bias}; }

// One axis of RoPE, as upstream's get_1d_rotary_pos_embed (float32): angles = pos x 1/theta^(2i/dim),
// cos/sin repeated pairwise to [S, dim].
std::pair<at::Tensor, at::Tensor> RopeAxis(int64_t dim, const at::Tensor& positions) {
  at::Tensor exponents = at::arange(0, dim, 2, at::kFloat) / static_cast<double>(dim);
  at::Tensor inv_freq = at::reciprocal(at::pow(kRopeTheta, exponents));
  at::Tensor angles = at::outer(positions.to(at::kFloat), inv_freq);
  return {at::repeat_interleave(angles.cos(), 2, 1), at::repeat_interleave(angles.sin(), 2, 1)};
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Config

Result<CogVideoXTransformerConfig> CogVideoXTransformerConfig::FromJson(const Json& json) {
  if (!json.is_object()) return InvalidArgument("CogVideoX transformer config must be a JSON object");
  CogVideoXTransformerConfig c;
  bool has_ofs = false, learned_positions = false;
  std::string timestep_activation = "silu";
  Status parsed = CatchConfigErrors("CogVideoX transformer config", [&] {
    c.num_attention_heads = JsonValueOr<int64_t>(json, "num_attention_heads", c.num_attention_heads);
    c.attention_head_dim = JsonValueOr<int64_t>(json, "attention_head_dim", c.attention_head_dim);
    c.in_channels = JsonValueOr<int64_t>(json, "in_channels", c.in_channels);
    // Upstream: out_channels may be null, meaning in_channels.
    if (json.contains("out_channels"))
      c.out_channels = json["out_channels"].is_null() ? c.in_channels : json["out_channels"].get<int64_t>();
    c.flip_sin_to_cos = JsonValueOr<bool>(json, "flip_sin_to_cos", c.flip_sin_to_cos);
    c.freq_shift = JsonValueOr<double>(json, "freq_shift", c.freq_shift);
    c.time_embed_dim = JsonValueOr<int64_t>(json, "time_embed_dim", c.time_embed_dim);
    c.text_embed_dim = JsonValueOr<int64_t>(json, "text_embed_dim", c.text_embed_dim);
    c.num_layers = JsonValueOr<int64_t>(json, "num_layers", c.num_layers);
    c.attention_bias = JsonValueOr<bool>(json, "attention_bias", c.attention_bias);
    c.sample_width = JsonValueOr<int64_t>(json, "sample_width", c.sample_width);
    c.sample_height = JsonValueOr<int64_t>(json, "sample_height", c.sample_height);
    c.sample_frames = JsonValueOr<int64_t>(json, "sample_frames", c.sample_frames);
    c.patch_size = JsonValueOr<int64_t>(json, "patch_size", c.patch_size);
    if (json.contains("patch_size_t") && !json["patch_size_t"].is_null())
      c.patch_size_t = json["patch_size_t"].get<int64_t>();
    c.temporal_compression_ratio = JsonValueOr<int64_t>(json, "temporal_compression_ratio", c.temporal_compression_ratio);
    c.max_text_seq_length = JsonValueOr<int64_t>(json, "max_text_seq_length", c.max_text_seq_length);
    c.activation_fn = JsonValueOr<std::string>(json, "activation_fn", c.activation_fn);
    timestep_activation = JsonValueOr<std::string>(json, "timestep_activation_fn", timestep_activation);
    c.norm_elementwise_affine = JsonValueOr<bool>(json, "norm_elementwise_affine", c.norm_elementwise_affine);
    c.norm_eps = JsonValueOr<double>(json, "norm_eps", c.norm_eps);
    // diffusers' default is false (sin-cos absolute positions, CogVideoX-2B); a config without the key
    // is therefore a 2B-style model.
    c.use_rotary_positional_embeddings = JsonValueOr<bool>(json, "use_rotary_positional_embeddings", false);
    learned_positions = JsonValueOr<bool>(json, "use_learned_positional_embeddings", false);
    c.patch_bias = JsonValueOr<bool>(json, "patch_bias", c.patch_bias);
    has_ofs = json.contains("ofs_embed_dim") && !json["ofs_embed_dim"].is_null() &&
              json["ofs_embed_dim"].get<int64_t>() != 0;
  });
  STAS_RETURN_IF_ERROR(parsed);
  if (!c.use_rotary_positional_embeddings)
    return NotImplemented(
        "CogVideoX transformer: sin-cos absolute positional embeddings (use_rotary_positional_embeddings = false, "
        "CogVideoX-2B) are not supported; only the RoPE models (5B, 1.5)");
  if (learned_positions)
    return NotImplemented("CogVideoX transformer: learned positional embeddings (the I2V models) are not supported");
  if (has_ofs) return NotImplemented("CogVideoX transformer: the ofs embedding (CogVideoX 1.5 I2V) is not supported");
  if (timestep_activation != "silu" && timestep_activation != "swish")
    return NotImplemented("CogVideoX transformer: timestep_activation_fn '" + timestep_activation +
                          "' is not supported (only silu)");
  if (c.activation_fn != "gelu-approximate" && c.activation_fn != "gelu")
    return NotImplemented("CogVideoX transformer: activation_fn '" + c.activation_fn +
                          "' is not supported (gelu-approximate, gelu)");
  STAS_RETURN_IF_ERROR(CheckPositive("num_attention_heads", c.num_attention_heads));
  STAS_RETURN_IF_ERROR(CheckPositive("attention_head_dim", c.attention_head_dim));
  STAS_RETURN_IF_ERROR(CheckPositive("in_channels", c.in_channels));
  STAS_RETURN_IF_ERROR(CheckPositive("out_channels", c.out_channels));
  STAS_RETURN_IF_ERROR(CheckPositive("time_embed_dim", c.time_embed_dim));
  STAS_RETURN_IF_ERROR(CheckPositive("text_embed_dim", c.text_embed_dim));
  STAS_RETURN_IF_ERROR(CheckPositive("num_layers", c.num_layers));
  STAS_RETURN_IF_ERROR(CheckPositive("patch_size", c.patch_size));
  STAS_RETURN_IF_ERROR(CheckPositive("sample_width", c.sample_width));
  STAS_RETURN_IF_ERROR(CheckPositive("sample_height", c.sample_height));
  STAS_RETURN_IF_ERROR(CheckPositive("temporal_compression_ratio", c.temporal_compression_ratio));
  if (c.patch_size_t) STAS_RETURN_IF_ERROR(CheckPositive("patch_size_t", *c.patch_size_t));
  // The 3D RoPE splits the head into t/h/w parts of d/4, 3d/8, 3d/8, each an even number of channels.
  if (c.attention_head_dim % 16 != 0)
    return InvalidArgument("CogVideoX transformer: attention_head_dim must be a multiple of 16 for the 3D RoPE, got " +
                           std::to_string(c.attention_head_dim));
  if (!(c.norm_eps > 0)) return InvalidArgument("CogVideoX transformer: norm_eps must be positive");
  return c;
}

// ---------------------------------------------------------------------------------------------------------
// RoPE tables

Result<RotaryTables> ComputeRotaryTables(const CogVideoXTransformerConfig& config, int64_t latent_frames,
                                         int64_t latent_height, int64_t latent_width) {
  const int64_t p = config.patch_size;
  if (latent_frames <= 0 || latent_height <= 0 || latent_width <= 0)
    return InvalidArgument("CogVideoX RoPE: latent sizes must be positive");
  if (latent_height % p != 0 || latent_width % p != 0)
    return InvalidArgument("CogVideoX RoPE: latent height and width (" + std::to_string(latent_height) + "x" +
                           std::to_string(latent_width) + ") must be multiples of patch_size " + std::to_string(p));
  const int64_t grid_h = latent_height / p;
  const int64_t grid_w = latent_width / p;
  const int64_t base_h = config.sample_height / p;
  const int64_t base_w = config.sample_width / p;
  const int64_t dim = config.attention_head_dim;
  const int64_t dim_t = dim / 4;
  const int64_t dim_h = dim / 8 * 3;
  const int64_t dim_w = dim / 8 * 3;

  at::Tensor pos_t, pos_h, pos_w;
  int64_t frames = latent_frames;
  if (!config.patch_size_t) {
    // CogVideoX 1.0: fit the token grid inside the training grid keeping its aspect ratio, centre it, and
    // spread the positions over the fitted span (fractional positions).
    const double ratio = static_cast<double>(grid_h) / static_cast<double>(grid_w);
    int64_t resize_h, resize_w;
    if (ratio > static_cast<double>(base_h) / static_cast<double>(base_w)) {
      resize_h = base_h;
      resize_w = static_cast<int64_t>(std::nearbyint(static_cast<double>(base_h) / grid_h * grid_w));
    } else {
      resize_w = base_w;
      resize_h = static_cast<int64_t>(std::nearbyint(static_cast<double>(base_w) / grid_w * grid_h));
    }
    // Python's round() rounds halves to even, as nearbyint does in the default rounding mode.
    const int64_t top = static_cast<int64_t>(std::nearbyint((base_h - resize_h) / 2.0));
    const int64_t left = static_cast<int64_t>(std::nearbyint((base_w - resize_w) / 2.0));
    const int64_t bottom = top + resize_h;
    const int64_t right = left + resize_w;
    pos_h = at::linspace(static_cast<double>(top), bottom * static_cast<double>(grid_h - 1) / grid_h, grid_h,
                         at::kFloat);
    pos_w = at::linspace(static_cast<double>(left), right * static_cast<double>(grid_w - 1) / grid_w, grid_w,
                         at::kFloat);
    pos_t = at::linspace(0.0, frames * static_cast<double>(frames - 1) / frames, frames, at::kFloat);
  } else {
    // CogVideoX 1.5: integer positions; the grid must fit the training grid.
    const int64_t pt = *config.patch_size_t;
    frames = (latent_frames + pt - 1) / pt;
    if (grid_h > base_h || grid_w > base_w)
      return InvalidArgument("CogVideoX RoPE: token grid " + std::to_string(grid_h) + "x" + std::to_string(grid_w) +
                             " exceeds the training grid " + std::to_string(base_h) + "x" + std::to_string(base_w));
    pos_h = at::arange(grid_h, at::kFloat);
    pos_w = at::arange(grid_w, at::kFloat);
    pos_t = at::arange(frames, at::kFloat);
  }
  auto [cos_t, sin_t] = RopeAxis(dim_t, pos_t);
  auto [cos_h, sin_h] = RopeAxis(dim_h, pos_h);
  auto [cos_w, sin_w] = RopeAxis(dim_w, pos_w);
  // Token (f, y, x) gets [t(f), h(y), w(x)] concatenated along the channels.
  auto combine = [&](const at::Tensor& t, const at::Tensor& h, const at::Tensor& w) {
    at::Tensor tt = t.view({frames, 1, 1, dim_t}).expand({frames, grid_h, grid_w, dim_t});
    at::Tensor hh = h.view({1, grid_h, 1, dim_h}).expand({frames, grid_h, grid_w, dim_h});
    at::Tensor ww = w.view({1, 1, grid_w, dim_w}).expand({frames, grid_h, grid_w, dim_w});
    return at::cat({tt, hh, ww}, -1).reshape({frames * grid_h * grid_w, dim_t + dim_h + dim_w});
  };
  return RotaryTables{combine(cos_t, cos_h, cos_w), combine(sin_t, sin_h, sin_w)};
}

// ---------------------------------------------------------------------------------------------------------
// Loading

Result<CogVideoXTransformer> CogVideoXTransformer::Load(const CogVideoXTransformerConfig& config,
                                                        const WeightStore& weights, at::Device device,
                                                        at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf)
    return InvalidArgument(std::string("CogVideoX transformer dtype must be float32, bfloat16 or float16, got ") +
                           c10::toString(dtype));
  if (!config.use_rotary_positional_embeddings)
    return NotImplemented("CogVideoX transformer: only the RoPE models are supported (use_rotary_positional_embeddings)");
  return LoadModelWeights<CogVideoXTransformer>(
      "CogVideoX transformer from " + weights.Describe(), [&]() -> Result<CogVideoXTransformer> {
        CogVideoXTransformer m;
        m.config_ = config;
        m.device_ = device;
        m.dtype_ = dtype;
        TrackingWeightReader reader(weights, at::TensorOptions().device(device).dtype(dtype));
        auto take_norm = [&](const std::string& prefix, int64_t size, bool affine) {
          LayerNormWeights n;
          if (affine) {  // float32 islands, as the fused LayerNorm kernels read them
            n.weight = reader.RequireFloat(prefix + ".weight", {size});
            n.bias = reader.RequireFloat(prefix + ".bias", {size});
          }
          return n;
        };
        const int64_t D = config.dim();
        const int64_t p = config.patch_size;
        const int64_t C = config.in_channels;
        const int64_t E = config.time_embed_dim;
        if (!config.patch_size_t) {
          // A Conv2d with kernel = stride = p is a linear map of each (C, p, p) patch.
          m.patch_weight_ = reader.Require("patch_embed.proj.weight", {D, C, p, p}).reshape({D, C * p * p});
        } else {
          m.patch_weight_ = reader.Require("patch_embed.proj.weight", {D, C * p * p * *config.patch_size_t});
        }
        if (config.patch_bias || config.patch_size_t) m.patch_bias_ = reader.Require("patch_embed.proj.bias", {D});
        m.text_proj_weight_ = reader.Require("patch_embed.text_proj.weight", {D, config.text_embed_dim});
        m.text_proj_bias_ = reader.Require("patch_embed.text_proj.bias", {D});
        m.time_in_weight_ = reader.RequireFloat("time_embedding.linear_1.weight", {E, D});
        m.time_in_bias_ = reader.RequireFloat("time_embedding.linear_1.bias", {E});
        m.time_out_weight_ = reader.RequireFloat("time_embedding.linear_2.weight", {E, E});
        m.time_out_bias_ = reader.RequireFloat("time_embedding.linear_2.bias", {E});

        const int64_t hd = config.attention_head_dim;
        const int64_t ff = 4 * D;
        for (int64_t i = 0; i < config.num_layers; ++i) {
          const std::string b = "transformer_blocks." + std::to_string(i) + ".";
          Block blk;
          blk.norm1_weight = reader.Require(b + "norm1.linear.weight", {6 * D, E});
          blk.norm1_bias = reader.Require(b + "norm1.linear.bias", {6 * D});
          blk.norm1 = take_norm(b + "norm1.norm", D, config.norm_elementwise_affine);
          blk.norm2_weight = reader.Require(b + "norm2.linear.weight", {6 * D, E});
          blk.norm2_bias = reader.Require(b + "norm2.linear.bias", {6 * D});
          blk.norm2 = take_norm(b + "norm2.norm", D, config.norm_elementwise_affine);
          const std::string a = b + "attn1.";
          blk.qkv_weight = at::cat({reader.Require(a + "to_q.weight", {D, D}), reader.Require(a + "to_k.weight", {D, D}),
                                    reader.Require(a + "to_v.weight", {D, D})});
          if (config.attention_bias)
            blk.qkv_bias =
                at::cat({reader.Require(a + "to_q.bias", {D}), reader.Require(a + "to_k.bias", {D}), reader.Require(a + "to_v.bias", {D})});
          blk.norm_q = take_norm(a + "norm_q", hd, true);
          blk.norm_k = take_norm(a + "norm_k", hd, true);
          blk.out_weight = reader.Require(a + "to_out.0.weight", {D, D});
          blk.out_bias = reader.Require(a + "to_out.0.bias", {D});
          blk.ff_in_weight = reader.Require(b + "ff.net.0.proj.weight", {ff, D});
          blk.ff_in_bias = reader.Require(b + "ff.net.0.proj.bias", {ff});
          blk.ff_out_weight = reader.Require(b + "ff.net.2.weight", {D, ff});
          blk.ff_out_bias = reader.Require(b + "ff.net.2.bias", {D});
          m.blocks_.push_back(std::move(blk));
        }
        m.norm_final_ = take_norm("norm_final", D, config.norm_elementwise_affine);
        m.norm_out_weight_ = reader.Require("norm_out.linear.weight", {2 * D, E});
        m.norm_out_bias_ = reader.Require("norm_out.linear.bias", {2 * D});
        m.norm_out_ = take_norm("norm_out.norm", D, config.norm_elementwise_affine);
        const int64_t out_dim = p * p * config.temporal_patch() * config.out_channels;
        m.proj_out_weight_ = reader.Require("proj_out.weight", {out_dim, D});
        m.proj_out_bias_ = reader.Require("proj_out.bias", {out_dim});

        // patch_embed.pos_embedding: a non-persistent buffer some exports keep; unused with RoPE.
        STAS_RETURN_IF_ERROR(reader.CheckAllUsed("CogVideoX transformer", {"patch_embed.pos_embedding"}));
        return m;
      });
}

// ---------------------------------------------------------------------------------------------------------
// Forward

Result<at::Tensor> CogVideoXTransformer::Forward(const at::Tensor& latents, const at::Tensor& timestep,
                                                 const at::Tensor& text, const RotaryTables& rope,
                                                 const ForwardContext& context) const {
  const auto& c = config_;
  if (latents.dim() != 5 || latents.size(2) != c.in_channels)
    return InvalidArgument("CogVideoX transformer: latents must be [B, F, " + std::to_string(c.in_channels) +
                           ", H, W], got " + ShapeString(latents.sizes()));
  const int64_t B = latents.size(0), F = latents.size(1), H = latents.size(3), W = latents.size(4);
  const int64_t p = c.patch_size, pt = c.temporal_patch();
  if (H % p != 0 || W % p != 0 || F % pt != 0)
    return InvalidArgument("CogVideoX transformer: latent size " + ShapeString(latents.sizes()) +
                           " is not divisible by the patch (" + std::to_string(pt) + ", " + std::to_string(p) +
                           ", " + std::to_string(p) + ")");
  if (text.dim() != 3 || text.size(0) != B || text.size(2) != c.text_embed_dim)
    return InvalidArgument("CogVideoX transformer: text must be [" + std::to_string(B) + ", L, " +
                           std::to_string(c.text_embed_dim) + "], got " + ShapeString(text.sizes()));
  if (timestep.numel() != B && timestep.numel() != 1)
    return InvalidArgument("CogVideoX transformer: timestep must hold 1 or B values, got " +
                           ShapeString(timestep.sizes()));
  const int64_t tokens = (F / pt) * (H / p) * (W / p);
  const std::vector<int64_t> table_shape{tokens, c.attention_head_dim};
  if (!rope.cos.defined() || !rope.sin.defined() || rope.cos.sizes() != at::IntArrayRef(table_shape) ||
      rope.sin.sizes() != at::IntArrayRef(table_shape))
    return InvalidArgument("CogVideoX transformer: RoPE tables must be [" + std::to_string(tokens) + ", " +
                           std::to_string(c.attention_head_dim) + "] for latents " + ShapeString(latents.sizes()));
  if (!context.branches.empty() && static_cast<int64_t>(context.branches.size()) != B)
    return InvalidArgument("CogVideoX transformer: " + std::to_string(context.branches.size()) +
                           " CFG branches for a batch of " + std::to_string(B));
  if (const SequenceParallel* sp = context.parallel) {
    if (sp->size() < 1 || sp->rank() < 0 || sp->rank() >= sp->size())
      return InvalidArgument("CogVideoX transformer: invalid sequence-parallel rank/size");
    if (c.num_attention_heads % sp->size() != 0)
      return InvalidArgument("CogVideoX transformer: " + std::to_string(c.num_attention_heads) +
                             " attention heads do not split over " + std::to_string(sp->size()) + " ranks");
  }
  return ForwardImpl(latents, timestep, text, rope, context);
}

at::Tensor CogVideoXTransformer::ForwardImpl(const at::Tensor& latents_in, const at::Tensor& timestep,
                                             const at::Tensor& text_in, const RotaryTables& rope,
                                             const ForwardContext& context) const {
  const auto& c = config_;
  const at::Tensor latents = latents_in.to(device_, dtype_);
  const int64_t B = latents.size(0), F = latents.size(1), C = latents.size(2), H = latents.size(3),
                W = latents.size(4);
  const int64_t p = c.patch_size, pt = c.temporal_patch();
  const int64_t h = H / p, w = W / p, f = F / pt;
  const int64_t D = c.dim();
  const TokenGrid grid{f, h, w};
  const int64_t L = grid.count();
  SequenceParallel* parallel = context.parallel;
  const ShardLayout shard = ShardLayout::For(L, parallel ? parallel->rank() : 0, parallel ? parallel->size() : 1);

  // Time embedding, float32.
  at::Tensor t = timestep.to(device_).reshape({-1});
  if (t.numel() == 1 && B > 1) t = t.expand({B});
  at::Tensor temb = TimestepSinusoid(t, D, c.flip_sin_to_cos, c.freq_shift);
  temb = at::linear(at::silu(at::linear(temb, time_in_weight_, time_in_bias_)), time_out_weight_, time_out_bias_);
  // Every modulation consumes SiLU(temb); compute it once in the model dtype.
  const at::Tensor temb_act = at::silu(temb).to(dtype_);

  // Patch embedding: tokens ordered (frame, row, column), each patch flattened as (C, pt, p, p). Under
  // sequence parallelism this rank embeds only its slice of the video tokens; the text is whole.
  at::Tensor patches = latents.reshape({B, f, pt, C, h, p, w, p})
                           .permute({0, 1, 4, 6, 3, 2, 5, 7})
                           .reshape({B, L, C * pt * p * p});
  at::Tensor video = at::linear(ShardTokens(patches, shard), patch_weight_, patch_bias_);  // [B, L_local, D]
  at::Tensor text = at::linear(text_in.to(device_, dtype_), text_proj_weight_, text_proj_bias_);

  auto local_table = [&](const at::Tensor& table) {
    return ShardTokens(table.to(device_, at::kFloat).unsqueeze(0), shard).squeeze(0).unsqueeze(1);  // [Ll, 1, hd]
  };
  const at::Tensor cos = local_table(rope.cos);
  const at::Tensor sin = local_table(rope.sin);

  // The hook sees the video stream alone (text_tokens stays 0).
  BlockContext block_context;
  if (context.hook) block_context = MakeBlockContext(context, static_cast<int>(blocks_.size()), grid, shard, B);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    RunBlock(blocks_[i], video, text, temb_act, cos, sin, parallel, L);
    if (context.hook) {
      block_context.block = static_cast<int>(i);
      context.hook->AfterBlock(video, block_context);
      STAS_CHECK(video.defined() && video.sizes() == at::IntArrayRef({B, shard.local_tokens, D}))
          << "a ResidualHook must keep the residual stream's shape";
    }
  }

  video = norm_final_.weight.defined() ? AffineLayerNorm(video, norm_final_.weight, norm_final_.bias, c.norm_eps)
                                        : LayerNormF32(video, {}, {}, c.norm_eps, dtype_);
  at::Tensor mod = at::linear(temb_act, norm_out_weight_, norm_out_bias_);  // [B, 2D]: shift, scale
  const Modulation shift{{}, mod.narrow(1, 0, D).unsqueeze(1)}, scale{{}, mod.narrow(1, D, D).unsqueeze(1)};
  video = ModulatedLayerNorm(video, shift, scale, c.norm_eps, Affine(norm_out_.weight, norm_out_.bias));
  video = at::linear(video, proj_out_weight_, proj_out_bias_);  // [B, L_local, Cout*pt*p*p] as (Cout, pt, p, p)
  if (parallel) video = parallel->GatherSequence(video).narrow(1, 0, L);

  // Unpatchify to [B, F, Cout, H, W].
  const int64_t Co = c.out_channels;
  at::Tensor out = video.reshape({B, f, h, w, Co, pt, p, p})
                       .permute({0, 1, 5, 4, 2, 6, 3, 7})
                       .reshape({B, F, Co, H, W});
  return out.to(at::kFloat);
}

void CogVideoXTransformer::RunBlock(const Block& block, at::Tensor& video, at::Tensor& text, const at::Tensor& temb_act,
                                    const at::Tensor& cos, const at::Tensor& sin, SequenceParallel* parallel,
                                    int64_t valid_video_tokens) const {
  const auto& c = config_;
  const int64_t D = c.dim();
  const int64_t B = video.size(0);
  const int64_t Lt = text.size(1);
  const int64_t Lv = video.size(1);
  const int64_t heads = c.num_attention_heads, hd = c.attention_head_dim;

  // Expert adaLN: one LayerNorm, separate (shift, scale, gate) for video and text, computed in float32
  // (models/fused_ops.h) and written straight into the joint [text; video] sequence.
  struct Expert {
    at::Tensor joint;                 // [B, Lt + Lv, D]: modulated norm of text, then video
    Modulation video_gate, text_gate;
  };
  auto modulate = [&](const at::Tensor& weight, const at::Tensor& bias, const LayerNormWeights& norm) {
    // [B, 1, 6, D]: video shift, scale, gate, then text shift, scale, gate.
    const at::Tensor m = at::linear(temb_act, weight, bias).view({B, 1, 6, D});
    auto part = [&](int64_t j) { return Modulation{{}, m.select(2, j)}; };
    Expert e{at::empty({B, Lt + Lv, D}, video.options()), part(2), part(5)};
    ModulatedLayerNorm(text, part(3), part(4), c.norm_eps, Affine(norm.weight, norm.bias), e.joint.narrow(1, 0, Lt));
    ModulatedLayerNorm(video, part(0), part(1), c.norm_eps, Affine(norm.weight, norm.bias), e.joint.narrow(1, Lt, Lv));
    return e;
  };

  const Expert attn_in = modulate(block.norm1_weight, block.norm1_bias, block.norm1);
  at::Tensor qkv = at::linear(attn_in.joint, block.qkv_weight, block.qkv_bias).view({B, Lt + Lv, 3, heads, hd});
  // Per-head q/k LayerNorm, and RoPE on the video tokens only (the text tokens carry no position).
  const at::Tensor q = HeadLayerNormRope(qkv.select(2, 0), Affine(block.norm_q.weight, block.norm_q.bias), cos, sin,
                                         Lt, kQkNormEps);
  const at::Tensor k = HeadLayerNormRope(qkv.select(2, 1), Affine(block.norm_k.weight, block.norm_k.bias), cos, sin,
                                         Lt, kQkNormEps);
  const at::Tensor v = qkv.select(2, 2);  // q, k, v: [B, Lt + Lv, H, hd]
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  at::Tensor attn;  // [B, Lt + Lv, H, hd]
  if (parallel) {
    const SequenceParallel::Qkv text_qkv{q.narrow(1, 0, Lt), k.narrow(1, 0, Lt), v.narrow(1, 0, Lt)};
    const SequenceParallel::Qkv video_qkv{q.narrow(1, Lt, Lv), k.narrow(1, Lt, Lv), v.narrow(1, Lt, Lv)};
    SequenceParallel::JointOutput o = parallel->JointSelfAttention(text_qkv, video_qkv, scale, valid_video_tokens);
    attn = at::cat({o.prefix, o.local}, 1);
  } else {
    attn = Attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale).transpose(1, 2);
  }
  attn = at::linear(attn.reshape({B, Lt + Lv, D}), block.out_weight, block.out_bias);
  video = GatedResidual(video, attn.narrow(1, Lt, Lv), attn_in.video_gate);
  text = GatedResidual(text, attn.narrow(1, 0, Lt), attn_in.text_gate);

  attn = at::Tensor();
  const Expert ff_in = modulate(block.norm2_weight, block.norm2_bias, block.norm2);
  // In token pieces: the hidden layer is 4x wider than the stream (870 MB for a CFG batch at 480p).
  at::Tensor ff = MapTokenChunks(ff_in.joint, kFeedForwardChunkRows, [&](const at::Tensor& x) {
    return at::linear(LinearGelu(x, block.ff_in_weight, block.ff_in_bias, c.activation_fn == "gelu-approximate"),
                      block.ff_out_weight, block.ff_out_bias);
  });
  video = GatedResidual(video, ff.narrow(1, Lt, Lv), ff_in.video_gate);
  text = GatedResidual(text, ff.narrow(1, 0, Lt), ff_in.text_gate);
}

}  // namespace stas::models::cogvideox
