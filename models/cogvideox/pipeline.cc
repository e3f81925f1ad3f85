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
  // The branches run as separate forwards of the prompt's batch, on one rank exactly as on a CFG pair,
  // so a render is bitwise the same on either placement (a batch of 2B may round differently from
  // two of B). Upstream's single forward of [negative; prompt] is opt-in (batched_cfg).
  const at::Tensor cond_text = prompt_embeds.to(device, at::kFloat);
  const at::Tensor uncond_text = guided ? negative_embeds.to(device, at::kFloat) : at::Tensor();
  const bool batched = guided && options.batched_cfg && !options.cfg_partner;
  const at::Tensor batched_text = batched ? at::cat({uncond_text, cond_text}, 0) : at::Tensor();
  const std::vector<CfgBranch> cond_rows(batch, CfgBranch::kCond), uncond_rows(batch, CfgBranch::kUncond);
  std::vector<CfgBranch> batched_rows = uncond_rows;
  batched_rows.insert(batched_rows.end(), cond_rows.begin(), cond_rows.end());
  ForwardContext context;
  context.hook = options.hook;
  context.parallel = options.parallel;
  context.num_steps = steps;

  for (int i = options.start_step; i < steps; ++i) {
    if (options.should_cancel && options.should_cancel()) return Aborted("CogVideoX sampling cancelled");
    const int64_t t = scheduler.timesteps()[i];
    context.step = i;
    auto forward = [&](const at::Tensor& input, const at::Tensor& text, const std::vector<CfgBranch>& rows) {
      context.branches = rows;
      const at::Tensor timestep = at::full({input.size(0)}, t, at::TensorOptions().dtype(at::kLong));
      return transformer_.Forward(input, timestep, text, rope, context);
    };
    at::Tensor pred;
    if (!guided) {
      STAS_ASSIGN_OR_RETURN(pred, forward(latents, cond_text, cond_rows));
    } else {
      double scale = options.guidance_scale;
      if (options.use_dynamic_cfg) {
        // Upstream's ramp, literally (it mixes the timestep into a step-count ratio).
        const double n = options.num_inference_steps;
        scale = 1 + options.guidance_scale * (1 - std::cos(M_PI * std::pow((n - static_cast<double>(t)) / n, 5.0))) / 2;
      }
      at::Tensor uncond, cond;
      if (options.cfg_partner) {
        const bool mine_cond = options.cfg_partner->branch() == CfgBranch::kCond;
        STAS_ASSIGN_OR_RETURN(at::Tensor mine, forward(latents, mine_cond ? cond_text : uncond_text,
                                                      mine_cond ? cond_rows : uncond_rows));
        const at::Tensor other = options.cfg_partner->Exchange(mine);
        if (!other.defined() || other.sizes() != mine.sizes())
          return Internal("CogVideoX sampler: the CFG partner returned a prediction of another shape");
        cond = mine_cond ? mine : other;
        uncond = mine_cond ? other : mine;
      } else if (batched) {
        STAS_ASSIGN_OR_RETURN(at::Tensor both, forward(at::cat({latents, latents}, 0), batched_text, batched_rows));
        uncond = both.narrow(0, 0, batch);
        cond = both.narrow(0, batch, batch);
      } else {
        STAS_ASSIGN_OR_RETURN(uncond, forward(latents, uncond_text, uncond_rows));
        STAS_ASSIGN_OR_RETURN(cond, forward(latents, cond_text, cond_rows));
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
