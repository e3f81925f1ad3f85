// parallel_step_bench: times one denoising step with classifier-free guidance of the Wan transformer
// under sequence parallelism (Ulysses) and/or CFG-parallel, one process per GPU, under mpirun.
//
//   mpirun -np N parallel_step_bench [--sp S] [--cfg-parallel] [--height 480 --width 832 --frames 81]
//          [--repeats 5 --warmup 2] [--dtype bf16|fp32] [--device cuda|cpu] [--config transformer.json]
//          [--layers L] [--text-len 512] [--guidance 5.0] [--threads T] [--check] [--spatial 8]
//
// The model is the real Wan2.1-T2V-1.3B configuration (or --config) with random weights (same FLOPs and
// shapes as the checkpoint). A step is two forwards (cond, uncond) and the guidance combine; with
// --cfg-parallel each half of the group runs one branch and the halves exchange their predictions.
// The world of N ranks splits into N / (S x cfg) groups that all run at once. Prints, for the slowest
// rank, median/min/max ms per step, then the communication per step measured in separate profiled steps
// (each collective bracketed by device synchronization): the all-to-all time and its share of the step.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "bench/bench_mpi.h"
#include "bench/bench_util.h"
#include "bench/wan_random_weights.h"
#include "common/json.h"
#include "models/wan/transformer.h"
#include "parallel/cfg_parallel.h"
#include "parallel/instrumented_communicator.h"
#include "parallel/mpi_environment.h"
#include "parallel/parallel_runtime.h"
#include "parallel/process_groups.h"
#include "parallel/ulysses.h"
#include "parallel/watchdog.h"

using namespace stas;

namespace {

const char* kWan21_1_3B = R"({"patch_size":[1,2,2],"num_attention_heads":12,"attention_head_dim":128,
  "in_channels":16,"out_channels":16,"text_dim":4096,"freq_dim":256,"ffn_dim":8960,"num_layers":30,
  "cross_attn_norm":true,"qk_norm":"rms_norm_across_heads","eps":1e-6,"rope_max_seq_len":1024})";

using bench::Arg;
using bench::Flag;
using bench::MaxOverWorld;

