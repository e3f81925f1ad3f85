// VideoModel: the one contract every text-to-video backbone implements, so that the layers above
// (the worker's Renderer, `stas analyze`, `stas ab`, job validation, the benches) never branch on the
// model family.
//
// A backbone is a text encoder, a diffusion transformer with its sampler, and a VAE decoder. The
// contract splits a render into the steps the caller times and reports:
//   EncodePrompts -> InitialNoise -> Sample (hooks, parallel context, cancellation, progress, resume)
//   -> Decode (video chunks the caller turns into frames).
// Latents are opaque to the caller: whatever InitialNoise returns, Sample takes and returns, and
// Decode reads. The only thing the caller may assume is that a checkpoint's latents have the shape of
// the noise they continue.
//
// What can be known without loading weights (a family's size rules and defaults) is a
// ModelDescription, read from configs by models/registry.h's InspectModel. What needs the loaded
// configs (compressions, patch sizes, heads) is the LatentGeometry of a loaded model.
//
// Implementations: models/wan (Wan2.1, Wan2.2 TI2V), models/cogvideox, models/tiny (the built-in
// tiny model). models/registry.h picks one from a checkpoint folder's model_index.json.
//
// Thread-safety: a loaded VideoModel is immutable; one Sample at a time per model.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/status.h"
#include "models/dit.h"
#include "models/fp8_linear.h"
#include "models/model_description.h"

namespace stas::models {

using TensorMap = std::map<std::string, at::Tensor>;

// The shapes of a loaded model.
struct LatentGeometry {
  int64_t latent_channels = 16;
  int64_t temporal_compression = 4;  // video frames per latent frame after the first
  int64_t spatial_compression = 8;   // pixels per latent pixel, each way
  int64_t temporal_patch = 1;        // latent frames per token
  int64_t spatial_patch = 2;         // latent pixels per token, each way
  int64_t num_attention_heads = 0;   // what sequence parallelism splits
  int64_t hidden_dim = 0;            // width of the residual stream (what STAS steers)
  int num_blocks = 0;                // transformer blocks (hook calls per forward)

  // Height and width must be multiples of this (spatial compression x spatial patch).
  int64_t size_multiple() const { return spatial_compression * spatial_patch; }
  int64_t LatentFrames(int64_t frames) const { return (frames - 1) / temporal_compression + 1; }
};

// Where a model is placed. The transformer takes `device` and `dtype`; the text encoder the same
// unless told otherwise (EncodePrompts then returns embeddings on its device); the VAE decodes on
// `device` in `vae_dtype`. Latents are float32 everywhere.
struct ModelLoadOptions {
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  std::optional<at::Device> text_encoder_device;     // default: device
  std::optional<at::ScalarType> text_encoder_dtype;  // default: dtype
  at::ScalarType vae_dtype = at::kFloat;
  uint64_t tiny_seed = 0;  // the built-in tiny model's weights (its identity)
  // Opt-in float8 linear layers in the transformer blocks (models/fp8_linear.h); never the default.
  // Wan transformers only (the tiny model too); CogVideoX answers NotImplemented.
  std::optional<Fp8Scaling> fp8_linears;

