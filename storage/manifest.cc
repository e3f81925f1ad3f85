#include "storage/manifest.h"

#include <ctime>

#include "common/fs.h"
#include "common/torch_compat.h"
#include "storage/mp4_writer.h"

#ifndef STAS_VERSION
#define STAS_VERSION "unknown"
#endif

namespace stas::storage {

const char* StasVersion() { return STAS_VERSION; }

Json Manifest::ToJson() const {
  return Json{{"format_version", kManifestFormatVersion},
              {"job_id", job_id},
              {"prompt", prompt},
              {"negative_prompt", negative_prompt},
              {"seed", seed},
              {"model", model},
              {"model_family", model_family},
              {"width", width},
              {"height", height},
              {"frames", frames},
              {"fps", fps},
              {"steps", steps},
              {"guidance", guidance},
              {"shift", shift},
              {"stas", stas},
              {"timings_s", timings_s},
              {"video_file", video_file},
              {"codec", codec},
              {"device", device},
              {"dtype", dtype},
              {"parallel",
               {{"sequence_parallel", sequence_parallel}, {"cfg_parallel", cfg_parallel}, {"decode_ranks", decode_ranks}}},
              {"resumed_from_step", resumed_from_step},
              {"created_at", created_at},
              {"versions", versions}};
}

Result<Manifest> Manifest::FromJson(const Json& j) {
  if (!j.is_object()) return InvalidArgument("a manifest must be a JSON object");
  Manifest m;
  Status st = CatchConfigErrors("manifest", [&] {
    const int format = JsonValueOr(j, "format_version", 0);
    if (format < 1 || format > kManifestFormatVersion)
      throw std::runtime_error("unsupported format_version " + std::to_string(format));
    m.job_id = j.at("job_id").get<std::string>();
    m.prompt = j.at("prompt").get<std::string>();
    m.negative_prompt = JsonValueOr<std::string>(j, "negative_prompt", "");
    m.seed = j.at("seed").get<uint64_t>();
    m.model = j.at("model").get<std::string>();
    m.model_family = JsonValueOr<std::string>(j, "model_family", "");
    m.width = j.at("width").get<int>();
    m.height = j.at("height").get<int>();
    m.frames = j.at("frames").get<int>();
    m.fps = j.at("fps").get<int>();
    m.steps = j.at("steps").get<int>();
    m.guidance = j.at("guidance").get<double>();
    m.shift = j.at("shift").get<double>();
    m.stas = JsonValueOr(j, "stas", Json::object());
    m.timings_s = JsonValueOr(j, "timings_s", std::map<std::string, double>{});
    m.video_file = JsonValueOr<std::string>(j, "video_file", "");
    m.codec = JsonValueOr<std::string>(j, "codec", "");
    m.device = JsonValueOr<std::string>(j, "device", "");
    m.dtype = JsonValueOr<std::string>(j, "dtype", "");
    if (j.contains("parallel")) {
      m.sequence_parallel = JsonValueOr(j["parallel"], "sequence_parallel", 1);
      m.cfg_parallel = JsonValueOr(j["parallel"], "cfg_parallel", false);
      m.decode_ranks = JsonValueOr(j["parallel"], "decode_ranks", 1);
    }
    m.resumed_from_step = JsonValueOr(j, "resumed_from_step", 0);
    m.created_at = JsonValueOr<std::string>(j, "created_at", "");
    m.versions = JsonValueOr(j, "versions", std::map<std::string, std::string>{});
  });
  STAS_RETURN_IF_ERROR(st);
  return m;
}

void FillEnvironment(Manifest& manifest) {
  if (manifest.created_at.empty()) {
    const std::time_t now = std::time(nullptr);
    std::tm utc{};
    gmtime_r(&now, &utc);
    char buf[32];
    std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &utc);
    manifest.created_at = buf;
  }
  manifest.versions["stas"] = StasVersion();
  manifest.versions["libtorch"] = compat::TorchVersionString();
  manifest.versions["ffmpeg"] = FfmpegVersionString();
}

std::string ManifestText(const Manifest& manifest) { return manifest.ToJson().dump(2) + "\n"; }

Status WriteManifest(const std::string& path, const Manifest& manifest) {
  return WriteFileAtomically(path, ManifestText(manifest));
}

Result<Manifest> ReadManifest(const std::string& path) {
  STAS_ASSIGN_OR_RETURN(Json j, ReadJsonFile(path));
  auto m = Manifest::FromJson(j);
  if (!m.ok()) return m.status().WithContext(path);
  return m;
}

}  // namespace stas::storage
