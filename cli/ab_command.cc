// `stas ab` and `stas render-suite` (docs/EVALUATION.md).
//
// stas ab --prompts FILE [--seeds 0,1] [render flags, --stas-* for the STAS arm] [--server URL] --out DIR
//   renders every prompt x seed twice from the same noise, without STAS (baseline) and with it, either
//   here (worker::Renderer, the default) or on the render service (POST /jobs, then the MP4 from
//   /v1/videos/{id}/content); evaluates both (eval/video_metrics.h) and writes DIR/report.html (self-
//   contained, the videos beside it in DIR/videos/), DIR/report.json and the massive-activation report
//   of the first prompt (`stas analyze`, run as a child process, in DIR/ma/).
// stas render-suite --prompts FILE --out DIR [--samples 5] [render flags] [--server URL]
//   renders every prompt `samples` times (seeds --seed, --seed + 1, ...) named as VBench's
//   prompt-suite evaluation expects: DIR/{prompt}-{i}.mp4 (manifests in DIR/manifests/).
//
// Exit codes: 0 written; 2 bad input (flags, prompts file, sizes), nothing rendered; 1 a failure while
// rendering, downloading or evaluating; 130 interrupted (videos already finished are kept).
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "cli/commands.h"
#include "cli/dataset_file.h"
#include "cli/http_client.h"
#include "cli/render_flags.h"
#include "common/fs.h"
#include "eval/ab_report.h"
#include "eval/eval_settings.h"
#include "eval/mp4_reader.h"
#include "eval/video_metrics.h"
#include "jobspec/render_spec.h"
#include "models/registry.h"
#include "worker/renderer.h"

extern char** environ;

namespace stas::cli {

namespace {

namespace fs = std::filesystem;

int ExitCodeFor(const Status& st) {
  if (st.code() == StatusCode::kAborted) return 130;
  return (st.code() == StatusCode::kInvalidArgument || st.code() == StatusCode::kNotFound) ? 2 : 1;
}

// Ctrl-C stops at the next denoising step (or poll) so the renderer removes its temporary files; a
// second Ctrl-C ends the process at once.
std::atomic<bool> g_interrupted{false};
extern "C" void OnAbInterrupt(int) {
  g_interrupted.store(true);
  std::signal(SIGINT, SIG_DFL);
}
class InterruptScope {
 public:
  InterruptScope() {
    g_interrupted.store(false);
    previous_ = std::signal(SIGINT, OnAbInterrupt);
  }
  ~InterruptScope() { std::signal(SIGINT, previous_); }

 private:
  void (*previous_)(int);
};

int Fail(const std::string& command, const Status& st) {
  std::cerr << "stas " << command << ": " << st.message() << "\n";
  return ExitCodeFor(st);
}

// One video to produce.
struct RenderJob {
  jobspec::RenderSpec spec;
  std::string out_path;  // the MP4 to write
  std::string label;     // for progress lines
};

// Where videos come from: this process (worker::Renderer) or the render service.
class RenderBackend {
 public:
  virtual ~RenderBackend() = default;
  // Checks what can be checked before anything runs (bad specs are InvalidArgument).
  virtual Status Check(const std::vector<RenderJob>& jobs) = 0;
  // Produces every job's MP4 (progress on stderr).
  virtual Status RenderAll(const std::vector<RenderJob>& jobs) = 0;
  virtual std::string Describe() const = 0;
};

class LocalBackend final : public RenderBackend {
 public:
  LocalBackend(std::string model, std::string device) : model_(std::move(model)), device_(std::move(device)) {}

  Status Check(const std::vector<RenderJob>& jobs) override {
    STAS_ASSIGN_OR_RETURN(models::ModelDescription model, models::InspectModel(model_));
    for (const RenderJob& j : jobs) STAS_RETURN_IF_ERROR(j.spec.ValidateFor(model).WithContext(j.label));
    return Status::Ok();
  }

