// `stas render`: one video on this machine, no services. docs/RENDERING.md is the user's guide.
//
// Exit codes: 0 written; 2 bad input (flags, sizes, prompt, model folder, output path), nothing written;
// 1 a failure while loading or rendering; 130 interrupted (Ctrl-C), nothing written.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <ATen/Parallel.h>

#include "cli/commands.h"
#include "cli/render_flags.h"
#include "common/log.h"
#include "models/registry.h"
#include "parallel/mpi_environment.h"
#include "parallel/parallel_runtime.h"
#include "parallel/process_groups.h"
#include "worker/renderer.h"

namespace stas::cli {

namespace {

namespace fs = std::filesystem;

struct RenderCommandFlags {
  RenderFlags render;
  std::string out;
  std::string device;
  worker::RendererFlags renderer;
  int sp = 1;
  bool cfg_parallel = false;
  int checkpoint_every = 5;  // only with --checkpoint-dir
  std::string checkpoint_dir;
};

std::atomic<bool> g_interrupted{false};

extern "C" void OnInterrupt(int) {
  g_interrupted.store(true);
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process at once
}

int ExitCodeFor(const Status& st) {
  switch (st.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotFound: return 2;
    case StatusCode::kAborted: return 130;
    default: return 1;
  }
}

int Fail(const Status& st) {
  std::cerr << "stas render: " << (st.code() == StatusCode::kAborted ? "interrupted; nothing was written (" + st.message() + ")"
                                                                     : st.message())
            << "\n";
  return ExitCodeFor(st);
}

std::string FormatSeconds(double s) {
  std::ostringstream ss;
  ss << std::fixed << std::setprecision(s < 10 ? 2 : 1) << s << " s";
  return ss.str();
}

// Denoising progress on stderr: a redrawn bar on a terminal, one line per step otherwise (logs, CI).
class ProgressPrinter {
 public:
  ProgressPrinter() : tty_(::isatty(STDERR_FILENO) == 1) {}

  void operator()(const worker::RenderProgress& p) {
    const char* stage = worker::RenderStageName(p.stage);
    if (p.stage != worker::RenderStage::kDenoise || p.step == 0) {
      EndBar();
      std::cerr << stage << (p.stage == worker::RenderStage::kDenoise ? " (" + std::to_string(p.steps) + " steps)" : "")
                << "...\n";
      return;
    }
    const double per_step = p.stage_elapsed_s / p.step;
    const double eta = per_step * (p.steps - p.step);
    if (tty_) {
      constexpr int kWidth = 30;
      const int filled = p.steps > 0 ? p.step * kWidth / p.steps : kWidth;
      std::cerr << "\r  [" << std::string(filled, '#') << std::string(kWidth - filled, '.') << "] " << p.step << "/"
                << p.steps << "  " << FormatSeconds(per_step) << "/step  eta " << FormatSeconds(eta) << "   "
                << std::flush;
      bar_open_ = true;
      if (p.step == p.steps) EndBar();
    } else {
      std::cerr << "  step " << p.step << "/" << p.steps << "  " << FormatSeconds(p.stage_elapsed_s) << " ("
                << FormatSeconds(per_step) << "/step)\n";
    }
  }
  void EndBar() {
    if (bar_open_) std::cerr << "\n";
    bar_open_ = false;
  }

