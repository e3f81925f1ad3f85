#include "worker/renderer.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <optional>
#include <thread>

#if STAS_HAVE_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <c10/core/DeviceGuard.h>

#include "common/log.h"
#include "models/registry.h"
#include "models/video_model.h"
#include "parallel/ulysses.h"
#include "steering/stas_hook.h"
#include "storage/latent_checkpoint.h"
#include "storage/mp4_writer.h"
#include "worker/background_writer.h"

namespace stas::worker {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const char* RenderStageName(RenderStage stage) {
  switch (stage) {
    case RenderStage::kTextEncode: return "text_encode";
    case RenderStage::kDenoise: return "denoise";
    case RenderStage::kDecode: return "decode";
    case RenderStage::kEncode: return "encode";
  }
  return "unknown";
}

std::string ManifestPathFor(const std::string& video_path) {
  fs::path p(video_path);
  p.replace_extension(".json");
  return p.string();
}

at::Device DefaultRenderDevice() {
#if STAS_HAVE_CUDA
  if (at::hasCUDA()) return at::Device(at::kCUDA, 0);
#endif
  return at::Device(at::kCPU);
}

Status ApplyRendererFlags(const RendererFlags& flags, RendererOptions* options) {
  RendererOptions parsed = *options;  // every flag is checked before `options` changes
  if (!flags.text_encoder_device.empty()) {
    std::optional<at::Device> device;
    try {
      device = at::Device(flags.text_encoder_device);
    } catch (const std::exception&) {
      return InvalidArgument("--text-encoder-device: '" + flags.text_encoder_device +
                             "' is not a device (cpu, cuda, cuda:N)");
    }
    if (!device->is_cpu() && !device->is_cuda())
      return InvalidArgument("--text-encoder-device must be cpu or cuda[:N], not '" + flags.text_encoder_device + "'");
    parsed.text_encoder_device = device;
  }
  if (flags.vae_dtype == "float32") parsed.vae_dtype = at::kFloat;
  else if (flags.vae_dtype == "bfloat16") parsed.vae_dtype = at::kBFloat16;
  else if (flags.vae_dtype == "float16") parsed.vae_dtype = at::kHalf;
  else if (!flags.vae_dtype.empty())
    return InvalidArgument("--vae-dtype must be float32, bfloat16 or float16, not '" + flags.vae_dtype + "'");
  if (!flags.attention.empty()) {
    const std::optional<compat::AttentionKernel> kernel = compat::ParseAttentionKernel(flags.attention);
    if (!kernel) return InvalidArgument("--attention must be auto, flash or cudnn, not '" + flags.attention + "'");
    parsed.attention = *kernel;
  }
  if (!flags.fp8.empty()) {
    Result<models::Fp8Scaling> scaling = models::ParseFp8Scaling(flags.fp8);
    if (!scaling.ok()) return InvalidArgument("--fp8 must be row or tensor, not '" + flags.fp8 + "'");
    parsed.fp8_linears = *scaling;
  }
  *options = std::move(parsed);
  return Status::Ok();
}

namespace {

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

// Stage timings must not end while the GPU is still working on the stage's kernels.
void SynchronizeDevice(const at::Device& device) {
#if STAS_HAVE_CUDA
  if (device.is_cuda()) c10::cuda::device_synchronize();
#else
  (void)device;
#endif
}

std::string DtypeName(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return c10::toString(t);
  }
}

bool EndsWithMp4(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".mp4";
}

// What STAS calibrations are compared with: "tiny", or the checkpoint folder's name.
std::string ModelIdOf(const std::string& model) {
  if (models::IsBuiltInModel(model)) return model;
  std::string id = fs::path(model).filename().string();
  if (id.empty()) id = fs::path(model).parent_path().filename().string();
  return id;
}

// Two spellings of the same checkpoint folder name the same model.
bool SameModel(const std::string& a, const std::string& b) {
  if (a == b) return true;
  if (models::IsBuiltInModel(a) || models::IsBuiltInModel(b)) return false;
  std::error_code ea, eb;
  const fs::path ca = fs::weakly_canonical(a, ea), cb = fs::weakly_canonical(b, eb);
  return !ea && !eb && ca == cb;
}

// Cancellation between transformer blocks: a step of a large video can take minutes, so the cancel
// poll (collective, the same answer on every rank) also runs after every block; a cancel unwinds the
// forward pass by this exception, caught around the denoising stage.
struct CancelledInsideStep {};
class CancelBetweenBlocks : public models::ResidualHook {
 public:
  explicit CancelBetweenBlocks(const std::function<bool()>& should_cancel) : should_cancel_(should_cancel) {}
  void AfterBlock(at::Tensor&, const models::BlockContext&) override {
    if (should_cancel_ && should_cancel_()) throw CancelledInsideStep{};
  }