  at::Device text_device() const { return text_encoder_device.value_or(device); }
  at::ScalarType text_dtype() const { return text_encoder_dtype.value_or(dtype); }
};

// Prompt embeddings for one video: `negative` only with classifier-free guidance.
struct PromptEmbeddings {
  at::Tensor positive;
  at::Tensor negative;
};

// A point to resume sampling from: the latents after `step` steps and the sampler's own state then.
struct SamplerCheckpoint {
  int step = 0;
  at::Tensor latents;
  TensorMap scheduler_state;
};

// Reported after every completed step.
struct SamplingStep {
  int done = 0;   // steps completed so far (1..steps)
  int steps = 0;
  const at::Tensor* latents = nullptr;  // the latents after the step (shaped like the noise)
  // The sampler's state to save beside the latents (empty for stateless samplers); built on demand.
  std::function<TensorMap()> scheduler_state;
};

struct SamplingOptions {
  int steps = 50;
  double guidance = 5.0;  // classifier-free guidance when > 1
  double shift = 3.0;     // flow shift, for samplers that use one
  ResidualHook* hook = nullptr;           // after every block of every forward (STAS, analysis)
  SequenceParallel* parallel = nullptr;   // this rank holds a slice of the tokens
  CfgPartner* cfg_partner = nullptr;      // with guidance: one branch here, the other exchanged
  std::function<bool()> should_cancel;    // polled before every step; true ends Sample with Aborted
  std::function<void(const SamplingStep&)> on_step;
  const SamplerCheckpoint* resume = nullptr;  // continue from here (CheckResume must have accepted it)
};

class VideoModel {
 public:
  virtual ~VideoModel() = default;

  virtual const ModelDescription& description() const = 0;
  virtual const LatentGeometry& geometry() const = 0;

  // The loaded model's size rules for a video (height, width, frames after defaults): multiples of
  // the compressions and patches, positions the transformer can embed. InvalidArgument otherwise.
  virtual Status CheckVideoSize(int height, int width, int frames) const = 0;

  // One prompt per row -> [B, L, D] embeddings in the model's dtype on its device.
  virtual Result<at::Tensor> EncodePrompts(const std::vector<std::string>& prompts) const = 0;

  // The initial noise of a render, drawn on the CPU from `seed` (the same on any device or rank
  // count), float32, in the model's latent layout.
  virtual Result<at::Tensor> InitialNoise(uint64_t seed, int height, int width, int frames) const = 0;

  // Whether `saved` (latents shaped like the noise, 1 <= step < steps) can continue a run of `steps`
  // steps: InvalidArgument naming why not (its sampler state does not fit).
  virtual Status CheckResume(const SamplerCheckpoint& saved, int steps) const = 0;

  // Denoises `noise` (or options.resume's latents) to final latents on the model's device.
  // Aborted when cancelled; InvalidArgument for inconsistent inputs.
  virtual Result<at::Tensor> Sample(const at::Tensor& noise, const PromptEmbeddings& prompts,
                                    const SamplingOptions& options) const = 0;

  // Final latents (Sample's result) of a video of `frames` frames -> the video, handed to `on_video` in
  // order as one or more chunks of [1, 3, T_chunk, H, W] with values in [-1, 1] (the VAE's output; any
  // device and float dtype).
  virtual Status Decode(const at::Tensor& latents, int frames,
                        const std::function<Status(const at::Tensor& video)>& on_video) const = 0;

  // Whether the ranks of a sequence-parallel group of `ranks` can share the decode of a video of this
  // size (DecodeShared). The same answer on every rank, so they agree on who decodes.
  virtual bool CanShareDecode(int /*height*/, int /*width*/, int /*ranks*/) const { return false; }
  // Decode with the work split over `group` (collective: every rank calls it with the same latents);
  // `on_video` sees the same whole pieces as Decode's, on every rank. NotImplemented unless
  // CanShareDecode said yes.
  virtual Status DecodeShared(const at::Tensor& /*latents*/, int /*frames*/, SequenceParallel& /*group*/,
                              const std::function<Status(const at::Tensor& video)>& /*on_video*/) const {
    return NotImplemented("this model decodes on one rank only");
  }
};

// Shared by implementations: height and width multiples of geometry.size_multiple() and frames
// temporal_compression * k + 1, with the messages the Renderer has always given.
Status CheckSizeMultiples(const LatentGeometry& geometry, int height, int width, int frames);

// Shared by implementations: InvalidArgument naming the first of `components` the folder lacks.
Status RequireComponents(const CheckpointFolder& checkpoint, const std::vector<std::string>& components);

}  // namespace stas::models
