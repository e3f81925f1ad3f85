#include "models/cogvideox/cogvideox_video_model.h"

#include <chrono>

#include "common/log.h"
#include "models/cogvideox/pipeline.h"
#include "models/cogvideox/transformer.h"
#include "models/cogvideox/vae.h"
#include "models/schedulers/ddim.h"
#include "models/text/prompt_encoder.h"

namespace stas::models::cogvideox {

namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Latent frames rounded up to a multiple of the transformer's temporal patch (CogVideoX 1.5 pads).
int64_t PaddedLatentFrames(int64_t latent_frames, int64_t temporal_patch) {
  return (latent_frames + temporal_patch - 1) / temporal_patch * temporal_patch;
}

class CogVideoXVideoModel final : public VideoModel {
 public:
  CogVideoXVideoModel(ModelDescription description, text::PromptEncoder text, CogVideoXTransformer transformer,
                      DDIMConfig scheduler, CogVideoXVaeDecoder vae)
      : description_(std::move(description)),
        text_(std::move(text)),
        transformer_(std::move(transformer)),
        scheduler_(std::move(scheduler)),
        vae_(std::move(vae)) {
    const auto& tc = transformer_.config();
    description_.num_attention_heads = tc.num_attention_heads;
    geometry_.latent_channels = tc.in_channels;
    geometry_.temporal_compression = tc.temporal_compression_ratio;
    geometry_.spatial_compression = vae_.config().spatial_compression();
    geometry_.temporal_patch = tc.temporal_patch();
    geometry_.spatial_patch = tc.patch_size;
    geometry_.num_attention_heads = tc.num_attention_heads;
    geometry_.hidden_dim = tc.dim();
    geometry_.num_blocks = static_cast<int>(tc.num_layers);
  }

  const ModelDescription& description() const override { return description_; }
  const LatentGeometry& geometry() const override { return geometry_; }

  Status CheckVideoSize(int height, int width, int frames) const override {
    STAS_RETURN_IF_ERROR(CheckSizeMultiples(geometry_, height, width, frames));
    // Positions must fit the training grid (CogVideoX 1.5); latents padded to the temporal patch.
    const int64_t spatial = geometry_.spatial_compression;
    return ComputeRotaryTables(transformer_.config(), PaddedLatentFrames(geometry_.LatentFrames(frames),
                                                                         geometry_.temporal_patch),
                               height / spatial, width / spatial)
        .status();
  }

  Result<at::Tensor> EncodePrompts(const std::vector<std::string>& prompts) const override {
    return text_.Encode(prompts);
  }

  Result<at::Tensor> InitialNoise(uint64_t seed, int height, int width, int frames) const override {
    // As upstream, the noise covers the latent frames padded to the temporal patch.
    const int64_t temporal = geometry_.temporal_compression;
    const int64_t padded = PaddedLatentFrames(geometry_.LatentFrames(frames), geometry_.temporal_patch);
    return cogvideox::InitialNoise(seed, 1, geometry_.latent_channels, (padded - 1) * temporal + 1, height, width,
                                   temporal, geometry_.spatial_compression);
  }

  // DDIM keeps no state between steps: a checkpoint is the latents and the step they were saved at.
  Status CheckResume(const SamplerCheckpoint&, int) const override { return Status::Ok(); }

  Result<at::Tensor> Sample(const at::Tensor& noise, const PromptEmbeddings& prompts,
                            const SamplingOptions& options) const override {
    at::Tensor latents = noise;
    const int steps = options.steps;
    CogVideoXSamplingOptions sampling;
    if (options.resume) {
      latents = options.resume->latents.to(at::kFloat);
      sampling.start_step = options.resume->step;
    }
    sampling.num_inference_steps = steps;
    sampling.guidance_scale = options.guidance;
    sampling.hook = options.hook;
    sampling.parallel = options.parallel;
    sampling.cfg_partner = options.cfg_partner;
    sampling.should_cancel = options.should_cancel;
    sampling.on_step = [&](int step, int64_t, const at::Tensor& after) {
      if (!options.on_step) return;
      SamplingStep s;
      s.done = step + 1;
      s.steps = steps;
      s.latents = &after;
      s.scheduler_state = [] { return TensorMap(); };
      options.on_step(s);
    };
    CogVideoXSampler sampler(transformer_, scheduler_);
    return sampler.Sample(latents, prompts.positive, prompts.negative, sampling);
  }

  Status Decode(const at::Tensor& latents, int frames,
                const std::function<Status(const at::Tensor& video)>& on_video) const override {
    // The leading padding frames (CogVideoX 1.5) are not decoded.
    const int64_t latent_frames = geometry_.LatentFrames(frames);
    if (latents.dim() != 5 || latents.size(1) < latent_frames)
      return InvalidArgument("CogVideoX decode: latents hold fewer frames than the video needs");
    const at::Tensor video_latents = latents.narrow(1, latents.size(1) - latent_frames, latent_frames);
    // [B, F, C, h, w] frame-major latents -> the VAE's [B, C, F, h, w], unscaled.
    const at::Tensor z = video_latents.permute({0, 2, 1, 3, 4}) / vae_.config().scaling_factor;
    STAS_ASSIGN_OR_RETURN(at::Tensor video, vae_.Decode(z));
    return on_video(video);
  }

