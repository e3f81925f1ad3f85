#include "models/components.h"

#include <utility>

#include "models/cogvideox/fixture_runners.h"
#include "models/text/fixture_runners.h"
#include "models/wan/fixture_runners.h"
#include "models/wan/vae.h"

namespace stas::models {

// Each model family defines its runners next to its code and is listed here.
// (Kept explicit rather than self-registering so static-library linking cannot drop an entry.)
namespace {
const std::map<std::string, FixtureRunner>& Registry() {
  static const std::map<std::string, FixtureRunner> registry = {
      {"umt5_encoder", text::RunUmt5EncoderFixture},
      {"t5_encoder", text::RunT5EncoderFixture},
      {"wan_transformer", wan::RunWanTransformerFixture},
      {"unipc_flow_scheduler", wan::RunUniPCFlowSchedulerFixture},
      {"wan_pipeline", wan::RunWanPipelineFixture},
      {"wan_vae_decoder", wan::RunWanVaeDecoderFixture},
      {"cogvideox_transformer", cogvideox::RunCogVideoXTransformerFixture},
      {"cogvideox_vae_decoder", cogvideox::RunCogVideoXVaeDecoderFixture},
      {"cogvideox_pipeline", cogvideox::RunCogVideoXPipelineFixture},
  };
  return registry;
}
}  // namespace

const FixtureRunner* FindFixtureRunner(const std::string& component) {
  auto it = Registry().find(component);
  return it == Registry().end() ? nullptr : &it->second;
}

std::vector<std::string> ImplementedComponents() {
  std::vector<std::string> names;
  for (const auto& [name, _] : Registry()) names.push_back(name);
  return names;
}

bool FixtureReport::passed() const {
  if (!implemented || !missing_outputs.empty()) return false;
  for (const auto& c : outputs)
    if (!c.ok()) return false;
  return true;
}

Result<FixtureReport> CheckFixture(const std::string& dir) {
  STAS_ASSIGN_OR_RETURN(Fixture fixture, Fixture::Open(dir));
  FixtureReport report;
  report.dir = dir;
  report.component = fixture.component();
  const FixtureRunner* runner = FindFixtureRunner(report.component);
  if (!runner) return report;
  report.implemented = true;
  Result<TensorMap> run = Internal("not run");
  try {
    run = (*runner)(fixture);
  } catch (const std::exception& e) {
    return Internal(report.component + " failed on " + dir + ": " + e.what());
  }
  if (!run.ok()) return run.status().WithContext(report.component);
  const TensorMap& ours = run.value();
  for (const auto& name : fixture.output_names()) {
    auto it = ours.find(name);
    if (it == ours.end()) {
      report.missing_outputs.push_back(name);
      continue;
    }
    STAS_ASSIGN_OR_RETURN(at::Tensor reference, fixture.Io(name));
    report.outputs.push_back(CompareTensors(name, it->second, reference, fixture.tolerance()));
  }
  return report;
}

}  // namespace stas::models
