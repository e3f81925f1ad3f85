// Subcommands of the `stas` executable. Each Register* adds one subcommand to the app and stores
// its handler; main() runs the handler of the subcommand the user chose and exits with its code.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace stas::cli {

using Handler = std::function<int()>;

// Adds a subcommand; `handler` runs when it is selected. Returns the subcommand to add options to.
CLI::App* AddCommand(CLI::App& app, const std::string& name, const std::string& description, Handler handler);

void RegisterCheckFixture(CLI::App& app);
void RegisterVersion(CLI::App& app);
void RegisterCoordinator(CLI::App& app);

}  // namespace stas::cli
