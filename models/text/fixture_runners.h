// Runners behind `stas check-fixture` for the text encoders (registered in models/components.cc).
// Each runs the encoder of the fixture's config on its `input_ids` and `attention_mask` on the CPU in
// float32 and returns `last_hidden_state` [B, L, d_model] for every position.
#pragma once

#include "common/fixture.h"
#include "common/status.h"
#include "models/components.h"

namespace stas::models::text {

// umt5_encoder: transformers UMT5EncoderModel (every block owns a relative position bias).
Result<TensorMap> RunUmt5EncoderFixture(const Fixture& fixture);

// t5_encoder: transformers T5EncoderModel, T5 v1.1 style as CogVideoX uses it (block 0's bias shared).
Result<TensorMap> RunT5EncoderFixture(const Fixture& fixture);

}  // namespace stas::models::text
