#include "models/text/t5_encoder.h"

#include <cmath>
#include <limits>
#include <sstream>

#include "common/check.h"

namespace stas::models::text {

namespace {

std::string LayerPrefix(int64_t layer) { return "encoder.block." + std::to_string(layer) + ".layer."; }

Result<T5Activation> ParseActivation(const std::string& name) {
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return T5Activation::kGeluTanh;
  if (name == "gelu") return T5Activation::kGelu;
  if (name == "relu") return T5Activation::kRelu;
  if (name == "silu" || name == "swish") return T5Activation::kSilu;
  return NotImplemented("T5 feed-forward activation '" + name + "' (supported: relu, gelu, gelu_new, silu)");
}

const char* ActivationName(T5Activation a) {
  switch (a) {
    case T5Activation::kGeluTanh: return "gelu_new";
    case T5Activation::kGelu: return "gelu";
    case T5Activation::kRelu: return "relu";
    case T5Activation::kSilu: return "silu";
  }
  return "?";
}

}  // namespace

Result<T5EncoderConfig> T5EncoderConfig::FromJson(const Json& j, std::optional<T5Variant> default_variant) {
  if (!j.is_object()) return InvalidArgument("T5 encoder config must be a JSON object");
  T5EncoderConfig c;
  std::string feed_forward_proj;
  Status parsed = CatchConfigErrors("T5 encoder config", [&] {
    const std::string model_type = JsonValueOr<std::string>(j, "model_type", "");
    if (model_type == "umt5") {
      c.variant = T5Variant::kUmt5;
    } else if (model_type == "t5" || model_type == "mt5") {
      c.variant = T5Variant::kT5;
    } else if (model_type.empty() && default_variant) {
      c.variant = *default_variant;
    } else {
      throw std::invalid_argument("model_type '" + model_type + "' is not a T5 encoder (umt5, t5 or mt5)");
    }
    if (!model_type.empty() && default_variant && *default_variant != c.variant)
      throw std::invalid_argument("model_type '" + model_type + "' does not match the requested encoder (" +
                                  (*default_variant == T5Variant::kUmt5 ? "umt5" : "t5") + ")");
    for (const char* key : {"vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"})
      if (!j.contains(key) || j[key].is_null()) throw std::invalid_argument(std::string("missing '") + key + "'");
    c.vocab_size = j.at("vocab_size").get<int64_t>();
    c.d_model = j.at("d_model").get<int64_t>();
    c.d_kv = j.at("d_kv").get<int64_t>();
    c.d_ff = j.at("d_ff").get<int64_t>();
    c.num_layers = j.at("num_layers").get<int64_t>();
    c.num_heads = j.at("num_heads").get<int64_t>();
    c.relative_attention_num_buckets = JsonValueOr<int64_t>(j, "relative_attention_num_buckets", 32);
    c.relative_attention_max_distance = JsonValueOr<int64_t>(j, "relative_attention_max_distance", 128);
    c.layer_norm_epsilon = JsonValueOr<double>(j, "layer_norm_epsilon", 1e-6);
    feed_forward_proj = JsonValueOr<std::string>(j, "feed_forward_proj",
                                                 c.variant == T5Variant::kUmt5 ? "gated-gelu" : "relu");
  });
  STAS_RETURN_IF_ERROR(parsed);
  for (auto [name, value] : {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size},
                             {"d_model", c.d_model}, {"d_kv", c.d_kv}, {"d_ff", c.d_ff},
                             {"num_layers", c.num_layers}, {"num_heads", c.num_heads},
                             {"relative_attention_num_buckets", c.relative_attention_num_buckets},
                             {"relative_attention_max_distance", c.relative_attention_max_distance}}) {
    if (value < 1) return InvalidArgument(std::string("T5 encoder config: ") + name + " must be positive, got " + std::to_string(value));
  }
  // The bidirectional bucketing needs at least 2 exact buckets per direction and a log range above them.
  if (c.relative_attention_num_buckets < 4)
    return InvalidArgument("T5 encoder config: relative_attention_num_buckets must be >= 4");
  if (c.relative_attention_max_distance <= c.relative_attention_num_buckets / 4)
    return InvalidArgument("T5 encoder config: relative_attention_max_distance must exceed num_buckets / 4");
  if (!(c.layer_norm_epsilon > 0)) return InvalidArgument("T5 encoder config: layer_norm_epsilon must be positive");
  // transformers: "gated-<act>" or "<act>"; "gated-gelu" means GELU with tanh for backward compatibility.
  std::string act = feed_forward_proj;
  c.gated_ffn = false;
  if (const size_t dash = feed_forward_proj.find('-'); dash != std::string::npos) {
    if (feed_forward_proj.substr(0, dash) != "gated" || feed_forward_proj.find('-', dash + 1) != std::string::npos)
      return InvalidArgument("T5 encoder config: feed_forward_proj '" + feed_forward_proj +
                             "' is not of the form 'gated-<act>' or '<act>'");
    c.gated_ffn = true;
    act = feed_forward_proj.substr(dash + 1);
    if (act == "gelu") act = "gelu_new";
  }
  STAS_ASSIGN_OR_RETURN(c.activation, ParseActivation(act));
  return c;
}

