// Reference fixtures (tests/fixtures/<name>/): meta.json, weights.safetensors, io.safetensors.
// A fixture names a component, its upstream config, inputs and expected outputs, and a tolerance
// |ours - ref| <= atol + rtol * |ref| elementwise.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "common/weights.h"

namespace stas {

struct Tolerance {
  double atol = 1e-4;
  double rtol = 1e-4;
};

class Fixture {
 public:
  static Result<Fixture> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const Json& meta() const { return meta_; }
  std::string component() const;
  const Json& config() const;  // meta["config"]
  Tolerance tolerance() const { return tolerance_; }
  const std::vector<std::string>& output_names() const { return outputs_; }
  // weights.safetensors (empty store when the component has no weights, e.g. schedulers).
  const WeightStore& weights() const { return weights_; }
  // An input or expected output from io.safetensors.
  Result<at::Tensor> Io(const std::string& name) const;

 private:
  std::string dir_;
  Json meta_;
  Tolerance tolerance_;
  std::vector<std::string> outputs_;
  WeightStore weights_;
  std::optional<SafetensorsFile> io_;
};

struct Comparison {
  std::string name;
  double max_abs_error = 0;
  double worst_excess = 0;  // max over elements of |a-b| - (atol + rtol |b|); <= 0 means within tolerance
  bool shape_mismatch = false;
  bool non_finite = false;  // NaN/Inf where the reference has none
  std::string detail;
  bool ok() const { return !shape_mismatch && !non_finite && worst_excess <= 0; }
};

Comparison CompareTensors(const std::string& name, const at::Tensor& ours, const at::Tensor& reference,
                          Tolerance tolerance);

}  // namespace stas