 private:
  const std::function<bool()>& should_cancel_;
};

// Fault injection: a slow transformer block, for the tests of a cancel inside one long step.
class SlowBlocks : public models::ResidualHook {
 public:
  explicit SlowBlocks(int delay_ms) : delay_ms_(delay_ms) {}
  void AfterBlock(at::Tensor&, const models::BlockContext&) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
  }

 private:
  int delay_ms_;
};

}  // namespace

// ------------------------------------------------------------------------------------------------ Impl

class Renderer::Impl {
 public:
  RendererOptions options;
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  std::string model_id;  // what STAS calibrations are compared with
  double load_seconds = 0;
  at::Device text_device = at::kCPU;
  std::atomic<int64_t> prompt_encodings{0};  // background encodes count too
  int64_t prefetched_prompt_hits = 0;
  std::vector<std::string> prefetch_next;  // PrefetchPrompts: started after the next render's text stage
  // Embeddings of negative prompts already encoded (on `device`): most jobs share one, usually "".
  // Bounded so that a stream of distinct negative prompts cannot grow it without limit.
  std::map<std::string, at::Tensor> negative_embeddings;
  static constexpr size_t kMaxCachedNegatives = 8;

  std::unique_ptr<models::VideoModel> model;
  // Background encodes (prompt -> embedding on the text encoder's device). Declared after `model`, so
  // that destruction waits for them before the model goes.
  std::map<std::string, std::shared_future<Result<at::Tensor>>> prefetched;

  steering::StasModelInfo stas_model_info() const;
  Status CheckResolved(const jobspec::RenderSpec& spec) const;
  Result<std::unique_ptr<steering::StasHook>> MakeHook(const jobspec::RenderSpec& spec) const;
  Result<RenderedVideo> Render(const jobspec::RenderSpec& spec, const RenderControl& control, bool decode);
  // One prompt's embedding [1, L, D] on the render device and dtype.
  Result<at::Tensor> EncodePrompt(const std::string& prompt);
  Result<at::Tensor> NegativeEmbedding(const std::string& negative_prompt);
  // Waits for every background encode (the text encoder serves one caller at a time) and takes
  // `prompt`'s embedding when one of them made it.
  std::optional<at::Tensor> TakePrefetched(const std::string& prompt);
  // Starts the background encodes that PrefetchPrompts asked for; drops finished ones nobody wants.
  void StartPrefetch();

 private:
  // What the denoising stage needs besides the spec: prompt embeddings, the hooks, progress.
  struct DenoiseInputs {
    at::Tensor positive, negative;  // negative undefined without guidance
    models::ResidualHook* hook = nullptr;
    const RenderControl* control = nullptr;
    std::string job_id;
    std::function<void(int)> on_step;  // steps completed so far
  };
  // The job's latest latent checkpoint when it fits a run of `steps` steps from `noise`, else nullopt.
  std::optional<storage::LatentCheckpoint> UsableCheckpoint(const DenoiseInputs& in, int steps,
                                                            const at::Tensor& noise) const;
  // Saves a checkpoint after `done` of `steps` steps when the control asks for one here.
  void MaybeCheckpoint(const DenoiseInputs& in, int done, int steps, const at::Tensor& latents,
                       const std::function<models::TensorMap()>& scheduler_state) const;
  Result<at::Tensor> Denoise(const jobspec::RenderSpec& spec, const DenoiseInputs& in, storage::Manifest& m);
  // Final latents -> uint8 frames [T, H, W, 3] on the CPU, each piece handed to control.on_frames too.
  // On the output rank, or on every rank of `shared` (a sequence-parallel group sharing the decode).
  Result<at::Tensor> Decode(const at::Tensor& latents, int frames, const RenderControl& control,
                            models::SequenceParallel* shared) const;
};

