#include "common/tracking_weight_reader.h"

#include <vector>

namespace stas {

TrackingWeightReader::TrackingWeightReader(WeightStore store, at::TensorOptions options)
    : reader_(std::move(store), options) {}

at::Tensor TrackingWeightReader::Require(const std::string& name, at::IntArrayRef expected_shape) {
  used_.insert(name);
  return reader_.Require(name, expected_shape);
}

at::Tensor TrackingWeightReader::RequireFloat(const std::string& name, at::IntArrayRef expected_shape) {
  used_.insert(name);
  return reader_.RequireFloat(name, expected_shape);
}

Status TrackingWeightReader::CheckAllUsed(const std::string& what, const std::set<std::string>& ignored) const {
  std::vector<std::string> unused;
  for (const auto& name : reader_.store().Names())
    if (!used_.count(name) && !ignored.count(name)) unused.push_back(name);
  if (unused.empty()) return Status::Ok();
  std::string list;
  for (size_t i = 0; i < unused.size() && i < 5; ++i) list += (i ? ", " : "") + unused[i];
  if (unused.size() > 5) list += ", ...";
  return InvalidArgument(what + ": " + std::to_string(unused.size()) +
                         " tensor(s) not used by the configured model (does the config match the weights?): " + list);
}

}  // namespace stas
