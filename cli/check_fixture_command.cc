#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "models/components.h"

namespace stas::cli {

void RegisterCheckFixture(CLI::App& app) {
  static std::vector<std::string> dirs;
  CLI::App* cmd = AddCommand(app, "check-fixture",
                             "Run a reference fixture's component and compare every output with the reference "
                             "(exit 0 iff all are within the fixture's tolerance)",
                             [] {
                               int failures = 0;
                               for (const auto& dir : dirs) {
                                 auto report = models::CheckFixture(dir);
                                 if (!report.ok()) {
                                   std::cerr << dir << ": error: " << report.status().ToString() << "\n";
                                   ++failures;
                                   continue;
                                 }
                                 if (!report->implemented) {
                                   std::cout << dir << ": component " << report->component
                                             << " not implemented\n";
                                   ++failures;
                                   continue;
                                 }
                                 for (const auto& c : report->outputs) {
                                   std::printf("%s: %s %-16s max_abs_err=%.3e %s%s\n", dir.c_str(),
                                               report->component.c_str(), c.name.c_str(), c.max_abs_error,
                                               c.ok() ? "PASS" : "FAIL", c.detail.empty() ? "" : (" (" + c.detail + ")").c_str());
                                 }
                                 for (const auto& name : report->missing_outputs)
                                   std::printf("%s: %s %-16s not implemented\n", dir.c_str(), report->component.c_str(),
                                               name.c_str());
                                 std::printf("%s: %s\n", dir.c_str(), report->passed() ? "PASS" : "FAIL");
                                 if (!report->passed()) ++failures;
                               }
                               return failures == 0 ? 0 : 1;
                             });
  cmd->add_option("dirs", dirs, "fixture folders (meta.json, weights.safetensors, io.safetensors)")
      ->required()
      ->check(CLI::ExistingDirectory);
}

}  // namespace stas::cli