steering::StasModelInfo Renderer::Impl::stas_model_info() const {
  steering::StasModelInfo info;
  info.model_id = model_id;
  info.hidden_dim = model->geometry().hidden_dim;
  info.num_blocks = model->geometry().num_blocks;
  return info;
}

// Checks that need the resolved sizes and the loaded model.
Status Renderer::Impl::CheckResolved(const jobspec::RenderSpec& spec) const {
  STAS_RETURN_IF_ERROR(model->CheckVideoSize(*spec.height, *spec.width, *spec.frames));
  if (options.parallelism.sequence)
    STAS_RETURN_IF_ERROR(parallel::UlyssesAttention::CheckHeads(model->geometry().num_attention_heads,
                                                                options.parallelism.sequence_degree()));
  return Status::Ok();
}

Result<std::unique_ptr<steering::StasHook>> Renderer::Impl::MakeHook(const jobspec::RenderSpec& spec) const {
  return steering::MakeStasHook(spec.stas, stas_model_info());
}

std::optional<storage::LatentCheckpoint> Renderer::Impl::UsableCheckpoint(const DenoiseInputs& in, int steps,
                                                                          const at::Tensor& noise) const {
  if (in.control->checkpoint_root.empty()) return std::nullopt;
  auto saved = storage::LatentCheckpointStore(in.control->checkpoint_root).Load(in.job_id);
  if (!saved.ok()) {
    if (saved.status().code() != StatusCode::kNotFound)
      STAS_LOG_WARN("job {}: ignoring an unreadable latent checkpoint: {}", in.job_id, saved.status().message());
    return std::nullopt;
  }
  if (saved->num_steps != steps || saved->step < 1 || saved->step >= steps ||
      !saved->latents.sizes().equals(noise.sizes())) {
    STAS_LOG_WARN("job {}: ignoring a latent checkpoint that does not fit this run (step count or shape differs)",
                  in.job_id);
    return std::nullopt;
  }
  return std::move(saved).value();
}

void Renderer::Impl::MaybeCheckpoint(const DenoiseInputs& in, int done, int steps, const at::Tensor& latents,
                                     const std::function<models::TensorMap()>& scheduler_state) const {
  const RenderControl& control = *in.control;
  if (control.checkpoint_root.empty() || !options.parallelism.output_rank || control.checkpoint_every <= 0 ||
      done % control.checkpoint_every != 0 || done >= steps)
    return;
  storage::LatentCheckpoint c;
  c.job_id = in.job_id;
  c.step = done;
  c.num_steps = steps;
  c.latents = latents;
  c.scheduler_state = scheduler_state ? scheduler_state() : models::TensorMap();
  // A checkpoint only saves time later; failing to write one must not fail the job.
  if (Status st = storage::LatentCheckpointStore(control.checkpoint_root).Save(c); !st.ok())
    STAS_LOG_WARN("job {}: latent checkpoint not saved: {}", in.job_id, st.message());
}

