// Subcommands of the `stas` executable. Each Register* adds one subcommand to the app and stores
// its handler; main() runs the handler of the subcommand the user chose and exits with its code.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace stas::eval {
struct EvalSettings;
}

namespace stas::cli {

using Handler = std::function<int()>;

// Adds a subcommand; `handler` runs when it is selected. Returns the subcommand to add options to.
CLI::App* AddCommand(CLI::App& app, const std::string& name, const std::string& description, Handler handler);

void RegisterCheckFixture(CLI::App& app);
void RegisterVersion(CLI::App& app);
void RegisterRender(CLI::App& app);
void RegisterCoordinator(CLI::App& app);
void RegisterClientCommands(CLI::App& app);  // submit, status, watch, cancel
void RegisterWorker(CLI::App& app);
void RegisterAnalyze(CLI::App& app);  // MA analysis and STAS channel calibration
void RegisterEval(CLI::App& app);     // temporal-consistency metrics of videos
void RegisterAb(CLI::App& app);       // ab (STAS on/off comparison + report) and render-suite (VBench naming)
void RegisterLoadTest(CLI::App& app);  // loadtest: control-plane load test of a running coordinator

// The metric flags shared by `stas eval` and `stas ab` (--temporal-compression, --dino, --clip, ...).
void AddEvalFlags(CLI::App* command, eval::EvalSettings* settings);

}  // namespace stas::cli
