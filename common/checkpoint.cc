#include "common/checkpoint.h"

#include <filesystem>

namespace fs = std::filesystem;

namespace stas {

Result<CheckpointFolder> CheckpointFolder::Open(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("checkpoint folder not found: " + dir);
  const std::string index_path = (fs::path(dir) / "model_index.json").string();
  if (!fs::exists(index_path, ec))
    return NotFound(dir + " has no model_index.json: not a diffusers-format checkpoint folder");
  STAS_ASSIGN_OR_RETURN(Json index, ReadJsonFile(index_path));
  if (!index.is_object()) return InvalidArgument(index_path + " is not a JSON object");
  CheckpointFolder folder;
  folder.dir_ = dir;
  folder.model_index_ = std::move(index);
  return folder;
}

std::string CheckpointFolder::PipelineClass() const { return JsonValueOr<std::string>(model_index_, "_class_name", ""); }

std::vector<std::string> CheckpointFolder::Components() const {
  std::vector<std::string> names;
  for (auto it = model_index_.begin(); it != model_index_.end(); ++it) {
    const auto& v = it.value();
    if (v.is_array() && v.size() == 2 && v[0].is_string() && v[1].is_string()) names.push_back(it.key());
  }
  return names;
}

bool CheckpointFolder::HasComponent(const std::string& name) const {
  std::error_code ec;
  return fs::is_directory(ComponentPath(name), ec);
}

std::string CheckpointFolder::ComponentPath(const std::string& name) const { return (fs::path(dir_) / name).string(); }

Result<Json> CheckpointFolder::ComponentConfig(const std::string& name) const {
  if (!HasComponent(name)) return NotFound("checkpoint " + dir_ + " has no component folder '" + name + "'");
  std::error_code ec;
  for (const char* file : {"config.json", "scheduler_config.json"}) {
    const std::string path = (fs::path(ComponentPath(name)) / file).string();
    if (fs::exists(path, ec)) return ReadJsonFile(path);
  }
  return NotFound("component '" + name + "' of " + dir_ + " has no config.json");
}

Result<WeightStore> CheckpointFolder::ComponentWeights(const std::string& name) const {
  if (!HasComponent(name)) return NotFound("checkpoint " + dir_ + " has no component folder '" + name + "'");
  return WeightStore::OpenDirectory(ComponentPath(name));
}

}  // namespace stas