Result<at::Tensor> Renderer::Impl::Denoise(const jobspec::RenderSpec& spec, const DenoiseInputs& in,
                                           storage::Manifest& m) {
  const int steps = *spec.steps;
  STAS_ASSIGN_OR_RETURN(at::Tensor noise, model->InitialNoise(spec.seed, *spec.height, *spec.width, *spec.frames));
  std::optional<models::SamplerCheckpoint> resume;
  if (auto saved = UsableCheckpoint(in, steps, noise)) {
    models::SamplerCheckpoint point{saved->step, saved->latents, std::move(saved->scheduler_state)};
    if (Status fits = model->CheckResume(point, steps); !fits.ok()) {
      STAS_LOG_WARN("job {}: ignoring a latent checkpoint whose scheduler state does not fit ({})", in.job_id,
                    fits.message());
    } else {
      resume = std::move(point);
      m.resumed_from_step = saved->step;
      STAS_LOG_INFO("job {}: resuming from the latent checkpoint at step {} of {}", in.job_id, saved->step, steps);
    }
  }
  const auto& par = options.parallelism;
  models::SamplingOptions sampling;
  sampling.steps = steps;
  sampling.guidance = *spec.guidance;
  sampling.shift = *spec.shift;
  sampling.hook = in.hook;
  sampling.parallel = par.sequence;
  sampling.cfg_partner = par.cfg_partner;
  sampling.should_cancel = in.control->should_cancel;
  sampling.resume = resume ? &*resume : nullptr;
  sampling.on_step = [&](const models::SamplingStep& step) {
    MaybeCheckpoint(in, step.done, steps, *step.latents, step.scheduler_state);
    in.on_step(step.done);
  };
  models::PromptEmbeddings prompts{in.positive, in.negative};
  return model->Sample(noise, prompts, sampling);
}

Result<at::Tensor> Renderer::Impl::Decode(const at::Tensor& latents, int frames, const RenderControl& control,
                                          models::SequenceParallel* shared) const {
  // The frames go to the CPU as bytes piece by piece (the decoded video never exists whole on the
  // device) and, when asked, on to the encoder right away. Ranks that only help a shared decode keep
  // nothing.
  std::vector<at::Tensor> pieces;
  const bool keep = options.parallelism.output_rank;
  auto on_video = [&](const at::Tensor& video) -> Status {
    if (!keep) return Status::Ok();
    pieces.push_back(storage::VideoToRgbFrames(video));
    return control.on_frames ? control.on_frames(pieces.back()) : Status::Ok();
  };
  STAS_RETURN_IF_ERROR(shared ? model->DecodeShared(latents, frames, *shared, on_video)
                              : model->Decode(latents, frames, on_video));
  if (pieces.empty()) return at::Tensor();
  return pieces.size() == 1 ? pieces.front() : at::cat(pieces, 0);
}

Result<at::Tensor> Renderer::Impl::EncodePrompt(const std::string& prompt) {
  at::Tensor embedding;
  if (std::optional<at::Tensor> early = TakePrefetched(prompt)) {
    embedding = *early;
  } else {
    ++prompt_encodings;
    STAS_ASSIGN_OR_RETURN(embedding, model->EncodePrompts({prompt}));
  }
  return text_device == device ? embedding : embedding.to(device, dtype);
}

std::optional<at::Tensor> Renderer::Impl::TakePrefetched(const std::string& prompt) {
  std::optional<at::Tensor> found;
  for (auto& [text, future] : prefetched) {
    const Result<at::Tensor>& embedding = future.get();
    if (text == prompt && embedding.ok()) found = *embedding;
  }
  if (found) {
    prefetched.erase(prompt);
    ++prefetched_prompt_hits;
  }
  return found;
}

void Renderer::Impl::StartPrefetch() {
  std::vector<std::string> wanted;
  wanted.swap(prefetch_next);
  for (auto it = prefetched.begin(); it != prefetched.end();) {
    const bool keep = std::find(wanted.begin(), wanted.end(), it->first) != wanted.end();
    it = keep ? std::next(it) : prefetched.erase(it);  // finished: TakePrefetched waited for all
  }
  for (const std::string& prompt : wanted) {
    if (prefetched.count(prompt)) continue;
    // Same device and stream as the render thread: on a GPU the encode interleaves with the
    // denoising kernels; with the text encoder on the CPU it runs beside them.
    auto encode = [this, prompt]() -> Result<at::Tensor> {
      try {
        const c10::DeviceGuard on_text_device(text_device);  // a thread starts on the default device
        ++prompt_encodings;
        return model->EncodePrompts({prompt});
      } catch (const std::exception& e) {
        return Internal(std::string("background prompt encode: ") + e.what());
      }
    };
    prefetched.emplace(prompt, std::async(std::launch::async, std::move(encode)).share());
  }
}

