#include "models/wan/wan_video_model.h"

#include <algorithm>
#include <chrono>

#include "common/log.h"

namespace stas::models::wan {

namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// UniPC's multistep history <-> the named tensors of a sampler checkpoint.
TensorMap SchedulerStateTensors(const UniPCMultistepScheduler::State& s) {
  TensorMap t;
  t["counters"] = at::tensor({static_cast<int64_t>(s.num_inference_steps), static_cast<int64_t>(s.step_index),
                              static_cast<int64_t>(s.lower_order_nums), static_cast<int64_t>(s.last_order),
                              static_cast<int64_t>(s.model_outputs.size())},
                             at::kLong);
  for (size_t i = 0; i < s.model_outputs.size(); ++i)
    if (s.model_outputs[i].defined()) t["model_output." + std::to_string(i)] = s.model_outputs[i];
  if (s.last_sample.defined()) t["last_sample"] = s.last_sample;
  return t;
}

Result<UniPCMultistepScheduler::State> SchedulerStateFromTensors(const TensorMap& t, const at::Device& device) {
  auto counters = t.find("counters");
  if (counters == t.end() || counters->second.numel() != 5 || counters->second.scalar_type() != at::kLong)
    return InvalidArgument("latent checkpoint: scheduler counters missing or malformed");
  const at::Tensor c = counters->second.contiguous();
  const int64_t* v = c.data_ptr<int64_t>();
  if (v[4] < 0 || v[4] > 16) return InvalidArgument("latent checkpoint: implausible scheduler history length");
  UniPCMultistepScheduler::State s;
  s.num_inference_steps = static_cast<int>(v[0]);
  s.step_index = static_cast<int>(v[1]);
  s.lower_order_nums = static_cast<int>(v[2]);
  s.last_order = static_cast<int>(v[3]);
  s.model_outputs.resize(static_cast<size_t>(v[4]));
  for (size_t i = 0; i < s.model_outputs.size(); ++i) {
    auto it = t.find("model_output." + std::to_string(i));
    if (it != t.end()) s.model_outputs[i] = it->second.to(device, at::kFloat);
  }
  if (auto it = t.find("last_sample"); it != t.end()) s.last_sample = it->second.to(device, at::kFloat);
  return s;
}

class WanVideoModel final : public VideoModel {
 public:
  WanVideoModel(ModelDescription description, WanComponents components)
      : description_(std::move(description)), c_(std::move(components)) {
    const auto& tc = c_.transformer.config();
    description_.num_attention_heads = tc.num_attention_heads;
    geometry_.latent_channels = tc.in_channels;
    geometry_.temporal_compression = c_.compression.temporal;
    geometry_.spatial_compression = c_.compression.spatial;
    geometry_.temporal_patch = tc.patch_size[0];
    geometry_.spatial_patch = std::max(tc.patch_size[1], tc.patch_size[2]);
    geometry_.num_attention_heads = tc.num_attention_heads;
    geometry_.hidden_dim = tc.dim();
    geometry_.num_blocks = static_cast<int>(tc.num_layers);
  }

  const ModelDescription& description() const override { return description_; }
  const LatentGeometry& geometry() const override { return geometry_; }

  Status CheckVideoSize(int height, int width, int frames) const override {
    STAS_RETURN_IF_ERROR(CheckSizeMultiples(geometry_, height, width, frames));
    if (geometry_.LatentFrames(frames) % geometry_.temporal_patch != 0)
      return InvalidArgument("frames do not fit the transformer's temporal patch size");
    return Status::Ok();
  }

  Result<at::Tensor> EncodePrompts(const std::vector<std::string>& prompts) const override {
    return c_.text.Encode(prompts);
  }

  Result<at::Tensor> InitialNoise(uint64_t seed, int height, int width, int frames) const override {
    return wan::InitialNoise(seed, 1, c_.transformer.config().in_channels, frames, height, width, c_.compression);
  }

  Status CheckResume(const SamplerCheckpoint& saved, int steps) const override {
    STAS_ASSIGN_OR_RETURN(auto state, SchedulerStateFromTensors(saved.scheduler_state, c_.transformer.device()));
    if (state.num_inference_steps != steps || state.step_index != saved.step)
      return InvalidArgument("step differs");
    return Status::Ok();
  }

