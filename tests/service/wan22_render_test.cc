// Wan2.2 end to end on a tiny config (label: service): a diffusers-format checkpoint folder assembled
// from the wan22_pipeline_tiny reference fixture (its Wan2.2-style transformer, 48-channel-style
// residual VAE with patch size 2 and 16x spatial compression, scheduler config) plus the built-in tiny
// text encoder and tokenizer, rendered by `stas render` and through the service (redis-server,
// coordinator, an MPI worker group serving that folder). Checks the family's defaults (24 fps) and size
// rules (multiples of 32) on the way.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/json.h"
#include "common/safetensors.h"
#include "common/weights.h"
#include "models/text/prompt_encoder.h"
#include "service_stack.h"

namespace stas::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

void WriteText(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

// The tensors of `store` under `prefix`, with the prefix removed.
std::map<std::string, at::Tensor> TensorsUnder(const WeightStore& store, const std::string& prefix) {
  std::map<std::string, at::Tensor> out;
  const WeightStore view = store.WithPrefix(prefix);
  for (const auto& name : view.Names()) out[name] = view.Get(name).value();
  return out;
}

// Writes a Wan2.2-style checkpoint folder into `dir`; returns an empty string or what went wrong.
std::string WriteTinyWan22Checkpoint(const fs::path& dir) {
  const std::string fixture = std::string(STAS_FIXTURES_DIR) + "/wan22_pipeline_tiny";
  auto meta = ReadJsonFile(fixture + "/meta.json");
  if (!meta.ok()) return meta.status().ToString();
  auto weights = WeightStore::OpenFile(fixture + "/weights.safetensors");
  if (!weights.ok()) return weights.status().ToString();
  const Json& config = (*meta)["config"];
  WriteText(dir / "model_index.json", R"({"_class_name": "WanPipeline", "expand_timesteps": true})");
  WriteText(dir / "transformer/config.json", config["transformer"].dump());
  WriteText(dir / "vae/config.json", config["vae"].dump());
  WriteText(dir / "scheduler/scheduler_config.json", config["scheduler"].dump());
  WriteText(dir / "text_encoder/config.json", models::text::TinyTextEncoderConfigJson().dump());
  WriteText(dir / "tokenizer/spiece.model", models::text::TinyTokenizerModel().Serialize());
  for (auto [path, tensors] :
       {std::pair{dir / "transformer/diffusion_pytorch_model.safetensors", TensorsUnder(*weights, "transformer.")},
        std::pair{dir / "vae/diffusion_pytorch_model.safetensors", TensorsUnder(*weights, "vae.")},
        std::pair{dir / "text_encoder/model.safetensors", models::text::TinyTextEncoderWeights(0)}}) {
    Status s = WriteSafetensors(path.string(), tensors);
    if (!s.ok()) return s.ToString();
  }
  return "";
}

struct VideoInfo {
  int width = -1, height = -1, frames = -1;
  std::string rate, raw;
};

VideoInfo Probe(const std::string& file) {
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

class Wan22Render : public ::testing::Test {
 protected:
  void SetUp() override {
    checkpoint_ = dir_.File("Wan2.2-tiny");
    const std::string error = WriteTinyWan22Checkpoint(checkpoint_);
    ASSERT_TRUE(error.empty()) << error;
  }
  TempDir dir_;
  std::string checkpoint_;
};

TEST_F(Wan22Render, StasRenderWritesA24FpsVideoOfTheRequestedSize) {
  const std::string out = dir_.File("fox.mp4");
  auto r = RunCommand(std::string(STAS_BINARY) + " render --model " + ShellQuote(checkpoint_) +
                      " --prompt 'a red fox' --height 64 --width 96 --frames 5 --steps 2 --out " + out + " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const VideoInfo info = Probe(out);
  EXPECT_EQ(info.width, 96) << info.raw;
  EXPECT_EQ(info.height, 64) << info.raw;
  EXPECT_EQ(info.frames, 5) << info.raw;
  EXPECT_EQ(info.rate, "24/1") << "Wan2.2 renders at 24 fps by default: " << info.raw;
  auto manifest = ReadJsonFile(dir_.File("fox.json"));
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  EXPECT_NE(manifest->dump().find("wan2.2"), std::string::npos) << manifest->dump();

  auto bad = RunCommand(std::string(STAS_BINARY) + " render --model " + ShellQuote(checkpoint_) +
                        " --prompt fox --height 48 --width 96 --frames 5 --steps 2 --out " + dir_.File("bad.mp4") +
                        " 2>&1");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("multiple of 32"), std::string::npos) << bad.output;
  EXPECT_FALSE(fs::exists(dir_.File("bad.mp4")));
}

TEST_F(Wan22Render, TheServiceRendersAWan22Job) {
  ServiceStack stack;
  ASSERT_TRUE(stack.StartRedis()) << stack.Logs();
  ASSERT_TRUE(stack.StartCoordinator()) << stack.Logs();
  stack.StartWorkers("w22", 1, {}, checkpoint_);
  ASSERT_TRUE(ServiceStack::WaitUntil([&] { return stack.ConnectedWorkers() >= 1; }, 120s)) << stack.Logs();
  auto ids = stack.Submit("--model " + ShellQuote(checkpoint_) +
                          " --prompt 'a boat at sea' --height 64 --width 64 --frames 5 --steps 2");
  ASSERT_EQ(ids.size(), 1u) << stack.Logs();
  ASSERT_TRUE(ServiceStack::WaitUntil([&] { return stack.State(ids[0]) == "done"; }, 180s))
      << stack.Job(ids[0]).dump() << stack.Logs();
  EXPECT_EQ(stack.CountVideos(ids[0]), 1);
}

}  // namespace
}  // namespace stas::testing
