// The JSON manifest written beside every MP4: what was rendered, with which settings, how long each
// stage took and which software produced it. docs/RENDERING.md documents the format.
//
// storage/ sits below worker/, so the manifest holds plain values (the STAS settings as their JSON)
// rather than the worker's RenderSpec.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "common/json.h"
#include "common/status.h"

namespace stas::storage {

// Version of the manifest format; readers refuse newer majors.
constexpr int kManifestFormatVersion = 1;

struct Manifest {
  std::string job_id;
  std::string prompt;
  std::string negative_prompt;
  uint64_t seed = 0;
  std::string model;         // "tiny" or the checkpoint folder
  std::string model_family;  // "tiny", "wan2.1", ...
  int width = 0;
  int height = 0;
  int frames = 0;
  int fps = 0;
  int steps = 0;
  double guidance = 0;
  double shift = 0;
  Json stas = Json::object();  // steering::StasOptions::ToJson() of the run
  // Seconds per stage: "text_encode", "denoise", "decode", "encode", "total" (and "load" when measured).
  std::map<std::string, double> timings_s;
  std::string video_file;    // file name of the MP4 beside the manifest
  std::string codec;         // e.g. "libx264"
  std::string device;        // "cpu", "cuda:0"
  std::string dtype;         // "float32", "bfloat16"
  int sequence_parallel = 1;
  bool cfg_parallel = false;
  int decode_ranks = 1;  // ranks that shared the VAE decode (spatial bands)
  int resumed_from_step = 0;  // > 0 when the run continued from a latent checkpoint
  std::string created_at;     // UTC, ISO 8601; filled by FillEnvironment when empty
  // Filled by FillEnvironment: "stas", "libtorch", "ffmpeg".
  std::map<std::string, std::string> versions;

  Json ToJson() const;
  // Strict about types of known fields; unknown fields are ignored so older readers accept newer
  // minor additions.
  static Result<Manifest> FromJson(const Json& j);
};

// Sets created_at (now) and versions (this binary's stas, LibTorch and FFmpeg versions).
void FillEnvironment(Manifest& manifest);

// The manifest as pretty-printed JSON (the bytes that go to disk).
std::string ManifestText(const Manifest& manifest);
// Writes the manifest atomically (temp + rename over `path`).
Status WriteManifest(const std::string& path, const Manifest& manifest);
Result<Manifest> ReadManifest(const std::string& path);

// The version of this project, e.g. "0.1.0".
const char* StasVersion();

}  // namespace stas::storage
