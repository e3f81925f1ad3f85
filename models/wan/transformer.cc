#include "models/wan/transformer.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include "common/check.h"
#include "common/tracking_weight_reader.h"
#include "common/torch_compat.h"
#include "models/fused_ops.h"

namespace stas::models::wan {
namespace {

constexpr double kRopeTheta = 10000.0;
constexpr double kTimestepMaxPeriod = 10000.0;
// Attention scores held at once by the unfused (LibTorch 1.x) attention: 64 Mi floats = 256 MiB.
constexpr int64_t kMaxUnfusedScores = int64_t{1} << 26;
// Rows (batch x tokens) per piece of the feed-forward: at 480p (32,760 tokens, ffn_dim 8960, bf16) two
// pieces, each hidden layer 290 MB instead of 590 MB; pieces this large keep the GEMMs at full speed.
constexpr int64_t kFeedForwardChunkRows = 16384;

// LayerNorm without affine over the last dim, in float32.
at::Tensor PlainLayerNorm(const at::Tensor& x, double eps) {
  return at::layer_norm(x.to(at::kFloat), {x.size(-1)}, {}, {}, eps);
}

// Sinusoidal timestep features as diffusers' Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0):
// [cos(t f_i), sin(t f_i)] with f_i = exp(-ln(10000) i / half), float32 [N, dim].
at::Tensor TimestepSinusoid(const at::Tensor& t, int64_t dim) {
  const int64_t half = dim / 2;
  at::Tensor exponent = at::arange(0, half, t.options().dtype(at::kFloat)) * (-std::log(kTimestepMaxPeriod));
  exponent = exponent / static_cast<double>(half);
  at::Tensor args = t.to(at::kFloat).unsqueeze(1) * at::exp(exponent).unsqueeze(0);
  at::Tensor emb = at::cat({at::cos(args), at::sin(args)}, 1);
  if (dim % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1});
  return emb;
}

// Half-size RoPE tables of one axis: angle(p, i) = p / theta^(2i/dim), computed in float64 as upstream
// and stored in float32: cos and sin [max_len, dim/2].
std::pair<at::Tensor, at::Tensor> RopeAxisTables(int64_t dim, int64_t max_len) {
  const int64_t pairs = dim / 2;
  at::Tensor cos = at::empty({max_len, pairs}, at::kFloat);
  at::Tensor sin = at::empty({max_len, pairs}, at::kFloat);
  float* c = cos.data_ptr<float>();
  float* s = sin.data_ptr<float>();
  for (int64_t i = 0; i < pairs; ++i) {
    const double inv_freq = 1.0 / std::pow(kRopeTheta, static_cast<double>(2 * i) / static_cast<double>(dim));
    for (int64_t p = 0; p < max_len; ++p) {
      const double angle = static_cast<double>(p) * inv_freq;
      c[p * pairs + i] = static_cast<float>(std::cos(angle));
      s[p * pairs + i] = static_cast<float>(std::sin(angle));
    }
  }
  return {cos, sin};
}

Status CheckPositive(const char* name, int64_t value) {
  if (value <= 0) return InvalidArgument(std::string(name) + " must be positive, got " + std::to_string(value));
  return Status::Ok();
}

// x W^T + b, as a float8 GEMM when the layer has a float8 weight.
at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const Fp8Weight& fp8) {
  return fp8.defined() ? Fp8Linear(x, fp8, bias) : at::linear(x, weight, bias);
}

