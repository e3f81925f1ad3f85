#include "models/registry.h"

#include <algorithm>
#include <cctype>

#include "common/checkpoint.h"
#include "models/cogvideox/cogvideox_video_model.h"
#include "models/tiny/tiny_video_model.h"
#include "models/video_model.h"
#include "models/wan/wan_video_model.h"

namespace stas::models {

namespace {

// One backbone that loads from a diffusers checkpoint folder.
struct CheckpointBackbone {
  const char* pipeline;                                   // for messages: "Wan", "CogVideoX"
  bool (*claims)(const CheckpointFolder&);                // from model_index.json
  Result<ModelDescription> (*describe)(const CheckpointFolder&);
  Result<std::unique_ptr<VideoModel>> (*load)(const CheckpointFolder&, const ModelLoadOptions&);
};

const std::vector<CheckpointBackbone>& CheckpointBackbones() {
  static const std::vector<CheckpointBackbone> kBackbones = {
      {"Wan", wan::IsWanCheckpoint, wan::DescribeWanCheckpoint, wan::LoadWanVideoModel},
      {"CogVideoX", cogvideox::IsCogVideoXCheckpoint, cogvideox::DescribeCogVideoXCheckpoint,
       cogvideox::LoadCogVideoXVideoModel},
  };
  return kBackbones;
}

// Every family's nominal rules, in registration order.
std::vector<ModelDescription> Families() {
  return {tiny::TinyDescription(), wan::Wan21Description(), wan::Wan22Description(),
          cogvideox::CogVideoXDescription()};
}

std::string ToLower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

Result<const CheckpointBackbone*> BackboneOf(const CheckpointFolder& checkpoint) {
  for (const CheckpointBackbone& b : CheckpointBackbones())
    if (b.claims(checkpoint)) return &b;
  std::string names;
  for (const CheckpointBackbone& b : CheckpointBackbones())
    names += (names.empty() ? "" : std::string(" or ")) + b.pipeline;
  return InvalidArgument("unknown model in " + checkpoint.dir() + ": model_index.json _class_name '" +
                         checkpoint.PipelineClass() + "' is not a " + names + " pipeline");
}

}  // namespace

bool IsBuiltInModel(const std::string& model) { return model == tiny::kTinyModelName; }

Result<ModelDescription> InspectModel(const std::string& model) {
  if (model == tiny::kTinyModelName) return tiny::TinyDescription();
  STAS_ASSIGN_OR_RETURN(CheckpointFolder checkpoint, CheckpointFolder::Open(model));
  STAS_ASSIGN_OR_RETURN(const CheckpointBackbone* backbone, BackboneOf(checkpoint));
  return backbone->describe(checkpoint);
}

Result<ModelDescription> DescribeFamily(const std::string& family) {
  for (ModelDescription& d : Families())
    if (d.family == family) return std::move(d);
  return NotFound("no model family '" + family + "'");
}

std::vector<std::string> RegisteredFamilies() {
  std::vector<std::string> names;
  for (const ModelDescription& d : Families()) names.push_back(d.family);
  return names;
}

std::optional<ModelDescription> GuessFamilyFromName(const std::string& name) {
  const std::string lower = ToLower(name);
  auto has = [&](const char* part) { return lower.find(part) != std::string::npos; };
  if (lower == tiny::kTinyModelName) return tiny::TinyDescription();
  if (has("wan2.2") || has("wan22") || has("ti2v")) return wan::Wan22Description();
  if (has("cogvideo")) return cogvideox::CogVideoXDescription();
  if (has("wan")) return wan::Wan21Description();
  return std::nullopt;
}

ModelDescription FallbackDescription() { return wan::Wan21Description(); }

std::string SupportedModelsText() { return "'tiny', a Wan2.1 / Wan2.2 / CogVideoX checkpoint folder"; }

Result<std::unique_ptr<VideoModel>> LoadVideoModel(const std::string& model, const ModelLoadOptions& options) {
  if (model == tiny::kTinyModelName) return tiny::LoadTinyVideoModel(options);
  STAS_ASSIGN_OR_RETURN(CheckpointFolder checkpoint, CheckpointFolder::Open(model));
  STAS_ASSIGN_OR_RETURN(const CheckpointBackbone* backbone, BackboneOf(checkpoint));
  return backbone->load(checkpoint, options);
}

}  // namespace stas::models
