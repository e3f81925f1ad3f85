// Diffusers-format checkpoint folders of tiny configs for end-to-end tests, assembled from the reference
// fixtures (transformer and VAE weights and configs, scheduler config) plus a tiny text encoder and the
// built-in tiny tokenizer. Also a probe of what an MP4 holds (ffprobe).
#pragma once

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "common/json.h"
#include "common/safetensors.h"
#include "common/weights.h"
#include "models/text/prompt_encoder.h"
#include "support/run_command.h"

namespace stas::testing {

inline void WriteText(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

// The tensors of `store` under `prefix`, with the prefix removed.
inline std::map<std::string, at::Tensor> TensorsUnder(const WeightStore& store, const std::string& prefix) {
  std::map<std::string, at::Tensor> out;
  const WeightStore view = store.WithPrefix(prefix);
  for (const auto& name : view.Names()) out[name] = view.Get(name).value();
  return out;
}

// Writes a checkpoint folder into `dir` from the pipeline fixture `fixture_name` (meta.json with
// config.{transformer,vae,scheduler}, weights.safetensors with transformer.* and vae.*), the
// model_index.json given, `text_encoder` (config.json + tensors) and the tiny tokenizer. Returns an empty
// string or what went wrong.
inline std::string WriteCheckpointFromFixture(const std::filesystem::path& dir, const std::string& fixture_name,
                                              const std::string& model_index, const Json& scheduler_extra,
                                              const Json& text_encoder_config,
                                              const std::map<std::string, at::Tensor>& text_encoder_weights) {
  const std::string fixture = std::string(STAS_FIXTURES_DIR) + "/" + fixture_name;
  auto meta = ReadJsonFile(fixture + "/meta.json");
  if (!meta.ok()) return meta.status().ToString();
  auto weights = WeightStore::OpenFile(fixture + "/weights.safetensors");
  if (!weights.ok()) return weights.status().ToString();
  const Json& config = (*meta)["config"];
  Json scheduler = config["scheduler"];
  scheduler.update(scheduler_extra);
  WriteText(dir / "model_index.json", model_index);
  WriteText(dir / "transformer/config.json", config["transformer"].dump());
  WriteText(dir / "vae/config.json", config["vae"].dump());
  WriteText(dir / "scheduler/scheduler_config.json", scheduler.dump());
  WriteText(dir / "text_encoder/config.json", text_encoder_config.dump());
  WriteText(dir / "tokenizer/spiece.model", models::text::TinyTokenizerModel().Serialize());
  for (auto [path, tensors] :
       {std::pair{dir / "transformer/diffusion_pytorch_model.safetensors", TensorsUnder(*weights, "transformer.")},
        std::pair{dir / "vae/diffusion_pytorch_model.safetensors", TensorsUnder(*weights, "vae.")},
        std::pair{dir / "text_encoder/model.safetensors", text_encoder_weights}}) {
    Status s = WriteSafetensors(path.string(), tensors);
    if (!s.ok()) return s.ToString();
  }
  return "";
}

// Wan2.2 TI2V on the wan22_pipeline_tiny fixture (residual VAE, patch 2, 16x spatial) with the tiny UMT5.
inline std::string WriteTinyWan22Checkpoint(const std::filesystem::path& dir) {
  return WriteCheckpointFromFixture(dir, "wan22_pipeline_tiny",
                                    R"({"_class_name": "WanPipeline", "expand_timesteps": true})", Json::object(),
                                    models::text::TinyTextEncoderConfigJson(), models::text::TinyTextEncoderWeights(0));
}

// CogVideoX on the cogvideox_pipeline_tiny fixture (2 heads, 2 layers, DDIM v-prediction) with the T5 of
// the t5_tiny fixture (T5 v1.1 layout like CogVideoX's, width 32 = the transformer's text_embed_dim).
inline std::string WriteTinyCogVideoXCheckpoint(const std::filesystem::path& dir) {
  const std::string t5 = std::string(STAS_FIXTURES_DIR) + "/t5_tiny";
  auto t5_meta = ReadJsonFile(t5 + "/meta.json");
  if (!t5_meta.ok()) return t5_meta.status().ToString();
  auto t5_weights = WeightStore::OpenFile(t5 + "/weights.safetensors");
  if (!t5_weights.ok()) return t5_weights.status().ToString();
  return WriteCheckpointFromFixture(dir, "cogvideox_pipeline_tiny", R"({"_class_name": "CogVideoXPipeline"})",
                                    {{"_class_name", "CogVideoXDDIMScheduler"}}, (*t5_meta)["config"],
                                    TensorsUnder(*t5_weights, ""));
}

struct VideoInfo {
  int width = -1, height = -1, frames = -1;
  std::string rate, raw;
};

// What ffprobe says of the first video stream of `file` (fields stay -1 / empty when it cannot tell).
inline VideoInfo Probe(const std::string& file) {
  auto r = RunCommand("ffprobe -v error -count_frames -select_streams v:0 -show_entries "
                      "stream=width,height,r_frame_rate,nb_read_frames -of json " + ShellQuote(file));
  VideoInfo info;
  info.raw = r.output;
  if (r.exit_code != 0) return info;
  try {
    const Json s = Json::parse(r.output)["streams"].at(0);
    info.width = s.value("width", -1);
    info.height = s.value("height", -1);
    info.frames = std::stoi(s.value("nb_read_frames", "-1"));
    info.rate = s.value("r_frame_rate", "");
  } catch (const std::exception&) {
  }
  return info;
}

}  // namespace stas::testing
