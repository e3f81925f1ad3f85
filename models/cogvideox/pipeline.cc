#include "models/cogvideox/pipeline.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace stas::models::cogvideox {

Result<at::Tensor> InitialNoise(uint64_t seed, int64_t batch, int64_t channels, int64_t frames, int64_t height,
                                int64_t width, int64_t temporal, int64_t spatial) {
  if (batch < 1 || channels < 1 || temporal < 1 || spatial < 1)
    return InvalidArgument("initial noise: batch, channels and compression must be positive");
  if (frames < 1 || (frames - 1) % temporal != 0)
    return InvalidArgument("frames must be " + std::to_string(temporal) + "k+1, got " + std::to_string(frames));
  if (height < 1 || width < 1 || height % spatial != 0 || width % spatial != 0)
    return InvalidArgument("height and width must be positive multiples of " + std::to_string(spatial) + ", got " +
                           std::to_string(height) + "x" + std::to_string(width));
  at::Generator generator = at::detail::createCPUGenerator(seed);
  return at::randn({batch, (frames - 1) / temporal + 1, channels, height / spatial, width / spatial}, generator,
                   at::TensorOptions().dtype(at::kFloat));
}

Result<at::Tensor> CogVideoXSampler::Sample(const at::Tensor& latents_in, const at::Tensor& prompt_embeds,
                                            const at::Tensor& negative_embeds,
                                            const CogVideoXSamplingOptions& options) const {
  const auto& config = transformer_.config();
  if (!latents_in.defined() || latents_in.dim() != 5)
    return InvalidArgument("CogVideoX sampler: latents must be [B, F, C, h, w]");
  const bool guided = options.guidance_scale > 1.0;
  if (guided && (!negative_embeds.defined() || negative_embeds.sizes() != prompt_embeds.sizes()))
    return InvalidArgument("CogVideoX sampler: guidance needs negative embeddings shaped like the prompt's");
  if (!prompt_embeds.defined() || prompt_embeds.dim() != 3 || prompt_embeds.size(0) != latents_in.size(0))
    return InvalidArgument("CogVideoX sampler: prompt embeddings must be [B, L, D] with the latents' batch");
  if (options.cfg_partner && !guided)
    return InvalidArgument("CogVideoX sampler: CFG-parallel needs guidance_scale > 1");

  CogVideoXDDIMScheduler scheduler(scheduler_config_);
  STAS_RETURN_IF_ERROR(scheduler.SetTimesteps(options.num_inference_steps));
  const int steps = scheduler.num_inference_steps();
  if (options.start_step < 0 || options.start_step > steps)
    return InvalidArgument("CogVideoX sampler: start_step " + std::to_string(options.start_step) + " outside [0, " +
                           std::to_string(steps) + "]");
  STAS_ASSIGN_OR_RETURN(RotaryTables rope,
                        ComputeRotaryTables(config, latents_in.size(1), latents_in.size(3), latents_in.size(4)));

  const at::Device device = transformer_.device();
  const int64_t batch = latents_in.size(0);
  at::Tensor latents = latents_in.to(device, at::kFloat);
  // Upstream batches [negative; prompt] through one forward; a CFG pair computes one branch per rank.
  at::Tensor text = prompt_embeds.to(device, at::kFloat);
  std::vector<CfgBranch> branches(batch, CfgBranch::kCond);
  if (options.cfg_partner) {
    const CfgBranch mine = options.cfg_partner->branch();
    if (mine == CfgBranch::kUncond) text = negative_embeds.to(device, at::kFloat);
    branches.assign(batch, mine);
  } else if (guided) {
    text = at::cat({negative_embeds.to(device, at::kFloat), text}, 0);
    branches.insert(branches.begin(), batch, CfgBranch::kUncond);
  }
  ForwardContext context;
  context.hook = options.hook;
  context.parallel = options.parallel;
  context.branches = branches;
  context.num_steps = steps;

  for (int i = options.start_step; i < steps; ++i) {
    if (options.should_cancel && options.should_cancel()) return Aborted("CogVideoX sampling cancelled");
    const int64_t t = scheduler.timesteps()[i];
    const bool batched = guided && !options.cfg_partner;
    const at::Tensor model_input = batched ? at::cat({latents, latents}, 0) : latents;
    const at::Tensor timestep = at::full({model_input.size(0)}, t, at::TensorOptions().dtype(at::kLong));
    context.step = i;
    STAS_ASSIGN_OR_RETURN(at::Tensor pred, transformer_.Forward(model_input, timestep, text, rope, context));
    if (guided) {
      double scale = options.guidance_scale;
      if (options.use_dynamic_cfg) {
        // Upstream's ramp, literally (it mixes the timestep into a step-count ratio).
        const double n = options.num_inference_steps;
        scale = 1 + options.guidance_scale * (1 - std::cos(M_PI * std::pow((n - static_cast<double>(t)) / n, 5.0))) / 2;
      }
      at::Tensor uncond, cond;
      if (options.cfg_partner) {
        const at::Tensor other = options.cfg_partner->Exchange(pred);
        const bool mine_cond = options.cfg_partner->branch() == CfgBranch::kCond;
        cond = mine_cond ? pred : other;
        uncond = mine_cond ? other : pred;
      } else {
        std::vector<at::Tensor> halves = pred.chunk(2, 0);
        uncond = halves[0];
        cond = halves[1];
      }
      pred = uncond + scale * (cond - uncond);
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
