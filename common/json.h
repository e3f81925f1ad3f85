// JSON helpers over nlohmann::json for configs: defaults, null-as-missing, clear errors.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "common/status.h"

namespace stas {

using Json = nlohmann::json;

// `j[key]` converted to T, or `fallback` when the key is missing or null.
template <typename T>
T JsonValueOr(const Json& j, const std::string& key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return it->get<T>();
}

Result<Json> ParseJson(const std::string& text, const std::string& what);
Result<Json> ReadJsonFile(const std::string& path);

// Runs `fn` and turns a thrown nlohmann or stas::CheckFailure exception into InvalidArgument, prefixed
// with `context`. Used where configs are decoded field by field.
template <typename Fn>
Status CatchConfigErrors(const std::string& context, Fn&& fn) {
  try {
    fn();
    return Status::Ok();
  } catch (const std::exception& e) {
    return InvalidArgument(context + ": " + e.what());
  }
}

}  // namespace stas