std::string ShapeString(at::IntArrayRef sizes) {
  std::ostringstream ss;
  ss << sizes;
  return ss.str();
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Config

Result<WanTransformerConfig> WanTransformerConfig::FromJson(const Json& json) {
  if (!json.is_object()) return InvalidArgument("Wan transformer config must be a JSON object");
  WanTransformerConfig c;
  bool has_image_dim = false, has_added_kv = false;
  Status parsed = CatchConfigErrors("Wan transformer config", [&] {
    auto it = json.find("patch_size");
    if (it != json.end() && !it->is_null()) {
      auto values = it->get<std::vector<int64_t>>();
      STAS_CHECK(values.size() == 3) << "patch_size must have 3 entries (t, h, w), got " << values.size();
      c.patch_size = {values[0], values[1], values[2]};
    }
    c.num_attention_heads = JsonValueOr<int64_t>(json, "num_attention_heads", c.num_attention_heads);
    c.attention_head_dim = JsonValueOr<int64_t>(json, "attention_head_dim", c.attention_head_dim);
    c.in_channels = JsonValueOr<int64_t>(json, "in_channels", c.in_channels);
    // Upstream: out_channels = out_channels or in_channels (null or 0 -> in_channels; absent -> 16).
    if (json.contains("out_channels"))
      c.out_channels = json["out_channels"].is_null() ? 0 : json["out_channels"].get<int64_t>();
    if (c.out_channels == 0) c.out_channels = c.in_channels;
    c.text_dim = JsonValueOr<int64_t>(json, "text_dim", c.text_dim);
    c.freq_dim = JsonValueOr<int64_t>(json, "freq_dim", c.freq_dim);
    c.ffn_dim = JsonValueOr<int64_t>(json, "ffn_dim", c.ffn_dim);
    c.num_layers = JsonValueOr<int64_t>(json, "num_layers", c.num_layers);
    c.cross_attn_norm = JsonValueOr<bool>(json, "cross_attn_norm", c.cross_attn_norm);
    c.qk_norm = JsonValueOr<std::string>(json, "qk_norm", c.qk_norm);
    c.eps = JsonValueOr<double>(json, "eps", c.eps);
    c.rope_max_seq_len = JsonValueOr<int64_t>(json, "rope_max_seq_len", c.rope_max_seq_len);
    has_image_dim = json.contains("image_dim") && !json["image_dim"].is_null();
    has_added_kv = json.contains("added_kv_proj_dim") && !json["added_kv_proj_dim"].is_null();
  });
  STAS_RETURN_IF_ERROR(parsed);
  if (has_image_dim || has_added_kv)
    return NotImplemented(
        "Wan transformer: image conditioning (image_dim / added_kv_proj_dim, the I2V models) is not supported");
  if (c.qk_norm != "rms_norm_across_heads")
    return NotImplemented("Wan transformer: qk_norm '" + c.qk_norm +
                          "' is not supported (only rms_norm_across_heads)");
  for (int i = 0; i < 3; ++i) STAS_RETURN_IF_ERROR(CheckPositive("patch_size entry", c.patch_size[i]));
  STAS_RETURN_IF_ERROR(CheckPositive("num_attention_heads", c.num_attention_heads));
  STAS_RETURN_IF_ERROR(CheckPositive("attention_head_dim", c.attention_head_dim));
  STAS_RETURN_IF_ERROR(CheckPositive("in_channels", c.in_channels));
  STAS_RETURN_IF_ERROR(CheckPositive("out_channels", c.out_channels));
  STAS_RETURN_IF_ERROR(CheckPositive("text_dim", c.text_dim));
  STAS_RETURN_IF_ERROR(CheckPositive("freq_dim", c.freq_dim));
  STAS_RETURN_IF_ERROR(CheckPositive("ffn_dim", c.ffn_dim));
  STAS_RETURN_IF_ERROR(CheckPositive("num_layers", c.num_layers));
  STAS_RETURN_IF_ERROR(CheckPositive("rope_max_seq_len", c.rope_max_seq_len));
  if (c.attention_head_dim % 2 != 0)
    return InvalidArgument("attention_head_dim must be even for RoPE, got " + std::to_string(c.attention_head_dim));
  if (!(c.eps > 0)) return InvalidArgument("eps must be positive");
  return c;
}

Json WanTransformerConfig::ToJson() const {
  return Json{{"patch_size", {patch_size[0], patch_size[1], patch_size[2]}},
              {"num_attention_heads", num_attention_heads},
              {"attention_head_dim", attention_head_dim},
              {"in_channels", in_channels},
              {"out_channels", out_channels},
              {"text_dim", text_dim},
              {"freq_dim", freq_dim},
              {"ffn_dim", ffn_dim},
              {"num_layers", num_layers},
              {"cross_attn_norm", cross_attn_norm},
              {"qk_norm", qk_norm},
              {"eps", eps},
              {"image_dim", nullptr},
              {"added_kv_proj_dim", nullptr},
              {"rope_max_seq_len", rope_max_seq_len}};
}

// ---------------------------------------------------------------------------------------------------------
// Loading

Result<WanTransformer> WanTransformer::Load(const WanTransformerConfig& config, const WeightStore& weights,
                                            at::Device device, at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf)
    return InvalidArgument(std::string("Wan transformer dtype must be float32, bfloat16 or float16, got ") +
                           c10::toString(dtype));
  return LoadModelWeights<WanTransformer>("Wan transformer from " + weights.Describe(), [&]() -> Result<WanTransformer> {
    WanTransformer m;
    m.config_ = config;
    m.device_ = device;
    m.dtype_ = dtype;
    TrackingWeightReader reader(weights, at::TensorOptions().device(device).dtype(dtype));
    const int64_t D = config.dim();
    const auto& p = config.patch_size;
    const int64_t patch_in = config.in_channels * config.patch_volume();

    m.patch_weight_ = reader.Require("patch_embedding.weight", {D, config.in_channels, p[0], p[1], p[2]}).reshape({D, patch_in});
    m.patch_bias_ = reader.Require("patch_embedding.bias", {D});

    const std::string ce = "condition_embedder.";
    m.time_in_weight_ = reader.RequireFloat(ce + "time_embedder.linear_1.weight", {D, config.freq_dim});
    m.time_in_bias_ = reader.RequireFloat(ce + "time_embedder.linear_1.bias", {D});
    m.time_out_weight_ = reader.RequireFloat(ce + "time_embedder.linear_2.weight", {D, D});
    m.time_out_bias_ = reader.RequireFloat(ce + "time_embedder.linear_2.bias", {D});
    m.time_proj_weight_ = reader.Require(ce + "time_proj.weight", {6 * D, D});
    m.time_proj_bias_ = reader.Require(ce + "time_proj.bias", {6 * D});
    m.text_in_weight_ = reader.Require(ce + "text_embedder.linear_1.weight", {D, config.text_dim});
    m.text_in_bias_ = reader.Require(ce + "text_embedder.linear_1.bias", {D});
    m.text_out_weight_ = reader.Require(ce + "text_embedder.linear_2.weight", {D, D});
    m.text_out_bias_ = reader.Require(ce + "text_embedder.linear_2.bias", {D});

    for (int64_t i = 0; i < config.num_layers; ++i) {
      const std::string b = "blocks." + std::to_string(i) + ".";
      Block blk;
      blk.qkv_weight = at::cat({reader.Require(b + "attn1.to_q.weight", {D, D}), reader.Require(b + "attn1.to_k.weight", {D, D}),
                                reader.Require(b + "attn1.to_v.weight", {D, D})});
      blk.qkv_bias = at::cat({reader.Require(b + "attn1.to_q.bias", {D}), reader.Require(b + "attn1.to_k.bias", {D}),
                              reader.Require(b + "attn1.to_v.bias", {D})});
      blk.self_norm_q = reader.RequireFloat(b + "attn1.norm_q.weight", {D});
      blk.self_norm_k = reader.RequireFloat(b + "attn1.norm_k.weight", {D});
      blk.self_out_weight = reader.Require(b + "attn1.to_out.0.weight", {D, D});
      blk.self_out_bias = reader.Require(b + "attn1.to_out.0.bias", {D});
      blk.cross_q_weight = reader.Require(b + "attn2.to_q.weight", {D, D});
      blk.cross_q_bias = reader.Require(b + "attn2.to_q.bias", {D});
      blk.cross_kv_weight = at::cat({reader.Require(b + "attn2.to_k.weight", {D, D}), reader.Require(b + "attn2.to_v.weight", {D, D})});
      blk.cross_kv_bias = at::cat({reader.Require(b + "attn2.to_k.bias", {D}), reader.Require(b + "attn2.to_v.bias", {D})});
      blk.cross_norm_q = reader.RequireFloat(b + "attn2.norm_q.weight", {D});
      blk.cross_norm_k = reader.RequireFloat(b + "attn2.norm_k.weight", {D});
      blk.cross_out_weight = reader.Require(b + "attn2.to_out.0.weight", {D, D});
      blk.cross_out_bias = reader.Require(b + "attn2.to_out.0.bias", {D});
      if (config.cross_attn_norm) {
        blk.norm2_weight = reader.RequireFloat(b + "norm2.weight", {D});
        blk.norm2_bias = reader.RequireFloat(b + "norm2.bias", {D});
      }
      blk.ffn_in_weight = reader.Require(b + "ffn.net.0.proj.weight", {config.ffn_dim, D});
      blk.ffn_in_bias = reader.Require(b + "ffn.net.0.proj.bias", {config.ffn_dim});
      blk.ffn_out_weight = reader.Require(b + "ffn.net.2.weight", {D, config.ffn_dim});
      blk.ffn_out_bias = reader.Require(b + "ffn.net.2.bias", {D});
      blk.modulation = reader.RequireFloat(b + "scale_shift_table", {1, 6, D}).reshape({6, D});
      m.blocks_.push_back(std::move(blk));
    }
    m.out_modulation_ = reader.RequireFloat("scale_shift_table", {1, 2, D}).reshape({2, D});
    m.proj_out_weight_ = reader.Require("proj_out.weight", {config.out_channels * config.patch_volume(), D});
    m.proj_out_bias_ = reader.Require("proj_out.bias", {config.out_channels * config.patch_volume()});

    STAS_RETURN_IF_ERROR(reader.CheckAllUsed("Wan transformer"));

    const int64_t hd = config.attention_head_dim;
    const int64_t h_dim = 2 * (hd / 6);
    const int64_t t_dim = hd - 2 * h_dim;
    const auto on_device = [&](const at::Tensor& t) { return t.to(device); };
    auto [ct, st] = RopeAxisTables(t_dim, config.rope_max_seq_len);
    auto [ch, sh] = RopeAxisTables(h_dim, config.rope_max_seq_len);
    m.rope_cos_t_ = on_device(ct), m.rope_sin_t_ = on_device(st);
    m.rope_cos_h_ = on_device(ch), m.rope_sin_h_ = on_device(sh);
    m.rope_cos_w_ = m.rope_cos_h_, m.rope_sin_w_ = m.rope_sin_h_;  // w_dim == h_dim
    return m;
  });
}

