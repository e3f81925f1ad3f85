#include "models/cogvideox/fixture_runners.h"

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

}  // namespace stas::models::cogvideox
