#include "common/status.h"

#include "common/check.h"

namespace stas {

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kInvalidArgument: return "InvalidArgument";
    case StatusCode::kNotFound: return "NotFound";
    case StatusCode::kNotImplemented: return "NotImplemented";
    case StatusCode::kIoError: return "IoError";
    case StatusCode::kUnavailable: return "Unavailable";
    case StatusCode::kAborted: return "Aborted";
    case StatusCode::kTimeout: return "Timeout";
    case StatusCode::kInternal: return "Internal";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return std::string(StatusCodeName(code_)) + ": " + message_;
}

Status Status::WithContext(const std::string& context) const {
  if (ok()) return *this;
  return Status(code_, context + ": " + message_);
}

void ThrowBadResultAccess(const Status& status) {
  throw CheckFailure("value() called on a failed Result: " + status.ToString());
}

StreamingCheckFailure::StreamingCheckFailure(const char* file, int line, const char* what) {
  stream_ << file << ":" << line << ": " << what << " ";
}

void StreamingCheckFailure::Throw() { throw CheckFailure(stream_.str()); }

}  // namespace stas