TokenGrid WanTransformer::GridFor(at::IntArrayRef s) const {
  const auto& p = config_.patch_size;
  return TokenGrid{s[s.size() - 3] / p[0], s[s.size() - 2] / p[1], s[s.size() - 1] / p[2]};
}

// ---------------------------------------------------------------------------------------------------------
// Forward

struct WanTransformer::Conditioning {
  at::Tensor temb;      // [B, Lt, D] in the model dtype; Lt = 1 (per-sample timestep) or local tokens
  at::Tensor tproj;     // [B, Lt, 6, D] in the model dtype
  at::Tensor text;      // [B, L_text, D] projected text embeddings
  at::Tensor rope_cos;  // [L_local, 1, Dh/2] float32
  at::Tensor rope_sin;
  int64_t valid_tokens = 0;  // global count of real tokens
};

Result<at::Tensor> WanTransformer::Forward(const at::Tensor& latents, const at::Tensor& timestep,
                                           const at::Tensor& text, const ForwardContext& context) const {
  const auto& p = config_.patch_size;
  if (!latents.defined() || latents.dim() != 5 || latents.size(1) != config_.in_channels)
    return InvalidArgument("Wan transformer: latents must be [B, " + std::to_string(config_.in_channels) +
                           ", F, H, W], got " + (latents.defined() ? ShapeString(latents.sizes()) : "undefined"));
  if (!at::isFloatingType(latents.scalar_type())) return InvalidArgument("Wan transformer: latents must be floating point");
  for (int i = 0; i < 3; ++i) {
    const int64_t size = latents.size(2 + i);
    if (size <= 0 || size % p[i] != 0)
      return InvalidArgument("Wan transformer: latent sizes (F, H, W) = " + ShapeString(latents.sizes().slice(2)) +
                             " must be positive multiples of the patch size " + ShapeString(p));
    if (size / p[i] > config_.rope_max_seq_len)
      return InvalidArgument("Wan transformer: " + std::to_string(size / p[i]) +
                             " patches along an axis exceed rope_max_seq_len " +
                             std::to_string(config_.rope_max_seq_len));
  }
  const int64_t batch = latents.size(0);
  const TokenGrid grid = GridFor(latents.sizes());
  if (!timestep.defined() ||
      !((timestep.dim() == 1 && timestep.size(0) == batch) ||
        (timestep.dim() == 2 && timestep.size(0) == batch && timestep.size(1) == grid.count())))
    return InvalidArgument("Wan transformer: timestep must be [B] or [B, L] with B = " + std::to_string(batch) +
                           ", L = " + std::to_string(grid.count()) + ", got " +
                           (timestep.defined() ? ShapeString(timestep.sizes()) : "undefined"));
  if (!text.defined() || text.dim() != 3 || text.size(0) != batch || text.size(1) < 1 ||
      text.size(2) != config_.text_dim)
    return InvalidArgument("Wan transformer: text embeddings must be [" + std::to_string(batch) + ", L_text, " +
                           std::to_string(config_.text_dim) + "], got " +
                           (text.defined() ? ShapeString(text.sizes()) : "undefined"));
  if (!context.branches.empty() && static_cast<int64_t>(context.branches.size()) != batch)
    return InvalidArgument("Wan transformer: context.branches must have one entry per batch row");
  if (context.parallel && (context.parallel->size() < 1 || context.parallel->rank() < 0 ||
                           context.parallel->rank() >= context.parallel->size()))
    return InvalidArgument("Wan transformer: invalid sequence-parallel rank/size");
  try {
    return ForwardImpl(latents, timestep, text, context);
  } catch (const std::exception& e) {
    return Internal(std::string("Wan transformer forward failed: ") + e.what());
  }
}

