// TrackingWeightReader: a WeightReader that remembers the tensors a model loader took, so the loader can
// refuse a checkpoint holding tensors its config does not use (config and weights that do not belong
// together, e.g. a config with fewer layers than the weights).
#pragma once

#include <set>
#include <string>

#include "common/status.h"
#include "common/weights.h"

namespace stas {

class TrackingWeightReader {
 public:
  TrackingWeightReader(WeightStore store, at::TensorOptions options);

  // As WeightReader::Require / RequireFloat (throw MissingWeightError), and record `name` as used.
  at::Tensor Require(const std::string& name, at::IntArrayRef expected_shape = {});
  at::Tensor RequireFloat(const std::string& name, at::IntArrayRef expected_shape = {});

  // OK when every tensor of the store was taken (`ignored` names excepted); else InvalidArgument for
  // `what`, naming the first five leftovers and how many there are.
  Status CheckAllUsed(const std::string& what, const std::set<std::string>& ignored = {}) const;

 private:
  WeightReader reader_;
  std::set<std::string> used_;
};

}  // namespace stas