Json T5EncoderConfig::ToJson() const {
  Json j;
  j["model_type"] = variant == T5Variant::kUmt5 ? "umt5" : "t5";
  j["vocab_size"] = vocab_size;
  j["d_model"] = d_model;
  j["d_kv"] = d_kv;
  j["d_ff"] = d_ff;
  j["num_layers"] = num_layers;
  j["num_heads"] = num_heads;
  j["relative_attention_num_buckets"] = relative_attention_num_buckets;
  j["relative_attention_max_distance"] = relative_attention_max_distance;
  j["layer_norm_epsilon"] = layer_norm_epsilon;
  // "gated-gelu" is transformers' spelling of gated GELU-tanh.
  if (gated_ffn) {
    j["feed_forward_proj"] = activation == T5Activation::kGeluTanh ? std::string("gated-gelu")
                                                                   : std::string("gated-") + ActivationName(activation);
  } else {
    j["feed_forward_proj"] = ActivationName(activation);
  }
  j["is_encoder_decoder"] = false;
  j["pad_token_id"] = 0;
  j["eos_token_id"] = 1;
  return j;
}

T5EncoderConfig T5EncoderConfig::Umt5Xxl() {
  T5EncoderConfig c;
  c.variant = T5Variant::kUmt5;
  c.vocab_size = 256384;
  c.d_model = 4096;
  c.d_kv = 64;
  c.d_ff = 10240;
  c.num_layers = 24;
  c.num_heads = 64;
  return c;
}

T5EncoderConfig T5EncoderConfig::T5V11Xxl() {
  T5EncoderConfig c = Umt5Xxl();
  c.variant = T5Variant::kT5;
  c.vocab_size = 32128;
  return c;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> T5EncoderWeightShapes(const T5EncoderConfig& c) {
  const int64_t D = c.d_model, I = c.inner_dim();
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  shapes.push_back({"shared.weight", {c.vocab_size, D}});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = LayerPrefix(i);
    for (const char* w : {"q", "k", "v"}) shapes.push_back({p + "0.SelfAttention." + w + ".weight", {I, D}});
    shapes.push_back({p + "0.SelfAttention.o.weight", {D, I}});
    if (c.LayerOwnsBias(i))
      shapes.push_back({p + "0.SelfAttention.relative_attention_bias.weight", {c.relative_attention_num_buckets, c.num_heads}});
    shapes.push_back({p + "0.layer_norm.weight", {D}});
    if (c.gated_ffn) {
      shapes.push_back({p + "1.DenseReluDense.wi_0.weight", {c.d_ff, D}});
      shapes.push_back({p + "1.DenseReluDense.wi_1.weight", {c.d_ff, D}});
    } else {
      shapes.push_back({p + "1.DenseReluDense.wi.weight", {c.d_ff, D}});
    }
    shapes.push_back({p + "1.DenseReluDense.wo.weight", {D, c.d_ff}});
    shapes.push_back({p + "1.layer_norm.weight", {D}});
  }
  shapes.push_back({"encoder.final_layer_norm.weight", {D}});
  return shapes;
}

int64_t T5EncoderParameterCount(const T5EncoderConfig& config) {
  int64_t total = 0;
  for (const auto& [name, shape] : T5EncoderWeightShapes(config)) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    total += n;
  }
  return total;
}

