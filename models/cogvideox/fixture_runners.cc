#include "models/cogvideox/fixture_runners.h"

#include "models/cogvideox/pipeline.h"
#include "models/cogvideox/transformer.h"
#include "models/cogvideox/vae.h"

namespace stas::models::cogvideox {

Result<TensorMap> RunCogVideoXTransformerFixture(const Fixture& fixture) {
  STAS_ASSIGN_OR_RETURN(CogVideoXTransformerConfig config, CogVideoXTransformerConfig::FromJson(fixture.config()));
  STAS_ASSIGN_OR_RETURN(CogVideoXTransformer model, CogVideoXTransformer::Load(config, fixture.weights()));
  STAS_ASSIGN_OR_RETURN(at::Tensor latents, fixture.Io("hidden_states"));
  STAS_ASSIGN_OR_RETURN(at::Tensor timestep, fixture.Io("timestep"));
  STAS_ASSIGN_OR_RETURN(at::Tensor text, fixture.Io("encoder_hidden_states"));
  RotaryTables rope;
  Result<at::Tensor> cos = fixture.Io("rope_cos");
  Result<at::Tensor> sin = fixture.Io("rope_sin");
  if (cos.ok() && sin.ok()) {
    rope = RotaryTables{*cos, *sin};
  } else {
    STAS_ASSIGN_OR_RETURN(rope, ComputeRotaryTables(config, latents.size(1), latents.size(3), latents.size(4)));
  }
  STAS_ASSIGN_OR_RETURN(at::Tensor output, model.Forward(latents, timestep, text, rope));
  TensorMap outputs;
  outputs["output"] = output;
  return outputs;
}

Result<TensorMap> RunCogVideoXVaeDecoderFixture(const Fixture& fixture) {
  STAS_ASSIGN_OR_RETURN(CogVideoXVaeConfig config, CogVideoXVaeConfig::FromJson(fixture.config()));
  STAS_ASSIGN_OR_RETURN(CogVideoXVaeDecoder vae, CogVideoXVaeDecoder::Load(config, fixture.weights()));
  STAS_ASSIGN_OR_RETURN(at::Tensor latents, fixture.Io("latents"));
  STAS_ASSIGN_OR_RETURN(at::Tensor video, vae.Decode(latents));
  TensorMap outputs;
  outputs["video"] = video;
  return outputs;
}

Result<TensorMap> RunCogVideoXPipelineFixture(const Fixture& fixture) {
  const Json& config = fixture.config();
  if (!config.contains("transformer") || !config.contains("scheduler") || !config.contains("vae"))
    return InvalidArgument("cogvideox_pipeline fixture config needs transformer, scheduler and vae sections");
  STAS_ASSIGN_OR_RETURN(CogVideoXTransformerConfig transformer_config,
                        CogVideoXTransformerConfig::FromJson(config["transformer"]));
  STAS_ASSIGN_OR_RETURN(DDIMConfig scheduler_config, DDIMConfig::FromJson(config["scheduler"]));
  STAS_ASSIGN_OR_RETURN(CogVideoXVaeConfig vae_config, CogVideoXVaeConfig::FromJson(config["vae"]));
  STAS_ASSIGN_OR_RETURN(CogVideoXTransformer transformer,
                        CogVideoXTransformer::Load(transformer_config, fixture.weights().WithPrefix("transformer.")));
  STAS_ASSIGN_OR_RETURN(CogVideoXVaeDecoder vae,
                        CogVideoXVaeDecoder::Load(vae_config, fixture.weights().WithPrefix("vae.")));
  STAS_ASSIGN_OR_RETURN(at::Tensor latents, fixture.Io("latents"));
  STAS_ASSIGN_OR_RETURN(at::Tensor prompt_embeds, fixture.Io("prompt_embeds"));
  STAS_ASSIGN_OR_RETURN(at::Tensor negative_embeds, fixture.Io("negative_prompt_embeds"));
  CogVideoXSamplingOptions options;
  STAS_RETURN_IF_ERROR(CatchConfigErrors("cogvideox_pipeline fixture", [&] {
    options.num_inference_steps = fixture.meta().at("num_inference_steps").get<int>();
    options.guidance_scale = JsonValueOr<double>(fixture.meta(), "guidance_scale", 6.0);
    options.use_dynamic_cfg = JsonValueOr<bool>(fixture.meta(), "use_dynamic_cfg", false);
    options.batched_cfg = true;  // as upstream
  }));
  CogVideoXSampler sampler(transformer, scheduler_config);
  STAS_ASSIGN_OR_RETURN(at::Tensor final_latents, sampler.Sample(latents, prompt_embeds, negative_embeds, options));
  STAS_ASSIGN_OR_RETURN(at::Tensor video, DecodeCogVideoXLatents(vae, final_latents));
  TensorMap outputs;
  outputs["final_latents"] = final_latents;
  outputs["video"] = video;
  return outputs;
}

}  // namespace stas::models::cogvideox
