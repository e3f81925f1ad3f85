#include "models/wan/fixture_runners.h"

#include <cstdio>

#include "models/dit.h"
#include "models/schedulers/unipc.h"
#include "models/wan/pipeline.h"
#include "models/wan/transformer.h"
#include "models/wan/vae.h"

namespace stas::models::wan {
namespace {

// Copies the residual stream after every block, named block_NN_out.
class ResidualRecorder final : public ResidualHook {
 public:
  void AfterBlock(at::Tensor& hidden, const BlockContext& context) override {
    char name[32];
    std::snprintf(name, sizeof(name), "block_%02d_out", context.block);
    outputs[name] = hidden.to(at::kFloat).clone();
  }
  TensorMap outputs;
};

}  // namespace

Result<TensorMap> RunWanTransformerFixture(const Fixture& fixture) {
  STAS_ASSIGN_OR_RETURN(WanTransformerConfig config, WanTransformerConfig::FromJson(fixture.config()));
  STAS_ASSIGN_OR_RETURN(WanTransformer model, WanTransformer::Load(config, fixture.weights()));
  STAS_ASSIGN_OR_RETURN(at::Tensor latents, fixture.Io("hidden_states"));
  STAS_ASSIGN_OR_RETURN(at::Tensor timestep, fixture.Io("timestep"));
  STAS_ASSIGN_OR_RETURN(at::Tensor text, fixture.Io("encoder_hidden_states"));
  ResidualRecorder recorder;
  ForwardContext context;
  context.hook = &recorder;
  STAS_ASSIGN_OR_RETURN(at::Tensor output, model.Forward(latents, timestep, text, context));
  TensorMap outputs = std::move(recorder.outputs);
  outputs["output"] = output;
  return outputs;
}

Result<TensorMap> RunUniPCFlowSchedulerFixture(const Fixture& fixture) {
  STAS_ASSIGN_OR_RETURN(UniPCConfig config, UniPCConfig::FromJson(fixture.config()));
  const int steps = JsonValueOr<int>(fixture.meta(), "num_inference_steps", 0);
  UniPCMultistepScheduler scheduler(config);
  STAS_RETURN_IF_ERROR(scheduler.SetTimesteps(steps));
  STAS_ASSIGN_OR_RETURN(at::Tensor model_outputs, fixture.Io("model_outputs"));
  STAS_ASSIGN_OR_RETURN(at::Tensor sample, fixture.Io("sample"));
  if (model_outputs.dim() < 1 || model_outputs.size(0) != steps)
    return InvalidArgument("model_outputs must hold one output per step (" + std::to_string(steps) + ")");
  std::vector<at::Tensor> samples;
  for (int i = 0; i < steps; ++i) {
    STAS_ASSIGN_OR_RETURN(sample, scheduler.Step(model_outputs[i], sample));
    samples.push_back(sample);
  }
  std::vector<float> timesteps(scheduler.timesteps().begin(), scheduler.timesteps().end());
  TensorMap outputs;
  outputs["timesteps"] = at::tensor(timesteps, at::kFloat);
  outputs["sigmas"] = at::tensor(scheduler.sigmas(), at::kFloat);
  outputs["samples"] = at::stack(samples);
  return outputs;
}

Result<TensorMap> RunWanPipelineLatents(const Fixture& fixture) {
  const Json& config = fixture.config();
  if (!config.contains("transformer") || !config.contains("scheduler"))
    return InvalidArgument("wan_pipeline fixture config needs transformer and scheduler sections");
  STAS_ASSIGN_OR_RETURN(WanTransformerConfig transformer_config, WanTransformerConfig::FromJson(config["transformer"]));
  STAS_ASSIGN_OR_RETURN(UniPCConfig scheduler_config, UniPCConfig::FromJson(config["scheduler"]));
  STAS_ASSIGN_OR_RETURN(WanTransformer transformer,
                        WanTransformer::Load(transformer_config, fixture.weights().WithPrefix("transformer.")));
  STAS_ASSIGN_OR_RETURN(at::Tensor latents, fixture.Io("latents"));
  STAS_ASSIGN_OR_RETURN(at::Tensor prompt_embeds, fixture.Io("prompt_embeds"));
  STAS_ASSIGN_OR_RETURN(at::Tensor negative_embeds, fixture.Io("negative_prompt_embeds"));
  WanSamplingOptions options;
  STAS_RETURN_IF_ERROR(CatchConfigErrors("wan_pipeline fixture", [&] {
    options.num_inference_steps = fixture.meta().at("num_inference_steps").get<int>();
    options.guidance_scale = JsonValueOr<double>(fixture.meta(), "guidance_scale", 5.0);
    options.expand_timesteps = JsonValueOr<bool>(config, "expand_timesteps", false);
  }));
  WanSampler sampler(transformer, scheduler_config);
  STAS_ASSIGN_OR_RETURN(at::Tensor final_latents, sampler.Sample(latents, prompt_embeds, negative_embeds, options));
  TensorMap outputs;
  outputs["final_latents"] = final_latents;
  return outputs;
}

Result<TensorMap> RunWanPipelineFixture(const Fixture& fixture) {
  STAS_ASSIGN_OR_RETURN(TensorMap outputs, RunWanPipelineLatents(fixture));
  // `video`: latents de-normalized with config.vae latents_mean/std, decoded, mapped to [0, 1] as
  // [B, frames, 3, H, W] (diffusers' output_type "pt").
  if (!fixture.config().contains("vae")) return InvalidArgument("wan_pipeline fixture config needs a vae section");
  STAS_ASSIGN_OR_RETURN(WanVaeConfig vae_config, WanVaeConfig::FromJson(fixture.config()["vae"]));
  STAS_ASSIGN_OR_RETURN(WanVaeDecoder vae, WanVaeDecoder::Load(vae_config, fixture.weights().WithPrefix("vae."),
                                                               at::TensorOptions().dtype(at::kFloat)));
  STAS_ASSIGN_OR_RETURN(at::Tensor latents, DenormalizeWanLatents(outputs.at("final_latents"), vae_config));
  STAS_ASSIGN_OR_RETURN(at::Tensor video, vae.Decode(latents));
  outputs["video"] = WanVideoToFrames(video);
  return outputs;
}

}  // namespace stas::models::wan
