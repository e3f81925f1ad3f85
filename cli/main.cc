// `stas`: the one user-facing command. See README.md and docs/OPERATIONS.md.
#include <CLI/CLI.hpp>

#include <exception>
#include <iostream>
#include <map>

#include "cli/commands.h"
#include "common/log.h"

namespace stas::cli {

namespace {
std::map<CLI::App*, Handler>& Handlers() {
  static std::map<CLI::App*, Handler> handlers;
  return handlers;
}
}  // namespace

CLI::App* AddCommand(CLI::App& app, const std::string& name, const std::string& description, Handler handler) {
  CLI::App* sub = app.add_subcommand(name, description);
  Handlers()[sub] = std::move(handler);
  return sub;
}

}  // namespace stas::cli

int main(int argc, char** argv) {
  CLI::App app{"stas: batch text-to-video rendering with Structured Activation Steering"};
  app.require_subcommand(1);
  std::string log_level;
  app.add_option("--log-level", log_level, "trace, debug, info, warn or error");
  stas::cli::RegisterCheckFixture(app);
  stas::cli::RegisterVersion(app);
  stas::cli::RegisterRender(app);
  stas::cli::RegisterCoordinator(app);
  stas::cli::RegisterClientCommands(app);
  stas::cli::RegisterWorker(app);
  stas::cli::RegisterAnalyze(app);
  stas::cli::RegisterEval(app);
  stas::cli::RegisterAb(app);
  stas::cli::RegisterLoadTest(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Argument errors are bad input: exit 2 (as for invalid values) and name the subcommand.
    std::string command = "stas";
    for (const CLI::App* sub : app.get_subcommands()) command += " " + sub->get_name();
    std::cerr << command << ": " << e.what() << "\nRun with --help for more information.\n";
    return 2;
  }
  if (!log_level.empty()) stas::SetLogLevel(log_level);
  for (const auto& [sub, handler] : stas::cli::Handlers()) {
    if (sub->parsed()) {
      try {
        return handler();
      } catch (const std::exception& e) {
        std::cerr << "stas " << sub->get_name() << ": internal error: " << e.what() << "\n";
        return 70;
      }
    }
  }
  return 64;
}
