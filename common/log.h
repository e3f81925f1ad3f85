// Logging to stderr with levels, a per-process tag (e.g. "[rank 3]") and "{}" placeholders.
//
// Our own small formatter rather than spdlog/fmt: LibTorch 2.x ships its own fmt headers, which clash
// with a system spdlog built on another fmt. Placeholders: "{}" streams the argument; "{:.Nf}" prints a
// floating-point argument with N decimals. Thread-safe: each line is written whole under a mutex.
// Level from STAS_LOG_LEVEL (trace, debug, info, warn, error, off) or SetLogLevel.
#pragma once

#include <iomanip>
#include <sstream>
#include <string>
#include <string_view>

namespace stas {

enum class LogLevel { kTrace = 0, kDebug, kInfo, kWarn, kError, kOff };

namespace log_detail {

inline void FormatInto(std::ostringstream& out, std::string_view fmt) { out << fmt; }

template <typename T, typename... Rest>
void FormatInto(std::ostringstream& out, std::string_view fmt, const T& value, const Rest&... rest) {
  const size_t open = fmt.find('{');
  const size_t close = open == std::string_view::npos ? open : fmt.find('}', open);
  if (close == std::string_view::npos) {
    out << fmt;
    return;
  }
  out << fmt.substr(0, open);
  const std::string_view spec = fmt.substr(open + 1, close - open - 1);
  if (spec.size() >= 3 && spec[0] == ':' && spec[1] == '.' && spec.back() == 'f') {
    const int precision = std::stoi(std::string(spec.substr(2, spec.size() - 3)));
    const auto flags = out.flags();
    const auto old_precision = out.precision();
    out << std::fixed << std::setprecision(precision) << value;
    out.flags(flags);
    out.precision(old_precision);
  } else {
    out << value;
  }
  FormatInto(out, fmt.substr(close + 1), rest...);
}

}  // namespace log_detail

// Formats like the log macros do ("{}" and "{:.Nf}" placeholders).
template <typename... Args>
std::string FormatMessage(std::string_view fmt, const Args&... args) {
  std::ostringstream out;
  log_detail::FormatInto(out, fmt, args...);
  return out.str();
}

class Logger {
 public:
  bool enabled(LogLevel level) const { return level >= level_ && level_ != LogLevel::kOff; }
  void set_level(LogLevel level) { level_ = level; }
  void set_tag(std::string tag);
  void Write(LogLevel level, const std::string& message);
  void flush();

  template <typename... Args>
  void debug(std::string_view fmt, const Args&... args) { Emit(LogLevel::kDebug, fmt, args...); }
  template <typename... Args>
  void info(std::string_view fmt, const Args&... args) { Emit(LogLevel::kInfo, fmt, args...); }
  template <typename... Args>
  void warn(std::string_view fmt, const Args&... args) { Emit(LogLevel::kWarn, fmt, args...); }
  template <typename... Args>
  void error(std::string_view fmt, const Args&... args) { Emit(LogLevel::kError, fmt, args...); }

 private:
  template <typename... Args>
  void Emit(LogLevel level, std::string_view fmt, const Args&... args) {
    if (enabled(level)) Write(level, FormatMessage(fmt, args...));
  }
  LogLevel level_ = LogLevel::kInfo;
  std::string tag_;
};

// The process-wide logger. Safe to call from any thread.
Logger& Log();
// Unknown names leave the level unchanged and return false.
bool SetLogLevel(const std::string& level);
// Prefixes every line with e.g. "[rank 3]" under MPI.
void SetLogTag(const std::string& tag);

}  // namespace stas

#define STAS_LOG_DEBUG(...) ::stas::Log().debug(__VA_ARGS__)
#define STAS_LOG_INFO(...) ::stas::Log().info(__VA_ARGS__)
#define STAS_LOG_WARN(...) ::stas::Log().warn(__VA_ARGS__)
#define STAS_LOG_ERROR(...) ::stas::Log().error(__VA_ARGS__)