std::pair<at::Tensor, at::Tensor> WanTransformer::RopeTables(const TokenGrid& grid, int64_t begin,
                                                            int64_t count) const {
  at::Tensor pos =
      at::arange(begin, begin + count, at::TensorOptions().dtype(at::kLong).device(device_)).clamp_max(grid.count() - 1);
  at::Tensor frame = pos.div(grid.tokens_per_frame(), "floor");
  at::Tensor row = at::remainder(pos.div(grid.cols, "floor"), grid.rows);
  at::Tensor col = at::remainder(pos, grid.cols);
  at::Tensor cos = at::cat({rope_cos_t_.index_select(0, frame), rope_cos_h_.index_select(0, row),
                            rope_cos_w_.index_select(0, col)},
                           1);
  at::Tensor sin = at::cat({rope_sin_t_.index_select(0, frame), rope_sin_h_.index_select(0, row),
                            rope_sin_w_.index_select(0, col)},
                           1);
  return {cos.unsqueeze(1), sin.unsqueeze(1)};
}

at::Tensor WanTransformer::SelfAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         SequenceParallel* parallel, int64_t valid_tokens) const {
  const double scale = 1.0 / std::sqrt(static_cast<double>(config_.attention_head_dim));
  if (parallel) return parallel->SelfAttention(q, k, v, scale, valid_tokens);
  const at::Tensor qt = q.transpose(1, 2), kt = k.transpose(1, 2), vt = v.transpose(1, 2);
  if (!compat::kHasFusedSdpa) {
    // The unfused fallback materializes the scores: bound them by running the queries in chunks.
    const int64_t queries = qt.size(2);
    const int64_t per_query = std::max<int64_t>(1, qt.size(0) * qt.size(1) * kt.size(2));
    const int64_t chunk = std::max<int64_t>(1, kMaxUnfusedScores / per_query);
    if (chunk < queries) {
      std::vector<at::Tensor> parts;
      for (int64_t s = 0; s < queries; s += chunk)
        parts.push_back(compat::ScaledDotProductAttention(qt.narrow(2, s, std::min(chunk, queries - s)), kt, vt, scale));
      return at::cat(parts, 2).transpose(1, 2);
    }
  }
  return compat::ScaledDotProductAttention(qt, kt, vt, scale).transpose(1, 2);
}

