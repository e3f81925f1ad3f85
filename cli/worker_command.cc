// `stas worker`: one MPI rank of a rendering group (worker/worker_process.h). Launch with
//   mpirun -np N stas worker --coordinator HOST:PORT --model tiny|DIR [--sp S] [--cfg-parallel]
// docs/OPERATIONS.md covers scaling, signals and failure handling.
#include <cstdlib>
#include <iostream>

#include "cli/commands.h"
#include "worker/renderer.h"
#include "protocol/protocol.h"
#include "worker/renderer_executor.h"
#include "worker/worker_process.h"

namespace stas::cli {

namespace {

struct WorkerFlags {
  worker::WorkerOptions options;
  double group_timeout_s = 600;
  std::string secret_file;
};

int RunWorker(WorkerFlags& flags) {
  worker::WorkerOptions options = flags.options;
  options.group_timeout_ms = static_cast<int>(flags.group_timeout_s * 1000);
  if (options.token.empty()) {
    const char* env = std::getenv("STAS_TOKEN");
    if (env) options.token = env;
  }
  worker::RendererOptions checked;
  Status st = worker::ApplyRendererFlags(options.renderer, &checked);
  if (!st.ok()) {
    std::cerr << "stas worker: " << st.message() << "\n";
    return 2;
  }
  // Without a token the group proves itself with the coordinator's worker secret: --secret-file, or
  // the one in a storage folder it shares with the coordinator.
  if (options.token.empty()) {
    std::string file = flags.secret_file;
    if (file.empty() && !options.storage.empty()) file = options.storage + "/.stas/worker-secret";
    if (file.empty()) {
      std::cerr << "stas worker: the coordinator requires a credential: --token (or STAS_TOKEN), --secret-file "
                   "FILE, or --storage DIR of a storage folder shared with it (DIR/.stas/worker-secret)\n";
      return 2;
    }
    auto secret = protocol::ReadSecretFile(file);
    if (!secret.ok()) {
      std::cerr << "stas worker: " << secret.status().message() << "\n";
      return 2;
    }
    options.token = *secret;
  } else if (options.token.find_first_not_of(" \t") == std::string::npos) {
    std::cerr << "stas worker: --token (or STAS_TOKEN) must not be blank\n";
    return 2;
  }
  auto address = worker::ParseHostPort(options.coordinator);
  if (!address.ok()) {
    std::cerr << "stas worker: --coordinator: " << address.status().message() << "\n";
    return 2;
  }
  return worker::RunWorkerMain(options, worker::MakeRendererExecutor);
}

}  // namespace

void RegisterWorker(CLI::App& app) {
  auto flags = std::make_shared<WorkerFlags>();
  worker::WorkerOptions& o = flags->options;
  CLI::App* cmd = AddCommand(app, "worker",
                             "serve render jobs from a coordinator as one rank of a rendering group (launch with "
                             "mpirun -np N)",
                             [flags] { return RunWorker(*flags); });
  cmd->add_option("--coordinator", o.coordinator, "the coordinator's worker address, HOST:PORT")->required();
  cmd->add_option("--model", o.model, "tiny (built in) or a diffusers-format checkpoint folder")->capture_default_str();
  cmd->add_option("--sp", o.sp, "sequence-parallel degree (ranks per CFG branch)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_option("--text-encoder-device", o.renderer.text_encoder_device,
                  "where the text encoder runs: cpu keeps its weights off the GPU (default: the rank's device)");
  cmd->add_option("--vae-dtype", o.renderer.vae_dtype,
                  "float32, bfloat16 or float16 (default: bfloat16 on a GPU, float32 on the CPU)");
  cmd->add_option("--attention", o.renderer.attention,
                  "the fused attention kernel on a GPU: auto (LibTorch's choice), flash or cudnn (default: auto)");
  cmd->add_option("--fp8", o.renderer.fp8,
                  "opt-in float8 linear layers in the Wan transformer blocks: row or tensor scales (default: off; "
                  "faster, about 5% error per forward)");
  cmd->add_flag("--cfg-parallel", o.cfg_parallel, "run the two CFG branches on two halves of each group");
  cmd->add_option("--storage", o.storage,
                  "the storage folder as this host sees it (default: the path the coordinator announces)");
  cmd->add_option("--name", o.name, "prefix of this launch's group names (default: the host name)");
  cmd->add_option("--token", o.token, "the coordinator's token (default: $STAS_TOKEN)");
  cmd->add_option("--secret-file", flags->secret_file,
                  "file holding the coordinator's worker secret (a coordinator without --token creates "
                  "STORAGE/.stas/worker-secret; default: that file under --storage)");
  cmd->add_option("--checkpoint-every", o.checkpoint_every,
                  "denoising steps between latent checkpoints (0 = none)")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  cmd->add_option("--commit-timeout-ms", o.commit_timeout_ms,
                  "how long to wait for the coordinator's commit answer (across reconnects)")
      ->check(CLI::Range(100, 3600000))
      ->capture_default_str();
  cmd->add_option("--group-timeout-s", flags->group_timeout_s,
                  "how long the ranks of a group wait for each other at the end of a job before the group "
                  "is declared broken")
      ->check(CLI::Range(1.0, 86400.0))
      ->capture_default_str();
  cmd->add_option("--max-jobs", o.max_jobs, "leave after this many jobs (0 = serve until SIGTERM)")
      ->check(CLI::NonNegativeNumber);
  auto* faults = cmd->add_option_group("fault injection", "for the reliability and security tests only");
  faults->add_option("--fault-step-delay-ms", o.fault_step_delay_ms, "sleep this long after each denoising step")
      ->check(CLI::Range(0, 600000));
  faults->add_option("--fault-block-delay-ms", o.fault_block_delay_ms,
                     "sleep this long after each transformer block (makes one denoising step slow)")
      ->check(CLI::Range(0, 600000));
  faults->add_option("--fault-fail-prompt", o.fault_fail_prompt,
                     "fail (retryably) every job whose prompt contains this text");
}

}  // namespace stas::cli