 private:
  bool tty_;
  bool bar_open_ = false;
};

// The MPI side of `mpirun -np N stas render --sp S [--cfg-parallel]`: one group of N = S x cfg ranks
// renders the one video (parallel::ParallelRuntime: Ulysses attention and CFG-parallel); the group
// leader decodes, encodes and writes. Members are destroyed in reverse: the runtime before MPI ends.
class MultiRank {
 public:
  Status Start(int sp, int cfg, const std::string& model, const models::ModelDescription& description,
               worker::RendererOptions* options) {
    STAS_ASSIGN_OR_RETURN(env_, parallel::MpiEnvironment::Initialize());
    if (env_->world_size() != sp * cfg)
      return InvalidArgument("stas render renders one video with one group of --sp x (2 if --cfg-parallel else 1) = " +
                             std::to_string(sp * cfg) + " ranks, but " + std::to_string(env_->world_size()) +
                             " were launched; use mpirun -np " + std::to_string(sp * cfg));
    STAS_ASSIGN_OR_RETURN(parallel::ProcessGroups groups, parallel::ProcessGroups::Create(env_->world(), sp, cfg));
    groups_ = std::make_unique<parallel::ProcessGroups>(std::move(groups));
    const bool cuda = options->device ? options->device->is_cuda() : worker::DefaultRenderDevice().is_cuda();
    if (!options->device || cuda) options->device = parallel::ParallelRuntime::DeviceForRank(*groups_, cuda);
    // The ranks share this machine's cores: one intra-op thread each unless told otherwise.
    if (!cuda && std::getenv("OMP_NUM_THREADS") == nullptr) at::set_num_threads(1);
    // The runtime is built before the model is loaded, so the head count comes from its config.
    const int64_t heads = description.num_attention_heads;
    if (heads < 1) return InvalidArgument(model + ": the transformer config has no num_attention_heads");
    STAS_ASSIGN_OR_RETURN(runtime_, parallel::ParallelRuntime::Create(*groups_, *options->device, heads));
    options->parallelism.sequence = runtime_->sequence_parallel();
    if (parallel::CfgParallel* pair = runtime_->cfg_parallel()) {
      partner_ = std::make_unique<parallel::CfgPartnerOverPair>(pair);
      options->parallelism.cfg_partner = partner_.get();
    }
    options->parallelism.output_rank = groups_->layout().is_group_leader();
    SetLogTag("[rank " + std::to_string(env_->world_rank()) + "]");
    return Status::Ok();
  }

  bool leader() const { return !groups_ || groups_->layout().is_group_leader(); }

  // True on every rank when `mine` is true on any rank (collective under MPI).
  bool AnyRank(bool mine) const {
    if (!groups_) return mine;
    int local = mine ? 1 : 0, any = 0;
    STAS_MPI_CHECK(MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_MAX, groups_->group()));
    return any != 0;
  }

 private:
  std::unique_ptr<parallel::MpiEnvironment> env_;
  std::unique_ptr<parallel::ProcessGroups> groups_;
  std::unique_ptr<parallel::ParallelRuntime> runtime_;
  std::unique_ptr<parallel::CfgPartnerOverPair> partner_;
};

// Everything that can be refused before a model is loaded.
Status CheckOutputPath(const std::string& out) {
  if (out.empty()) return InvalidArgument("--out FILE.mp4 is required");
  std::string ext = fs::path(out).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ext != ".mp4") return InvalidArgument("--out must name an .mp4 file, got '" + out + "'");
  const fs::path dir = fs::path(out).parent_path().empty() ? fs::path(".") : fs::path(out).parent_path();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("--out: folder '" + dir.string() + "' does not exist");
  if (fs::is_directory(out, ec)) return InvalidArgument("--out: '" + out + "' is a folder");
  if (::access(dir.c_str(), W_OK) != 0) return InvalidArgument("--out: folder '" + dir.string() + "' is not writable");
  return Status::Ok();
}

