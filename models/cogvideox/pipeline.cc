#include "models/cogvideox/pipeline.h"

#include <cmath>

namespace stas::models::cogvideox {

Result<at::Tensor> CogVideoXSampler::Sample(const at::Tensor& latents_in, const at::Tensor& prompt_embeds,
                                            const at::Tensor& negative_embeds,
                                            const CogVideoXSamplingOptions& options) const {
  const auto& config = transformer_.config();
  if (latents_in.dim() != 5)
    return InvalidArgument("CogVideoX sampler: latents must be [B, F, C, h, w]");
  const bool guided = options.guidance_scale > 1.0;
  if (guided && (!negative_embeds.defined() || negative_embeds.sizes() != prompt_embeds.sizes()))
    return InvalidArgument("CogVideoX sampler: guidance needs negative embeddings shaped like the prompt's");
  if (prompt_embeds.dim() != 3 || prompt_embeds.size(0) != latents_in.size(0))
    return InvalidArgument("CogVideoX sampler: prompt embeddings must be [B, L, D] with the latents' batch");

  CogVideoXDDIMScheduler scheduler(scheduler_config_);
  STAS_RETURN_IF_ERROR(scheduler.SetTimesteps(options.num_inference_steps));
  STAS_ASSIGN_OR_RETURN(RotaryTables rope,
                        ComputeRotaryTables(config, latents_in.size(1), latents_in.size(3), latents_in.size(4)));

  const at::Device device = transformer_.device();
  at::Tensor latents = latents_in.to(device, at::kFloat);
  // Upstream batches [negative; prompt] through one forward.
  const at::Tensor text = guided ? at::cat({negative_embeds, prompt_embeds}, 0).to(device, at::kFloat)
                                 : prompt_embeds.to(device, at::kFloat);
  const int steps = scheduler.num_inference_steps();
  for (int i = 0; i < steps; ++i) {
    if (options.should_cancel && options.should_cancel()) return Aborted("CogVideoX sampling cancelled");
    const int64_t t = scheduler.timesteps()[i];
    const at::Tensor model_input = guided ? at::cat({latents, latents}, 0) : latents;
    const at::Tensor timestep = at::full({model_input.size(0)}, t, at::TensorOptions().dtype(at::kLong));
    STAS_ASSIGN_OR_RETURN(at::Tensor pred, transformer_.Forward(model_input, timestep, text, rope));
    if (guided) {
      double scale = options.guidance_scale;
      if (options.use_dynamic_cfg) {
        // Upstream's ramp, literally (it mixes the timestep into a step-count ratio).
        const double n = options.num_inference_steps;
        scale = 1 + options.guidance_scale * (1 - std::cos(M_PI * std::pow((n - static_cast<double>(t)) / n, 5.0))) / 2;
      }
      std::vector<at::Tensor> halves = pred.chunk(2, 0);
      pred = halves[0] + scale * (halves[1] - halves[0]);
    }
    STAS_ASSIGN_OR_RETURN(latents, scheduler.Step(pred, t, latents));
    if (options.on_step) options.on_step(i, t, latents);
  }
  return latents;
}

Result<at::Tensor> DecodeCogVideoXLatents(const CogVideoXVaeDecoder& vae, const at::Tensor& latents) {
  if (latents.dim() != 5) return InvalidArgument("CogVideoX decode: latents must be [B, F, C, h, w]");
  const at::Tensor z = latents.permute({0, 2, 1, 3, 4}) / vae.config().scaling_factor;
  STAS_ASSIGN_OR_RETURN(at::Tensor video, vae.Decode(z));
  return CogVideoXVideoToFrames(video);
}

}  // namespace stas::models::cogvideox