Result<at::Tensor> Renderer::Impl::NegativeEmbedding(const std::string& negative_prompt) {
  if (auto it = negative_embeddings.find(negative_prompt); it != negative_embeddings.end()) return it->second;
  STAS_ASSIGN_OR_RETURN(at::Tensor embedding, EncodePrompt(negative_prompt));
  if (negative_embeddings.size() >= kMaxCachedNegatives) negative_embeddings.erase(negative_embeddings.begin());
  negative_embeddings.emplace(negative_prompt, embedding);
  return embedding;
}

Result<RenderedVideo> Renderer::Impl::Render(const jobspec::RenderSpec& input, const RenderControl& control,
                                             bool decode) {
  const auto total_start = Clock::now();
  RenderedVideo out;
  out.spec = input;
  jobspec::RenderSpec& spec = out.spec;
  spec.ResolveDefaults(model->description());
  STAS_RETURN_IF_ERROR(CheckResolved(spec));
  STAS_ASSIGN_OR_RETURN(std::unique_ptr<steering::StasHook> hook, MakeHook(spec));
  const std::string job_id = control.job_id.empty() ? input.JobId() : control.job_id;
  const int steps = *spec.steps;
  const bool guided = *spec.guidance > 1.0;
  const auto& par = options.parallelism;
  auto report = [&](RenderStage stage, int step, Clock::time_point stage_start) {
    if (control.on_progress) control.on_progress(RenderProgress{stage, step, steps, Seconds(stage_start)});
  };

  storage::Manifest& m = out.manifest;
  m.job_id = job_id;
  m.prompt = spec.prompt;
  m.negative_prompt = spec.negative_prompt;
  m.seed = spec.seed;
  m.model = spec.model;
  m.model_family = model->description().family;
  m.width = *spec.width;
  m.height = *spec.height;
  m.frames = *spec.frames;
  m.fps = *spec.fps;
  m.steps = steps;
  m.guidance = *spec.guidance;
  m.shift = *spec.shift;
  m.stas = spec.stas.ToJson();
  m.stas["steered_steps"] = spec.stas.SteeredSteps(steps);
  m.device = device.str();
  m.dtype = DtypeName(dtype);
  if (options.fp8_linears)
    m.dtype += std::string(" with float8_e4m3 linears (") + models::Fp8ScalingName(*options.fp8_linears) + " scales)";
  m.sequence_parallel = par.sequence_degree();
  m.cfg_parallel = par.cfg_parallel();

  // 1. Prompt embeddings (the negative prompt only when CFG is on, as upstream).
  auto stage_start = Clock::now();
  report(RenderStage::kTextEncode, 0, stage_start);
  DenoiseInputs in;
  STAS_ASSIGN_OR_RETURN(in.positive, EncodePrompt(spec.prompt));
  if (guided) {
    STAS_ASSIGN_OR_RETURN(in.negative, NegativeEmbedding(spec.negative_prompt));
  }
  SynchronizeDevice(device);
  m.timings_s["text_encode"] = Seconds(stage_start);
  StartPrefetch();  // the next jobs' prompts encode while this one denoises

  // 2. Denoising, from the job's noise or from its latest latent checkpoint; STAS first, then any
  // observer (the MA analysis sees the steered stream).
  stage_start = Clock::now();
  report(RenderStage::kDenoise, 0, stage_start);
  steering::HookChain hooks;
  hooks.Add(hook.get());
  hooks.Add(control.observer);
  SlowBlocks slow_blocks(control.fault_block_delay_ms);
  if (control.fault_block_delay_ms > 0) hooks.Add(&slow_blocks);
  CancelBetweenBlocks cancel_check(control.should_cancel);
  if (control.should_cancel) hooks.Add(&cancel_check);
  in.hook = hooks.empty() ? nullptr : &hooks;
  in.control = &control;
  in.job_id = job_id;
  in.on_step = [&](int done) { report(RenderStage::kDenoise, done, stage_start); };
  Result<at::Tensor> denoised = Aborted("not run");
  try {
    denoised = Denoise(spec, in, m);
  } catch (const CancelledInsideStep&) {
    return Aborted("sampling cancelled inside a step (between transformer blocks)");
  }
  STAS_ASSIGN_OR_RETURN(at::Tensor final_latents, std::move(denoised));
  SynchronizeDevice(device);
  m.timings_s["denoise"] = Seconds(stage_start);
  if (hook) m.stas["steered_calls"] = hook->steered_calls();

  // 3. VAE decode: shared by the sequence-parallel group when the model can split it (every rank
  // holds the final latents), else on the output rank alone. With CFG-parallel the two halves are
  // separate groups, so the output rank decodes alone.
  models::SequenceParallel* shared =
      par.sequence && !par.cfg_parallel() && model->CanShareDecode(*spec.height, *spec.width, par.sequence_degree())
          ? par.sequence
          : nullptr;
  if (decode && (par.output_rank || shared)) {
    m.decode_ranks = shared ? par.sequence_degree() : 1;
    stage_start = Clock::now();
    report(RenderStage::kDecode, 0, stage_start);
    STAS_ASSIGN_OR_RETURN(out.frames, Decode(final_latents, *spec.frames, control, shared));
    if (par.output_rank && out.frames.size(0) != *spec.frames)
      return Internal("the VAE produced " + std::to_string(out.frames.size(0)) + " frames, expected " +
                      std::to_string(*spec.frames));
    m.timings_s["decode"] = Seconds(stage_start);
  }
  m.timings_s["total"] = Seconds(total_start);
  return out;
}