at::Tensor WanTransformer::RunBlock(const Block& block, const at::Tensor& hidden, const Conditioning& cond,
                                    SequenceParallel* parallel) const {
  const int64_t B = hidden.size(0), L = hidden.size(1), D = config_.dim();
  const int64_t H = config_.num_attention_heads, Dh = config_.attention_head_dim;
  const double eps = config_.eps;
  // Modulation j of (shift1, scale1, gate1, shift2, scale2, gate2): base + projection, [B, Lt, D].
  auto modulation = [&](int64_t j) { return Modulation{block.modulation[j], cond.tproj.select(2, j)}; };

  // Each stage sits in its own scope so that its temporaries are freed before the next stage
  // allocates: at 480p one [L, D] activation is 100 MB and the FFN's hidden layer almost 600 MB.
  // 1. Self-attention on the modulated LayerNorm, gated residual.
  const Block::Fp8& fp8 = block.fp8;
  at::Tensor h;
  {
    at::Tensor q, k, v;
    {
      const at::Tensor x = ModulatedLayerNorm(hidden, modulation(0), modulation(1), eps);
      std::vector<at::Tensor> qkv = Linear(x, block.qkv_weight, block.qkv_bias, fp8.qkv).chunk(3, -1);
      q = RmsNormRope(qkv[0], block.self_norm_q, cond.rope_cos, cond.rope_sin, H, eps);
      k = RmsNormRope(qkv[1], block.self_norm_k, cond.rope_cos, cond.rope_sin, H, eps);
      v = qkv[2].reshape({B, L, H, Dh}).contiguous();  // lets the fused q|k|v projection go
    }
    at::Tensor attn = SelfAttention(q, k, v, parallel, cond.valid_tokens).reshape({B, L, D});
    q = k = v = at::Tensor();
    attn = Linear(attn, block.self_out_weight, block.self_out_bias, fp8.self_out);
    h = GatedResidual(hidden, attn, modulation(2));
  }

  // 2. Cross-attention to the text (no gate, no RoPE, no mask).
  {
    const int64_t Lt = cond.text.size(1);
    at::Tensor cq;
    {
      const at::Tensor n2 =
          block.norm2_weight.defined() ? AffineLayerNorm(h, block.norm2_weight, block.norm2_bias, eps) : h;
      cq = RmsNormRope(Linear(n2, block.cross_q_weight, block.cross_q_bias, fp8.cross_q), block.cross_norm_q, {}, {},
                       H, eps);
    }
    std::vector<at::Tensor> kv = Linear(cond.text, block.cross_kv_weight, block.cross_kv_bias, fp8.cross_kv).chunk(2, -1);
    at::Tensor ck = RmsNormRope(kv[0], block.cross_norm_k, {}, {}, H, eps);
    at::Tensor cv = kv[1].reshape({B, Lt, H, Dh});
    const double scale = 1.0 / std::sqrt(static_cast<double>(Dh));
    at::Tensor cross =
        compat::ScaledDotProductAttention(cq.transpose(1, 2), ck.transpose(1, 2), cv.transpose(1, 2), scale)
            .transpose(1, 2)
            .reshape({B, L, D});
    cq = at::Tensor();
    h = h + Linear(cross, block.cross_out_weight, block.cross_out_bias, fp8.cross_out);
  }

  // 3. Feed-forward on the modulated LayerNorm, gated residual, in token chunks (its hidden layer is
  // ffn_dim / dim times wider than the stream). In float8 the GELU is fused into the quantization of
  // the second layer's input instead of the first GEMM's epilogue.
  at::Tensor ff;
  {
    const at::Tensor n3 = ModulatedLayerNorm(h, modulation(3), modulation(4), eps);
    ff = MapTokenChunks(n3, kFeedForwardChunkRows, [&](const at::Tensor& x) {
      return fp8.ffn_in.defined()
                 ? Fp8Linear(Fp8Linear(x, fp8.ffn_in, block.ffn_in_bias), fp8.ffn_out, block.ffn_out_bias,
                             /*gelu_tanh_input=*/true)
                 : at::linear(LinearGeluTanh(x, block.ffn_in_weight, block.ffn_in_bias), block.ffn_out_weight,
                              block.ffn_out_bias);
    });
  }
  return GatedResidual(h, ff, modulation(5));
}

