#include "common/json.h"

#include "common/fs.h"

namespace stas {

Result<Json> ParseJson(const std::string& text, const std::string& what) {
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    return InvalidArgument(what + " is not valid JSON: " + e.what());
  }
}

Result<Json> ReadJsonFile(const std::string& path) {
  STAS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseJson(text, path);
}

}  // namespace stas