int RunRender(const RenderCommandFlags& flags) {
  auto spec = flags.render.ToSpec();
  if (!spec.ok()) return Fail(spec.status());
  if (Status st = CheckOutputPath(flags.out); !st.ok()) return Fail(st);
  auto model = models::InspectModel(spec->model);
  if (!model.ok()) return Fail(model.status());
  if (Status st = spec->ValidateFor(*model); !st.ok()) return Fail(st);
  if (flags.sp < 1) return Fail(InvalidArgument("--sp must be >= 1"));
  if (flags.checkpoint_every < 0) return Fail(InvalidArgument("--checkpoint-every must be >= 0"));

  worker::RendererOptions options;
  options.model = spec->model;
  if (!flags.device.empty()) {
    try {
      options.device = at::Device(flags.device);
    } catch (const std::exception&) {
      return Fail(InvalidArgument("--device: '" + flags.device + "' is not a device (cpu, cuda, cuda:N)"));
    }
  }
  if (Status st = worker::ApplyRendererFlags(flags.renderer, &options); !st.ok()) return Fail(st);

  // Under mpirun (or with --sp/--cfg-parallel) the ranks form one rendering group; the leader writes.
  const int cfg = flags.cfg_parallel ? 2 : 1;
  MultiRank multi;
  if (flags.sp * cfg > 1 || parallel::LaunchedByMpiLauncher()) {
    if (Status st = multi.Start(flags.sp, cfg, spec->model, *model, &options); !st.ok()) return Fail(st);
  }
  const bool leader = multi.leader();

  if (leader) std::cerr << "loading " << spec->model << " (" << model->family << ")...\n";
  auto renderer = worker::Renderer::Load(options);
  if (!renderer.ok()) return Fail(renderer.status());
  if (Status st = (*renderer)->Check(*spec); !st.ok()) return Fail(st);

  ProgressPrinter progress;
  worker::RenderControl control;
  if (leader) control.on_progress = [&progress](const worker::RenderProgress& p) { progress(p); };
  g_interrupted.store(false);
  auto previous = std::signal(SIGINT, OnInterrupt);
  // Every rank must stop at the same step: under MPI the ranks agree on the flag once per step.
  control.should_cancel = [&multi] { return multi.AnyRank(g_interrupted.load()); };
  control.checkpoint_root = flags.checkpoint_dir;
  control.checkpoint_every = flags.checkpoint_every;

  auto result = (*renderer)->RenderToFile(*spec, flags.out, control);
  std::signal(SIGINT, previous);
  progress.EndBar();
  if (!result.ok()) return Fail(result.status());
  if (!leader) return 0;

  const storage::Manifest& m = result->manifest;
  std::cout << "wrote " << result->video_path << " (" << m.frames << " frames, " << m.width << "x" << m.height << ", "
            << m.fps << " fps, " << m.codec << ") and " << result->manifest_path << "\n";
  std::cout << "timings: load " << FormatSeconds((*renderer)->load_seconds());
  for (const char* stage : {"text_encode", "denoise", "decode", "encode", "total"}) {
    auto it = m.timings_s.find(stage);
    if (it != m.timings_s.end()) std::cout << ", " << stage << " " << FormatSeconds(it->second);
  }
  std::cout << "\n";
  if (m.resumed_from_step > 0) std::cout << "resumed from the latent checkpoint at step " << m.resumed_from_step << "\n";
  return 0;
}

}  // namespace

void RegisterRender(CLI::App& app) {
  auto flags = std::make_shared<RenderCommandFlags>();
  CLI::App* cmd = AddCommand(app, "render", "Render one video on this machine (no services): text -> MP4 + JSON manifest",
                             [flags] { return RunRender(*flags); });
  flags->render.AddTo(cmd);
  // Not ->required(): a missing --out is bad input like any other (exit 2, our message).
  cmd->add_option("--out", flags->out, "the MP4 to write (required; its folder must exist); the manifest goes beside "
                                       "it as .json");
  cmd->add_option("--device", flags->device, "cpu, cuda or cuda:N (default: cuda:0 when available, else cpu)");
  cmd->add_option("--text-encoder-device", flags->renderer.text_encoder_device,
                  "where the text encoder runs: cpu keeps its weights off the GPU (default: --device)");
  cmd->add_option("--vae-dtype", flags->renderer.vae_dtype,
                  "float32, bfloat16 or float16 (default: bfloat16 on a GPU, float32 on the CPU)");
  cmd->add_option("--attention", flags->renderer.attention,
                  "the fused attention kernel on a GPU: auto (LibTorch's choice), flash or cudnn (default: auto)");
  cmd->add_option("--fp8", flags->renderer.fp8,
                  "opt-in float8 linear layers in the Wan transformer blocks: row or tensor scales (default: off; "
                  "faster, about 5% error per forward)");
  cmd->add_option("--sp", flags->sp, "sequence-parallel degree (under mpirun)")->capture_default_str();
  cmd->add_flag("--cfg-parallel", flags->cfg_parallel, "run the two CFG branches on two halves of the ranks");
  cmd->add_option("--checkpoint-dir", flags->checkpoint_dir,
                  "keep latent checkpoints under DIR/.checkpoints and resume an interrupted identical render");
  cmd->add_option("--checkpoint-every", flags->checkpoint_every, "denoising steps between latent checkpoints (with --checkpoint-dir)")
      ->capture_default_str();
}

}  // namespace stas::cli
