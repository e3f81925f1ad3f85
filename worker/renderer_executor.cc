#include "worker/renderer_executor.h"

#include <ATen/Parallel.h>

#include <cstdlib>
#include <filesystem>

#include "common/log.h"
#include "models/registry.h"
#include "parallel/parallel_runtime.h"
#include "storage/output_layout.h"
#include "worker/renderer.h"

namespace stas::worker {

namespace {

std::string BaseName(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return std::filesystem::path(path).filename().string();
}

// Attention heads of the model's transformer, known before it is loaded (the sequence-parallel
// runtime is built first and handed to the renderer).
Result<int64_t> AttentionHeadsOf(const std::string& model) {
  STAS_ASSIGN_OR_RETURN(models::ModelDescription description, models::InspectModel(model));
  if (description.num_attention_heads < 1)
    return InvalidArgument("model " + model + ": the transformer config has no valid num_attention_heads");
  return description.num_attention_heads;
}

class RendererExecutor final : public JobExecutor {
 public:
  Result<std::optional<StagedOutput>> Render(const JobContext& job, const RenderCallbacks& callbacks) override {
    jobspec::RenderSpec spec = job.spec;
    // The coordinator pairs jobs and groups by model name; a job naming this group's checkpoint by
    // another path still belongs here. A real mismatch is the dispatcher's mistake: retryable.
    if (!SameModel(spec.model, renderer->model()))
      return Unavailable("this group serves model '" + renderer->model() + "', job " + job.job_id + " asks for '" +
                         spec.model + "'");
    spec.model = renderer->model();
    STAS_RETURN_IF_ERROR(renderer->Check(spec));
    // The coordinator's assignment (checked by the worker when the job arrived), never our own choice.
    storage::OutputPaths paths = job.output;
    // Every rank creates the folder (idempotent): the renderer checks it on every rank.
    STAS_RETURN_IF_ERROR(storage::OutputLayout::EnsureFolder(paths));

    RenderControl control;
    const int steps = spec.steps.value_or(0);
    control.on_progress = [&](const RenderProgress& p) {
      const bool after_denoising = p.stage == RenderStage::kDecode || p.stage == RenderStage::kEncode;
      callbacks.progress({after_denoising ? p.steps : p.step, p.steps > 0 ? p.steps : steps, RenderStageName(p.stage)});
    };
    control.should_cancel = callbacks.should_stop;
    control.fault_block_delay_ms = fault_block_delay_ms;
    control.checkpoint_root = job.checkpoint_every > 0 ? job.storage : std::string();
    control.checkpoint_every = job.checkpoint_every;
    control.job_id = job.job_id;
    renderer->PrefetchPrompts(job.upcoming_prompts);  // encoded while this job denoises
    STAS_ASSIGN_OR_RETURN(RenderResult rendered, renderer->RenderStaged(spec, paths.video, control));
    if (!rendered.output_rank) return std::optional<StagedOutput>();
    StagedOutput staged;
    staged.paths = std::move(paths);
    staged.temp_video = std::move(rendered.video_path);
    staged.manifest = std::move(rendered.manifest);
    return std::optional<StagedOutput>(std::move(staged));
  }

  // Built by MakeRendererExecutor; destroyed in reverse: the renderer before what it points to.
  std::unique_ptr<parallel::ParallelRuntime> runtime;
  std::unique_ptr<parallel::CfgPartnerOverPair> cfg_partner;
  std::unique_ptr<Renderer> renderer;
  int fault_block_delay_ms = 0;  // WorkerOptions::fault_block_delay_ms
};

}  // namespace

bool SameModel(const std::string& job_model, const std::string& worker_model) {
  if (job_model == worker_model) return true;
  const std::string a = BaseName(job_model), b = BaseName(worker_model);
  return !a.empty() && a == b;
}

Result<std::unique_ptr<JobExecutor>> MakeRendererExecutor(const WorkerOptions& options,
                                                          const parallel::ProcessGroups* groups) {
  auto executor = std::make_unique<RendererExecutor>();
  executor->fault_block_delay_ms = options.fault_block_delay_ms;
  RendererOptions render;
  render.model = options.model;
  STAS_RETURN_IF_ERROR(ApplyRendererFlags(options.renderer, &render));
  const bool cuda = DefaultRenderDevice().is_cuda();
  render.device = groups ? parallel::ParallelRuntime::DeviceForRank(*groups, cuda) : DefaultRenderDevice();
  // Under MPI on the CPU, ranks share the cores: one intra-op thread each unless told otherwise.
  if (groups && !cuda && std::getenv("OMP_NUM_THREADS") == nullptr) at::set_num_threads(1);
  if (groups && groups->layout().group_size() > 1) {
    STAS_ASSIGN_OR_RETURN(int64_t heads, AttentionHeadsOf(options.model));
    STAS_ASSIGN_OR_RETURN(executor->runtime, parallel::ParallelRuntime::Create(*groups, *render.device, heads));
    render.parallelism.sequence = executor->runtime->sequence_parallel();
    if (parallel::CfgParallel* cfg = executor->runtime->cfg_parallel()) {
      executor->cfg_partner = std::make_unique<parallel::CfgPartnerOverPair>(cfg);
      render.parallelism.cfg_partner = executor->cfg_partner.get();
    }
    render.parallelism.output_rank = groups->layout().is_group_leader();
  }
  STAS_ASSIGN_OR_RETURN(executor->renderer, Renderer::Load(render));
  return std::unique_ptr<JobExecutor>(std::move(executor));
}

}  // namespace stas::worker
