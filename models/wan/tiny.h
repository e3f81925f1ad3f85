// The built-in tiny Wan transformer: a Wan2.1-architecture model small enough to render a short video in
// seconds on a CPU (dim 128 = 8 heads x 16, 3 blocks, 16 latent channels, text dim 32), with
// deterministic weights generated from a seed (no download).
//
// Its weights are random except for a SYNTHETIC, deliberately planted Massive-Activation structure, so
// that analysis and STAS show their mechanics on it: three residual channels (TinyWanPlantedChannels())
// carry large values after every block, largest on first-latent-frame tokens, elevated on the first and
// last token row of each latent frame, moderate elsewhere, stronger at high noise levels. Real MA
// structure needs a real checkpoint; see docs/MODELS.md for how the planting works.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/weights.h"

namespace stas::models::wan {

// The tiny model's transformer config.json (diffusers field names; WanTransformerConfig::FromJson reads it).
Json TinyWanTransformerConfigJson();

// The tiny model's state dict under the upstream key names, float32 on the CPU. Equal seeds give
// bit-identical tensors.
std::map<std::string, at::Tensor> TinyWanTransformerTensors(uint64_t seed = 0);
WeightStore TinyWanTransformerWeights(uint64_t seed = 0);

// The residual-stream channels that carry the planted massive activations.
std::vector<int64_t> TinyWanPlantedChannels();

}  // namespace stas::models::wan
