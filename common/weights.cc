#include "common/weights.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <sstream>

#include "common/json.h"

namespace fs = std::filesystem;

namespace stas {

struct WeightStore::Shared {
  std::vector<SafetensorsFile> files;
  std::map<std::string, size_t> file_of;  // tensor name -> index in files
  std::map<std::string, at::Tensor> in_memory;
};

Result<WeightStore> WeightStore::OpenFile(const std::string& path) {
  STAS_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(path));
  auto shared = std::make_shared<Shared>();
  for (const auto& name : file.Names()) shared->file_of[name] = 0;
  shared->files.push_back(std::move(file));
  WeightStore store;
  store.shared_ = std::move(shared);
  return store;
}

Result<WeightStore> WeightStore::OpenDirectory(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("weights folder not found: " + dir);
  std::vector<std::string> indexes, singles;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    auto ends_with = [&](const std::string& suffix) {
      return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (ends_with(".safetensors.index.json")) indexes.push_back(entry.path().string());
    else if (ends_with(".safetensors")) singles.push_back(entry.path().string());
  }
  std::sort(indexes.begin(), indexes.end());
  std::sort(singles.begin(), singles.end());

  auto shared = std::make_shared<Shared>();
  std::vector<std::string> shard_paths;
  if (!indexes.empty()) {
    if (indexes.size() > 1) return InvalidArgument("more than one *.safetensors.index.json in " + dir);
    STAS_ASSIGN_OR_RETURN(Json index, ReadJsonFile(indexes[0]));
    auto map = index.find("weight_map");
    if (map == index.end() || !map->is_object()) return InvalidArgument(indexes[0] + " has no weight_map object");
    std::map<std::string, size_t> shard_index;
    for (auto it = map->begin(); it != map->end(); ++it) {
      if (!it.value().is_string()) return InvalidArgument(indexes[0] + ": weight_map values must be file names");
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard == "..")
        return InvalidArgument(indexes[0] + ": shard name '" + shard + "' must be a plain file name");
      if (!shard_index.count(shard)) {
        shard_index[shard] = shard_paths.size();
        shard_paths.push_back((fs::path(dir) / shard).string());
      }
    }
  } else {
    shard_paths = singles;
  }
  if (shard_paths.empty()) return NotFound("no *.safetensors files in " + dir);
  for (const auto& path : shard_paths) {
    STAS_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(path));
    for (const auto& name : file.Names()) {
      if (shared->file_of.count(name))
        return InvalidArgument("tensor '" + name + "' appears in more than one shard of " + dir);
      shared->file_of[name] = shared->files.size();
    }
    shared->files.push_back(std::move(file));
  }
  WeightStore store;
  store.shared_ = std::move(shared);
  return store;
}

WeightStore WeightStore::FromTensors(std::map<std::string, at::Tensor> tensors) {
  auto shared = std::make_shared<Shared>();
  shared->in_memory = std::move(tensors);
  WeightStore store;
  store.shared_ = std::move(shared);
  return store;
}

WeightStore WeightStore::WithPrefix(const std::string& prefix) const {
  WeightStore view = *this;
  view.prefix_ = prefix_ + prefix;
  return view;
}

bool WeightStore::Has(const std::string& name) const {
  if (!shared_) return false;
  const std::string full = prefix_ + name;
  return shared_->file_of.count(full) || shared_->in_memory.count(full);
}

Result<at::Tensor> WeightStore::Get(const std::string& name) const {
  if (!shared_) return NotFound("tensor '" + name + "': empty weight store");
  const std::string full = prefix_ + name;
  if (auto it = shared_->in_memory.find(full); it != shared_->in_memory.end()) return it->second;
  auto it = shared_->file_of.find(full);
  if (it == shared_->file_of.end()) return NotFound("tensor '" + full + "' not found in " + Describe());
  return shared_->files[it->second].Get(full);
}

std::vector<std::string> WeightStore::Names() const {
  std::vector<std::string> names;
  if (!shared_) return names;
  auto add = [&](const std::string& full) {
    if (full.compare(0, prefix_.size(), prefix_) == 0) names.push_back(full.substr(prefix_.size()));
  };
  for (const auto& [full, _] : shared_->file_of) add(full);
  for (const auto& [full, _] : shared_->in_memory) add(full);
  std::sort(names.begin(), names.end());
  return names;
}

std::string WeightStore::Describe() const {
  if (!shared_ || shared_->files.empty()) return "in-memory weights";
  std::string s = shared_->files[0].path();
  if (shared_->files.size() > 1) s += " (+" + std::to_string(shared_->files.size() - 1) + " shards)";
  return s;
}

at::Tensor WeightReader::Load(const std::string& name, at::IntArrayRef expected, at::TensorOptions options) const {
  auto t = store_.Get(name);
  if (!t.ok()) throw MissingWeightError(t.status().message());
  if (!expected.empty() && t->sizes() != expected) {
    std::ostringstream ss;
    ss << "tensor '" << name << "' has shape " << t->sizes() << ", expected " << expected;
    throw MissingWeightError(ss.str());
  }
  return t->to(options, /*non_blocking=*/false, /*copy=*/false).contiguous();
}

at::Tensor WeightReader::Require(const std::string& name, at::IntArrayRef expected) const {
  return Load(name, expected, options_);
}

at::Tensor WeightReader::RequireFloat(const std::string& name, at::IntArrayRef expected) const {
  return Load(name, expected, options_.dtype(at::kFloat));
}

std::optional<at::Tensor> WeightReader::Optional(const std::string& name) const {
  if (!store_.Has(name)) return std::nullopt;
  return Require(name);
}

}  // namespace stas
