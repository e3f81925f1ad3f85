#include "common/text.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>

namespace stas {

namespace {

// Length of the well-formed UTF-8 sequence at text[i], or 0 when it is not one.
size_t Utf8SequenceLength(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t n;
  uint32_t cp;
  if ((c & 0xe0) == 0xc0) n = 2, cp = c & 0x1f;
  else if ((c & 0xf0) == 0xe0) n = 3, cp = c & 0x0f;
  else if ((c & 0xf8) == 0xf0) n = 4, cp = c & 0x07;
  else return 0;
  if (i + n > text.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3f);
  }
  static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t n = Utf8SequenceLength(text, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string TruncateUtf8(std::string_view text, size_t max_bytes) {
  static const std::string kReplacement = "\xef\xbf\xbd";
  std::string out;
  out.reserve(std::min(text.size(), max_bytes));
  for (size_t i = 0; i < text.size();) {
    const size_t n = Utf8SequenceLength(text, i);
    const size_t add = n == 0 ? kReplacement.size() : n;
    if (out.size() + add > max_bytes) break;
    if (n == 0) {
      out += kReplacement;
      i += 1;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string SafeDump(const Json& j, int indent) { return j.dump(indent, ' ', false, Json::error_handler_t::replace); }

int CheckedInt(const Json& value, const std::string& what) {
  if (!value.is_number_integer()) throw std::runtime_error(what + " must be an integer");
  const bool fits = value.is_number_unsigned()
                        ? value.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int>::max())
                        : (value.get<int64_t>() >= std::numeric_limits<int>::min() &&
                           value.get<int64_t>() <= std::numeric_limits<int>::max());
  if (!fits) throw std::runtime_error(what + " is out of range");
  return static_cast<int>(value.get<int64_t>());
}

int CheckedInt(const Json& j, const std::string& key, int fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return CheckedInt(*it, "'" + key + "'");
}

}  // namespace stas