// ------------------------------------------------------------------------------------------- Renderer

Renderer::Renderer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Renderer::~Renderer() = default;

Result<std::unique_ptr<Renderer>> Renderer::Load(const RendererOptions& options) {
  const auto start = Clock::now();
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  // Configs first: a folder no backbone reads is refused before anything is loaded.
  STAS_RETURN_IF_ERROR(models::InspectModel(options.model).status());
  impl->device = options.device.value_or(DefaultRenderDevice());
  if (impl->device.is_cuda() && !STAS_HAVE_CUDA)
    return InvalidArgument("this build has no CUDA support; render on the CPU");
  impl->dtype = options.dtype.value_or(impl->device.is_cuda() ? at::kBFloat16 : at::kFloat);
  impl->text_device = options.text_encoder_device.value_or(impl->device);
  if (impl->text_device.is_cuda() && !STAS_HAVE_CUDA)
    return InvalidArgument("this build has no CUDA support; run the text encoder on the CPU");
  const at::ScalarType vae_dtype = options.vae_dtype.value_or(impl->device.is_cuda() ? at::kBFloat16 : at::kFloat);
  if (vae_dtype != at::kFloat && vae_dtype != at::kBFloat16 && vae_dtype != at::kHalf)
    return InvalidArgument("the VAE decodes in float32, bfloat16 or float16, not " + DtypeName(vae_dtype));
  if (impl->device.is_cuda()) {
    if (const std::string error = compat::PreferAttentionKernel(options.attention); !error.empty())
      return InvalidArgument("--attention: " + error);
  }
  models::ModelLoadOptions load;
  load.device = impl->device;
  load.dtype = impl->dtype;
  load.text_encoder_device = impl->text_device;
  // A text encoder moved to the CPU computes in float32 (bfloat16 matmuls are slow there).
  load.text_encoder_dtype =
      impl->text_device == impl->device ? impl->dtype : (impl->text_device.is_cuda() ? at::kBFloat16 : at::kFloat);
  load.vae_dtype = vae_dtype;
  load.tiny_seed = options.tiny_seed;
  load.fp8_linears = options.fp8_linears;
  STAS_ASSIGN_OR_RETURN(impl->model, models::LoadVideoModel(options.model, load));
  impl->model_id = ModelIdOf(options.model);
  impl->load_seconds = Seconds(start);
  STAS_LOG_INFO("render: {} ({}) loaded on {} as {} in {:.1f} s", options.model, impl->model->description().family,
                impl->device.str(), DtypeName(impl->dtype), impl->load_seconds);
  return std::unique_ptr<Renderer>(new Renderer(std::move(impl)));
}

