// Text that crosses a trust boundary (HTTP, the worker protocol, the job store): UTF-8 checks and
// truncation, a JSON dump that cannot throw, and integer fields read without silent wrap-around.
#pragma once

#include <string>
#include <string_view>

#include "common/json.h"

namespace stas {


// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or code points above U+10FFFF).
bool IsValidUtf8(std::string_view text);
// `text` cut to at most `max_bytes` without splitting a character; invalid sequences become U+FFFD
// first, so the result is always valid UTF-8 and Json::dump() never throws on it.
std::string TruncateUtf8(std::string_view text, size_t max_bytes);
// Json::dump() that never throws: invalid UTF-8 in strings is replaced by U+FFFD.
std::string SafeDump(const Json& j, int indent = -1);

// j[key] as an int when present and not null, else `fallback`. Throws std::runtime_error (caught by
// CatchConfigErrors) naming the key when the value is not an integer or does not fit an int: 2^32 + 1
// must not wrap into 1.
int CheckedInt(const Json& j, const std::string& key, int fallback);
// The same for one JSON value (e.g. an array element); `what` names it in the error.
int CheckedInt(const Json& value, const std::string& what);

}  // namespace stas
