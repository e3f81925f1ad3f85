// CogVideoX (1.0 and 1.5) behind the VideoModel contract (models/video_model.h): T5 prompts (226 tokens,
// as given), the CogVideoX transformer under DDIM (CogVideoXDDIMScheduler, v-prediction), the CogVideoX
// VAE over latents / scaling_factor.
//
// Latents are frame-major [B, F, C, h, w]. CogVideoX 1.5 (a temporal patch of 2) pads the latent frames
// to a multiple of the patch: the noise covers the padded frames, the padding frames lead and are
// dropped before decoding, as upstream. Frames must be 8k+1: the VAE decodes the latent frames after the
// first in pairs, so only an odd latent count gives back the frames asked for.
#pragma once

#include <memory>

#include "common/checkpoint.h"
#include "common/status.h"
#include "models/video_model.h"

namespace stas::models::cogvideox {

// The family rules, without reading anything (trained maximum: CogVideoX 1.5's, the larger).
ModelDescription CogVideoXDescription();

// Whether model_index.json names a CogVideoX pipeline.
bool IsCogVideoXCheckpoint(const CheckpointFolder& checkpoint);
// The family rules refined by the transformer config when readable (head count; 1.0's trained
// maximum when it has no temporal patch).
Result<ModelDescription> DescribeCogVideoXCheckpoint(const CheckpointFolder& checkpoint);

// Loads text encoder, transformer, DDIM scheduler and VAE, checking that they agree. NotImplemented
// for a scheduler other than CogVideoXDDIMScheduler.
Result<std::unique_ptr<VideoModel>> LoadCogVideoXVideoModel(const CheckpointFolder& checkpoint,
                                                            const ModelLoadOptions& options);

}  // namespace stas::models::cogvideox