const models::ModelDescription& Renderer::description() const { return impl_->model->description(); }
const models::LatentGeometry& Renderer::geometry() const { return impl_->model->geometry(); }
const std::string& Renderer::model() const { return impl_->options.model; }
at::Device Renderer::device() const { return impl_->device; }
at::ScalarType Renderer::dtype() const { return impl_->dtype; }
at::Device Renderer::text_encoder_device() const { return impl_->text_device; }
int64_t Renderer::prompt_encodings() const { return impl_->prompt_encodings.load(); }
int64_t Renderer::prefetched_prompt_hits() const { return impl_->prefetched_prompt_hits; }
void Renderer::PrefetchPrompts(std::vector<std::string> prompts) { impl_->prefetch_next = std::move(prompts); }
double Renderer::load_seconds() const { return impl_->load_seconds; }

Status Renderer::Check(const jobspec::RenderSpec& spec) const {
  STAS_RETURN_IF_ERROR(spec.Validate());
  STAS_RETURN_IF_ERROR(spec.ValidateFor(impl_->model->description()));
  if (!SameModel(spec.model, impl_->options.model))
    return InvalidArgument("this renderer serves model '" + impl_->options.model + "', the job asks for '" +
                           spec.model + "'");
  jobspec::RenderSpec resolved = spec;
  resolved.ResolveDefaults(impl_->model->description());
  STAS_RETURN_IF_ERROR(impl_->CheckResolved(resolved));
  return impl_->MakeHook(resolved).status();
}

Result<RenderedVideo> Renderer::RenderFrames(const jobspec::RenderSpec& spec, const RenderControl& control) {
  STAS_RETURN_IF_ERROR(Check(spec));
  return impl_->Render(spec, control, /*decode=*/true);
}

Result<storage::Manifest> Renderer::Sample(const jobspec::RenderSpec& spec, const RenderControl& control) {
  STAS_RETURN_IF_ERROR(Check(spec));
  STAS_ASSIGN_OR_RETURN(RenderedVideo run, impl_->Render(spec, control, /*decode=*/false));
  return std::move(run.manifest);
}

steering::StasModelInfo Renderer::stas_model_info() const { return impl_->stas_model_info(); }