  Result<at::Tensor> Sample(const at::Tensor& noise, const PromptEmbeddings& prompts,
                            const SamplingOptions& options) const override {
    at::Tensor latents = noise;
    UniPCMultistepScheduler::State resume;
    if (options.resume) {
      STAS_ASSIGN_OR_RETURN(resume,
                            SchedulerStateFromTensors(options.resume->scheduler_state, c_.transformer.device()));
      latents = options.resume->latents.to(at::kFloat);
    }
    const int steps = options.steps;
    WanSamplingOptions sampling;
    sampling.num_inference_steps = steps;
    sampling.guidance_scale = options.guidance;
    sampling.shift = options.shift;
    sampling.expand_timesteps = c_.expand_timesteps;
    sampling.hook = options.hook;
    sampling.parallel = options.parallel;
    sampling.cfg_partner = options.cfg_partner;
    sampling.should_cancel = options.should_cancel;
    sampling.resume = options.resume ? &resume : nullptr;
    sampling.on_step = [&](const StepProgress& p) {
      if (!options.on_step) return;
      SamplingStep step;
      step.done = p.step + 1;
      step.steps = steps;
      step.latents = p.latents;
      step.scheduler_state = [&p] { return SchedulerStateTensors(p.scheduler->SaveState()); };
      options.on_step(step);
    };
    WanSampler sampler(c_.transformer, c_.scheduler);
    return sampler.Sample(latents, prompts.positive, prompts.negative, sampling);
  }

  Status Decode(const at::Tensor& latents, int /*frames*/,
                const std::function<Status(const at::Tensor& video)>& on_video) const override {
    STAS_ASSIGN_OR_RETURN(at::Tensor z, DenormalizeWanLatents(latents, c_.vae_config));
    return c_.vae.DecodeStreaming(z, {}, [&](int64_t, const at::Tensor& video) { return on_video(video); });
  }

  // The Wan VAE splits exactly (spatial bands with halos, WanVaeDecoder::DecodeShared) when every rank
  // gets at least one latent row or column of the longer side.
  bool CanShareDecode(int height, int width, int ranks) const override {
    return ranks > 1 && !SplitIntoBands(height / geometry_.spatial_compression, width / geometry_.spatial_compression, ranks).empty();
  }
  Status DecodeShared(const at::Tensor& latents, int /*frames*/, SequenceParallel& group,
                      const std::function<Status(const at::Tensor& video)>& on_video) const override {
    STAS_ASSIGN_OR_RETURN(at::Tensor z, DenormalizeWanLatents(latents, c_.vae_config));
    return c_.vae.DecodeShared(z, {}, group, [&](int64_t, const at::Tensor& video) { return on_video(video); });
  }

 private:
  ModelDescription description_;
  WanComponents c_;
  LatentGeometry geometry_;
};

}  // namespace

ModelDescription Wan21Description() {
  ModelDescription d;
  d.family = "wan2.1";
  d.size_multiple = 16;
  d.frame_multiple = 4;
  d.defaults = VideoDefaults{480, 832, 81, 16, 50, 5.0, 3.0, 5.0};
  d.trained_max = TrainedMaximum{1280, 720, 81};
  return d;
}

ModelDescription Wan22Description() {
  ModelDescription d;
  d.family = "wan2.2";
  d.size_multiple = 32;  // the 16x VAE times the 2x2 patch
  d.frame_multiple = 4;
  d.defaults = VideoDefaults{704, 1280, 121, 24, 50, 5.0, 5.0, 5.0};
  d.trained_max = TrainedMaximum{1280, 704, 121};
  return d;
}

bool IsWanCheckpoint(const CheckpointFolder& checkpoint) { return checkpoint.PipelineClass().rfind("Wan", 0) == 0; }

Result<ModelDescription> DescribeWanCheckpoint(const CheckpointFolder& checkpoint) {
  const bool expand = JsonValueOr(checkpoint.model_index(), "expand_timesteps", false);
  auto vae = checkpoint.ComponentConfig("vae");
  const bool residual_vae = vae.ok() && JsonValueOr(*vae, "is_residual", false);
  ModelDescription d = (expand || residual_vae) ? Wan22Description() : Wan21Description();
  if (auto transformer = checkpoint.ComponentConfig("transformer"); transformer.ok())
    d.num_attention_heads = JsonValueOr<int64_t>(*transformer, "num_attention_heads", 0);
  return d;
}

