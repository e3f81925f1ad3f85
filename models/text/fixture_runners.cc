#include "models/text/fixture_runners.h"

#include "models/text/t5_encoder.h"

namespace stas::models::text {

namespace {

Result<TensorMap> RunEncoder(const Fixture& fixture, T5Variant variant) {
  STAS_ASSIGN_OR_RETURN(T5EncoderConfig config, T5EncoderConfig::FromJson(fixture.config(), variant));
  STAS_ASSIGN_OR_RETURN(T5Encoder encoder, T5Encoder::Load(config, fixture.weights()));
  STAS_ASSIGN_OR_RETURN(at::Tensor input_ids, fixture.Io("input_ids"));
  // The mask is optional: without one every token attends (as CogVideoX calls its encoder).
  at::Tensor attention_mask;
  if (auto mask = fixture.Io("attention_mask"); mask.ok()) attention_mask = *mask;
  STAS_ASSIGN_OR_RETURN(at::Tensor hidden, encoder.Forward(input_ids, attention_mask));
  return TensorMap{{"last_hidden_state", hidden}};
}

}  // namespace

Result<TensorMap> RunUmt5EncoderFixture(const Fixture& fixture) { return RunEncoder(fixture, T5Variant::kUmt5); }

Result<TensorMap> RunT5EncoderFixture(const Fixture& fixture) { return RunEncoder(fixture, T5Variant::kT5); }

}  // namespace stas::models::text
