#include "models/wan/pipeline.h"

#include <ATen/CPUGeneratorImpl.h>

#include <sstream>

namespace stas::models::wan {
namespace {

std::string ShapeString(at::IntArrayRef sizes) {
  std::ostringstream ss;
  ss << sizes;
  return ss.str();
}

}  // namespace

Result<VaeCompression> VaeCompression::FromVaeConfig(const Json& vae_config) {
  if (!vae_config.is_object()) return InvalidArgument("VAE config must be a JSON object");
  VaeCompression c;
  STAS_RETURN_IF_ERROR(CatchConfigErrors("VAE config", [&] {
    c.temporal = JsonValueOr<int64_t>(vae_config, "scale_factor_temporal", c.temporal);
    c.spatial = JsonValueOr<int64_t>(vae_config, "scale_factor_spatial", c.spatial);
  }));
  if (c.temporal < 1 || c.spatial < 1) return InvalidArgument("VAE scale factors must be positive");
  return c;
}

Result<at::Tensor> InitialNoise(uint64_t seed, int64_t batch, int64_t channels, int64_t frames, int64_t height,
                                int64_t width, VaeCompression compression) {
  if (batch < 1 || channels < 1) return InvalidArgument("initial noise: batch and channels must be positive");
  if (frames < 1 || (frames - 1) % compression.temporal != 0)
    return InvalidArgument("frames must be " + std::to_string(compression.temporal) + "k+1, got " +
                           std::to_string(frames));
  if (height < 1 || width < 1 || height % compression.spatial != 0 || width % compression.spatial != 0)
    return InvalidArgument("height and width must be positive multiples of " + std::to_string(compression.spatial) +
                           ", got " + std::to_string(height) + "x" + std::to_string(width));
  at::Generator generator = at::detail::createCPUGenerator(seed);
  return at::randn({batch, channels, (frames - 1) / compression.temporal + 1, height / compression.spatial,
                    width / compression.spatial},
                   generator, at::TensorOptions().dtype(at::kFloat));
}

Result<at::Tensor> WanSampler::Sample(const at::Tensor& latents, const at::Tensor& prompt_embeds,
                                      const at::Tensor& negative_embeds, const WanSamplingOptions& options) const {
  const bool guided = options.guidance_scale > 1.0;
  if (!latents.defined() || latents.dim() != 5)
    return InvalidArgument("Wan sampler: latents must be [B, C, F, H, W]");
  const int64_t batch = latents.size(0);
  if (!prompt_embeds.defined() || prompt_embeds.dim() != 3 || prompt_embeds.size(0) != batch)
    return InvalidArgument("Wan sampler: prompt embeddings must be [" + std::to_string(batch) + ", L, D], got " +
                           (prompt_embeds.defined() ? ShapeString(prompt_embeds.sizes()) : "undefined"));
  if (guided && (!negative_embeds.defined() || negative_embeds.dim() != 3 || negative_embeds.size(0) != batch ||
                 negative_embeds.size(2) != prompt_embeds.size(2)))
    return InvalidArgument("Wan sampler: guidance_scale > 1 needs negative embeddings of the prompt's batch and width");
  if (options.num_inference_steps < 1 || options.num_inference_steps > 1000)
    return InvalidArgument("Wan sampler: steps must be in [1, 1000], got " + std::to_string(options.num_inference_steps));

  UniPCConfig scheduler_config = scheduler_config_;
  if (options.shift) {
    if (!(*options.shift > 0)) return InvalidArgument("Wan sampler: shift must be positive");
    scheduler_config.flow_shift = *options.shift;
  }
  UniPCMultistepScheduler scheduler(std::move(scheduler_config));
  STAS_RETURN_IF_ERROR(scheduler.SetTimesteps(options.num_inference_steps));
  if (options.resume) {
    if (options.resume->num_inference_steps != options.num_inference_steps)
      return InvalidArgument("Wan sampler: the resume state was saved for another step count");
    STAS_RETURN_IF_ERROR(scheduler.Restore(*options.resume));
  }

  const at::Device device = transformer_.device();
  at::Tensor x = latents.to(device, at::kFloat);
  const at::Tensor cond_embeds = prompt_embeds.to(device, transformer_.dtype());
  const at::Tensor uncond_embeds = guided ? negative_embeds.to(device, transformer_.dtype()) : at::Tensor();
  const bool batched = guided && options.batched_cfg && !options.cfg_partner &&
                       uncond_embeds.size(1) == cond_embeds.size(1);
  const at::Tensor batched_embeds = batched ? at::cat({cond_embeds, uncond_embeds}) : at::Tensor();
  const int64_t tokens = transformer_.GridFor(x.sizes()).count();
  const auto float_options = at::TensorOptions().dtype(at::kFloat).device(device);

  ForwardContext context;
  context.parallel = options.parallel;
  context.hook = options.hook;
  context.num_steps = options.num_inference_steps;
  const int num_steps = options.num_inference_steps;
  for (int i = scheduler.step_index(); i < num_steps; ++i) {
    if (options.should_cancel && options.should_cancel())
      return Aborted("sampling cancelled before step " + std::to_string(i) + " of " + std::to_string(num_steps));
    const int64_t t = scheduler.timesteps()[i];
    context.step = i;
    // As upstream: every row (and with expand_timesteps every token) is conditioned on the same t.
    auto timestep_for = [&](int64_t rows) {
      return options.expand_timesteps ? at::full({rows, tokens}, static_cast<double>(t), float_options)
                                      : at::full({rows}, static_cast<double>(t), float_options);
    };
    auto forward = [&](const at::Tensor& input, const at::Tensor& embeds, std::vector<CfgBranch> branches) {
      context.branches = std::move(branches);
      return transformer_.Forward(input, timestep_for(input.size(0)), embeds, context);
    };
    const std::vector<CfgBranch> cond_rows(batch, CfgBranch::kCond), uncond_rows(batch, CfgBranch::kUncond);

    at::Tensor noise_pred;
    if (!guided) {
      STAS_ASSIGN_OR_RETURN(noise_pred, forward(x, cond_embeds, cond_rows));
    } else {
      at::Tensor cond, uncond;
      if (options.cfg_partner) {
        const bool mine_is_cond = options.cfg_partner->branch() == CfgBranch::kCond;
        STAS_ASSIGN_OR_RETURN(at::Tensor mine, forward(x, mine_is_cond ? cond_embeds : uncond_embeds,
                                                      mine_is_cond ? cond_rows : uncond_rows));
        at::Tensor other = options.cfg_partner->Exchange(mine);
        if (!other.defined() || other.sizes() != mine.sizes())
          return Internal("Wan sampler: the CFG partner returned a prediction of another shape");
        cond = mine_is_cond ? mine : other.to(mine.options());
        uncond = mine_is_cond ? other.to(mine.options()) : mine;
      } else if (batched) {
        std::vector<CfgBranch> rows = cond_rows;
        rows.insert(rows.end(), uncond_rows.begin(), uncond_rows.end());
        STAS_ASSIGN_OR_RETURN(at::Tensor both, forward(at::cat({x, x}), batched_embeds, std::move(rows)));
        cond = both.narrow(0, 0, batch);
        uncond = both.narrow(0, batch, batch);
      } else {
        STAS_ASSIGN_OR_RETURN(cond, forward(x, cond_embeds, cond_rows));
        STAS_ASSIGN_OR_RETURN(uncond, forward(x, uncond_embeds, uncond_rows));
      }
      noise_pred = uncond + (cond - uncond) * options.guidance_scale;
    }
    STAS_ASSIGN_OR_RETURN(x, scheduler.Step(noise_pred, x));
    if (options.on_step) {
      StepProgress progress;
      progress.step = i;
      progress.num_steps = num_steps;
      progress.timestep = t;
      progress.sigma = scheduler.sigmas()[i + 1];
      progress.latents = &x;
      progress.scheduler = &scheduler;
      options.on_step(progress);
    }
  }
  return x;
}

}  // namespace stas::models::wan
