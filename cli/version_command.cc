#include <iostream>

#include "cli/commands.h"
#include "common/torch_compat.h"
#include "models/components.h"

namespace stas::cli {

void RegisterVersion(CLI::App& app) {
  AddCommand(app, "version", "Print the version, the LibTorch it runs on and the built-in features", [] {
    std::cout << "stas 0.1.0\nlibtorch " << compat::TorchVersionString() << "\nfeatures:"
              << (STAS_HAVE_CUDA ? " cuda" : "") << (STAS_HAVE_NCCL ? " nccl" : "") << (STAS_HAVE_REDIS ? " redis" : "")
              << (STAS_HAVE_FFMPEG ? " ffmpeg" : "") << " mpi\ncomponents:";
    for (const auto& c : models::ImplementedComponents()) std::cout << " " << c;
    std::cout << "\n";
    return 0;
  });
}

}  // namespace stas::cli
