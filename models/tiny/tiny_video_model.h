// The built-in tiny model behind the VideoModel contract (models/video_model.h): the tiny text encoder
// (models/text), the tiny Wan2.1-architecture transformer with planted massive activations
// (models/wan/tiny.h) and the tiny Wan VAE (models/wan/vae_tiny.h), all generated from a seed, sampled
// like Wan2.1 (UniPC, flow shift 3.0). Renders a 96x64x17 video in seconds on a CPU; no files needed.
#pragma once

#include <memory>

#include "common/status.h"
#include "models/video_model.h"

namespace stas::models::tiny {

// The model argument that names it.
inline constexpr const char* kTinyModelName = "tiny";

// Its rules: Wan2.1's multiples, 96x64x17 at 16 fps and 8 steps by default, and small trained maximum
// sizes (it is meant for tests and demos on a CPU).
ModelDescription TinyDescription();

// Builds it on options.device, the transformer and text encoder in options.dtype, from options.tiny_seed.
Result<std::unique_ptr<VideoModel>> LoadTinyVideoModel(const ModelLoadOptions& options);

}  // namespace stas::models::tiny
