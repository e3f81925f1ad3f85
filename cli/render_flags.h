// The render flags shared by `stas render` and `stas submit` (both take the same ones:
// docs/DESIGN.md#service-contract): the model, the prompt, the video's size and sampling settings, and
// STAS. docs/RENDERING.md lists them with their defaults.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"
#include "jobspec/render_spec.h"

namespace stas::cli {

// The raw flag values CLI11 parses into; ToSpec turns them into a RenderSpec.
struct RenderFlags {
  std::string model = "tiny";
  std::string prompt;
  std::string negative_prompt;
  std::optional<int> height, width, frames, steps, fps;
  std::optional<double> guidance, shift;
  uint64_t seed = 0;

  bool stas = false;
  std::optional<double> stas_alpha, stas_lambda, stas_fraction, stas_tau;
  std::optional<int> stas_steps, stas_boundary_width, stas_max_channels;
  std::string stas_blocks;         // "0,1,5"
  std::string stas_boundary_mode;  // rows | frames
  std::string stas_branches;       // both | cond
  std::string stas_channels;       // calibrated MA channels JSON

  // Adds every render flag to `command`; values land in this object, which must outlive parsing.
  // --prompt is not marked required here (`stas submit` also accepts --dataset).
  void AddTo(CLI::App* command);

  // The RenderSpec these flags describe, validated (RenderSpec::Validate). InvalidArgument names the
  // flag when a value is malformed (e.g. "--stas-blocks: 'x' is not a block index").
  Result<jobspec::RenderSpec> ToSpec() const;
};

// Parses "0,1,5" (spaces allowed) into block indices; InvalidArgument naming `flag` otherwise.
Result<std::vector<int>> ParseIndexList(const std::string& text, const std::string& flag);

}  // namespace stas::cli
