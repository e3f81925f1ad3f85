// T5-family text encoders, as transformers' T5EncoderModel and UMT5EncoderModel compute them:
//   x = embed(ids); per layer: x += SelfAttention(RMSNorm(x)); x += FFN(RMSNorm(x)); out = RMSNorm(x).
//  - RMSNorm: x * rsqrt(mean(x^2) + eps) * w, no mean subtraction, no bias, computed in float32.
//  - Attention: no 1/sqrt(d) scaling (folded into the weights at training time); scores get a learned
//    relative position bias (bidirectional buckets) plus the padding mask (float32 lowest for keys with
//    mask 0, so a fully padded row still averages, as transformers does); softmax in float32.
//    T5 v1.1 / mT5: block 0 owns the bias table and every block reuses it; UMT5: every block owns one.
//  - FFN: gated (wo(act(wi_0 x) * wi_1 x)) or plain (wo(act(wi x))); "gated-gelu" is GELU with tanh.
// Weights use the upstream names: shared.weight (or encoder.embed_tokens.weight, the same tied
// tensor), encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight,
// encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight, encoder.block.{i}.layer.0.layer_norm.weight,
// encoder.block.{i}.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight (or wi), encoder.block.{i}.layer.1.layer_norm.weight,
// encoder.final_layer_norm.weight.
//
// Precision: float32, or bfloat16 for the matmuls (GPU) with float32 norms, position bias, softmax and a
// float32 residual stream (transformers keeps the residual in bf16; float32 is strictly closer to the
// float32 reference and costs nothing here). float16 is refused: T5 activations overflow it.
// A loaded T5Encoder is immutable; Forward is safe to call from several threads.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "common/weights.h"

namespace stas::models::text {

enum class T5Variant {
  kT5,    // T5 v1.1 / mT5 (CogVideoX): only block 0 owns the relative position bias
  kUmt5,  // UMT5 (Wan): every block owns its relative position bias
};

enum class T5Activation { kGeluTanh, kGelu, kRelu, kSilu };

struct T5EncoderConfig {
  T5Variant variant = T5Variant::kUmt5;
  int64_t vocab_size = 0;
  int64_t d_model = 0;
  int64_t d_kv = 0;
  int64_t d_ff = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t relative_attention_num_buckets = 32;
  int64_t relative_attention_max_distance = 128;
  double layer_norm_epsilon = 1e-6;
  bool gated_ffn = true;
  T5Activation activation = T5Activation::kGeluTanh;

  // From a transformers config.json. model_type "umt5" -> kUmt5, "t5"/"mt5" -> kT5; when model_type is
  // absent, `default_variant` decides (InvalidArgument when neither says). Sizes are required;
  // bucket count, max distance, epsilon and feed_forward_proj default as in transformers.
  static Result<T5EncoderConfig> FromJson(const Json& config, std::optional<T5Variant> default_variant = std::nullopt);
  // The transformers config.json fields (model_type, sizes, feed_forward_proj, ...).
  Json ToJson() const;
  // google/umt5-xxl as Wan2.1/2.2 use it: d 4096, 64 heads x 64, d_ff 10240, 24 layers, vocab 256384.
  static T5EncoderConfig Umt5Xxl();
  // google/t5-v1_1-xxl as CogVideoX uses it: d 4096, 64 heads x 64, d_ff 10240, 24 layers, vocab 32128.
  static T5EncoderConfig T5V11Xxl();

  int64_t inner_dim() const { return num_heads * d_kv; }
  bool LayerOwnsBias(int64_t layer) const { return variant == T5Variant::kUmt5 || layer == 0; }
};

// Every weight an encoder of this config needs, with its shape, in upstream names (the embedding as
// shared.weight).
std::vector<std::pair<std::string, std::vector<int64_t>>> T5EncoderWeightShapes(const T5EncoderConfig& config);
int64_t T5EncoderParameterCount(const T5EncoderConfig& config);
// Checks names and shapes against a store without converting any data (safetensors tensors stay
// mapped), e.g. to vet a 5.7B-parameter checkpoint before loading it. InvalidArgument lists problems.
Status CheckT5EncoderWeights(const T5EncoderConfig& config, const WeightStore& weights);

// transformers' _relative_position_bucket: maps (key position - query position) to a bucket id.
// bidirectional: half the buckets for each sign; half of those exact, the rest log-spaced up to
// max_distance (everything further shares the last bucket).
at::Tensor T5RelativePositionBucket(const at::Tensor& relative_position, bool bidirectional, int64_t num_buckets,
                                    int64_t max_distance);

class T5Encoder {
 public:
  // dtype: float32 or bfloat16 (float16 gives InvalidArgument). Missing or misshapen weights give
  // InvalidArgument naming the tensor.
  static Result<T5Encoder> Load(const T5EncoderConfig& config, const WeightStore& weights,
                                at::Device device = at::kCPU, at::ScalarType dtype = at::kFloat);
  // Random weights (normal, transformers-like scales) made directly on `device`; for benchmarks of real
  // configs where a checkpoint is not at hand. Not deterministic across devices.
  static Result<T5Encoder> RandomForBenchmark(const T5EncoderConfig& config, at::Device device, at::ScalarType dtype);

  // input_ids: [B, L] integer ids in [0, vocab_size). attention_mask: [B, L] (nonzero = real token), or
  // an undefined tensor for "every token is real" (CogVideoX passes no mask). Returns last_hidden_state
  // [B, L, d_model] for every position (padded ones included) in the encoder's dtype on its device.
  Result<at::Tensor> Forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = at::Tensor()) const;

  const T5EncoderConfig& config() const { return config_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }

 private:
  struct Layer {
    at::Tensor attention_norm;       // [D] float32
    at::Tensor q, k, v, o;           // [inner, D] / [D, inner]
    at::Tensor relative_bias;        // [buckets, heads] float32; undefined when the layer reuses block 0's
    at::Tensor ffn_norm;             // [D] float32
    at::Tensor wi_0, wi_1, wo;       // gated: wi_0, wi_1 [d_ff, D]; plain: wi_0 holds wi
  };
  at::Tensor PositionBias(const at::Tensor& table, int64_t length) const;  // [1, H, L, L] float32
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight) const;
  at::Tensor Activation(const at::Tensor& x) const;

  T5EncoderConfig config_;
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
  at::Tensor embedding_;   // [vocab, D] compute dtype
  at::Tensor final_norm_;  // [D] float32
  std::vector<Layer> layers_;
};

}  // namespace stas::models::text
