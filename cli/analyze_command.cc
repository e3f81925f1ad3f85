// `stas analyze`: runs the sampler with the massive-activation analysis hook on one or more prompts and
// writes analysis.json, ma_channels.json (the calibrated MA channels `stas render --stas --stas-channels`
// loads) and a self-contained report.html. docs/STAS.md, sections 8 and 9.
//
// Takes the render flags (model, prompt, size, steps, guidance, seed, and --stas ... to analyse a
// steered run) plus the analysis flags below. Only denoising runs: no VAE decode, no video.
//
// Exit codes: 0 written; 2 bad input (flags, sizes, prompts file, model folder), nothing written;
// 1 a failure while loading or sampling.
#include <cmath>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "cli/dataset_file.h"
#include "cli/render_flags.h"
#include "common/fs.h"
#include "common/log.h"
#include "jobspec/render_spec.h"
#include "models/registry.h"
#include "steering/ma_analysis.h"
#include "worker/renderer.h"

namespace stas::cli {

namespace {

namespace fs = std::filesystem;

struct AnalyzeFlags {
  RenderFlags render;
  std::string prompts_file;
  std::string out;
  std::string device;
  double tau = 100.0;
  int k = 8;
  int profile_points = 2048;
  std::string profile_steps;  // "0,10,49"
  std::string branch = "cond";
};

int ExitCodeFor(const Status& st) {
  return (st.code() == StatusCode::kInvalidArgument || st.code() == StatusCode::kNotFound) ? 2 : 1;
}

int Fail(const Status& st) {
  std::cerr << "stas analyze: " << st.message() << "\n";
  return ExitCodeFor(st);
}

Result<at::Device> ParseDevice(const std::string& text) {
  if (text.empty()) return worker::DefaultRenderDevice();
  try {
    at::Device device(text);
    if (device.is_cuda() && !STAS_HAVE_CUDA) return InvalidArgument("--device: this build has no CUDA support");
    if (!device.is_cpu() && !device.is_cuda()) return InvalidArgument("--device must be cpu or cuda[:N]");
    return device;
  } catch (const std::exception&) {
    return InvalidArgument("--device: '" + text + "' is not a device (cpu, cuda, cuda:1)");
  }
}

// The specs to analyse: the flags' own prompt, or one per record of --prompts (records may override the
// seed and prompts; the video size and step count must be the same for all).
Result<std::vector<jobspec::RenderSpec>> CollectSpecs(const AnalyzeFlags& flags,
                                                      const models::ModelDescription& model) {
  std::vector<jobspec::RenderSpec> specs;
  if (flags.prompts_file.empty()) {
    if (flags.render.prompt.empty()) return InvalidArgument("give --prompt TEXT or --prompts FILE");
    STAS_ASSIGN_OR_RETURN(jobspec::RenderSpec spec, flags.render.ToSpec());
    specs.push_back(std::move(spec));
  } else {
    if (!flags.render.prompt.empty()) return InvalidArgument("give either --prompt or --prompts, not both");
    RenderFlags base_flags = flags.render;
    base_flags.prompt = "-";  // a placeholder so the base spec validates; every record sets its prompt
    STAS_ASSIGN_OR_RETURN(jobspec::RenderSpec base, base_flags.ToSpec());
    STAS_ASSIGN_OR_RETURN(auto records, ReadDataset(flags.prompts_file, base.ToJson()));
    if (records.empty()) return InvalidArgument("--prompts: " + flags.prompts_file + " has no prompts");
    for (auto& r : records) specs.push_back(std::move(r.spec));
  }
  for (auto& s : specs) {
    STAS_RETURN_IF_ERROR(s.ValidateFor(model));
    s.ResolveDefaults(model);
  }
  for (const auto& s : specs)
    if (*s.height != *specs[0].height || *s.width != *specs[0].width || *s.frames != *specs[0].frames ||
        *s.steps != *specs[0].steps)
      return InvalidArgument("--prompts: every prompt of one analysis must use the same height, width, frames and steps");
  return specs;
}

Status CheckOutFolder(const std::string& out) {
  if (out.empty()) return InvalidArgument("--out DIR is required");
  std::error_code ec;
  if (fs::exists(out, ec) && !fs::is_directory(out, ec)) return InvalidArgument("--out: '" + out + "' is not a folder");
  return Status::Ok();
}

Result<steering::MaAnalysisOptions> AnalysisOptions(const AnalyzeFlags& flags, const steering::StasOptions& stas) {
  steering::MaAnalysisOptions o;
  if (!(flags.tau > 1) || !std::isfinite(flags.tau)) return InvalidArgument("--tau must be > 1");
  if (flags.k < 1 || flags.k > 4096) return InvalidArgument("--k must be in [1, 4096]");
  if (flags.profile_points < 16 || flags.profile_points > 100000)
    return InvalidArgument("--profile-points must be in [16, 100000]");
  o.tau = flags.tau;
  o.max_channels = flags.k;
  o.profile_points = flags.profile_points;
  if (!flags.profile_steps.empty()) {
    STAS_ASSIGN_OR_RETURN(o.profile_steps, ParseIndexList(flags.profile_steps, "--profile-steps"));
  }
  if (flags.branch != "cond" && flags.branch != "uncond") return InvalidArgument("--branch must be cond or uncond");
  o.branch = flags.branch == "cond" ? models::CfgBranch::kCond : models::CfgBranch::kUncond;
  o.mask = stas;
  return o;
}

int RunAnalyze(const AnalyzeFlags& flags) {
  if (Status st = CheckOutFolder(flags.out); !st.ok()) return Fail(st);
  auto model = models::InspectModel(flags.render.model);
  if (!model.ok()) return Fail(model.status());
  auto specs = CollectSpecs(flags, *model);
  if (!specs.ok()) return Fail(specs.status());
  const jobspec::RenderSpec& first = specs->front();
  auto options = AnalysisOptions(flags, first.stas);
  if (!options.ok()) return Fail(options.status());
  if (options->branch == models::CfgBranch::kUncond && !(*first.guidance > 1.0))
    return Fail(InvalidArgument("--branch uncond needs classifier-free guidance (--guidance > 1)"));
  for (int s : options->profile_steps)
    if (s >= *first.steps)
      return Fail(InvalidArgument("--profile-steps: step " + std::to_string(s) + " is not below --steps " +
                                  std::to_string(*first.steps)));
  auto device = ParseDevice(flags.device);
  if (!device.ok()) return Fail(device.status());
  const at::ScalarType dtype = device->is_cuda() ? at::kBFloat16 : at::kFloat;

  worker::RendererOptions renderer_options;
  renderer_options.model = flags.render.model;
  renderer_options.device = *device;
  renderer_options.dtype = dtype;
  auto renderer = worker::Renderer::Load(renderer_options);
  if (!renderer.ok()) return Fail(renderer.status());
  std::cerr << "analyze: " << flags.render.model << " loaded on " << device->str() << " in "
            << (*renderer)->load_seconds() << " s\n";
  const steering::StasModelInfo info = (*renderer)->stas_model_info();

  // The renderer runs STAS (--stas ...) first; the analysis hook then sees the steered stream.
  steering::MaAnalysisHook analysis(*options);
  worker::RenderControl control;
  control.observer = &analysis;
  control.on_progress = [](const worker::RenderProgress& p) {
    if (p.stage == worker::RenderStage::kDenoise && p.step > 0) STAS_LOG_INFO("analyze: step {}/{}", p.step, p.steps);
  };
  for (size_t i = 0; i < specs->size(); ++i) {
    const jobspec::RenderSpec& spec = (*specs)[i];
    std::cerr << "analyze: prompt " << (i + 1) << "/" << specs->size() << " (" << *spec.steps << " steps, "
              << *spec.width << "x" << *spec.height << "x" << *spec.frames << ", seed " << spec.seed << ")\n";
    analysis.BeginRun({{"prompt", spec.prompt}, {"negative_prompt", spec.negative_prompt}, {"seed", spec.seed}});
    if (auto run = (*renderer)->Sample(spec, control); !run.ok()) return Fail(run.status());
  }

  const Json result = analysis.ToJson(info.model_id);
  auto channels = analysis.Calibrate(info.model_id, info.hidden_dim);
  if (!channels.ok()) return Fail(channels.status());
  std::error_code ec;
  fs::create_directories(flags.out, ec);
  if (ec) return Fail(IoError("--out: cannot create '" + flags.out + "': " + ec.message()));
  const fs::path out(flags.out);
  for (const auto& [name, text] : {std::pair<std::string, std::string>{"analysis.json", result.dump(1) + "\n"},
                                   {"report.html", steering::RenderMaReportHtml(result)}}) {
    if (Status st = WriteFileAtomically((out / name).string(), text); !st.ok()) return Fail(st);
  }
  if (Status st = channels->Save((out / "ma_channels.json").string()); !st.ok()) return Fail(st);

  // A short summary: the calibrated channels and the hierarchy at the first step (mean over blocks).
  double sums[3] = {0, 0, 0};
  int counts[3] = {0, 0, 0};
  for (const Json& r : result["records"]) {
    if (r["step"] != 0) continue;
    const char* keys[3] = {"first_frame", "boundary", "interior"};
    for (int c = 0; c < 3; ++c)
      if (r[keys[c]].is_number()) sums[c] += r[keys[c]].get<double>(), ++counts[c];
  }
  std::cout << "MA channels (global):";
  for (size_t i = 0; i < channels->global.channels.size(); ++i)
    std::cout << " " << channels->global.channels[i] << " (" << channels->global.peak_median_ratios[i] << "x)";
  if (channels->global.channels.empty()) std::cout << " none over tau = " << flags.tau;
  std::cout << "\n";
  if (counts[0] && counts[1] && counts[2])
    std::cout << "step 0 mean MA magnitude: first frame " << sums[0] / counts[0] << ", boundary " << sums[1] / counts[1]
              << ", interior " << sums[2] / counts[2] << "\n";
  std::cout << "wrote " << (out / "analysis.json").string() << ", " << (out / "ma_channels.json").string() << ", "
            << (out / "report.html").string() << "\n";
  return 0;
}

}  // namespace

void RegisterAnalyze(CLI::App& app) {
  static AnalyzeFlags flags;
  CLI::App* cmd = AddCommand(app, "analyze",
                             "Massive-activation analysis: run the sampler with the MA analysis hook and write "
                             "analysis.json, ma_channels.json (for --stas-channels) and report.html",
                             [] { return RunAnalyze(flags); });
  flags.render.AddTo(cmd);
  cmd->add_option("--prompts", flags.prompts_file,
                  "prompts file (.txt one per line, .jsonl or .csv with RenderSpec fields) instead of --prompt");
  cmd->add_option("--out", flags.out, "output folder (created if missing)")->required();
  cmd->add_option("--device", flags.device, "cpu or cuda[:N] (default: cuda:0 when present, else cpu)");
  cmd->add_option("--tau", flags.tau, "MA detection: peak |h| >= tau x layer median |h|")->capture_default_str();
  cmd->add_option("--max-channels,--k", flags.k, "MA detection: at most k channels per block")->capture_default_str();
  cmd->add_option("--profile-points", flags.profile_points, "per-token profiles are binned to at most this many points")
      ->capture_default_str();
  cmd->add_option("--profile-steps", flags.profile_steps,
                  "steps whose per-token profiles are kept, e.g. 0,10,49 (default: first, middle, last)");
  cmd->add_option("--branch", flags.branch, "CFG rows to analyse: cond or uncond")->capture_default_str();
}

}  // namespace stas::cli
