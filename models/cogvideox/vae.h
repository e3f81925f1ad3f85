// The CogVideoX VAE decoder (diffusers' AutoencoderKLCogVideoX.decode): 3D causal convolutions (time
// padded in front with the first frame, or with the previous chunk's frames), spatial norms (GroupNorm
// modulated by convolutions of the nearest-resized latent), residual blocks, up blocks that double the
// spatial size and, in the first log2(temporal_compression_ratio) of them, the frame count (an odd chunk
// keeps its first frame single).
//
// Decoding is frame-batched as upstream: the latent frames are decoded in chunks of 2 (the first chunk
// takes the odd frame), each conv keeping the last frames of its padded input as the next chunk's
// front padding. The chunking is part of the model's output, not an optimization: GroupNorm statistics
// and the temporal upsampling are per chunk. 13 latent frames -> 49 video frames.
//
// Thread-safety: a loaded decoder is immutable; Decode may run concurrently.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "common/weights.h"

namespace stas::models::cogvideox {

// The decoder-relevant fields of diffusers' vae/config.json (defaults: diffusers' constructor's).
struct CogVideoXVaeConfig {
  int64_t out_channels = 3;
  std::vector<int64_t> block_out_channels{128, 256, 256, 512};
  int64_t latent_channels = 16;
  int64_t layers_per_block = 3;
  int64_t norm_num_groups = 32;
  int64_t temporal_compression_ratio = 4;
  double scaling_factor = 1.15258426;

  // Pixels per latent pixel: 2^(number of up blocks - 1).
  int64_t spatial_compression() const { return int64_t{1} << (block_out_channels.size() - 1); }
  // InvalidArgument for malformed values; NotImplemented for post_quant_conv, shift_factor, latent
  // statistics or up blocks other than CogVideoXUpBlock3D.
  static Result<CogVideoXVaeConfig> FromJson(const Json& json);
};

class CogVideoXVaeDecoder {
 public:
  // `weights` holds the VAE's state dict (keys "decoder.*"; the encoder's are ignored). Tensors are
  // placed per `options` (device and dtype, float32 by default). Missing or misshapen tensors and
  // unexpected "decoder.*" tensors are InvalidArgument.
  static Result<CogVideoXVaeDecoder> Load(const CogVideoXVaeConfig& config, const WeightStore& weights,
                                          at::TensorOptions options = at::TensorOptions().dtype(at::kFloat));

  // latents [B, latent_channels, F, h, w], already divided by scaling_factor (the pipeline's job). Returns
  // [B, out_channels, frames, h*s, w*s] in float32, unclamped (roughly [-1, 1]).
  Result<at::Tensor> Decode(const at::Tensor& latents) const;

  const CogVideoXVaeConfig& config() const { return config_; }

  struct CausalConv;
  struct SpatialNorm;
  struct ResnetBlock;
  struct UpBlock;
  struct Modules;

 private:
  CogVideoXVaeDecoder() = default;
  CogVideoXVaeConfig config_;
  at::TensorOptions options_;
  std::shared_ptr<const Modules> modules_;
};

// Decoded video [B, 3, frames, H, W] in about [-1, 1] -> frames [B, frames, 3, H, W] in [0, 1]
// (diffusers' postprocess_video with output_type "pt").
at::Tensor CogVideoXVideoToFrames(const at::Tensor& video);

}  // namespace stas::models::cogvideox
