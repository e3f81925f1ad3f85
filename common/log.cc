#include "common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <memory>

namespace stas {

namespace {
std::shared_ptr<spdlog::logger> MakeLogger() {
  auto logger = spdlog::stderr_color_mt("stas");
  logger->set_pattern("%^[%H:%M:%S.%e %L]%$ %v");
  const char* env = std::getenv("STAS_LOG_LEVEL");
  logger->set_level(env ? spdlog::level::from_str(env) : spdlog::level::info);
  return logger;
}
}  // namespace

spdlog::logger& Log() {
  static std::shared_ptr<spdlog::logger> logger = MakeLogger();
  return *logger;
}

void SetLogLevel(const std::string& level) { Log().set_level(spdlog::level::from_str(level)); }

void SetLogTag(const std::string& tag) {
  Log().set_pattern("%^[%H:%M:%S.%e %L]%$ " + tag + " %v");
}

}  // namespace stas