Status WanTransformer::UseFp8Linears(Fp8Scaling scaling) {
  STAS_RETURN_IF_ERROR(Fp8LinearSupport(device_));
  if (dtype_ != at::kBFloat16)
    return InvalidArgument(std::string("float8 linear layers need a bfloat16 model, this one is ") +
                           c10::toString(dtype_));
  // Quantize everything first, so a failure leaves the model as it was.
  std::vector<Block::Fp8> quantized;
  for (const Block& b : blocks_) {
    Block::Fp8 q;
    for (auto [dst, weight] : {std::pair{&q.qkv, &b.qkv_weight}, {&q.self_out, &b.self_out_weight},
                               {&q.cross_q, &b.cross_q_weight}, {&q.cross_kv, &b.cross_kv_weight},
                               {&q.cross_out, &b.cross_out_weight}, {&q.ffn_in, &b.ffn_in_weight},
                               {&q.ffn_out, &b.ffn_out_weight}}) {
      STAS_ASSIGN_OR_RETURN(*dst, QuantizeFp8Weight(*weight, scaling));
    }
    quantized.push_back(std::move(q));
  }
  for (size_t i = 0; i < blocks_.size(); ++i) {
    Block& b = blocks_[i];
    b.fp8 = std::move(quantized[i]);
    for (at::Tensor* w : {&b.qkv_weight, &b.self_out_weight, &b.cross_q_weight, &b.cross_kv_weight, &b.cross_out_weight,
                          &b.ffn_in_weight, &b.ffn_out_weight})
      *w = at::Tensor();  // the float8 copy replaces it
  }
  return Status::Ok();
}

