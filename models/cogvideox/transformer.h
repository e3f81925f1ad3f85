// The CogVideoX video diffusion transformer (diffusers' CogVideoXTransformer3DModel), as CogVideoX-5B
// (and 1.5, with a temporal patch) uses it: text and video tokens in one sequence, joint self-attention
// with per-head LayerNorm on q/k and 3D RoPE on the video tokens only, and "expert" adaptive LayerNorm
// (one timestep modulation for the text stream, another for the video stream, sharing the norm weights).
//
// Loaded from a diffusers-format component (config.json + safetensors with the upstream key names) onto
// one device and dtype. The timestep embedder runs in float32 whatever the dtype.
//
// Forward takes latents [B, F, C, H, W] (CogVideoX's frame-major layout, unlike Wan), a timestep per
// sample [B], text embeddings [B, L_text, text_embed_dim] and the RoPE tables of the video tokens, and
// returns the model output (v-prediction for the released checkpoints) [B, F, C_out, H, W] in float32.
//
// The seams of models/dit.h: a ResidualHook sees the video stream [B, local video tokens, D] after every
// block (BlockContext.text_tokens = 0: the text stream is not part of it, so STAS masks and maxima cover
// video tokens only); under SequenceParallel each rank holds a slice of the video tokens and the whole
// text stream (226 tokens, replicated), and attention runs through SequenceParallel::JointSelfAttention.
//
// Thread-safety: a loaded CogVideoXTransformer is immutable; Forward may run concurrently.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "common/weights.h"
#include "models/dit.h"

namespace stas::models::cogvideox {

// The fields of diffusers' transformer/config.json this implementation honours; defaults are diffusers'
// constructor defaults. Absolute sin-cos or learned positional embeddings (CogVideoX-2B, the I2V
// models) and the "ofs" embedding (CogVideoX 1.5 I2V) are refused with NotImplemented.
struct CogVideoXTransformerConfig {
  int64_t num_attention_heads = 30;
  int64_t attention_head_dim = 64;
  int64_t in_channels = 16;
  int64_t out_channels = 16;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  int64_t time_embed_dim = 512;
  int64_t text_embed_dim = 4096;
  int64_t num_layers = 30;
  bool attention_bias = true;
  int64_t sample_width = 90;   // latent width the model was trained at (RoPE crop reference)
  int64_t sample_height = 60;
  int64_t sample_frames = 49;
  int64_t patch_size = 2;
  std::optional<int64_t> patch_size_t;  // CogVideoX 1.5: patches span patch_size_t latent frames
  int64_t temporal_compression_ratio = 4;
  int64_t max_text_seq_length = 226;
  std::string activation_fn = "gelu-approximate";  // or "gelu"
  bool norm_elementwise_affine = true;
  double norm_eps = 1e-5;
  // diffusers' default is false (absolute sin-cos positions, CogVideoX-2B), which is not supported.
  bool use_rotary_positional_embeddings = false;
  bool patch_bias = true;

  int64_t dim() const { return num_attention_heads * attention_head_dim; }
  int64_t temporal_patch() const { return patch_size_t.value_or(1); }

  // InvalidArgument for malformed or inconsistent values, NotImplemented for unsupported features.
  static Result<CogVideoXTransformerConfig> FromJson(const Json& json);
};

// RoPE tables of the video tokens, one row per token (ordered frame, row, column), attention_head_dim
// columns with every angle repeated for its rotated pair: cos and sin [L_video, attention_head_dim].
struct RotaryTables {
  at::Tensor cos;
  at::Tensor sin;
};

// The tables CogVideoXPipeline computes for latents of latent_frames x latent_height x latent_width
// (before patching). CogVideoX 1.0 (no patch_size_t): positions are the token grid resized and
// centre-cropped onto the training grid (sample_height/patch x sample_width/patch); 1.5: plain integer
// positions, the grid must fit the training grid. Per axis theta = 10000, head dim split t/h/w =
// d/4, 3d/8, 3d/8; float32 as upstream. InvalidArgument when sizes do not divide by the patch.
Result<RotaryTables> ComputeRotaryTables(const CogVideoXTransformerConfig& config, int64_t latent_frames,
                                         int64_t latent_height, int64_t latent_width);

class CogVideoXTransformer {
 public:
  // Reads every tensor of the module under its upstream name (e.g. "transformer_blocks.0.attn1.to_q.weight")
  // and places it on `device` in `dtype` (float32, bfloat16 or float16; the time embedder in float32).
  // Fails with InvalidArgument on a missing tensor, a shape mismatch, or tensors the config does not
  // account for (e.g. more blocks than num_layers).
  static Result<CogVideoXTransformer> Load(const CogVideoXTransformerConfig& config, const WeightStore& weights,
                                           at::Device device = at::kCPU, at::ScalarType dtype = at::kFloat);

  // latents [B, F, in_channels, H, W] with H, W divisible by patch_size (and F by patch_size_t);
  // timestep [B] or a single value; text [B, L_text, text_embed_dim]; rope: tables for this token grid
  // (ComputeRotaryTables) of the whole grid. Returns float32 [B, F, out_channels, H, W] on the model's
  // device (on every rank under sequence parallelism). `context`: hook, sequence parallelism, step and
  // CFG branches (models/dit.h).
  Result<at::Tensor> Forward(const at::Tensor& latents, const at::Tensor& timestep, const at::Tensor& text,
                             const RotaryTables& rope, const ForwardContext& context = {}) const;

  const CogVideoXTransformerConfig& config() const { return config_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }

 private:
  struct LayerNormWeights {
    at::Tensor weight, bias;  // undefined when the norm has no affine parameters
  };
  struct Block {
    at::Tensor norm1_weight, norm1_bias;  // modulation linear: [6D, time_embed_dim]
    LayerNormWeights norm1;
    at::Tensor qkv_weight, qkv_bias;      // to_q|to_k|to_v fused: [3D, D] (bias undefined without attention_bias)
    LayerNormWeights norm_q, norm_k;      // per head, over attention_head_dim
    at::Tensor out_weight, out_bias;
    at::Tensor norm2_weight, norm2_bias;
    LayerNormWeights norm2;
    at::Tensor ff_in_weight, ff_in_bias, ff_out_weight, ff_out_bias;
  };

  CogVideoXTransformer() = default;
  at::Tensor ForwardImpl(const at::Tensor& latents, const at::Tensor& timestep, const at::Tensor& text,
                         const RotaryTables& rope, const ForwardContext& context) const;
  // One block on this rank's video tokens [B, Lv_local, D] and the text stream [B, Lt, D], in place;
  // cos/sin [Lv_local, 1, hd]; `valid_video_tokens`: real video tokens of the whole sequence.
  void RunBlock(const Block& block, at::Tensor& video, at::Tensor& text, const at::Tensor& temb_act,
                const at::Tensor& cos, const at::Tensor& sin, SequenceParallel* parallel,
                int64_t valid_video_tokens) const;

  CogVideoXTransformerConfig config_;
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;

  at::Tensor patch_weight_, patch_bias_;  // patch_embed.proj as a linear map [D, C*pt*p*p]
  at::Tensor text_proj_weight_, text_proj_bias_;
  at::Tensor time_in_weight_, time_in_bias_, time_out_weight_, time_out_bias_;  // float32
  std::vector<Block> blocks_;
  LayerNormWeights norm_final_;
  at::Tensor norm_out_weight_, norm_out_bias_;  // [2D, time_embed_dim]: shift, scale
  LayerNormWeights norm_out_;
  at::Tensor proj_out_weight_, proj_out_bias_;
};

}  // namespace stas::models::cogvideox