Result<std::unique_ptr<VideoModel>> LoadWanVideoModel(const CheckpointFolder& ckpt, const ModelLoadOptions& options) {
  STAS_ASSIGN_OR_RETURN(ModelDescription description, DescribeWanCheckpoint(ckpt));
  STAS_RETURN_IF_ERROR(RequireComponents(ckpt, {"text_encoder", "tokenizer", "transformer", "vae", "scheduler"}));
  const auto t0 = std::chrono::steady_clock::now();
  STAS_ASSIGN_OR_RETURN(auto text_encoder,
                        text::PromptEncoder::FromCheckpoint(ckpt, options.text_device(), options.text_dtype(),
                                                            text::PromptEncoderOptions::Wan()));
  STAS_LOG_INFO("render: text encoder loaded in {:.1f} s", SecondsSince(t0));
  if (ckpt.HasComponent("transformer_2"))
    return NotImplemented(ckpt.dir() + ": two-transformer (MoE) Wan checkpoints are not supported");
  const auto t1 = std::chrono::steady_clock::now();
  STAS_ASSIGN_OR_RETURN(Json tjson, ckpt.ComponentConfig("transformer"));
  STAS_ASSIGN_OR_RETURN(auto tconfig, WanTransformerConfig::FromJson(tjson));
  STAS_ASSIGN_OR_RETURN(WeightStore tweights, ckpt.ComponentWeights("transformer"));
  STAS_ASSIGN_OR_RETURN(auto dit, WanTransformer::Load(tconfig, tweights, options.device, options.dtype));
  if (options.fp8_linears) STAS_RETURN_IF_ERROR(dit.UseFp8Linears(*options.fp8_linears));
  STAS_LOG_INFO("render: transformer loaded in {:.1f} s", SecondsSince(t1));

  STAS_ASSIGN_OR_RETURN(Json sjson, ckpt.ComponentConfig("scheduler"));
  STAS_ASSIGN_OR_RETURN(auto scheduler, UniPCConfig::FromJson(sjson));
  STAS_ASSIGN_OR_RETURN(Json vjson, ckpt.ComponentConfig("vae"));
  STAS_ASSIGN_OR_RETURN(auto vae_config, WanVaeConfig::FromJson(vjson));
  STAS_ASSIGN_OR_RETURN(auto compression, VaeCompression::FromVaeConfig(vjson));
  STAS_ASSIGN_OR_RETURN(WeightStore vweights, ckpt.ComponentWeights("vae"));
  // The VAE decodes in options.vae_dtype (float32 unless asked: bf16 costs colour accuracy).
  STAS_ASSIGN_OR_RETURN(auto decoder,
                        WanVaeDecoder::Load(vae_config, vweights,
                                            at::TensorOptions().device(options.device).dtype(options.vae_dtype)));
  if (text_encoder.embedding_dim() != tconfig.text_dim)
    return InvalidArgument(ckpt.dir() + ": the text encoder's width " + std::to_string(text_encoder.embedding_dim()) +
                           " does not match the transformer's text_dim " + std::to_string(tconfig.text_dim));
  if (vae_config.z_dim != tconfig.in_channels)
    return InvalidArgument(ckpt.dir() + ": the VAE's z_dim " + std::to_string(vae_config.z_dim) +
                           " does not match the transformer's in_channels " + std::to_string(tconfig.in_channels));
  const bool expand_timesteps = JsonValueOr(ckpt.model_index(), "expand_timesteps", false);
  return MakeWanVideoModel(std::move(description),
                           WanComponents{std::move(text_encoder), std::move(dit), std::move(scheduler),
                                         std::move(vae_config), std::move(decoder), compression, expand_timesteps});
}

std::unique_ptr<VideoModel> MakeWanVideoModel(ModelDescription description, WanComponents components) {
  return std::make_unique<WanVideoModel>(std::move(description), std::move(components));
}

}  // namespace stas::models::wan