namespace {

Status CheckFolderOf(const std::string& path) {
  const fs::path p(path);
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("output folder " + dir.string() + " does not exist");
  if (fs::is_directory(p, ec)) return InvalidArgument("output path " + path + " is a folder");
  return Status::Ok();
}

// Renders and encodes to a finished temporary MP4 beside `video_path` (output rank; other ranks only
// render and return an empty path). The encoder runs on its own thread while the VAE decodes: each
// decoded piece goes to it at once, so the "encode" timing is only what is left after the decode.
Result<std::string> RenderAndEncode(Renderer& renderer, bool output_rank, const jobspec::RenderSpec& spec,
                                    const std::string& video_path, const RenderControl& control, RenderedVideo& video) {
  STAS_RETURN_IF_ERROR(renderer.Check(spec));
  if (!output_rank) {
    STAS_ASSIGN_OR_RETURN(video, renderer.RenderFrames(spec, control));
    return std::string();
  }
  jobspec::RenderSpec resolved = spec;
  resolved.ResolveDefaults(renderer.description());
  storage::Mp4Options options;
  options.width = *resolved.width;
  options.height = *resolved.height;
  options.fps = *resolved.fps;
  // Opened with the first decoded frames (on the writer's thread): a render stopped or killed before
  // its decode leaves no temporary file behind.
  std::unique_ptr<storage::Mp4Writer> writer;
  BackgroundFrameWriter background([&](const at::Tensor& frames) -> Status {
    if (!writer) {
      STAS_ASSIGN_OR_RETURN(writer, storage::Mp4Writer::Open(video_path, options));
    }
    return writer->WriteFrames(frames);
  });
  RenderControl streaming = control;
  streaming.on_frames = [&](const at::Tensor& frames) -> Status {
    if (control.on_frames) STAS_RETURN_IF_ERROR(control.on_frames(frames));
    return background.Push(frames);
  };
  auto rendered = renderer.RenderFrames(spec, streaming);
  Status encoded = background.Finish();  // the writer's thread is done with `writer` from here on
  if (!rendered.ok()) return rendered.status();
  STAS_RETURN_IF_ERROR(encoded);
  if (!writer) return Internal("the render produced no frames to encode");
  video = std::move(*rendered);
  const auto start = Clock::now();
  if (control.on_progress)
    control.on_progress(RenderProgress{RenderStage::kEncode, 0, *video.spec.steps, 0.0});
  STAS_ASSIGN_OR_RETURN(std::string temp, writer->FinishToTemp());
  video.manifest.codec = writer->codec_name();
  video.manifest.video_file = fs::path(video_path).filename().string();
  const double encode = Seconds(start);
  video.manifest.timings_s["encode"] = encode;
  video.manifest.timings_s["total"] += encode;
  storage::FillEnvironment(video.manifest);
  return temp;
}

}  // namespace

Result<RenderResult> Renderer::RenderToFile(const jobspec::RenderSpec& spec, const std::string& out_path,
                                            const RenderControl& control) {
  if (!EndsWithMp4(out_path)) return InvalidArgument("output file " + out_path + " must end in .mp4");
  STAS_RETURN_IF_ERROR(CheckFolderOf(out_path));
  RenderResult result;
  result.output_rank = impl_->options.parallelism.output_rank;
  RenderedVideo video;
  STAS_ASSIGN_OR_RETURN(std::string temp, RenderAndEncode(*this, result.output_rank, spec, out_path, control, video));
  if (!result.output_rank) {
    result.manifest = std::move(video.manifest);
    return result;
  }
  // The manifest goes in first (atomically); the video's rename then completes the pair. Any failure
  // removes what this call wrote.
  const std::string manifest_path = ManifestPathFor(out_path);
  if (Status st = storage::WriteManifest(manifest_path, video.manifest); !st.ok()) {
    std::remove(temp.c_str());
    return st;
  }
  if (std::rename(temp.c_str(), out_path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    std::remove(temp.c_str());
    std::remove(manifest_path.c_str());
    return IoError("cannot rename " + temp + " to " + out_path + ": " + err);
  }
  if (!control.checkpoint_root.empty()) {
    const std::string job_id = control.job_id.empty() ? spec.JobId() : control.job_id;
    if (Status st = storage::LatentCheckpointStore(control.checkpoint_root).Remove(job_id); !st.ok())
      STAS_LOG_WARN("{}", st.message());
  }
  result.manifest = std::move(video.manifest);
  result.video_path = out_path;
  result.manifest_path = manifest_path;
  return result;
}

Result<RenderResult> Renderer::RenderStaged(const jobspec::RenderSpec& spec, const std::string& video_path,
                                            const RenderControl& control) {
  STAS_RETURN_IF_ERROR(CheckFolderOf(video_path));
  RenderResult result;
  result.output_rank = impl_->options.parallelism.output_rank;
  RenderedVideo video;
  STAS_ASSIGN_OR_RETURN(result.video_path,
                        RenderAndEncode(*this, result.output_rank, spec, video_path, control, video));
  result.manifest = std::move(video.manifest);
  return result;
}

}  // namespace stas::worker
