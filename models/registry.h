// The backbone registry: the one place that knows which VideoModel implementations exist and how to
// tell them apart. Everything above models/ names a model only by its argument ("tiny" or a
// diffusers checkpoint folder) and learns its rules from a ModelDescription.
//
// Registered: the built-in tiny model ("tiny"), Wan2.1 and Wan2.2 TI2V (a WanPipeline folder),
// CogVideoX 1.0 / 1.5 (a CogVideoXPipeline folder). Adding a backbone: docs/ARCHITECTURE.md.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "models/model_description.h"

namespace stas::models {

class VideoModel;         // models/video_model.h
struct ModelLoadOptions;  // models/video_model.h

// Whether a model argument names a built-in model ("tiny") rather than a checkpoint folder.
bool IsBuiltInModel(const std::string& model);

// The family a model argument names, from configs only (model_index.json, the VAE and transformer
// config.json; no weights read): cheap enough for job validation. NotFound for a missing folder or
// index, InvalidArgument for a pipeline no registered backbone implements.
Result<ModelDescription> InspectModel(const std::string& model);

// A family's rules by its name ("tiny", "wan2.1", "wan2.2", "cogvideox"); NotFound for another name.
Result<ModelDescription> DescribeFamily(const std::string& family);
// Every registered family's name, in registration order.
std::vector<std::string> RegisteredFamilies();

// The family a model's name suggests when its folder is not on this machine (the coordinator names
// models its workers serve): "Wan2.2-TI2V-5B-Diffusers" -> wan2.2, "CogVideoX-5b" -> cogvideox,
// "Wan2.1-T2V-1.3B" -> wan2.1. nullopt when the name suggests none.
std::optional<ModelDescription> GuessFamilyFromName(const std::string& name);
// The rules for a served model whose name suggests no family (Wan2.1's: the most permissive
// multiples).
ModelDescription FallbackDescription();
// "'tiny', a Wan2.1 / Wan2.2 / CogVideoX checkpoint folder": what a model argument may be, for messages.
std::string SupportedModelsText();

// Loads the model a model argument names (see InspectModel) onto options.device / options.dtype.
// NotFound / InvalidArgument for a missing or malformed folder, NotImplemented for a variant of a
// registered family this build cannot run.
Result<std::unique_ptr<VideoModel>> LoadVideoModel(const std::string& model, const ModelLoadOptions& options);

}  // namespace stas::models
