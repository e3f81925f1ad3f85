#include "storage/latent_checkpoint.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/safetensors.h"
#include "storage/output_layout.h"

namespace stas::storage {

namespace fs = std::filesystem;

namespace {
constexpr const char* kFormat = "stas-latent-checkpoint/1";
constexpr const char* kSchedulerPrefix = "scheduler.";

Result<int> ParseCount(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& file) {
  auto it = meta.find(key);
  if (it == meta.end()) return InvalidArgument(file + ": latent checkpoint lacks metadata '" + key + "'");
  try {
    size_t used = 0;
    const int v = std::stoi(it->second, &used);
    if (used != it->second.size() || v < 0) throw std::invalid_argument(key);
    return v;
  } catch (const std::exception&) {
    return InvalidArgument(file + ": latent checkpoint metadata '" + key + "' is not a count: " + it->second);
  }
}
}  // namespace

LatentCheckpointStore::LatentCheckpointStore(std::string storage_root) : root_(std::move(storage_root)) {}

std::string LatentCheckpointStore::folder() const { return (fs::path(root_) / ".checkpoints").string(); }

std::string LatentCheckpointStore::PathFor(const std::string& job_id) const {
  return (fs::path(folder()) / (job_id + ".safetensors")).string();
}

Status LatentCheckpointStore::Save(const LatentCheckpoint& checkpoint) const {
  STAS_RETURN_IF_ERROR(ValidateOutputComponent(checkpoint.job_id, "job id"));
  if (!checkpoint.latents.defined()) return InvalidArgument("latent checkpoint without latents");
  if (checkpoint.step < 0 || checkpoint.num_steps < 1 || checkpoint.step > checkpoint.num_steps)
    return InvalidArgument("latent checkpoint step " + std::to_string(checkpoint.step) + " of " +
                           std::to_string(checkpoint.num_steps) + " is out of range");
  std::error_code ec;
  fs::create_directories(folder(), ec);
  if (ec) return IoError("cannot create " + folder() + ": " + ec.message());
  std::map<std::string, at::Tensor> tensors{{"latents", checkpoint.latents}};
  for (const auto& [name, t] : checkpoint.scheduler_state) {
    if (!t.defined()) return InvalidArgument("scheduler state '" + name + "' is undefined");
    tensors[kSchedulerPrefix + name] = t;
  }
  const std::map<std::string, std::string> meta{{"format", kFormat},
                                                {"job_id", checkpoint.job_id},
                                                {"step", std::to_string(checkpoint.step)},
                                                {"num_steps", std::to_string(checkpoint.num_steps)}};
  return WriteSafetensors(PathFor(checkpoint.job_id), tensors, meta);
}

Result<LatentCheckpoint> LatentCheckpointStore::Load(const std::string& job_id) const {
  STAS_RETURN_IF_ERROR(ValidateOutputComponent(job_id, "job id"));
  const std::string path = PathFor(job_id);
  std::error_code ec;
  if (!fs::exists(path, ec)) return NotFound("no latent checkpoint for job " + job_id);
  STAS_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(path));
  const auto& meta = file.header().metadata;
  auto format = meta.find("format");
  if (format == meta.end() || format->second != kFormat)
    return InvalidArgument(path + " is not a " + std::string(kFormat) + " file");
  auto id = meta.find("job_id");
  if (id == meta.end() || id->second != job_id)
    return InvalidArgument(path + " belongs to job " + (id == meta.end() ? "?" : id->second) + ", not " + job_id);
  LatentCheckpoint c;
  c.job_id = job_id;
  STAS_ASSIGN_OR_RETURN(c.step, ParseCount(meta, "step", path));
  STAS_ASSIGN_OR_RETURN(c.num_steps, ParseCount(meta, "num_steps", path));
  if (c.num_steps < 1 || c.step > c.num_steps) return InvalidArgument(path + ": step is past num_steps");
  if (!file.Contains("latents")) return InvalidArgument(path + " has no 'latents' tensor");
  for (const std::string& name : file.Names()) {
    STAS_ASSIGN_OR_RETURN(at::Tensor t, file.Get(name));
    t = t.clone();  // detach from the mapping so the file can be removed while the tensors live
    if (name == "latents") c.latents = t;
    else if (name.rfind(kSchedulerPrefix, 0) == 0) c.scheduler_state[name.substr(std::strlen(kSchedulerPrefix))] = t;
    else return InvalidArgument(path + ": unexpected tensor '" + name + "'");
  }
  return c;
}

bool LatentCheckpointStore::Exists(const std::string& job_id) const {
  std::error_code ec;
  return fs::exists(PathFor(job_id), ec);
}

Status LatentCheckpointStore::Remove(const std::string& job_id) const {
  STAS_RETURN_IF_ERROR(ValidateOutputComponent(job_id, "job id"));
  const std::string path = PathFor(job_id);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return IoError("cannot remove " + path + ": " + std::strerror(errno));
  return Status::Ok();
}

}  // namespace stas::storage
