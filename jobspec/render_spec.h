// RenderSpec: one video to render. The same fields drive `stas render`, `stas submit`, the HTTP API
// (POST /jobs) and the worker, so validation lives here once.
//
// Unset optionals take the model's defaults (ResolveDefaults with the models::ModelDescription that
// models::InspectModel gives for spec.model; docs/MODELS.md lists them per family).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "common/json.h"
#include "common/status.h"
#include "models/model_description.h"
#include "steering/stas_options.h"

namespace stas::jobspec {

// Limits (docs/DESIGN.md#bad-input).
constexpr size_t kMaxPromptBytes = 8 * 1024;
constexpr int kMinSteps = 1;
constexpr int kMaxSteps = 1000;

// What one job may cost on a family (frames, pixels per frame, steps), checked by the coordinator
// before anything is queued. Defaults: the largest sizes the family was trained for (small ones for the
// built-in tiny model, which runs on CPUs). `stas coordinator --limit FAMILY:KEY=N,...` overrides them.
struct CostLimits {
  int max_frames = 1001;
  int64_t max_pixels = int64_t{4096} * 4096;  // height x width
  int max_steps = kMaxSteps;
};
// The family's trained maximum (models::ModelDescription::trained_max), any step count in range.
CostLimits DefaultCostLimits(const models::ModelDescription& model);
// Operator overrides by family name ("tiny", "wan2.1", ...).
using CostLimitOverrides = std::map<std::string, CostLimits>;
// The override for the model's family, else its defaults.
CostLimits CostLimitsFor(const models::ModelDescription& model, const CostLimitOverrides& overrides);
// Parses "FAMILY:frames=N,pixels=N,steps=N" (any subset of keys, the rest from the current limits)
// into `overrides`; InvalidArgument for an unknown family or key or a value that is not a positive integer.
Status ParseCostLimitOverride(const std::string& text, CostLimitOverrides* overrides);

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
  // Checks the sizes that are set against the model's multiples (model.size_multiple for height and
  // width, frames model.frame_multiple * k + 1), naming model.family.
  Status ValidateFor(const models::ModelDescription& model) const;
  // Fills unset optionals with the model's defaults (the flow shift by the resolved size).
  void ResolveDefaults(const models::ModelDescription& model);
  // InvalidArgument naming the limit (and the flag that sets it) when the spec, with the model's
  // defaults filled in, asks for more than `limits` allows.
  Status CheckCostLimits(const models::ModelDescription& model, const CostLimits& limits) const;

  Json ToJson() const;
  // Strict: unknown fields, wrong types and invalid values are InvalidArgument naming the field.
  static Result<RenderSpec> FromJson(const Json& j);

  // Content hash of everything that changes the video (not priority, output name or dataset):
  // re-submitting the same job yields the same id. 32 hex characters.
  std::string JobId() const;
};

}  // namespace stas::jobspec