Status CheckT5EncoderWeights(const T5EncoderConfig& config, const WeightStore& weights) {
  std::vector<std::string> problems;
  auto check = [&](const std::string& name, const std::vector<int64_t>& shape) {
    auto t = weights.Get(name);
    if (!t.ok()) {
      problems.push_back("missing " + name);
    } else if (t->sizes().vec() != shape) {
      std::ostringstream ss;
      ss << name << " has shape " << t->sizes() << ", expected " << at::IntArrayRef(shape);
      problems.push_back(ss.str());
    }
  };
  for (const auto& [name, shape] : T5EncoderWeightShapes(config)) {
    if (name == "shared.weight" && !weights.Has(name) && weights.Has("encoder.embed_tokens.weight")) {
      check("encoder.embed_tokens.weight", shape);  // the tied embedding under its other name
      continue;
    }
    check(name, shape);
  }
  for (int64_t i = 0; i < config.num_layers; ++i) {
    const std::string bias = LayerPrefix(i) + "0.SelfAttention.relative_attention_bias.weight";
    if (!config.LayerOwnsBias(i) && weights.Has(bias))
      problems.push_back(bias + " present although t5 shares block 0's bias (is this a umt5 checkpoint?)");
  }
  if (problems.empty()) return Status::Ok();
  std::string message = "T5 encoder weights do not match the config (" + weights.Describe() + "): ";
  const size_t shown = std::min<size_t>(problems.size(), 8);
  for (size_t i = 0; i < shown; ++i) message += (i ? "; " : "") + problems[i];
  if (problems.size() > shown) message += "; and " + std::to_string(problems.size() - shown) + " more";
  return InvalidArgument(message);
}

at::Tensor T5RelativePositionBucket(const at::Tensor& relative_position, bool bidirectional, int64_t num_buckets,
                                    int64_t max_distance) {
  // Same tensor ops, in the same float32 arithmetic, as transformers, so bucket edges agree exactly.
  at::Tensor buckets = at::zeros_like(relative_position, relative_position.options().dtype(at::kLong));
  at::Tensor distance;
  if (bidirectional) {
    num_buckets /= 2;
    buckets = buckets + relative_position.gt(0).to(at::kLong) * num_buckets;
    distance = relative_position.abs();
  } else {
    distance = -at::min(relative_position, at::zeros_like(relative_position));
  }
  const int64_t max_exact = num_buckets / 2;
  const at::Tensor is_small = distance.lt(max_exact);
  at::Tensor log_ratio = at::log(distance.to(at::kFloat) / max_exact) /
                         std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact));
  at::Tensor if_large = log_ratio * (num_buckets - max_exact);
  // log(0) = -inf for distance 0 only; that lane takes the is_small branch below.
  if_large = max_exact + if_large.to(at::kLong);
  if_large = at::min(if_large, at::full_like(if_large, num_buckets - 1));
  return buckets + at::where(is_small, distance.to(at::kLong), if_large);
}