at::Tensor WanTransformer::ForwardImpl(const at::Tensor& latents, const at::Tensor& timestep, const at::Tensor& text,
                                       const ForwardContext& context) const {
  const auto& p = config_.patch_size;
  const int64_t B = latents.size(0), C = config_.in_channels, D = config_.dim();
  const TokenGrid grid = GridFor(latents.sizes());
  const int64_t L = grid.count();
  SequenceParallel* parallel = context.parallel;
  const ShardLayout shard = parallel ? ShardLayout::For(L, parallel->rank(), parallel->size()) : ShardLayout::For(L, 0, 1);
  const int64_t L_local = shard.local_tokens;

  // Patchify: Conv3d with kernel = stride = patch is a linear map of each patch (c, kt, kh, kw).
  at::Tensor patches = latents.to(device_, dtype_)
                           .reshape({B, C, grid.frames, p[0], grid.rows, p[1], grid.cols, p[2]})
                           .permute({0, 2, 4, 6, 1, 3, 5, 7})
                           .reshape({B, L, C * config_.patch_volume()});
  at::Tensor hidden = at::linear(ShardTokens(patches, shard), patch_weight_, patch_bias_);  // [B, L_local, D]

  // Conditioning: time (fp32 embedder, then cast like upstream's type_as), text, RoPE.
  Conditioning cond;
  at::Tensor t = timestep.to(device_, at::kFloat);
  const bool per_token = t.dim() == 2;
  if (per_token) t = ShardTokens(t, shard);
  const int64_t Lt = per_token ? L_local : 1;
  at::Tensor temb = at::linear(TimestepSinusoid(t.reshape({-1}), config_.freq_dim), time_in_weight_, time_in_bias_);
  temb = at::linear(at::silu(temb), time_out_weight_, time_out_bias_).to(dtype_);
  cond.tproj = at::linear(at::silu(temb), time_proj_weight_, time_proj_bias_).view({B, Lt, 6, D});
  cond.temb = temb.view({B, Lt, D});
  at::Tensor txt = at::linear(text.to(device_, dtype_), text_in_weight_, text_in_bias_);
  cond.text = at::linear(at::gelu(txt, "tanh"), text_out_weight_, text_out_bias_);
  std::tie(cond.rope_cos, cond.rope_sin) = RopeTables(grid, shard.begin, L_local);
  cond.valid_tokens = L;

  BlockContext block_context;
  if (context.hook) block_context = MakeBlockContext(context, static_cast<int>(blocks_.size()), grid, shard, B);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    hidden = RunBlock(blocks_[i], hidden, cond, parallel);
    if (context.hook) {
      block_context.block = static_cast<int>(i);
      context.hook->AfterBlock(hidden, block_context);
      STAS_CHECK(hidden.defined() && hidden.sizes() == at::IntArrayRef({B, L_local, D}))
          << "a ResidualHook must keep the residual stream's shape";
    }
  }

  // Output: modulated LayerNorm, projection, gather the shards, unpatchify.
  at::Tensor temb_f = cond.temb.to(at::kFloat);
  at::Tensor out = (PlainLayerNorm(hidden, config_.eps) * (out_modulation_[1] + temb_f + 1.0) +
                    (out_modulation_[0] + temb_f))
                       .to(dtype_);
  out = at::linear(out, proj_out_weight_, proj_out_bias_);  // [B, L_local, C_out * patch]
  if (parallel) out = parallel->GatherSequence(out).narrow(1, 0, L);
  const int64_t C_out = config_.out_channels;
  return out.reshape({B, grid.frames, grid.rows, grid.cols, p[0], p[1], p[2], C_out})
      .permute({0, 7, 1, 4, 2, 5, 3, 6})
      .reshape({B, C_out, grid.frames * p[0], grid.rows * p[1], grid.cols * p[2]})
      .to(at::kFloat);
}

}  // namespace stas::models::wan
