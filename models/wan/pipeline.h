// The Wan text-to-video sampling loop (diffusers' WanPipeline from prompt embeddings to final latents):
// UniPC flow-matching steps with classifier-free guidance, optional Wan2.2 per-token timesteps,
// progress callbacks, cancellation between steps, resumable scheduler state, and the seams for
// sequence parallelism, CFG-parallelism and residual hooks (STAS).
//
// Text encoding and VAE decoding are separate components: the caller passes prompt embeddings and
// gets latents back.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <optional>

#include "common/json.h"
#include "common/status.h"
#include "models/dit.h"
#include "models/schedulers/unipc.h"
#include "models/wan/transformer.h"

namespace stas::models::wan {

// How the VAE compresses a video into latents (diffusers' scale_factor_temporal / scale_factor_spatial).
struct VaeCompression {
  int64_t temporal = 4;
  int64_t spatial = 8;  // 16 for the Wan2.2 VAE
  // From the VAE's config.json; missing fields keep the Wan2.1 defaults (4, 8).
  static Result<VaeCompression> FromVaeConfig(const Json& vae_config);
};

// The initial noise of a render, drawn on the CPU so it is the same for any device or rank count:
//   at::randn({batch, channels, (frames - 1) / temporal + 1, height / spatial, width / spatial},
//             a CPU generator seeded with `seed`), float32, on the CPU.
// frames must be temporal*k + 1 and height/width multiples of `spatial` (InvalidArgument otherwise).
Result<at::Tensor> InitialNoise(uint64_t seed, int64_t batch, int64_t channels, int64_t frames, int64_t height,
                                int64_t width, VaeCompression compression = {});

// Reported after every completed step.
struct StepProgress {
  int step = 0;        // the step just completed, 0-based
  int num_steps = 0;
  int64_t timestep = 0;
  float sigma = 0;     // noise level reached after the step
  const at::Tensor* latents = nullptr;                     // the latents after the step
  const UniPCMultistepScheduler* scheduler = nullptr;      // SaveState() checkpoints the history
};

struct WanSamplingOptions {
  int num_inference_steps = 50;
  double guidance_scale = 5.0;       // classifier-free guidance when > 1, as upstream
  std::optional<double> shift;       // overrides the scheduler config's flow_shift
  bool expand_timesteps = false;     // Wan2.2 TI2V: timestep per token (all equal to t in text-to-video)
  // One forward of batch 2B instead of two of B; falls back to two when the prompt and negative lengths
  // differ. Off by default and for renders: two forwards are what a CFG-parallel pair computes, and a
  // batch of 2B may round differently from two of B, so only two forwards are bitwise the same on one
  // rank and on a pair (docs/PARALLELISM.md, "Same seed, same video").
  bool batched_cfg = false;
  ResidualHook* hook = nullptr;      // called after every block of every forward
  SequenceParallel* parallel = nullptr;
  CfgPartner* cfg_partner = nullptr;  // with guidance: compute one branch here, exchange the other
  std::function<void(const StepProgress&)> on_step;
  std::function<bool()> should_cancel;  // polled before every step; true ends Sample with Aborted
  // Resume: continue from a SaveState() of an earlier run of the same job; `latents` are then the
  // latents reported with that state.
  const UniPCMultistepScheduler::State* resume = nullptr;
};

class WanSampler {
 public:
  // The transformer must outlive the sampler.
  WanSampler(const WanTransformer& transformer, UniPCConfig scheduler_config)
      : transformer_(transformer), scheduler_config_(std::move(scheduler_config)) {}

  // latents: the initial noise [B, C, F, H, W] (any device; sampled in float32 on the transformer's
  // device). prompt_embeds: [B, L_text, text_dim]; negative_embeds: the same batch, required when
  // guidance_scale > 1. Returns the final latents, float32, on the transformer's device.
  // Errors: InvalidArgument for inconsistent inputs, Aborted when cancelled, the transformer's errors.
  Result<at::Tensor> Sample(const at::Tensor& latents, const at::Tensor& prompt_embeds,
                            const at::Tensor& negative_embeds, const WanSamplingOptions& options) const;

 private:
  const WanTransformer& transformer_;
  UniPCConfig scheduler_config_;
};

}  // namespace stas::models::wan
