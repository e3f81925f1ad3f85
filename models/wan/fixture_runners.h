// Runners behind `stas check-fixture` for the Wan components (registered in models/components.cc).
// Each executes its component on a fixture's inputs on the CPU in float32 and returns the outputs it
// computes, named as in the fixture's meta.json.
#pragma once

#include "common/fixture.h"
#include "common/status.h"
#include "models/components.h"

namespace stas::models::wan {

// wan_transformer: `output` and the residual stream after every block, `block_NN_out` [B, L, D].
Result<TensorMap> RunWanTransformerFixture(const Fixture& fixture);

// unipc_flow_scheduler: `timesteps`, `sigmas` and `samples` (every step applied in turn to `sample`).
Result<TensorMap> RunUniPCFlowSchedulerFixture(const Fixture& fixture);

// wan_pipeline, the sampling loop only: {`final_latents`} from the given initial latents and prompt
// embeddings (config.transformer, config.scheduler, num_inference_steps, guidance_scale,
// config.expand_timesteps).
Result<TensorMap> RunWanPipelineLatents(const Fixture& fixture);

// wan_pipeline: RunWanPipelineLatents plus the decoded `video` ([B, frames, 3, H, W] in [0, 1], from
// the final latents de-normalized with config.vae's statistics).
Result<TensorMap> RunWanPipelineFixture(const Fixture& fixture);

}  // namespace stas::models::wan