  Status RenderAll(const std::vector<RenderJob>& jobs) override {
    if (!renderer_) {
      worker::RendererOptions options;
      options.model = model_;
      if (!device_.empty()) {
        try {
          options.device = at::Device(device_);
        } catch (const std::exception&) {
          return InvalidArgument("--device: '" + device_ + "' is not a device (cpu, cuda, cuda:N)");
        }
      }
      std::cerr << "loading " << model_ << "...\n";
      STAS_ASSIGN_OR_RETURN(renderer_, worker::Renderer::Load(options));
    }
    for (const RenderJob& j : jobs) STAS_RETURN_IF_ERROR(renderer_->Check(j.spec).WithContext(j.label));
    const bool tty = ::isatty(STDERR_FILENO) == 1;
    for (size_t i = 0; i < jobs.size(); ++i) {
      const RenderJob& j = jobs[i];
      const std::string prefix = "[" + std::to_string(i + 1) + "/" + std::to_string(jobs.size()) + "] " + j.label;
      std::cerr << prefix << (tty ? "" : "\n") << std::flush;
      worker::RenderControl control;
      control.should_cancel = [] { return g_interrupted.load(); };
      control.on_progress = [&](const worker::RenderProgress& p) {
        if (!tty || p.stage != worker::RenderStage::kDenoise) return;
        std::cerr << "\r" << prefix << "  step " << p.step << "/" << p.steps << std::flush;
      };
      const auto start = std::chrono::steady_clock::now();
      auto result = renderer_->RenderToFile(j.spec, j.out_path, control);
      if (tty) std::cerr << "\r" << prefix;
      if (!result.ok()) {
        if (tty) std::cerr << "\n";
        return result.status().WithContext(j.label);
      }
      if (tty)
        std::cerr << "  done in " << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
                  << " s\n";
    }
    return Status::Ok();
  }

  std::string Describe() const override { return "local"; }

 private:
  std::string model_, device_;
  std::unique_ptr<worker::Renderer> renderer_;
};

class RemoteBackend final : public RenderBackend {
 public:
  static Result<std::unique_ptr<RemoteBackend>> Connect(const std::string& server, std::string token) {
    if (token.empty())
      if (const char* env = std::getenv("STAS_TOKEN")) token = env;
    STAS_ASSIGN_OR_RETURN(auto client, HttpClient::Create(server, token));
    return std::unique_ptr<RemoteBackend>(new RemoteBackend(std::move(client)));
  }

  // The service validates each spec when it is submitted; nothing to check before.
  Status Check(const std::vector<RenderJob>&) override { return Status::Ok(); }

