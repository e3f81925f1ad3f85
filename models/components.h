// The component registry behind `stas check-fixture`: component name -> runner that executes the
// component on a fixture's inputs (CPU, float32) and returns the outputs it computes by name.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/fixture.h"
#include "common/status.h"

namespace stas::models {

using TensorMap = std::map<std::string, at::Tensor>;
using FixtureRunner = std::function<Result<TensorMap>(const Fixture&)>;

// Null when the component is not implemented.
const FixtureRunner* FindFixtureRunner(const std::string& component);
std::vector<std::string> ImplementedComponents();

struct FixtureReport {
  std::string dir;
  std::string component;
  bool implemented = false;
  std::vector<Comparison> outputs;
  std::vector<std::string> missing_outputs;  // expected outputs the runner did not produce
  bool passed() const;
};

// Loads the fixture, runs its component and compares every output. A not-implemented component is
// an OK result with implemented = false; malformed fixtures are errors.
Result<FixtureReport> CheckFixture(const std::string& dir);

}  // namespace stas::models