Result<T5Encoder> T5Encoder::Load(const T5EncoderConfig& config, const WeightStore& weights, at::Device device,
                                  at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16)
    return InvalidArgument(std::string("T5 encoder dtype must be float32 or bfloat16 (float16 overflows in T5), got ") +
                           c10::toString(dtype));
  return LoadModelWeights<T5Encoder>("T5 encoder", [&] {
    T5Encoder enc;
    enc.config_ = config;
    enc.device_ = device;
    enc.dtype_ = dtype;
    const WeightReader reader(weights, at::TensorOptions().device(device).dtype(dtype));
    const int64_t D = config.d_model, I = config.inner_dim(), F = config.d_ff;
    // The embedding is tied: transformers stores it once, usually as shared.weight.
    const bool has_shared = weights.Has("shared.weight");
    const bool has_embed = weights.Has("encoder.embed_tokens.weight");
    if (has_shared && has_embed) reader.Require("encoder.embed_tokens.weight", {config.vocab_size, D});
    enc.embedding_ = reader.Require(has_shared || !has_embed ? "shared.weight" : "encoder.embed_tokens.weight",
                                    {config.vocab_size, D});
    for (int64_t i = 0; i < config.num_layers; ++i) {
      const std::string p = LayerPrefix(i);
      Layer layer;
      layer.attention_norm = reader.RequireFloat(p + "0.layer_norm.weight", {D});
      layer.q = reader.Require(p + "0.SelfAttention.q.weight", {I, D});
      layer.k = reader.Require(p + "0.SelfAttention.k.weight", {I, D});
      layer.v = reader.Require(p + "0.SelfAttention.v.weight", {I, D});
      layer.o = reader.Require(p + "0.SelfAttention.o.weight", {D, I});
      const std::string bias = p + "0.SelfAttention.relative_attention_bias.weight";
      if (config.LayerOwnsBias(i)) {
        layer.relative_bias =
            reader.RequireFloat(bias, {config.relative_attention_num_buckets, config.num_heads});
      } else if (weights.Has(bias)) {
        throw MissingWeightError(bias + " is present but a t5 encoder shares block 0's bias: the checkpoint looks "
                                 "like umt5 (set model_type accordingly)");
      }
      layer.ffn_norm = reader.RequireFloat(p + "1.layer_norm.weight", {D});
      if (config.gated_ffn) {
        layer.wi_0 = reader.Require(p + "1.DenseReluDense.wi_0.weight", {F, D});
        layer.wi_1 = reader.Require(p + "1.DenseReluDense.wi_1.weight", {F, D});
      } else {
        layer.wi_0 = reader.Require(p + "1.DenseReluDense.wi.weight", {F, D});
      }
      layer.wo = reader.Require(p + "1.DenseReluDense.wo.weight", {D, F});
      enc.layers_.push_back(std::move(layer));
    }
    enc.final_norm_ = reader.RequireFloat("encoder.final_layer_norm.weight", {D});
    return enc;
  });
}

Result<T5Encoder> T5Encoder::RandomForBenchmark(const T5EncoderConfig& config, at::Device device,
                                                at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16)
    return InvalidArgument("T5 encoder dtype must be float32 or bfloat16");
  T5Encoder enc;
  enc.config_ = config;
  enc.device_ = device;
  enc.dtype_ = dtype;
  const auto opts = at::TensorOptions().device(device).dtype(dtype);
  const auto f32 = at::TensorOptions().device(device).dtype(at::kFloat);
  const int64_t D = config.d_model, I = config.inner_dim(), F = config.d_ff;
  auto normal = [&](std::vector<int64_t> shape, double std) { return at::randn(shape, opts).mul_(std); };
  enc.embedding_ = normal({config.vocab_size, D}, 1.0);
  for (int64_t i = 0; i < config.num_layers; ++i) {
    Layer l;
    l.attention_norm = at::ones({D}, f32);
    l.q = normal({I, D}, std::pow(static_cast<double>(D * config.d_kv), -0.5));
    l.k = normal({I, D}, std::pow(static_cast<double>(D), -0.5));
    l.v = normal({I, D}, std::pow(static_cast<double>(D), -0.5));
    l.o = normal({D, I}, std::pow(static_cast<double>(I), -0.5));
    if (config.LayerOwnsBias(i))
      l.relative_bias = at::randn({config.relative_attention_num_buckets, config.num_heads}, f32)
                            .mul_(std::pow(static_cast<double>(D), -0.5));
    l.ffn_norm = at::ones({D}, f32);
    l.wi_0 = normal({F, D}, std::pow(static_cast<double>(D), -0.5));
    if (config.gated_ffn) l.wi_1 = normal({F, D}, std::pow(static_cast<double>(D), -0.5));
    l.wo = normal({D, F}, std::pow(static_cast<double>(F), -0.5));
    enc.layers_.push_back(std::move(l));
  }
  enc.final_norm_ = at::ones({D}, f32);
  return enc;
}

at::Tensor T5Encoder::PositionBias(const at::Tensor& table, int64_t length) const {
  // The bias depends only on key - query, so bucket the 2L-1 distinct offsets once and gather them into
  // [L, L] (same values as bucketing every pair, without L^2 logarithms).
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device_);
  const at::Tensor offsets = at::arange(-(length - 1), length, long_opts);
  const at::Tensor per_offset =
      at::embedding(table, T5RelativePositionBucket(offsets, /*bidirectional=*/true,
                                                    config_.relative_attention_num_buckets,
                                                    config_.relative_attention_max_distance));  // [2L-1, H]
  const at::Tensor query = at::arange(length, long_opts).unsqueeze(1);
  const at::Tensor key = at::arange(length, long_opts).unsqueeze(0);
  const at::Tensor index = (key - query + (length - 1)).reshape({-1});
  // [L*L, H] -> [1, H, L, L]
  return per_offset.index_select(0, index).view({length, length, -1}).permute({2, 0, 1}).unsqueeze(0);
}

