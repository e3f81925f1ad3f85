// Renderer: one loaded text-to-video model that turns RenderSpecs into MP4 files.
//
// Load once (any model the backbone registry knows, models/registry.h: the built-in tiny model or a
// diffusers checkpoint folder), then Render* many specs:
//   validate (RenderSpec::Validate + ValidateFor the model's description) -> ResolveDefaults -> encode
//   the prompt and the negative prompt -> denoise (the model's sampler; CFG, STAS hook when
//   spec.stas.enabled) -> VAE decode -> MP4 (storage::Mp4Writer) + JSON manifest.
// The Renderer sees the model only through models::VideoModel (models/video_model.h).
// `stas render` calls RenderToFile; the service's worker calls RenderStaged and commits the staged
// video itself (storage::CommitOutput), so a job that runs twice never leaves two outputs.
//
// Devices: CUDA (device 0 unless given) when this build has CUDA and a GPU is present, else the CPU;
// bfloat16 weights on a GPU, float32 on the CPU. Latents are always float32.
//
// Multi-rank rendering (mpirun ... --sp S [--cfg-parallel]): every rank of a group constructs a
// Renderer with the same options plus its RenderParallelism and calls Render* with the same spec in
// lockstep. Every rank samples; only the output rank decodes, encodes and writes.
//
// Thread-safety: one Render* call at a time per Renderer.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/torch_compat.h"
#include "jobspec/render_spec.h"
#include "models/dit.h"
#include "models/model_description.h"
#include "models/video_model.h"
#include "steering/stas_hook.h"
#include "storage/manifest.h"

namespace stas::worker {

// The seam to parallel/: what one rank of a rendering group contributes. Pointers are not owned and
// must outlive the Renderer. All null = a single process rendering everything.
struct RenderParallelism {
  models::SequenceParallel* sequence = nullptr;   // Ulysses group: this rank holds a slice of the tokens
  models::CfgPartner* cfg_partner = nullptr;     // CFG branches split over a pair of ranks
  bool output_rank = true;                        // decodes, encodes and writes (the group leader)

  int sequence_degree() const { return sequence ? sequence->size() : 1; }
  bool cfg_parallel() const { return cfg_partner != nullptr; }
};

struct RendererOptions {
  std::string model = "tiny";                // "tiny" or a diffusers-format checkpoint folder
  std::optional<at::Device> device;          // default: cuda:0 when built with CUDA and present, else cpu
  std::optional<at::ScalarType> dtype;       // default: bfloat16 on a GPU, float32 on the CPU
  // Where the text encoder runs (default: `device`). The CPU keeps its weights (about 11 GiB of UMT5 for
  // Wan) off a GPU that is short of memory; it then computes in float32 and hands the embeddings over.
  std::optional<at::Device> text_encoder_device;
  // The Wan VAE decoder's dtype (default: bfloat16 on a GPU, float32 on the CPU). Its RMS norms compute
  // in float32 whatever this is. CogVideoX decodes in float32 always.
  std::optional<at::ScalarType> vae_dtype;
  // The fused attention kernel on a GPU (process-wide; kAuto: LibTorch's choice). See --attention.
  compat::AttentionKernel attention = compat::AttentionKernel::kAuto;
  // Opt-in float8 linear layers in the transformer blocks (faster GEMMs, about 5% relative error per
  // forward; never the default). Wan only; a GPU with LibTorch >= 2.5. The manifest's dtype says so.
  std::optional<models::Fp8Scaling> fp8_linears;
  RenderParallelism parallelism;
  uint64_t tiny_seed = 0;                    // weights of the built-in tiny model (its identity)
};

enum class RenderStage { kTextEncode, kDenoise, kDecode, kEncode };
// "text_encode", "denoise", "decode", "encode" (the manifest's timing keys).
const char* RenderStageName(RenderStage stage);

struct RenderProgress {
  RenderStage stage = RenderStage::kTextEncode;
  int step = 0;   // kDenoise: steps completed so far (1..steps); other stages: 0 at the stage's start
  int steps = 0;  // denoising steps of the run
  double stage_elapsed_s = 0;  // seconds since the stage began
};

struct RenderControl {
  // Called at the start of each stage and after every denoising step, on every rank.
  std::function<void(const RenderProgress&)> on_progress;
  // Polled before every denoising step and after every transformer block; true stops the render with
  // Aborted (nothing is written). Under parallelism it must answer the same on every rank of the group.
  std::function<bool()> should_cancel;
  // Fault injection (tests only): sleep this long after every transformer block, so that one denoising
  // step of even the tiny model takes seconds. 0 = off.
  int fault_block_delay_ms = 0;
  // Latent checkpoints (storage::LatentCheckpointStore under this root): saved every
  // `checkpoint_every` steps by the output rank, resumed from when present. Empty root or 0 = off.
  std::string checkpoint_root;
  int checkpoint_every = 0;
  // The job's id (manifest, checkpoint file); empty = spec.JobId().
  std::string job_id;
  // Called on the output rank with each decoded piece of the video, in order, as soon as the VAE has
  // produced it: frames [t, H, W, 3] uint8 on the CPU (Wan streams pieces of a few frames; CogVideoX
  // hands over the whole video at once). The frames are still assembled for the result. A non-OK
  // status stops the render with it. RenderToFile/RenderStaged use this to encode while decoding.
  std::function<Status(const at::Tensor& frames)> on_frames;
  // Called after every block after STAS (not owned; may be null): the MA analysis of `stas analyze`.
  models::ResidualHook* observer = nullptr;
};

// A render before encoding.
struct RenderedVideo {
  at::Tensor frames;           // [T, H, W, 3] uint8 on the CPU; undefined on non-output ranks
  jobspec::RenderSpec spec;    // defaults resolved
  storage::Manifest manifest;  // complete except the "encode" timing, codec and video file
};

struct RenderResult {
  storage::Manifest manifest;
  std::string video_path;     // RenderToFile: the MP4; RenderStaged: the temporary MP4 to commit
  std::string manifest_path;  // RenderToFile only
  bool output_rank = true;    // false: this rank only helped; nothing was written
};

class Renderer {
 public:
  // Loads every component onto the device. NotFound / InvalidArgument for a missing or malformed
  // checkpoint folder, NotImplemented for a model family this build cannot run yet.
  static Result<std::unique_ptr<Renderer>> Load(const RendererOptions& options);
  ~Renderer();
  Renderer(const Renderer&) = delete;
  Renderer& operator=(const Renderer&) = delete;

