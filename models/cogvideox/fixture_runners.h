// Runners behind `stas check-fixture` for the CogVideoX components (registered in models/components.cc).
// Each executes its component on a fixture's inputs on the CPU in float32 and returns the outputs it
// computes, named as in the fixture's meta.json.
#pragma once

#include "common/fixture.h"
#include "common/status.h"
#include "models/components.h"

namespace stas::models::cogvideox {

// cogvideox_transformer: `output` [B, F, C, H, W] from hidden_states, timestep, encoder_hidden_states and
// the given RoPE tables rope_cos / rope_sin (computed with ComputeRotaryTables when absent).
Result<TensorMap> RunCogVideoXTransformerFixture(const Fixture& fixture);

// cogvideox_vae_decoder: `video` [B, 3, frames, H, W] = decode(latents [B, C, F, h, w]), no scaling.
Result<TensorMap> RunCogVideoXVaeDecoderFixture(const Fixture& fixture);

// cogvideox_pipeline: `final_latents` [B, F, C, h, w] after the CFG DDIM loop from the given latents and
// prompt embeddings (meta num_inference_steps, guidance_scale), and the decoded `video`
// [B, frames, 3, H, W] in [0, 1].
Result<TensorMap> RunCogVideoXPipelineFixture(const Fixture& fixture);

}  // namespace stas::models::cogvideox
