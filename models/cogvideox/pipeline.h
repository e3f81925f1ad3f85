// The CogVideoX text-to-video sampling loop (diffusers' CogVideoXPipeline from prompt embeddings on):
// DDIM (CogVideoXDDIMScheduler, v-prediction, zero terminal SNR, trailing timesteps for the released
// models) with classifier-free guidance (two forwards, or upstream's one batched forward), RoPE
// tables for the latent grid, then the VAE decode of latents / scaling_factor to frames in [0, 1].
//
// Text encoding (T5, models/text) is separate: the caller passes prompt embeddings.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>

#include "common/status.h"
#include "models/cogvideox/transformer.h"
#include "models/dit.h"
#include "models/cogvideox/vae.h"
#include "models/schedulers/ddim.h"

namespace stas::models::cogvideox {

struct CogVideoXSamplingOptions {
  int num_inference_steps = 50;
  double guidance_scale = 6.0;   // classifier-free guidance when > 1, as upstream
  bool use_dynamic_cfg = false;  // upstream's cosine ramp of the guidance over the timesteps
  // One forward of batch 2B ([negative; prompt], as upstream) instead of two of B. Off by default:
  // two forwards are what a CFG-parallel pair computes, so only then is a render bitwise the same on
  // one rank and on a pair (docs/PARALLELISM.md, "Same seed, same video").
  bool batched_cfg = false;
  ResidualHook* hook = nullptr;  // called after every block of every forward (STAS, MA analysis)
  SequenceParallel* parallel = nullptr;
  CfgPartner* cfg_partner = nullptr;  // with guidance: compute one branch here, exchange the other
  // Resume: skip the first `start_step` steps; the latents passed are those reported after that many
  // steps by an earlier run of the same job (DDIM keeps no other state between steps).
  int start_step = 0;
  // Called after every step with the step index, the timestep and the latents after the step.
  std::function<void(int step, int64_t timestep, const at::Tensor& latents)> on_step;
  std::function<bool()> should_cancel;  // polled before every step; true ends Sample with Aborted
};

// The initial noise of a render as CogVideoXPipeline.prepare_latents draws it: at::randn of
// [batch, (frames - 1) / temporal + 1, channels, height / spatial, width / spatial] from a CPU generator
// seeded with `seed`, float32 on the CPU (the same on any device or rank count). InvalidArgument when
// frames is not temporal*k + 1 or the size not a multiple of `spatial`.
Result<at::Tensor> InitialNoise(uint64_t seed, int64_t batch, int64_t channels, int64_t frames, int64_t height,
                                int64_t width, int64_t temporal = 4, int64_t spatial = 8);

class CogVideoXSampler {
 public:
  // The transformer must outlive the sampler.
  CogVideoXSampler(const CogVideoXTransformer& transformer, DDIMConfig scheduler_config)
      : transformer_(transformer), scheduler_config_(std::move(scheduler_config)) {}

  // latents: the initial noise [B, F, C, h, w] (CogVideoX's frame-major layout; scheduler init sigma is 1).
  // prompt_embeds / negative_embeds: [B, L, text_embed_dim] (negative required when guidance_scale > 1,
  // same shape as the prompt's). Returns the final latents [B, F, C, h, w], float32, on the model's device.
  // Errors: InvalidArgument for inconsistent inputs, Aborted when cancelled, the transformer's errors.
  Result<at::Tensor> Sample(const at::Tensor& latents, const at::Tensor& prompt_embeds,
                            const at::Tensor& negative_embeds, const CogVideoXSamplingOptions& options) const;

 private:
  const CogVideoXTransformer& transformer_;
  DDIMConfig scheduler_config_;
};

// Final latents [B, F, C, h, w] -> video frames [B, frames, 3, H, W] in [0, 1]: the latents are divided
// by the VAE's scaling_factor, moved to [B, C, F, h, w] and decoded.
Result<at::Tensor> DecodeCogVideoXLatents(const CogVideoXVaeDecoder& vae, const at::Tensor& latents);

}  // namespace stas::models::cogvideox
