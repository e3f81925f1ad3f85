// The Wan2.1 / Wan2.2 video diffusion transformer (diffusers' WanTransformer3DModel), text-to-video.
//
// Loaded from a diffusers-format component (config.json + safetensors with the upstream key names) onto
// one device and dtype: float32 on the CPU, bfloat16 on a GPU. Whatever the dtype, RoPE, the timestep
// embedder, the modulation tables and the LayerNorms run in float32 ("fp32 islands"), as upstream.
//
// Forward takes latents [B, C_in, F, H, W], a timestep per sample [B] or per token [B, L] (Wan2.2
// expand_timesteps) and text embeddings [B, L_text, text_dim], and returns the flow prediction
// [B, C_out, F, H, W] in float32. A ForwardContext adds sequence parallelism (this rank computes only
// its ShardLayout slice of the tokens) and a ResidualHook called after every block.
//
// Thread-safety: a loaded WanTransformer is immutable; Forward may run concurrently from several threads.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "common/weights.h"
#include "models/dit.h"
#include "models/fp8_linear.h"

namespace stas::models::wan {

// The fields of diffusers' transformer/config.json that this implementation honours. Defaults are
// diffusers' constructor defaults. Image conditioning (image_dim, added_kv_proj_dim: Wan I2V) is
// refused with NotImplemented.
struct WanTransformerConfig {
  std::array<int64_t, 3> patch_size{1, 2, 2};  // (t, h, w)
  int64_t num_attention_heads = 40;
  int64_t attention_head_dim = 128;
  int64_t in_channels = 16;
  int64_t out_channels = 16;
  int64_t text_dim = 4096;
  int64_t freq_dim = 256;
  int64_t ffn_dim = 13824;
  int64_t num_layers = 40;
  bool cross_attn_norm = true;
  std::string qk_norm = "rms_norm_across_heads";
  double eps = 1e-6;
  int64_t rope_max_seq_len = 1024;

  int64_t dim() const { return num_attention_heads * attention_head_dim; }
  int64_t patch_volume() const { return patch_size[0] * patch_size[1] * patch_size[2]; }

  // InvalidArgument for malformed or inconsistent values, NotImplemented for features not supported.
  static Result<WanTransformerConfig> FromJson(const Json& json);
  // The config in diffusers' field names (round-trips through FromJson).
  Json ToJson() const;
};

class WanTransformer {
 public:
  // Reads every tensor of the module under its upstream name (e.g. "blocks.0.attn1.to_q.weight") from
  // `weights` and places it on `device`: matmul weights in `dtype` (float32, bfloat16 or float16), the
  // fp32 islands in float32. Fails on a missing tensor, a shape mismatch or a tensor the config does not
  // account for (e.g. a checkpoint with more blocks than num_layers).
  static Result<WanTransformer> Load(const WanTransformerConfig& config, const WeightStore& weights,
                                     at::Device device = at::kCPU, at::ScalarType dtype = at::kFloat);

  // latents: [B, in_channels, F, H, W] with F, H, W divisible by the patch size (any device/dtype; moved
  // to the model's). timestep: [B], or [B, L] with L = the global token count (per-token modulation).
  // text: [B, L_text, text_dim]. With context.parallel, every rank of the group calls Forward with the
  // same full inputs; each computes its token shard and all return the same full output.
  // Returns float32 [B, out_channels, F, H, W] on the model's device.
  Result<at::Tensor> Forward(const at::Tensor& latents, const at::Tensor& timestep, const at::Tensor& text,
                             const ForwardContext& context = {}) const;

  // Opt-in float8 (e4m3) linear layers (models/fp8_linear.h): quantizes every block's projection
  // weights (self- and cross-attention q/k/v/out, the feed-forward) with `scaling`, drops their
  // bfloat16 copies, and runs those layers as float8 GEMMs from then on. The embedders, modulation and
  // output projection stay in the model dtype. Call once, before the model is shared (it mutates it).
  // NotImplemented where float8 cannot run (CPU, LibTorch < 2.5), InvalidArgument for a model not in
  // bfloat16; on error the model is unchanged.
  Status UseFp8Linears(Fp8Scaling scaling);
  bool uses_fp8_linears() const { return !blocks_.empty() && blocks_.front().fp8.qkv.defined(); }

  // The token grid of latents of this spatial/temporal size (tokens ordered frame, row, column).
  TokenGrid GridFor(at::IntArrayRef latent_sizes) const;

  const WanTransformerConfig& config() const { return config_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }

 private:
  struct Block {
    at::Tensor qkv_weight, qkv_bias;            // fused to_q|to_k|to_v of attn1: [3D, D], [3D]
    at::Tensor self_norm_q, self_norm_k;        // RMSNorm over D, float32
    at::Tensor self_out_weight, self_out_bias;  // attn1.to_out.0
    at::Tensor cross_q_weight, cross_q_bias;    // attn2.to_q
    at::Tensor cross_kv_weight, cross_kv_bias;  // fused attn2.to_k|to_v: [2D, D], [2D]
    at::Tensor cross_norm_q, cross_norm_k;      // float32
    at::Tensor cross_out_weight, cross_out_bias;
    at::Tensor norm2_weight, norm2_bias;        // float32; undefined when cross_attn_norm is false
    at::Tensor ffn_in_weight, ffn_in_bias, ffn_out_weight, ffn_out_bias;
    at::Tensor modulation;                      // scale_shift_table as [6, D], float32
    // Float8 copies of the projection weights (UseFp8Linears); undefined otherwise.
    struct Fp8 {
      Fp8Weight qkv, self_out, cross_q, cross_kv, cross_out, ffn_in, ffn_out;
    } fp8;
  };

  // Per-forward conditioning shared by all blocks.
  struct Conditioning;

  WanTransformer() = default;
  at::Tensor ForwardImpl(const at::Tensor& latents, const at::Tensor& timestep, const at::Tensor& text,
                         const ForwardContext& context) const;
  at::Tensor RunBlock(const Block& block, const at::Tensor& hidden, const Conditioning& cond,
                      SequenceParallel* parallel) const;
  // The one self-attention entry point: q, k, v [B, L_local, H, Dh] -> [B, L_local, H, Dh]. Full
  // local attention without a group, the group's SelfAttention with one.
  at::Tensor SelfAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           SequenceParallel* parallel, int64_t valid_tokens) const;
  // RoPE cos/sin for the tokens at global positions [begin, begin + count) of `grid` (positions past
  // the grid, i.e. padding, reuse the last token's angles): each [count, 1, Dh/2], float32.
  std::pair<at::Tensor, at::Tensor> RopeTables(const TokenGrid& grid, int64_t begin, int64_t count) const;

  WanTransformerConfig config_;
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;

  at::Tensor patch_weight_, patch_bias_;  // patch_embedding as a linear map [D, C*pt*ph*pw]
  at::Tensor time_in_weight_, time_in_bias_, time_out_weight_, time_out_bias_;  // float32
  at::Tensor time_proj_weight_, time_proj_bias_;                                // [6D, D]
  at::Tensor text_in_weight_, text_in_bias_, text_out_weight_, text_out_bias_;
  std::vector<Block> blocks_;
  at::Tensor out_modulation_;             // scale_shift_table as [2, D], float32
  at::Tensor proj_out_weight_, proj_out_bias_;
  // Half-size (one entry per rotated pair) RoPE angle tables per axis: [rope_max_seq_len, d_axis/2].
  at::Tensor rope_cos_t_, rope_sin_t_, rope_cos_h_, rope_sin_h_, rope_cos_w_, rope_sin_w_;
};

}  // namespace stas::models::wan
