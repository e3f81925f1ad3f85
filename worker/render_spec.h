// RenderSpec: one video to render. The same fields drive `stas render`, `stas submit`, the HTTP API
// (POST /jobs) and the worker, so validation lives here once.
//
// Unset optionals take the model family's defaults (ResolveDefaults): Wan2.1 832x480x81 @16 fps,
// shift 3.0 (5.0 at 720p and above), guidance 5.0; Wan2.2 1280x704x121 @24 fps, shift 5.0;
// CogVideoX 720x480x49 @8 fps, guidance 6.0; the built-in tiny model a small fast video.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/json.h"
#include "common/status.h"
#include "steering/stas_options.h"

namespace stas::worker {

enum class ModelFamily { kTiny, kWan21, kWan22, kCogVideoX };
const char* ModelFamilyName(ModelFamily family);

// Limits (docs/DESIGN.md#bad-input).
constexpr size_t kMaxPromptBytes = 8 * 1024;
constexpr int kMinSteps = 1;
constexpr int kMaxSteps = 1000;

// What one job may cost on a family (frames, pixels per frame, steps), checked by the coordinator
// before anything is queued. Defaults: the largest sizes the family was trained for; small ones for the
// built-in tiny model (it runs on CPUs). `stas coordinator --limit FAMILY:KEY=N,...` overrides them.
// (The one per-family table; it moves behind the model interface with the rest of the family facts.)
struct CostLimits {
  int max_frames = 1001;
  int64_t max_pixels = int64_t{4096} * 4096;  // height x width
  int max_steps = kMaxSteps;
};
CostLimits DefaultCostLimits(ModelFamily family);
// Parses "FAMILY:frames=N,pixels=N,steps=N" (any subset of keys) onto `limits`, indexed by family.
Status ParseCostLimitOverride(const std::string& text, CostLimits limits[4]);

struct RenderSpec {
  std::string prompt;
  std::string negative_prompt;
  uint64_t seed = 0;
  std::string model = "tiny";  // "tiny" or a diffusers-format checkpoint folder
  std::optional<int> height, width, frames, steps, fps;
  std::optional<double> guidance, shift;
  steering::StasOptions stas;
  std::string output_name;     // file stem, no path separators; empty = derived from the job id
  std::string dataset;         // optional dataset folder name grouping outputs
  int priority = 0;            // higher runs first (service only)

  // Checks everything that does not need the model: prompt size, frame count 4k+1, sizes multiple of
  // 16, steps in range, output name, STAS options. Model-specific checks: ValidateFor.
  Status Validate() const;
  // Checks sizes against the family's spatial multiple (16 for Wan2.1/tiny/CogVideoX, 32 for Wan2.2) and,
  // for CogVideoX, frames 8k+1 (its VAE needs an odd number of latent frames).
  Status ValidateFor(ModelFamily family) const;
  // InvalidArgument naming the limit (and the flag that sets it) when the spec, with the family's
  // defaults filled in, asks for more than `limits` allows.
  Status CheckCostLimits(ModelFamily family, const CostLimits& limits) const;
  // Fills unset optionals with the family's defaults.
  void ResolveDefaults(ModelFamily family);

  Json ToJson() const;
  // Strict: unknown fields, wrong types and invalid values are InvalidArgument naming the field.
  static Result<RenderSpec> FromJson(const Json& j);

  // Content hash of everything that changes the video (not priority, output name or dataset):
  // re-submitting the same job yields the same id. 32 hex characters.
  std::string JobId() const;
};

// Infers the family from a model argument: "tiny", or a checkpoint folder's model_index.json /
// transformer config. NotFound / InvalidArgument with a clear message otherwise.
Result<ModelFamily> DetectModelFamily(const std::string& model);

}  // namespace stas::worker