at::Tensor T5Encoder::RmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  return weight * (x32 * at::rsqrt(variance + config_.layer_norm_epsilon));
}

at::Tensor T5Encoder::Activation(const at::Tensor& x) const {
  switch (config_.activation) {
    case T5Activation::kGeluTanh: return at::gelu(x, "tanh");
    case T5Activation::kGelu: return at::gelu(x);
    case T5Activation::kRelu: return at::relu(x);
    case T5Activation::kSilu: return at::silu(x);
  }
  STAS_CHECK(false) << "unknown activation";
  return x;
}

Result<at::Tensor> T5Encoder::Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask) const {
  if (!input_ids.defined() || input_ids.dim() != 2 || at::isFloatingType(input_ids.scalar_type()) ||
      input_ids.scalar_type() == at::kBool)
    return InvalidArgument("input_ids must be an integer tensor [batch, length]");
  const int64_t B = input_ids.size(0), L = input_ids.size(1);
  if (B == 0 || L == 0) return InvalidArgument("input_ids must not be empty");
  const at::Tensor ids = input_ids.to(at::TensorOptions().device(device_).dtype(at::kLong));
  const int64_t min_id = ids.min().item<int64_t>(), max_id = ids.max().item<int64_t>();
  if (min_id < 0 || max_id >= config_.vocab_size)
    return InvalidArgument("token ids must lie in [0, " + std::to_string(config_.vocab_size) + "), got [" +
                           std::to_string(min_id) + ", " + std::to_string(max_id) + "]");
  // Additive key mask [B, 1, 1, L]: 0 for real tokens, float32 lowest for padding (as transformers).
  at::Tensor key_mask;
  if (attention_mask.defined()) {
    if (attention_mask.dim() != 2 || attention_mask.size(0) != B || attention_mask.size(1) != L)
      return InvalidArgument("attention_mask must have the shape of input_ids [" + std::to_string(B) + ", " +
                             std::to_string(L) + "]");
    const at::Tensor real = attention_mask.to(device_).ne(0);
    key_mask = at::zeros({B, 1, 1, L}, at::TensorOptions().device(device_).dtype(at::kFloat))
                   .masked_fill(real.logical_not().view({B, 1, 1, L}), std::numeric_limits<float>::lowest());
  }

  const int64_t H = config_.num_heads, Dk = config_.d_kv;
  at::Tensor x = at::embedding(embedding_, ids).to(at::kFloat);  // residual stream in float32
  at::Tensor bias;  // [1 or B, H, L, L] float32: position bias + key mask
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& layer = layers_[i];
    if (layer.relative_bias.defined()) {
      bias = PositionBias(layer.relative_bias, L);
      if (key_mask.defined()) bias = bias + key_mask;
    }
    STAS_CHECK(bias.defined()) << "block 0 must own the relative position bias";
    {
      const at::Tensor h = RmsNorm(x, layer.attention_norm).to(dtype_);
      const auto heads = [&](const at::Tensor& w) { return at::linear(h, w).view({B, L, H, Dk}).transpose(1, 2); };
      const at::Tensor q = heads(layer.q), k = heads(layer.k), v = heads(layer.v);
      // No 1/sqrt(d_kv): T5 folds it into the weights.
      at::Tensor scores = at::matmul(q, k.transpose(-2, -1)).to(at::kFloat) + bias;
      const at::Tensor probs = at::softmax(scores, -1).to(dtype_);
      const at::Tensor context = at::matmul(probs, v).transpose(1, 2).reshape({B, L, H * Dk});
      x = x + at::linear(context, layer.o).to(at::kFloat);
    }
    {
      const at::Tensor h = RmsNorm(x, layer.ffn_norm).to(dtype_);
      at::Tensor hidden = Activation(at::linear(h, layer.wi_0));
      if (config_.gated_ffn) hidden = hidden * at::linear(h, layer.wi_1);
      x = x + at::linear(hidden, layer.wo).to(at::kFloat);
    }
  }
  return RmsNorm(x, final_norm_).to(dtype_);
}

}  // namespace stas::models::text
