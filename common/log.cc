#include "common/log.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

namespace stas {

namespace {

std::mutex& LogMutex() {
  static std::mutex mu;
  return mu;
}

bool ParseLevel(const std::string& name, LogLevel* level) {
  static const std::pair<const char*, LogLevel> kNames[] = {
      {"trace", LogLevel::kTrace}, {"debug", LogLevel::kDebug}, {"info", LogLevel::kInfo},
      {"warn", LogLevel::kWarn},   {"warning", LogLevel::kWarn}, {"error", LogLevel::kError},
      {"off", LogLevel::kOff}};
  for (const auto& [n, l] : kNames) {
    if (name == n) {
      *level = l;
      return true;
    }
  }
  return false;
}

const char* LevelLetter(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace: return "T";
    case LogLevel::kDebug: return "D";
    case LogLevel::kInfo: return "I";
    case LogLevel::kWarn: return "W";
    case LogLevel::kError: return "E";
    case LogLevel::kOff: return "-";
  }
  return "?";
}

}  // namespace

void Logger::set_tag(std::string tag) {
  std::lock_guard<std::mutex> lock(LogMutex());
  tag_ = std::move(tag);
}

void Logger::Write(LogLevel level, const std::string& message) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t secs = std::chrono::system_clock::to_time_t(now);
  const int millis = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  localtime_r(&secs, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
  std::lock_guard<std::mutex> lock(LogMutex());
  std::fprintf(stderr, "[%s.%03d %s]%s%s %s\n", stamp, millis, LevelLetter(level), tag_.empty() ? "" : " ",
               tag_.c_str(), message.c_str());
}

void Logger::flush() { std::fflush(stderr); }

Logger& Log() {
  static Logger* logger = [] {
    auto* l = new Logger();  // never destroyed: threads may log during static destruction
    LogLevel level;
    if (const char* env = std::getenv("STAS_LOG_LEVEL"); env && ParseLevel(env, &level)) l->set_level(level);
    return l;
  }();
  return *logger;
}

bool SetLogLevel(const std::string& name) {
  LogLevel level;
  if (!ParseLevel(name, &level)) return false;
  Log().set_level(level);
  return true;
}

void SetLogTag(const std::string& tag) { Log().set_tag(tag); }

}  // namespace stas
