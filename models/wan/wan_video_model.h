// Wan2.1 and Wan2.2 TI2V (text-to-video) behind the VideoModel contract (models/video_model.h):
// UMT5 prompts (512 tokens), the Wan transformer under UniPC flow matching (WanSampler, with per-token
// timesteps for Wan2.2), the Wan VAE decoded chunk by chunk.
//
// The two versions differ only in data: Wan2.2's model_index.json sets expand_timesteps and its VAE is
// residual with 16x spatial compression (so sizes are multiples of 32), 24 fps, 1280x704x121 and
// flow shift 5.0 by default. Two-transformer (MoE, A14B) checkpoints are refused.
#pragma once

#include <memory>

#include "common/checkpoint.h"
#include "common/status.h"
#include "models/schedulers/unipc.h"
#include "models/text/prompt_encoder.h"
#include "models/video_model.h"
#include "models/wan/pipeline.h"
#include "models/wan/transformer.h"
#include "models/wan/vae.h"

namespace stas::models::wan {

// The family rules, without reading anything.
ModelDescription Wan21Description();
ModelDescription Wan22Description();

// Whether model_index.json names a Wan pipeline (WanPipeline, ...).
bool IsWanCheckpoint(const CheckpointFolder& checkpoint);
// Wan2.1 or Wan2.2 from the folder's configs (model_index.json's expand_timesteps, the VAE's
// is_residual); the transformer's head count when its config is readable.
Result<ModelDescription> DescribeWanCheckpoint(const CheckpointFolder& checkpoint);

// Everything a loaded Wan model holds.
struct WanComponents {
  text::PromptEncoder text;
  WanTransformer transformer;
  UniPCConfig scheduler;
  WanVaeConfig vae_config;
  WanVaeDecoder vae;
  VaeCompression compression;
  bool expand_timesteps = false;
};

// Loads text encoder, transformer, scheduler and VAE from a diffusers folder (see WanComponents),
// checking that their widths agree. NotImplemented for two-transformer checkpoints.
Result<std::unique_ptr<VideoModel>> LoadWanVideoModel(const CheckpointFolder& checkpoint,
                                                      const ModelLoadOptions& options);

// A Wan model from components already built (the tiny model assembles its own).
std::unique_ptr<VideoModel> MakeWanVideoModel(ModelDescription description, WanComponents components);

}  // namespace stas::models::wan
