// A tiny Wan2.1-style VAE decoder for the built-in tiny model (tests, demos, CPU-only runs).
//
// Same architecture as the released decoder (causal 3D convs, RMS norms, mid attention, 4x temporal
// and 8x spatial upsampling) with 8-16 channels and z_dim 16, the latent channels of the tiny
// transformer. Weights are pseudo-random but deterministic: the same seed gives the same values on
// every platform and LibTorch version (our own generator, not torch's), and they are scaled so the
// decoded video spans the colour range without saturating.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>

#include "common/json.h"
#include "common/weights.h"

namespace stas::models::wan {

// The diffusers-style vae config.json of the tiny decoder (parse it with WanVaeConfig::FromJson).
Json TinyWanVaeConfigJson();

// `post_quant_conv.*` and `decoder.*` tensors (CPU, float32) for TinyWanVaeConfigJson(), under their
// upstream key names (e.g. to write a safetensors file). Equal seeds give bit-identical tensors.
std::map<std::string, at::Tensor> TinyWanVaeTensors(uint64_t seed = 0);
// The same tensors as a WeightStore, ready for WanVaeDecoder::Load.
WeightStore TinyWanVaeWeights(uint64_t seed = 0);

}  // namespace stas::models::wan