  // The loaded model's family rules (family name, defaults, multiples) and its shapes.
  const models::ModelDescription& description() const;
  const models::LatentGeometry& geometry() const;
  const std::string& model() const;
  at::Device device() const;
  at::ScalarType dtype() const;
  at::Device text_encoder_device() const;
  double load_seconds() const;
  // Prompts run through the text encoder so far. Negative prompts are encoded once per Renderer and
  // reused (a job's empty negative prompt costs nothing after the first job).
  int64_t prompt_encodings() const;
  // Prompts to encode in the background while the next Render* call denoises (the coordinator's look-
  // ahead at the jobs queued behind the current one): a later job whose prompt is among them skips the
  // text encoder. Replaces the list given before. Advisory: a failed background encode is dropped and
  // the job encodes its prompt itself. The encodes start once the next render's own prompts are
  // encoded; the render after that waits for them before it uses the text encoder.
  void PrefetchPrompts(std::vector<std::string> prompts);
  // Renders whose prompt embedding came from a background encode.
  int64_t prefetched_prompt_hits() const;
  // What STAS and the MA analysis are told about the loaded transformer (model id, width, blocks).
  steering::StasModelInfo stas_model_info() const;

  // Everything that can be checked before rendering: the spec's own validation, the model's size
  // rules, that the spec names this model, the STAS blocks/channels and the sequence-parallel split.
  // InvalidArgument (or NotFound for a missing STAS channels file).
  Status Check(const jobspec::RenderSpec& spec) const;

  // Encodes the prompts and samples, without decoding or writing anything: for runs that only watch the
  // residual stream through control.observer. Returns the manifest (no decode/encode timings).
  Result<storage::Manifest> Sample(const jobspec::RenderSpec& spec, const RenderControl& control = {});
  // Renders to decoded frames (no file written).
  Result<RenderedVideo> RenderFrames(const jobspec::RenderSpec& spec, const RenderControl& control = {});
  // Renders and writes `out_path` (must end in .mp4; its folder must exist) via a temporary file and a
  // rename, and the manifest beside it (same stem, .json). Replaces existing files at those paths.
  Result<RenderResult> RenderToFile(const jobspec::RenderSpec& spec, const std::string& out_path,
                                    const RenderControl& control = {});
  // Renders and leaves the finished MP4 at a temporary name beside `video_path` (whose folder must
  // exist): result.video_path is that temporary file, which the caller commits to `video_path`
  // (storage::CommitOutput) or removes. The manifest is returned, not written; latent checkpoints are
  // left for the caller to remove after the commit.
  Result<RenderResult> RenderStaged(const jobspec::RenderSpec& spec, const std::string& video_path,
                                    const RenderControl& control = {});

  class Impl;

 private:
  explicit Renderer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The manifest path for an MP4 path: "dir/clip.mp4" -> "dir/clip.json".
std::string ManifestPathFor(const std::string& video_path);

// The renderer flags shared by `stas render`, `stas worker` and the benches, as typed ("" = default).
struct RendererFlags {
  std::string text_encoder_device;  // --text-encoder-device: cpu, cuda, cuda:N
  std::string vae_dtype;            // --vae-dtype: float32, bfloat16, float16
  std::string attention;            // --attention: auto, flash, cudnn
  std::string fp8;                  // --fp8: row, tensor (opt-in float8 linears)
};

// Checks every flag and sets what they name in `options`. InvalidArgument names the first bad flag;
// `options` is unchanged then.
Status ApplyRendererFlags(const RendererFlags& flags, RendererOptions* options);

// The device a Renderer picks by default: cuda:0 when this build has CUDA and a GPU is visible.
at::Device DefaultRenderDevice();

}  // namespace stas::worker