  Status RenderAll(const std::vector<RenderJob>& jobs) override {
    // Submit everything first so the service's worker groups render in parallel.
    std::vector<std::string> ids;
    for (const RenderJob& j : jobs) {
      STAS_ASSIGN_OR_RETURN(HttpResponse r, client_->Post("/jobs", j.spec.ToJson().dump()));
      if (!r.ok()) return InvalidArgument(j.label + ": the service refused the job: " + ApiErrorMessage(r));
      STAS_ASSIGN_OR_RETURN(Json body, JsonBody(r, "POST /jobs"));
      ids.push_back(body.value("id", std::string()));
      if (ids.back().empty()) return Internal("POST /jobs answered without an id: " + r.body);
    }
    std::cerr << "submitted " << jobs.size() << " job(s) to " << client_->server() << "\n";
    std::set<size_t> pending;
    for (size_t i = 0; i < jobs.size(); ++i) pending.insert(i);
    std::map<size_t, std::string> last_state;
    size_t finished = 0;
    while (!pending.empty()) {
      if (g_interrupted.load())
        return Aborted("interrupted; the submitted jobs stay on the service (submitting again finds them: job ids "
                       "are content hashes)");
      for (auto it = pending.begin(); it != pending.end();) {
        const size_t i = *it;
        STAS_ASSIGN_OR_RETURN(HttpResponse r, client_->Get("/jobs/" + UrlEncode(ids[i])));
        if (!r.ok()) return Unavailable(jobs[i].label + ": GET /jobs/" + ids[i] + ": " + ApiErrorMessage(r));
        STAS_ASSIGN_OR_RETURN(Json job, JsonBody(r, "GET /jobs"));
        const std::string state = job.value("state", std::string("?"));
        if (state == "failed" || state == "dead" || state == "cancelled")
          return Aborted(jobs[i].label + ": job " + ids[i] + " is " + state + ": " + job.value("error", std::string()));
        if (state == "done") {
          STAS_RETURN_IF_ERROR(Download(ids[i], jobs[i].out_path).WithContext(jobs[i].label));
          ++finished;
          std::cerr << "[" << finished << "/" << jobs.size() << "] " << jobs[i].label << " done\n";
          it = pending.erase(it);
          continue;
        }
        if (last_state[i] != state && state == "running") std::cerr << "  " << jobs[i].label << " running\n";
        last_state[i] = state;
        ++it;
      }
      if (!pending.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    return Status::Ok();
  }

  std::string Describe() const override { return client_->server(); }

 private:
  explicit RemoteBackend(std::unique_ptr<HttpClient> client) : client_(std::move(client)) {}

  Status Download(const std::string& id, const std::string& path) {
    STAS_ASSIGN_OR_RETURN(HttpResponse r, client_->Get("/v1/videos/" + UrlEncode(id) + "/content"));
    if (!r.ok()) return Unavailable("GET /v1/videos/" + id + "/content: " + ApiErrorMessage(r));
    return WriteFileAtomically(path, r.body);
  }

  std::unique_ptr<HttpClient> client_;
};

Result<std::unique_ptr<RenderBackend>> MakeBackend(const std::string& server, const std::string& token,
                                                   const std::string& model, const std::string& device) {
  if (server.empty()) return std::unique_ptr<RenderBackend>(new LocalBackend(model, device));
  if (!device.empty()) return InvalidArgument("--device applies to local rendering, not with --server");
  STAS_ASSIGN_OR_RETURN(auto remote, RemoteBackend::Connect(server, token));
  return std::unique_ptr<RenderBackend>(std::move(remote));
}

// The prompts of FILE (.txt one per line, .jsonl or .csv records as for `stas submit`) over the base
// spec of the render flags.
Result<std::vector<DatasetRecord>> ReadPrompts(const std::string& file, const RenderFlags& render) {
  if (file.empty()) return InvalidArgument("--prompts FILE is required");
  if (!render.prompt.empty()) return InvalidArgument("give prompts with --prompts FILE, not --prompt");
  RenderFlags base = render;
  base.prompt = "(from the prompts file)";
  STAS_ASSIGN_OR_RETURN(jobspec::RenderSpec spec, base.ToSpec());
  Json base_json = spec.ToJson();
  base_json.erase("prompt");
  STAS_ASSIGN_OR_RETURN(auto records, ReadDataset(file, base_json));
  if (records.empty()) return InvalidArgument("--prompts: " + file + " holds no prompt");
  return records;
}

Status PrepareFolder(const std::string& dir, const std::string& flag) {
  if (dir.empty()) return InvalidArgument(flag + " DIR is required");
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) return InvalidArgument(flag + ": '" + dir + "' is not a folder");
  fs::create_directories(dir, ec);
  if (ec) return IoError(flag + ": cannot create '" + dir + "': " + ec.message());
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------- ab

struct AbFlags {
  RenderFlags render;
  std::string prompts_file;
  std::string seeds = "0";
  std::string server, token;
  std::string out;
  std::string device;
  bool no_analysis = false;
  eval::EvalSettings eval;
};

// Runs `stas analyze` (this executable) on one spec into `dir`: the same analysis, flags and files as
// the command itself. Its output goes to our stderr.
Status RunAnalyzeChild(const jobspec::RenderSpec& spec, const std::string& dir, const std::string& device) {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return Internal("cannot find this executable (/proc/self/exe): " + ec.message());
  std::vector<std::string> args = {self.string(), "analyze", "--model", spec.model, "--prompt", spec.prompt,
                                   "--seed", std::to_string(spec.seed), "--out", dir};
  if (!spec.negative_prompt.empty()) args.insert(args.end(), {"--negative-prompt", spec.negative_prompt});
  auto add_int = [&](const char* flag, const std::optional<int>& v) {
    if (v) args.insert(args.end(), {flag, std::to_string(*v)});
  };
  auto add_double = [&](const char* flag, const std::optional<double>& v) {
    if (v) args.insert(args.end(), {flag, std::to_string(*v)});
  };
  add_int("--height", spec.height);
  add_int("--width", spec.width);
  add_int("--frames", spec.frames);
  add_int("--steps", spec.steps);
  add_double("--guidance", spec.guidance);
  add_double("--shift", spec.shift);
  if (!device.empty()) args.insert(args.end(), {"--device", device});
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, STDERR_FILENO, STDOUT_FILENO);  // keep our stdout for results
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return Internal("cannot start stas analyze: " + std::string(std::strerror(rc)));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return Internal("stas analyze exited with " +
                    (WIFEXITED(status) ? "code " + std::to_string(WEXITSTATUS(status)) : std::string("a signal")));
  return Status::Ok();
}

// The first-step hierarchy of an analysis.json (means over blocks), as `stas analyze` prints it.
Json MaSummary(const Json& analysis, const std::string& channels_file) {
  Json s = Json::object();
  double sums[3] = {0, 0, 0};
  int counts[3] = {0, 0, 0};
  const char* keys[3] = {"first_frame", "boundary", "interior"};
  if (analysis.contains("records"))
    for (const Json& r : analysis["records"]) {
      if (r.value("step", -1) != 0) continue;
      for (int c = 0; c < 3; ++c)
        if (r.contains(keys[c]) && r[keys[c]].is_number()) sums[c] += r[keys[c]].get<double>(), ++counts[c];
    }
  Json h = Json::object();
  for (int c = 0; c < 3; ++c) h[keys[c]] = counts[c] ? Json(sums[c] / counts[c]) : Json(nullptr);
  s["step0_mean_ma_magnitude"] = h;
  auto channels = ReadJsonFile(channels_file);
  if (channels.ok() && channels->contains("global")) s["ma_channels"] = (*channels)["global"];
  return s;
}

void AddMaReport(const AbFlags& flags, const jobspec::RenderSpec& spec, eval::AbReport* report) {
  report->ma_prompt = spec.prompt;
  if (flags.no_analysis) {
    report->ma_note = "skipped (--no-analysis)";
    return;
  }
  std::error_code ec;
  if (spec.model != "tiny" && !fs::is_directory(spec.model, ec)) {
    report->ma_note = "not available: the model '" + spec.model + "' is not a folder on this machine (run stas analyze "
                      "where the checkpoint is)";
    return;
  }
  const std::string dir = (fs::path(flags.out) / "ma").string();
  std::cerr << "massive-activation analysis of prompt 1 (stas analyze)...\n";
  Status st = RunAnalyzeChild(spec, dir, flags.server.empty() ? flags.device : "");
  if (!st.ok()) {
    report->ma_note = "stas analyze failed: " + st.message();
    std::cerr << "warning: " << report->ma_note << "\n";
    return;
  }
  auto analysis = ReadJsonFile(dir + "/analysis.json");
  auto html = ReadFile(dir + "/report.html");
  if (!analysis.ok() || !html.ok()) {
    report->ma_note = "stas analyze wrote no report in " + dir;
    return;
  }
  report->ma_summary = MaSummary(*analysis, dir + "/ma_channels.json");
  report->ma_report_html = *html;
  report->ma_note = "Analysis of the baseline (unsteered) run, conditional branch; files: ma/analysis.json, "
                    "ma/ma_channels.json, ma/report.html.";
}

std::string Num(double v, int digits) {
  if (!std::isfinite(v)) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%+.*f", digits, v);
  return buf;
}

int RunAb(const AbFlags& flags) {
  const std::string cmd = "ab";
  auto records = ReadPrompts(flags.prompts_file, flags.render);
  if (!records.ok()) return Fail(cmd, records.status());
  auto seeds = ParseIndexList(flags.seeds, "--seeds");
  if (!seeds.ok()) return Fail(cmd, seeds.status());
  if (seeds->empty()) return Fail(cmd, InvalidArgument("--seeds: give at least one seed"));
  auto metric_options = flags.eval.Options();
  if (!metric_options.ok()) return Fail(cmd, metric_options.status());
  if (!eval::CanReadVideo()) return Fail(cmd, NotImplemented("built without FFmpeg: stas ab needs a build with STAS_WITH_FFMPEG"));
  // The STAS arm: the --stas-* flags with STAS on, whether or not --stas was given.
  RenderFlags stas_flags = flags.render;
  stas_flags.stas = true;
  stas_flags.prompt = "-";
  auto stas_spec = stas_flags.ToSpec();
  if (!stas_spec.ok()) return Fail(cmd, stas_spec.status());
  auto encoders = flags.eval.LoadEncoders();
  if (!encoders.ok()) return Fail(cmd, encoders.status());
  std::vector<eval::FeatureEncoder*> encoder_ptrs;
  for (auto& e : *encoders) encoder_ptrs.push_back(e.get());

  // Cases: prompt x seed, each an A (baseline) and a B (STAS) job with the same noise.
  struct Case {
    jobspec::RenderSpec a, b;
    std::string a_rel, b_rel;
  };
  std::vector<Case> cases;
  std::vector<RenderJob> jobs;
  for (size_t p = 0; p < records->size(); ++p)
    for (int seed : *seeds) {
      Case c;
      c.a = (*records)[p].spec;
      c.a.seed = static_cast<uint64_t>(seed);
      c.a.stas = steering::StasOptions{};
      c.b = c.a;
      c.b.stas = stas_spec->stas;
      const std::string stem = "p" + std::to_string(p + 1) + "-s" + std::to_string(seed);
      c.a_rel = "videos/" + stem + "-baseline.mp4";
      c.b_rel = "videos/" + stem + "-stas.mp4";
      jobs.push_back({c.a, (fs::path(flags.out) / c.a_rel).string(), stem + " baseline"});
      jobs.push_back({c.b, (fs::path(flags.out) / c.b_rel).string(), stem + " stas"});
      cases.push_back(std::move(c));
    }
  auto backend = MakeBackend(flags.server, flags.token, flags.render.model, flags.device);
  if (!backend.ok()) return Fail(cmd, backend.status());
  if (Status st = (*backend)->Check(jobs); !st.ok()) return Fail(cmd, st);
  if (Status st = PrepareFolder((fs::path(flags.out) / "videos").string(), "--out"); !st.ok()) return Fail(cmd, st);

  std::cerr << "ab: " << records->size() << " prompt(s) x " << seeds->size() << " seed(s) x {baseline, stas} = "
            << jobs.size() << " videos (" << (*backend)->Describe() << ")\n";
  {
    InterruptScope interrupt;
    if (Status st = (*backend)->RenderAll(jobs); !st.ok()) return Fail(cmd, st);
  }

  eval::AbReport report;
  report.model = flags.render.model;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    std::cerr << "evaluating " << (i + 1) << "/" << cases.size() << "\n";
    eval::AbCase ab;
    ab.prompt = c.a.prompt;
    ab.seed = c.a.seed;
    at::Tensor frames[2];
    for (int arm = 0; arm < 2; ++arm) {
      const std::string& rel = arm == 0 ? c.a_rel : c.b_rel;
      auto video = eval::ReadVideo((fs::path(flags.out) / rel).string());
      if (!video.ok()) return Fail(cmd, video.status());
      auto m = eval::EvaluateFrames(video->frames, *metric_options, encoder_ptrs, rel);
      if (!m.ok()) return Fail(cmd, m.status());
      eval::AbArm& out = arm == 0 ? ab.baseline : ab.stas;
      out.video = rel;
      out.metrics = std::move(*m);
      frames[arm] = video->frames;
    }
    auto diff = eval::CompareVideos(frames[0], frames[1], *metric_options);
    if (diff.ok()) ab.stas_vs_baseline = *diff;
    report.cases.push_back(std::move(ab));
  }
  Json seeds_json = *seeds;
  report.settings = {{"backend", (*backend)->Describe()},
                     {"seeds", seeds_json},
                     {"prompts_file", flags.prompts_file},
                     {"temporal_compression", metric_options->temporal_compression},
                     {"baseline", cases.front().a.ToJson()},
                     {"stas", cases.front().b.ToJson()}};
  AddMaReport(flags, cases.front().a, &report);

