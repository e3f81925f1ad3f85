// Logging: a thin layer over spdlog so the rest of the code names one logger.
// Thread-safe. Level from STAS_LOG_LEVEL (trace, debug, info, warn, error) or SetLogLevel.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace stas {

// The process-wide logger (stderr). Safe to call from any thread.
spdlog::logger& Log();
void SetLogLevel(const std::string& level);
// Prefixes every line with e.g. "[rank 3]" under MPI.
void SetLogTag(const std::string& tag);

}  // namespace stas

#define STAS_LOG_DEBUG(...) ::stas::Log().debug(__VA_ARGS__)
#define STAS_LOG_INFO(...) ::stas::Log().info(__VA_ARGS__)
#define STAS_LOG_WARN(...) ::stas::Log().warn(__VA_ARGS__)
#define STAS_LOG_ERROR(...) ::stas::Log().error(__VA_ARGS__)