 private:
  ModelDescription description_;
  text::PromptEncoder text_;
  CogVideoXTransformer transformer_;
  DDIMConfig scheduler_;
  CogVideoXVaeDecoder vae_;
  LatentGeometry geometry_;
};

}  // namespace

ModelDescription CogVideoXDescription() {
  ModelDescription d;
  d.family = "cogvideox";
  d.size_multiple = 16;
  d.frame_multiple = 8;
  d.defaults = VideoDefaults{480, 720, 49, 8, 50, 6.0, 3.0, 5.0};
  d.trained_max = TrainedMaximum{1360, 768, 81};  // CogVideoX 1.5
  return d;
}

bool IsCogVideoXCheckpoint(const CheckpointFolder& checkpoint) {
  return checkpoint.PipelineClass().rfind("CogVideoX", 0) == 0;
}

Result<ModelDescription> DescribeCogVideoXCheckpoint(const CheckpointFolder& checkpoint) {
  ModelDescription d = CogVideoXDescription();
  if (auto transformer = checkpoint.ComponentConfig("transformer"); transformer.ok()) {
    d.num_attention_heads = JsonValueOr<int64_t>(*transformer, "num_attention_heads", 0);
    if (!transformer->contains("patch_size_t") || (*transformer)["patch_size_t"].is_null())
      d.trained_max = TrainedMaximum{720, 480, 49};  // CogVideoX 1.0 (2B, 5B)
  }
  return d;
}

Result<std::unique_ptr<VideoModel>> LoadCogVideoXVideoModel(const CheckpointFolder& ckpt,
                                                            const ModelLoadOptions& options) {
  STAS_ASSIGN_OR_RETURN(ModelDescription description, DescribeCogVideoXCheckpoint(ckpt));
  STAS_RETURN_IF_ERROR(RequireComponents(ckpt, {"text_encoder", "tokenizer", "transformer", "vae", "scheduler"}));
  if (options.fp8_linears)
    return NotImplemented("float8 linear layers are implemented for the Wan transformers only, not CogVideoX");
  const auto t0 = std::chrono::steady_clock::now();
  STAS_ASSIGN_OR_RETURN(auto text_encoder,
                        text::PromptEncoder::FromCheckpoint(ckpt, options.text_device(), options.text_dtype(),
                                                            text::PromptEncoderOptions::CogVideoX()));
  STAS_LOG_INFO("render: text encoder loaded in {:.1f} s", SecondsSince(t0));
  const auto t1 = std::chrono::steady_clock::now();
  STAS_ASSIGN_OR_RETURN(Json tjson, ckpt.ComponentConfig("transformer"));
  STAS_ASSIGN_OR_RETURN(auto tconfig, CogVideoXTransformerConfig::FromJson(tjson));
  STAS_ASSIGN_OR_RETURN(WeightStore tweights, ckpt.ComponentWeights("transformer"));
  STAS_ASSIGN_OR_RETURN(auto dit, CogVideoXTransformer::Load(tconfig, tweights, options.device, options.dtype));
  STAS_LOG_INFO("render: transformer loaded in {:.1f} s", SecondsSince(t1));

  STAS_ASSIGN_OR_RETURN(Json sjson, ckpt.ComponentConfig("scheduler"));
  const std::string scheduler_class = JsonValueOr<std::string>(sjson, "_class_name", "CogVideoXDDIMScheduler");
  if (scheduler_class != "CogVideoXDDIMScheduler")
    return NotImplemented(ckpt.dir() + ": scheduler " + scheduler_class +
                          " is not supported (CogVideoXDDIMScheduler is)");
  STAS_ASSIGN_OR_RETURN(auto scheduler, DDIMConfig::FromJson(sjson));
  STAS_ASSIGN_OR_RETURN(Json vjson, ckpt.ComponentConfig("vae"));
  STAS_ASSIGN_OR_RETURN(auto vae_config, CogVideoXVaeConfig::FromJson(vjson));
  STAS_ASSIGN_OR_RETURN(WeightStore vweights, ckpt.ComponentWeights("vae"));
  // This VAE decodes in float32 whatever options.vae_dtype asks (only the Wan VAE has a checked
  // reduced-precision path).
  STAS_ASSIGN_OR_RETURN(auto decoder,
                        CogVideoXVaeDecoder::Load(vae_config, vweights,
                                                  at::TensorOptions().device(options.device).dtype(at::kFloat)));
  if (text_encoder.embedding_dim() != tconfig.text_embed_dim)
    return InvalidArgument(ckpt.dir() + ": the text encoder's width " + std::to_string(text_encoder.embedding_dim()) +
                           " does not match the transformer's text_embed_dim " + std::to_string(tconfig.text_embed_dim));
  if (vae_config.latent_channels != tconfig.in_channels)
    return InvalidArgument(ckpt.dir() + ": the VAE's latent_channels " + std::to_string(vae_config.latent_channels) +
                           " do not match the transformer's in_channels " + std::to_string(tconfig.in_channels));
  if (vae_config.temporal_compression_ratio != tconfig.temporal_compression_ratio)
    return InvalidArgument(ckpt.dir() + ": the VAE's and the transformer's temporal_compression_ratio differ");
  return std::unique_ptr<VideoModel>(std::make_unique<CogVideoXVideoModel>(
      std::move(description), std::move(text_encoder), std::move(dit), std::move(scheduler), std::move(decoder)));
}

}  // namespace stas::models::cogvideox
