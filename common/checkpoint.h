// A diffusers-format checkpoint folder: model_index.json plus one sub-folder per component
// (transformer/, vae/, text_encoder/, tokenizer/, scheduler/), each with its config and weights.
#pragma once

#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "common/weights.h"

namespace stas {

class CheckpointFolder {
 public:
  // Reads <dir>/model_index.json. NotFound when the folder or the index is missing.
  static Result<CheckpointFolder> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const Json& model_index() const { return model_index_; }
  // "_class_name" of model_index.json, e.g. "WanPipeline".
  std::string PipelineClass() const;
  // Component names listed in model_index.json (keys whose value is a [library, class] pair).
  std::vector<std::string> Components() const;
  bool HasComponent(const std::string& name) const;
  std::string ComponentPath(const std::string& name) const;
  // config.json, or scheduler_config.json for schedulers.
  Result<Json> ComponentConfig(const std::string& name) const;
  Result<WeightStore> ComponentWeights(const std::string& name) const;

 private:
  std::string dir_;
  Json model_index_;
};

}  // namespace stas