// Every rank calls this with the same outcome in mind; rank 0 prints.
int Fail(int rank, const std::string& message) {
  if (rank == 0) std::fprintf(stderr, "parallel_step_bench: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  auto env = parallel::MpiEnvironment::Initialize(&argc, &argv);
  if (!env.ok()) {
    std::fprintf(stderr, "parallel_step_bench: %s\n", env.status().ToString().c_str());
    return 1;
  }
  const int rank = (*env)->world_rank();
  try {
    const int sp = std::stoi(Arg(argc, argv, "--sp", "1"));
    const bool cfg_parallel = Flag(argc, argv, "--cfg-parallel");
    const int height = std::stoi(Arg(argc, argv, "--height", "480"));
    const int width = std::stoi(Arg(argc, argv, "--width", "832"));
    const int frames = std::stoi(Arg(argc, argv, "--frames", "81"));
    const int spatial = std::stoi(Arg(argc, argv, "--spatial", "8"));  // VAE spatial compression (16: Wan2.2)
    const int repeats = std::max(1, std::stoi(Arg(argc, argv, "--repeats", "5")));
    const int warmup = std::max(0, std::stoi(Arg(argc, argv, "--warmup", "2")));
    const int text_len = std::stoi(Arg(argc, argv, "--text-len", "512"));
    const int layers = std::stoi(Arg(argc, argv, "--layers", "0"));
    const double guidance = std::stod(Arg(argc, argv, "--guidance", "5.0"));
    const std::string dtype_name = Arg(argc, argv, "--dtype", STAS_HAVE_CUDA ? "bf16" : "fp32");
    const std::string device_name = Arg(argc, argv, "--device", STAS_HAVE_CUDA ? "cuda" : "cpu");
    const std::string config_path = Arg(argc, argv, "--config", "");
    const int threads = std::stoi(Arg(argc, argv, "--threads", "1"));
    if (frames < 1 || (frames - 1) % 4 != 0) return Fail(rank, "--frames must be 4k+1");
    if (height % 16 != 0 || width % 16 != 0) return Fail(rank, "--height and --width must be multiples of 16");
    if (dtype_name != "bf16" && dtype_name != "fp32") return Fail(rank, "--dtype must be bf16 or fp32");

    auto groups = parallel::ProcessGroups::Create(MPI_COMM_WORLD, sp, cfg_parallel ? 2 : 1);
    if (!groups.ok()) return Fail(rank, groups.status().ToString());
    const parallel::GroupLayout& layout = groups->layout();

    Json config_json;
    if (config_path.empty()) {
      config_json = Json::parse(kWan21_1_3B);
    } else {
      auto j = ReadJsonFile(config_path);
      if (!j.ok()) return Fail(rank, j.status().ToString());
      config_json = *j;
    }
    if (layers > 0) config_json["num_layers"] = layers;
    auto config = models::wan::WanTransformerConfig::FromJson(config_json);
    if (!config.ok()) return Fail(rank, config.status().ToString());
    const Status heads_ok = parallel::UlyssesAttention::CheckHeads(config->num_attention_heads, sp);
    if (!heads_ok.ok()) return Fail(rank, heads_ok.ToString());

    const bool cuda = device_name == "cuda";
    if (!cuda && device_name != "cpu") return Fail(rank, "--device must be cuda or cpu");
    if (cuda && at::getNumGPUs() == 0) return Fail(rank, "--device cuda but no CUDA device is visible");
    const at::Device device = parallel::ParallelRuntime::DeviceForRank(*groups, cuda);
    if (!cuda) at::set_num_threads(threads);
    const at::ScalarType dtype = dtype_name == "bf16" ? at::kBFloat16 : at::kFloat;

    auto weights = bench::RandomWanTransformerWeights(*config, /*seed=*/0, device, dtype);
    auto model = models::wan::WanTransformer::Load(*config, weights, device, dtype);
    if (!model.ok()) return Fail(rank, model.status().ToString());
    weights = WeightStore();

    // Communicators of this rank's sequence group and CFG pair, counted by InstrumentedCommunicator.
    parallel::Watchdog watchdog(parallel::Watchdog::Options{});
    std::unique_ptr<parallel::Communicator> sequence_comm, pair_comm;
    std::unique_ptr<parallel::InstrumentedCommunicator> sequence_counted, pair_counted;
    std::unique_ptr<parallel::UlyssesAttention> ulysses;
    std::unique_ptr<parallel::CfgParallel> cfg;
    if (sp > 1) {
      auto made = parallel::MakeGroupCommunicator(groups->sequence(), device, &watchdog, "sequence group");
      if (!made.ok()) return Fail(rank, made.status().ToString());
      sequence_comm = std::move(made).value();
      sequence_counted = std::make_unique<parallel::InstrumentedCommunicator>(*sequence_comm, false);
      ulysses = std::make_unique<parallel::UlyssesAttention>(*sequence_counted);
    }
    if (cfg_parallel) {
      auto made = parallel::MakeGroupCommunicator(groups->cfg_pair(), device, &watchdog, "CFG pair");
      if (!made.ok()) return Fail(rank, made.status().ToString());
      pair_comm = std::move(made).value();
      pair_counted = std::make_unique<parallel::InstrumentedCommunicator>(*pair_comm, false);
      cfg = std::make_unique<parallel::CfgParallel>(*pair_counted);
    }

    // Inputs drawn on the CPU from one seed, so every rank holds the same ones.
    const int64_t lat_f = (frames - 1) / 4 + 1, lat_h = height / spatial, lat_w = width / spatial;
    at::manual_seed(1234);
    const at::Tensor latents = at::randn({1, config->in_channels, lat_f, lat_h, lat_w}).to(device);
    const at::Tensor text_cond = at::randn({1, text_len, config->text_dim}).to(device, dtype);
    const at::Tensor text_uncond = at::randn({1, text_len, config->text_dim}).to(device, dtype);
    const at::Tensor timestep = at::full({1}, 999.0, at::TensorOptions().device(device));

    models::ForwardContext context;
    context.parallel = ulysses.get();
    auto forward = [&](const at::Tensor& text, models::CfgBranch branch) {
      models::ForwardContext c = context;
      c.branches = {branch};
      auto out = model->Forward(latents, timestep, text, c);
      if (!out.ok()) {
        std::fprintf(stderr, "parallel_step_bench rank %d: %s\n", rank, out.status().ToString().c_str());
        std::exit(1);  // peers are stuck in a collective: ending this process ends the job
      }
      return *out;
    };
    auto step = [&] {
      at::Tensor guided;
      if (cfg) {
        const bool cond = cfg->branch() == models::CfgBranch::kCond;
        guided = cfg->Combine(forward(cond ? text_cond : text_uncond, cfg->branch()), guidance);
      } else {
        const at::Tensor c = forward(text_cond, models::CfgBranch::kCond);
        const at::Tensor u = forward(text_uncond, models::CfgBranch::kUncond);
        guided = u + guidance * (c - u);
      }
      return guided;
    };

    // Phase 1: plain steps, timed end to end.
    const bench::Summary timing = bench::TimeIt(device, warmup, repeats, [&] { step(); });
    // Phase 2: profiled steps, every collective bracketed by synchronization to measure it alone.
    for (auto* counted : {sequence_counted.get(), pair_counted.get()}) {
      if (counted == nullptr) continue;
      counted->Reset();
      counted->set_synchronize(true);
    }
    for (int i = 0; i < repeats; ++i) step();
    bench::Synchronize(device);
    auto per_step = [&](parallel::InstrumentedCommunicator* counted, const char* name, double* ms, double* calls,
                        double* mib) {
      *ms = *calls = *mib = 0;
      if (counted == nullptr || counted->stats().count(name) == 0) return;
      const auto& s = counted->stats().at(name);
      *ms = s.seconds * 1e3 / repeats;
      *calls = static_cast<double>(s.calls) / repeats;
      *mib = static_cast<double>(s.bytes) / repeats / (1 << 20);
    };
    double a2a_ms, a2a_calls, a2a_mib, gather_ms, gather_calls, gather_mib, cfg_ms, cfg_calls, cfg_mib;
    per_step(sequence_counted.get(), "all_to_all", &a2a_ms, &a2a_calls, &a2a_mib);
    per_step(sequence_counted.get(), "all_gather", &gather_ms, &gather_calls, &gather_mib);
    per_step(pair_counted.get(), "all_gather", &cfg_ms, &cfg_calls, &cfg_mib);

    // Correctness: the parallel step against the same step on this rank alone (no communication).
    double max_abs_diff = 0, rel_error = 0;
    if (Flag(argc, argv, "--check")) {
      const at::Tensor parallel_out = step();
      models::ForwardContext alone;
      auto c = model->Forward(latents, timestep, text_cond, alone);
      auto u = model->Forward(latents, timestep, text_uncond, alone);
      if (!c.ok() || !u.ok()) return Fail(rank, "reference forward failed");
      const at::Tensor reference = *u + guidance * (*c - *u);
      max_abs_diff = (parallel_out - reference).abs().max().item<double>();
      rel_error = ((parallel_out - reference).norm() / reference.norm()).item<double>();
      max_abs_diff = MaxOverWorld(max_abs_diff);
      rel_error = MaxOverWorld(rel_error);
    }

    // The slowest rank sets the pace of its group.
    const double median = MaxOverWorld(timing.median_ms), min = MaxOverWorld(timing.min_ms),
                 max = MaxOverWorld(timing.max_ms);
    a2a_ms = MaxOverWorld(a2a_ms);
    gather_ms = MaxOverWorld(gather_ms);
    cfg_ms = MaxOverWorld(cfg_ms);
    if (rank == 0) {
      const int64_t tokens = lat_f * (lat_h / config->patch_size[1]) * (lat_w / config->patch_size[2]);
      std::printf("parallel_step_bench device=%s dtype=%s world=%d groups=%d sp=%d cfg_parallel=%d size=%dx%dx%d "
                  "tokens=%lld layers=%lld heads=%lld\n",
                  cuda ? "cuda" : "cpu", dtype_name.c_str(), layout.world_size, layout.group_count(), sp,
                  cfg_parallel ? 1 : 0, width, height, frames, static_cast<long long>(tokens),
                  static_cast<long long>(config->num_layers), static_cast<long long>(config->num_attention_heads));
      std::printf("step         median=%.1f ms min=%.1f max=%.1f (slowest rank, %d repeats after %d warmup)\n",
                  median, min, max, repeats, warmup);
      std::printf("all_to_all   %.1f ms/step (%.0f calls, %.1f MiB sent per rank) share=%.1f%%\n", a2a_ms, a2a_calls,
                  a2a_mib, median > 0 ? 100.0 * a2a_ms / median : 0.0);
      std::printf("all_gather   %.1f ms/step (%.0f calls, output gather)\n", gather_ms, gather_calls);
      std::printf("cfg_exchange %.1f ms/step (%.0f calls, %.1f MiB)\n", cfg_ms, cfg_calls, cfg_mib);
      if (Flag(argc, argv, "--check"))
        std::printf("check        parallel vs single-GPU step: max_abs_diff=%.3e rel_l2=%.3e\n", max_abs_diff, rel_error);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parallel_step_bench rank %d: %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return 0;
}
