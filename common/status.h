// Status and Result<T>: the error model at module boundaries.
//
// Expected failures (bad input, missing files, a peer that went away) travel as a Status; broken
// invariants use STAS_CHECK (common/check.h) and throw. A Status is cheap to copy; OK carries no message.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace stas {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // the caller's input is wrong (bad flag, malformed file, unsupported shape)
  kNotFound,         // a file, tensor, job or key does not exist
  kNotImplemented,   // a known feature this build or version does not provide
  kIoError,          // the OS refused a read/write/mmap
  kUnavailable,      // a service (Redis, coordinator, peer rank) cannot be reached right now
  kAborted,          // cancelled or superseded (a lost lease, a cancelled job)
  kTimeout,          // a deadline passed (watchdog, lease)
  kInternal,         // a bug or an unexpected library failure
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "InvalidArgument: frames must be 4k+1, got 10"
  std::string ToString() const;
  // Returns a copy whose message is prefixed with `context: `.
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status NotImplemented(std::string m) { return {StatusCode::kNotImplemented, std::move(m)}; }
inline Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status Aborted(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
inline Status Timeout(std::string m) { return {StatusCode::kTimeout, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) status_ = Internal("Result constructed from an OK status without a value");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  // Precondition: ok(). Checked: calling on an error throws stas::CheckFailure.
  T& value() &;
  const T& value() const&;
  T&& value() &&;
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

[[noreturn]] void ThrowBadResultAccess(const Status& status);

template <typename T>
T& Result<T>::value() & {
  if (!value_) ThrowBadResultAccess(status_);
  return *value_;
}
template <typename T>
const T& Result<T>::value() const& {
  if (!value_) ThrowBadResultAccess(status_);
  return *value_;
}
template <typename T>
T&& Result<T>::value() && {
  if (!value_) ThrowBadResultAccess(status_);
  return std::move(*value_);
}

}  // namespace stas

#define STAS_CONCAT_INNER(a, b) a##b
#define STAS_CONCAT(a, b) STAS_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function when `expr` is not OK.
#define STAS_RETURN_IF_ERROR(expr)            \
  do {                                        \
    ::stas::Status _stas_st = (expr);         \
    if (!_stas_st.ok()) return _stas_st;      \
  } while (0)

// `STAS_ASSIGN_OR_RETURN(auto x, MakeX());` declares x from a Result or returns its Status.
#define STAS_ASSIGN_OR_RETURN(lhs, expr) \
  STAS_ASSIGN_OR_RETURN_IMPL(STAS_CONCAT(_stas_res_, __LINE__), lhs, expr)
#define STAS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()
