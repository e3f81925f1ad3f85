// Invariant checks that stay on in release builds, and per-C-library CHECK macros.
//
// STAS_CHECK(cond) << "context";  throws stas::CheckFailure with file:line and the message.
// Library macros (STAS_MPI_CHECK, STAS_NCCL_CHECK, STAS_AV_CHECK, ...) live beside the code that
// wraps that library and build on StreamingCheckFailure so every message names the library,
// its version, the call and the file:line.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace stas {

class CheckFailure : public std::logic_error {
 public:
  explicit CheckFailure(const std::string& what) : std::logic_error(what) {}
};

// Collects a message with operator<< and throws CheckFailure from its destructor's caller.
class StreamingCheckFailure {
 public:
  StreamingCheckFailure(const char* file, int line, const char* what);
  template <typename T>
  StreamingCheckFailure& operator<<(const T& v) {
    stream_ << v;
    return *this;
  }
  [[noreturn]] void Throw();

 private:
  std::ostringstream stream_;
};

// Helper so `STAS_CHECK(x) << "msg";` is one expression that throws at the end of the statement.
struct CheckThrower {
  [[noreturn]] void operator&(StreamingCheckFailure& f) { f.Throw(); }
  [[noreturn]] void operator&(StreamingCheckFailure&& f) { f.Throw(); }
};

}  // namespace stas

#define STAS_CHECK(cond)                                                             \
  if (__builtin_expect(!!(cond), 1)) {                                               \
  } else                                                                             \
    ::stas::CheckThrower() & ::stas::StreamingCheckFailure(__FILE__, __LINE__,       \
                                                           "check failed: " #cond)

#define STAS_CHECK_EQ(a, b) STAS_CHECK((a) == (b)) << "(" << (a) << " vs " << (b) << ") "