  const fs::path out(flags.out);
  for (const auto& [name, text] :
       {std::pair<std::string, std::string>{"report.html", eval::RenderAbReportHtml(report)},
        {"report.json", eval::AbReportJson(report).dump(1) + "\n"}}) {
    if (Status st = WriteFileAtomically((out / name).string(), text); !st.ok()) return Fail(cmd, st);
  }
  std::cout << "metric                                  n   mean delta (STAS - baseline)   95% CI (paired t)\n";
  for (const eval::AbMetricSummary& s : eval::SummarizeAb(report)) {
    char line[256];
    std::snprintf(line, sizeof(line), "%-38s %3lld   %-29s  %s", s.metric.label.c_str(),
                  static_cast<long long>(s.interval.n), s.interval.n ? Num(s.interval.mean, 4).c_str() : "n/a",
                  s.interval.has_ci ? ("[" + Num(s.interval.low, 4) + ", " + Num(s.interval.high, 4) + "]").c_str()
                                    : "n/a (needs 2+ cases)");
    std::cout << line << "\n";
  }
  std::cout << "wrote " << (out / "report.html").string() << " and " << (out / "report.json").string() << "\n";
  return 0;
}

// ------------------------------------------------------------------------------------ render-suite

struct SuiteFlags {
  RenderFlags render;
  std::string prompts_file;
  std::string out;
  int samples = 5;
  std::string server, token;
  std::string device;
};

// VBench's prompt-suite file name: the prompt itself, "-", the sample index. A prompt that cannot be
// a file name is refused rather than changed, since VBench finds videos by the exact prompt.
Status CheckSuiteName(const std::string& prompt, const std::string& where) {
  if (prompt.find('/') != std::string::npos || prompt.find('\0') != std::string::npos)
    return InvalidArgument(where + ": the prompt contains '/', which cannot be part of a file name");
  if (prompt.empty() || prompt[0] == '.') return InvalidArgument(where + ": the prompt cannot start a file name (empty or '.')");
  if (prompt.size() + 8 > 255) return InvalidArgument(where + ": the prompt is too long for a file name (255 bytes)");
  return Status::Ok();
}

int RunSuite(const SuiteFlags& flags) {
  const std::string cmd = "render-suite";
  if (flags.samples < 1 || flags.samples > 1000) return Fail(cmd, InvalidArgument("--samples must be in [1, 1000]"));
  auto records = ReadPrompts(flags.prompts_file, flags.render);
  if (!records.ok()) return Fail(cmd, records.status());
  std::vector<RenderJob> jobs;
  std::set<std::string> names;
  int skipped = 0;
  for (const DatasetRecord& r : *records) {
    const std::string where = flags.prompts_file + ":" + std::to_string(r.line);
    if (Status st = CheckSuiteName(r.spec.prompt, where); !st.ok()) return Fail(cmd, st);
    for (int i = 0; i < flags.samples; ++i) {
      RenderJob j;
      j.spec = r.spec;
      j.spec.seed = r.spec.seed + static_cast<uint64_t>(i);  // --seed (or the record's seed) is sample 0
      const std::string name = r.spec.prompt + "-" + std::to_string(i) + ".mp4";
      if (!names.insert(name).second) return Fail(cmd, InvalidArgument(where + ": the prompt is repeated"));
      j.out_path = (fs::path(flags.out) / name).string();
      j.label = name;
      std::error_code ec;
      if (fs::exists(j.out_path, ec)) {  // an interrupted suite resumes where it stopped
        ++skipped;
        continue;
      }
      jobs.push_back(std::move(j));
    }
  }
  auto backend = MakeBackend(flags.server, flags.token, flags.render.model, flags.device);
  if (!backend.ok()) return Fail(cmd, backend.status());
  if (Status st = (*backend)->Check(jobs); !st.ok()) return Fail(cmd, st);
  if (Status st = PrepareFolder(flags.out, "--out"); !st.ok()) return Fail(cmd, st);
  std::cerr << "render-suite: " << records->size() << " prompt(s) x " << flags.samples << " sample(s): " << jobs.size()
            << " to render" << (skipped ? ", " + std::to_string(skipped) + " already there" : "") << " ("
            << (*backend)->Describe() << ")\n";
  {
    InterruptScope interrupt;
    if (Status st = (*backend)->RenderAll(jobs); !st.ok()) return Fail(cmd, st);
  }
  // Manifests move out of the video folder, which then holds exactly the suite's videos.
  const fs::path manifests = fs::path(flags.out) / "manifests";
  for (const RenderJob& j : jobs) {
    const std::string manifest = worker::ManifestPathFor(j.out_path);
    std::error_code ec;
    if (!fs::exists(manifest, ec)) continue;
    fs::create_directories(manifests, ec);
    fs::rename(manifest, manifests / fs::path(manifest).filename(), ec);
    if (ec) return Fail(cmd, IoError("cannot move " + manifest + " into " + manifests.string() + ": " + ec.message()));
  }
  std::cout << "wrote " << jobs.size() << " video(s) to " << flags.out << " ({prompt}-{i}.mp4, i = 0.."
            << flags.samples - 1 << ")\n";
  return 0;
}

}  // namespace

void RegisterAb(CLI::App& app) {
  {
    auto flags = std::make_shared<AbFlags>();
    CLI::App* cmd = AddCommand(app, "ab",
                               "A/B evaluation of STAS: render prompts x seeds with and without STAS, compare their "
                               "temporal metrics and write DIR/report.html",
                               [flags] { return RunAb(*flags); });
    flags->render.AddTo(cmd);
    cmd->add_option("--prompts", flags->prompts_file, "prompts file: .txt one per line, or .jsonl/.csv records as for submit");
    cmd->add_option("--seeds", flags->seeds, "comma-separated seeds; each prompt is rendered with each (replaces --seed)")
        ->capture_default_str();
    cmd->add_option("--out", flags->out, "output folder: report.html, report.json, videos/, ma/");
    cmd->add_option("--server", flags->server, "render on this service (http://HOST:PORT) instead of here");
    cmd->add_option("--token", flags->token, "bearer token for --server (default: $STAS_TOKEN)");
    cmd->add_option("--device", flags->device, "local rendering: cpu, cuda or cuda:N");
    cmd->add_flag("--no-analysis", flags->no_analysis, "skip the massive-activation report of the first prompt");
    AddEvalFlags(cmd, &flags->eval);
  }
  {
    auto flags = std::make_shared<SuiteFlags>();
    CLI::App* cmd = AddCommand(app, "render-suite",
                               "Render a prompt suite for VBench: every prompt --samples times, named {prompt}-{i}.mp4",
                               [flags] { return RunSuite(*flags); });
    flags->render.AddTo(cmd);
    cmd->add_option("--prompts", flags->prompts_file, "prompts file (.txt one per line, e.g. VBench's all_dimension.txt)");
    cmd->add_option("--out", flags->out, "output folder (created if missing)");
    cmd->add_option("--samples", flags->samples, "videos per prompt; sample i uses seed --seed + i")->capture_default_str();
    cmd->add_option("--server", flags->server, "render on this service (http://HOST:PORT) instead of here");
    cmd->add_option("--token", flags->token, "bearer token for --server (default: $STAS_TOKEN)");
    cmd->add_option("--device", flags->device, "local rendering: cpu, cuda or cuda:N");
  }
}

}  // namespace stas::cli
