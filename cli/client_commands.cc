// Client commands of the render service: `stas submit`, `status`, `watch`, `cancel`. They talk to the
// coordinator's HTTP API (docs/API.md) through cli/http_client.h; docs/OPERATIONS.md shows them in use.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "cli/dataset_file.h"
#include "cli/http_client.h"
#include "cli/render_flags.h"
#include "jobspec/render_spec.h"

namespace stas::cli {

namespace {

using Clock = std::chrono::steady_clock;

// --server and --token, shared by the four commands.
struct ServerFlags {
  std::string server;
  std::string token;
  double timeout_s = 60;
};

void AddServerFlags(CLI::App* cmd, ServerFlags* flags) {
  cmd->add_option("--server", flags->server, "the coordinator's HTTP address, http://HOST:PORT (default: $STAS_SERVER)");
  cmd->add_option("--token", flags->token, "bearer token for a coordinator that requires one (default: $STAS_TOKEN)");
  cmd->add_option("--http-timeout", flags->timeout_s, "seconds to wait for each HTTP answer")->check(CLI::PositiveNumber);
}

Result<std::unique_ptr<HttpClient>> Connect(const ServerFlags& flags) {
  std::string server = flags.server;
  if (server.empty()) {
    const char* env = std::getenv("STAS_SERVER");
    if (env) server = env;
  }
  if (server.empty()) return InvalidArgument("--server http://HOST:PORT is required (or set STAS_SERVER)");
  std::string token = flags.token;
  if (token.empty()) {
    const char* env = std::getenv("STAS_TOKEN");
    if (env) token = env;
  }
  return HttpClient::Create(server, token, static_cast<int>(flags.timeout_s * 1000));
}

int Fail(const std::string& command, const std::string& message, int code = 1) {
  std::cerr << "stas " << command << ": " << message << "\n";
  return code;
}

bool IsTerminal(const std::string& state) {
  return state == "done" || state == "failed" || state == "cancelled" || state == "dead";
}

// The fields of a job the client shows, read leniently from GET /jobs answers.
struct JobView {
  std::string id, state = "?", stage, worker, output, error, prompt, dataset;
  int step = 0, steps = 0, attempts = 0, max_attempts = 0;
};

std::string StringOr(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}
int IntOr(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<int>() : 0;
}

JobView ViewOf(const Json& j) {
  JobView v;
  v.id = StringOr(j, "id");
  v.state = StringOr(j, "state");
  v.worker = StringOr(j, "worker");
  v.output = StringOr(j, "output");
  v.error = StringOr(j, "error");
  v.prompt = StringOr(j, "prompt");
  v.dataset = StringOr(j, "dataset");
  v.attempts = IntOr(j, "attempts");
  v.max_attempts = IntOr(j, "max_attempts");
  if (j.contains("progress") && j["progress"].is_object()) {
    v.step = IntOr(j["progress"], "step");
    v.steps = IntOr(j["progress"], "steps");
    v.stage = StringOr(j["progress"], "stage");
  }
  return v;
}

std::string Bar(double fraction, int width) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(std::lround(fraction * width));
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

std::string Shorten(std::string text, size_t width) {
  for (char& c : text)
    if (c == '\n' || c == '\t') c = ' ';
  if (text.size() > width) text = text.substr(0, width - 3) + "...";
  return text;
}

std::string ProgressText(const JobView& v) {
  if (v.state == "done") return "done";
  if (v.steps <= 0) return v.state == "running" ? "starting" : "-";
  return std::to_string(v.step) + "/" + std::to_string(v.steps);
}

// ------------------------------------------------------------------------------------------- submit

struct SubmitFlags {
  ServerFlags server;
  std::string dataset_file;
  std::string dataset_name;
  int batch_size = 500;
  bool quiet = false;
  RenderFlags render;
};

int Submit(const SubmitFlags& flags) {
  const std::string cmd = "submit";
  if (flags.render.prompt.empty() == flags.dataset_file.empty())
    return Fail(cmd, "give exactly one of --prompt TEXT or --dataset FILE", 2);

  // Everything is validated before anything is sent: bad input changes nothing.
  std::vector<jobspec::RenderSpec> specs;
  std::vector<int> lines;
  if (!flags.render.prompt.empty()) {
    auto spec = flags.render.ToSpec();
    if (!spec.ok()) return Fail(cmd, spec.status().message(), 2);
    if (!flags.dataset_name.empty()) {
      spec->dataset = flags.dataset_name;
      Status st = spec->Validate();
      if (!st.ok()) return Fail(cmd, st.message(), 2);
    }
    specs.push_back(std::move(*spec));
  } else {
    // The flags give every record's defaults; each record brings its own prompt.
    RenderFlags defaults = flags.render;
    defaults.prompt = "(from the dataset)";
    auto base = defaults.ToSpec();
    if (!base.ok()) return Fail(cmd, base.status().message(), 2);
    Json base_json = base->ToJson();
    base_json.erase("prompt");
    if (base_json.contains("stas")) base_json["stas"].erase("channels_file");  // inlined below
    auto records = ReadDataset(flags.dataset_file, base_json, flags.dataset_name);
    if (!records.ok()) return Fail(cmd, records.status().message(), 2);
    for (auto& r : *records) {
      lines.push_back(r.line);
      specs.push_back(std::move(r.spec));
    }
  }

  // A job names no file of a worker's machine: calibrated channels given as a local file travel inline.
  if (!flags.render.stas_channels.empty()) {
    auto channels = ReadJsonFile(flags.render.stas_channels);
    if (!channels.ok()) return Fail(cmd, "--stas-channels: " + channels.status().message(), 2);
    for (auto& spec : specs) {
      spec.stas.channels_file.clear();
      spec.stas.channels = *channels;
      Status st = spec.Validate();
      if (!st.ok()) return Fail(cmd, "--stas-channels: " + st.message(), 2);
    }
  }
  // Two records writing the same output would collide only after both rendered: refuse them now.
  {
    std::map<std::pair<std::string, std::string>, size_t> names;
    for (size_t i = 0; i < specs.size(); ++i) {
      if (specs[i].output_name.empty()) continue;
      auto [it, fresh] = names.emplace(std::make_pair(specs[i].dataset, specs[i].output_name), i);
      if (!fresh) {
        auto where = [&](size_t k) { return lines.empty() ? "" : flags.dataset_file + ":" + std::to_string(lines[k]); };
        return Fail(cmd, "output name '" + specs[i].output_name + "' is used twice (" + where(it->second) + " and " +
                             where(i) + "); nothing was submitted", 2);
      }
    }
  }

  auto client = Connect(flags.server);
  if (!client.ok()) return Fail(cmd, client.status().message(), 2);
  const bool show_bar = specs.size() > 1 && !flags.quiet && ::isatty(STDERR_FILENO);
  const size_t batch = static_cast<size_t>(std::max(1, flags.batch_size));
  size_t sent = 0;
  int created = 0;
  // The coordinator refuses bodies over 8 MiB by default: a batch also ends at 4 MiB.
  constexpr size_t kMaxBatchBytes = 4u << 20;
  // Two passes over the batches: the first only validates on the coordinator (dry_run: its model and
  // limit checks), the second queues. A bad record anywhere leaves nothing queued.
  const bool multi_batch = specs.size() > batch;
  for (int pass = multi_batch ? 0 : 1; pass < 2; ++pass)
  for (size_t begin = 0, end = 0; begin < specs.size(); begin = end) {
    const bool dry_run = pass == 0;
    Json jobs = Json::array();
    size_t bytes = 0;
    for (end = begin; end < specs.size() && end - begin < batch; ++end) {
      Json j = specs[end].ToJson();
      const size_t size = j.dump().size();
      if (end > begin && bytes + size > kMaxBatchBytes) break;
      bytes += size;
      jobs.push_back(std::move(j));
    }
    Json request = {{"jobs", jobs}};
    if (dry_run) request["dry_run"] = true;
    auto response = (*client)->Post("/jobs", request.dump());
    if (!response.ok()) {
      if (show_bar) std::cerr << "\n";
      return Fail(cmd, response.status().message() +
                           (sent ? " (" + std::to_string(sent) + " jobs were submitted before; submitting the same "
                                   "input again is safe: job ids are content hashes)"
                                 : ""));
    }
    if (!response->ok()) {
      if (show_bar) std::cerr << "\n";
      std::string message = ApiErrorMessage(*response);
      // "jobs[i]: ..." names an index in this batch; point at the dataset line instead.
      if (!lines.empty() && message.find("jobs[") != std::string::npos) {
        const size_t open = message.find("jobs[") + 5;
        const size_t close = message.find(']', open);
        try {
          const size_t index = begin + std::stoul(message.substr(open, close - open));
          if (index < lines.size())
            message += " (" + flags.dataset_file + ":" + std::to_string(lines[index]) + ")";
        } catch (const std::exception&) {
        }
      }
      if (sent) message += " (" + std::to_string(sent) + " jobs were submitted before this batch)";
      else message += " (nothing was submitted)";
      return Fail(cmd, message);
    }
    if (dry_run) continue;
    auto body = JsonBody(*response, "POST /jobs");
    if (!body.ok() || !body->contains("ids") || !(*body)["ids"].is_array() || (*body)["ids"].size() != end - begin)
      return Fail(cmd, "unexpected answer to POST /jobs: " + Shorten(response->body, 300));
    for (const auto& id : (*body)["ids"]) std::cout << id.get<std::string>() << "\n";
    std::cout.flush();
    created += IntOr(*body, "created");
    sent = end;
    if (show_bar)
      std::cerr << "\rsubmitting " << Bar(static_cast<double>(sent) / specs.size(), 40) << " " << sent << "/"
                << specs.size() << std::flush;
  }
  if (show_bar) std::cerr << "\n";
  if (specs.size() > 1 && !flags.quiet) {
    std::cerr << "submitted " << specs.size() << " jobs: " << created << " new, " << specs.size() - created
              << " already known";
    if (!specs.front().dataset.empty()) std::cerr << " (dataset '" << specs.front().dataset << "')";
    std::cerr << "\n";
  }
  return 0;
}

// ------------------------------------------------------------------------------------------- status

struct StatusFlags {
  ServerFlags server;
  std::string job_id;
  bool json = false;
  std::string state;
  std::string dataset;
  int limit = 50;
};

int ShowOneJob(HttpClient& client, const StatusFlags& flags) {
  auto response = client.Get("/jobs/" + UrlEncode(flags.job_id));
  if (!response.ok()) return Fail("status", response.status().message());
  if (!response->ok()) return Fail("status", ApiErrorMessage(*response));
  auto body = JsonBody(*response, "GET /jobs/" + flags.job_id);
  if (!body.ok()) return Fail("status", body.status().message());
  if (flags.json) {
    std::cout << body->dump(2) << "\n";
    return 0;
  }
  const JobView v = ViewOf(*body);
  auto row = [](const std::string& key, const std::string& value) {
    if (!value.empty()) std::cout << std::left << std::setw(10) << key << " " << value << "\n";
  };
  row("id", v.id);
  row("state", v.state);
  row("progress", v.steps > 0 ? std::to_string(v.step) + "/" + std::to_string(v.steps) + (v.stage.empty() ? "" : " (" + v.stage + ")")
                              : v.stage);
  row("attempts", std::to_string(v.attempts) + (v.max_attempts ? " of " + std::to_string(v.max_attempts) : ""));
  row("worker", v.worker);
  row("dataset", v.dataset);
  row("prompt", Shorten(v.prompt, 200));
  row("output", v.output);
  row("error", v.error);
  return 0;
}

int Status(const StatusFlags& flags) {
  auto client = Connect(flags.server);
  if (!client.ok()) return Fail("status", client.status().message(), 2);
  if (!flags.job_id.empty()) return ShowOneJob(**client, flags);
  std::string query = "/jobs?limit=" + std::to_string(std::clamp(flags.limit, 1, 1000));
  if (!flags.state.empty()) query += "&state=" + UrlEncode(flags.state);
  if (!flags.dataset.empty()) query += "&dataset=" + UrlEncode(flags.dataset);
  auto response = (*client)->Get(query);
  if (!response.ok()) return Fail("status", response.status().message());
  if (!response->ok()) return Fail("status", ApiErrorMessage(*response));
  auto body = JsonBody(*response, "GET /jobs");
  if (!body.ok()) return Fail("status", body.status().message());
  if (flags.json) {
    std::cout << body->dump(2) << "\n";
    return 0;
  }
  const Json jobs = body->value("jobs", Json::array());
  std::cout << std::left << std::setw(34) << "ID" << std::setw(10) << "STATE" << std::setw(10) << "PROGRESS"
            << std::setw(9) << "ATTEMPTS" << std::setw(22) << "WORKER"
            << "OUTPUT / ERROR / PROMPT\n";
  for (const auto& j : jobs) {
    const JobView v = ViewOf(j);
    std::string detail = v.state == "done" ? v.output : !v.error.empty() ? v.error : v.prompt;
    std::cout << std::setw(34) << v.id << std::setw(10) << v.state << std::setw(10) << ProgressText(v) << std::setw(9)
              << v.attempts << std::setw(22) << Shorten(v.worker, 21) << Shorten(detail, 60) << "\n";
  }
  const int64_t total = body->value("total", static_cast<int64_t>(jobs.size()));
  if (total > static_cast<int64_t>(jobs.size()))
    std::cout << "(" << jobs.size() << " of " << total << " jobs shown, newest first; --limit N shows more)\n";
  return 0;
}

// -------------------------------------------------------------------------------------------- watch

struct WatchFlags {
  ServerFlags server;
  std::vector<std::string> job_ids;
  std::string dataset;
  double interval_s = 1.0;
  double timeout_s = 0;  // 0 = no limit
};

// Says once that the coordinator stopped answering, and once that it is back. A coordinator that is
// restarting is waited for, not given up on.
class Reachability {
 public:
  // Returns false (after warning once) when the response says the coordinator is not answering.
  bool Note(const Result<HttpResponse>& response, int* drawn_lines) {
    if (!response.ok() || response->status >= 500) {
      if (!warned_) {
        std::cerr << "stas watch: coordinator not answering ("
                  << (response.ok() ? ApiErrorMessage(*response) : response.status().message()) << "); waiting for it\n";
        warned_ = true;
        *drawn_lines = 0;
      }
      return false;
    }
    if (warned_) {
      std::cerr << "stas watch: coordinator is back after "
                << std::lround(std::chrono::duration<double>(Clock::now() - last_contact_).count()) << " s\n";
      warned_ = false;
      *drawn_lines = 0;
    }
    last_contact_ = Clock::now();
    return true;
  }
  bool warned() const { return warned_; }

 private:
  bool warned_ = false;
  Clock::time_point last_contact_ = Clock::now();
};

// `stas watch` without job ids: the counts of the whole queue (or one dataset), one request per poll
// (GET /counts), plus the running jobs' progress bars on a terminal. Ends when nothing is queued or
// running; exit 1 when jobs failed, died or were cancelled while it watched.
int WatchCounts(HttpClient& client, const WatchFlags& flags) {
  const std::string cmd = "watch";
  const std::string scope = flags.dataset.empty() ? "" : "dataset=" + UrlEncode(flags.dataset);
  const bool tty = ::isatty(STDERR_FILENO);
  const auto start = Clock::now();
  Reachability reach;
  int drawn_lines = 0;
  int64_t failed_at_start = -1;
  std::string last_line;
  while (true) {
    auto response = client.Get("/counts" + (scope.empty() ? "" : "?" + scope));
    if (response.ok() && response->status == 404)
      return Fail(cmd, "the coordinator has no /counts endpoint (it is older than this client)");
    if (reach.Note(response, &drawn_lines)) {
      if (!response->ok()) return Fail(cmd, ApiErrorMessage(*response));
      auto parsed = JsonBody(*response, "GET /counts");
      if (!parsed.ok()) return Fail(cmd, parsed.status().message());
      const Json& body = *parsed;
      const Json counts = body.value("counts", Json::object());
      auto n = [&](const char* state) { return counts.value(state, int64_t{0}); };
      const int64_t failed = n("failed") + n("dead") + n("cancelled");
      if (failed_at_start < 0) {
        failed_at_start = failed;
        if (n("queued") + n("running") == 0) {
          std::cerr << "stas watch: no queued or running jobs\n";
          return 0;
        }
      }
      const int64_t total = body.value("total", int64_t{0});
      const int64_t finished = body.value("finished", int64_t{0});
      std::ostringstream line;
      line << (flags.dataset.empty() ? "" : flags.dataset + ": ") << n("done") << " done, " << failed
           << " failed, " << n("running") << " running, " << n("queued") << " queued of " << total;
      if (tty) {
        std::ostringstream frame;
        for (int i = 0; i < drawn_lines; ++i) frame << "\x1b[1A\x1b[2K";
        int lines = 0;
        auto running = client.Get("/jobs?state=running&limit=10" + (scope.empty() ? "" : "&" + scope));
        if (running.ok() && running->ok()) {
          if (auto r = JsonBody(*running, "GET /jobs"); r.ok()) {
            for (const auto& j : r->value("jobs", Json::array())) {
              const JobView v = ViewOf(j);
              const double fraction = v.steps > 0 ? static_cast<double>(v.step) / v.steps : 0.0;
              frame << "\r" << v.id.substr(0, 12) << " " << Bar(fraction, 30) << " " << std::setw(9)
                    << ProgressText(v) << " " << Shorten(v.stage, 12) << " " << Shorten(v.prompt, 40) << "\n";
              ++lines;
            }
          }
        }
        frame << "\r" << Bar(total > 0 ? static_cast<double>(finished) / total : 0.0, 30) << " " << line.str()
              << "\n";
        std::cerr << frame.str() << std::flush;
        drawn_lines = lines + 1;
      } else if (line.str() != last_line) {
        std::cerr << line.str() << "\n";
      }
      last_line = line.str();
      if (n("queued") + n("running") == 0) {
        std::cout << last_line << "\n";
        return failed > failed_at_start ? 1 : 0;
      }
    }
    if (flags.timeout_s > 0 && std::chrono::duration<double>(Clock::now() - start).count() > flags.timeout_s) {
      std::cerr << "stas watch: gave up after " << flags.timeout_s << " s: " << last_line << "\n";
      return 2;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(flags.interval_s * 1000)));
  }
}

int Watch(const WatchFlags& flags) {
  const std::string cmd = "watch";
  auto client = Connect(flags.server);
  if (!client.ok()) return Fail(cmd, client.status().message(), 2);
  std::vector<std::string> ids;
  std::set<std::string> seen;
  for (const auto& id : flags.job_ids)
    if (seen.insert(id).second) ids.push_back(id);  // a dataset with duplicates lists an id twice
  if (ids.empty()) return WatchCounts(**client, flags);
  const bool tty = ::isatty(STDERR_FILENO);
  std::map<std::string, JobView> jobs;
  for (const auto& id : ids) jobs[id].id = id;
  const auto start = Clock::now();
  Reachability reach;
  int drawn_lines = 0;
  while (true) {
    // One request per poll (per 10,000 unfinished jobs): POST /jobs/lookup with their ids.
    std::vector<std::string> unfinished;
    for (const auto& id : ids)
      if (!IsTerminal(jobs[id].state)) unfinished.push_back(id);
    for (size_t at = 0; at < unfinished.size(); at += 10000) {
      Json request = {{"ids", Json::array()}};
      for (size_t i = at; i < std::min(unfinished.size(), at + 10000); ++i) request["ids"].push_back(unfinished[i]);
      auto response = (*client)->Post("/jobs/lookup", request.dump());
      if (!reach.Note(response, &drawn_lines)) break;
      if (response->status == 404 || response->status == 405)
        return Fail(cmd, "the coordinator has no POST /jobs/lookup (it is older than this client)");
      if (!response->ok()) return Fail(cmd, ApiErrorMessage(*response));
      auto body = JsonBody(*response, "POST /jobs/lookup");
      if (!body.ok()) return Fail(cmd, body.status().message());
      std::vector<JobView> changed;
      for (const auto& j : body->value("jobs", Json::array())) changed.push_back(ViewOf(j));
      for (const auto& m : body->value("missing", Json::array())) {
        JobView v;
        v.id = m.get<std::string>();
        v.state = "unknown";
        v.error = "no job '" + v.id + "'";
        changed.push_back(v);
      }
      for (auto& v : changed) {
        JobView& current = jobs[v.id];
        const std::string before = current.state;
        current = std::move(v);
        if (!tty && current.state != before && current.state != "?") {
          std::cerr << current.id << " " << current.state;
          if (current.state == "done") std::cerr << " " << current.output;
          if ((current.state == "failed" || current.state == "dead" || current.state == "unknown") &&
              !current.error.empty())
            std::cerr << " " << current.error;
          std::cerr << "\n";
        }
      }
    }
    int done = 0, failed = 0, running = 0, queued = 0, finished = 0;
    for (const auto& [id, v] : jobs) {
      done += v.state == "done";
      failed += v.state == "failed" || v.state == "dead" || v.state == "cancelled" || v.state == "unknown";
      running += v.state == "running";
      queued += v.state == "queued";
      finished += IsTerminal(v.state) || v.state == "unknown";
    }
    if (tty && !reach.warned()) {
      // Redraw in place: move up over the last frame, then one line per running job (at most 10).
      std::ostringstream frame;
      for (int i = 0; i < drawn_lines; ++i) frame << "\x1b[1A\x1b[2K";
      int lines = 0;
      for (const auto& id : ids) {
        const JobView& v = jobs[id];
        if (v.state != "running" || lines >= 10) continue;
        const double fraction = v.steps > 0 ? static_cast<double>(v.step) / v.steps : 0.0;
        frame << "\r" << id.substr(0, 12) << " " << Bar(fraction, 30) << " " << std::setw(9) << ProgressText(v) << " "
              << Shorten(v.stage, 12) << " " << Shorten(v.prompt, 40) << "\n";
        ++lines;
      }
      frame << "\r" << Bar(static_cast<double>(finished) / jobs.size(), 30) << " " << done << " done, " << failed
            << " failed, " << running << " running, " << queued << " queued of " << jobs.size() << "\n";
      std::cerr << frame.str() << std::flush;
      drawn_lines = lines + 1;
    }
    if (finished == static_cast<int>(jobs.size())) break;
    if (flags.timeout_s > 0 && std::chrono::duration<double>(Clock::now() - start).count() > flags.timeout_s) {
      std::cerr << "stas watch: gave up after " << flags.timeout_s << " s with " << jobs.size() - finished
                << " jobs unfinished\n";
      return 2;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(flags.interval_s * 1000)));
  }
  // The outcome, one line per job on stdout (for scripts): id, state, output or error.
  int not_done = 0;
  for (const auto& id : ids) {
    const JobView& v = jobs[id];
    std::cout << id << " " << v.state;
    if (v.state == "done") std::cout << " " << v.output;
    else if (!v.error.empty()) std::cout << " " << Shorten(v.error, 200);
    std::cout << "\n";
    not_done += v.state != "done";
  }
  return not_done == 0 ? 0 : 1;
}

// ------------------------------------------------------------------------------------------- cancel

struct CancelFlags {
  ServerFlags server;
  std::vector<std::string> job_ids;
};

int Cancel(const CancelFlags& flags) {
  auto client = Connect(flags.server);
  if (!client.ok()) return Fail("cancel", client.status().message(), 2);
  int failures = 0;
  for (const auto& id : flags.job_ids) {
    auto response = (*client)->Delete("/jobs/" + UrlEncode(id));
    if (!response.ok()) return Fail("cancel", response.status().message());
    if (!response->ok()) {
      std::cerr << "stas cancel: " << id << ": " << ApiErrorMessage(*response) << "\n";
      ++failures;
      continue;
    }
    auto body = JsonBody(*response, "DELETE /jobs/" + id);
    const bool now = body.ok() && body->value("cancelled", false);
    std::cout << id << " " << (now ? "cancelled" : "was already cancelled") << "\n";
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

void RegisterClientCommands(CLI::App& app) {
  {
    auto flags = std::make_shared<SubmitFlags>();
    CLI::App* cmd = AddCommand(app, "submit", "queue videos on the render service; prints one job id per line",
                               [flags] { return Submit(*flags); });
    AddServerFlags(cmd, &flags->server);
    cmd->add_option("--dataset", flags->dataset_file,
                    "a file of many: .jsonl (RenderSpec fields per line), .csv (header prompt,seed,...) or .txt "
                    "(one prompt per line)");
    cmd->add_option("--dataset-name", flags->dataset_name,
                    "output folder of the dataset's videos (default: the file's stem)");
    cmd->add_option("--batch-size", flags->batch_size, "jobs per POST request")->check(CLI::Range(1, 10000));
    cmd->add_flag("--quiet", flags->quiet, "no progress bar or summary on stderr");
    flags->render.AddTo(cmd);  // the same flags as `stas render`, --prompt among them
  }
  {
    auto flags = std::make_shared<StatusFlags>();
    CLI::App* cmd = AddCommand(app, "status", "show jobs of the render service (a table, or one job)",
                               [flags] { return Status(*flags); });
    AddServerFlags(cmd, &flags->server);
    cmd->add_option("JOB_ID", flags->job_id, "one job to show in full");
    cmd->add_flag("--json", flags->json, "print the API's JSON");
    cmd->add_option("--state", flags->state, "only jobs in this state (queued, running, done, failed, cancelled, dead)");
    cmd->add_option("--dataset", flags->dataset, "only this dataset's jobs");
    cmd->add_option("--limit", flags->limit, "rows to show (newest first)")->check(CLI::Range(1, 1000));
  }
  {
    auto flags = std::make_shared<WatchFlags>();
    CLI::App* cmd = AddCommand(app, "watch",
                               "live progress until the jobs are done, failed or cancelled; exit code 0 only when "
                               "all are done",
                               [flags] { return Watch(*flags); });
    AddServerFlags(cmd, &flags->server);
    cmd->add_option("JOB_ID", flags->job_ids, "jobs to watch (default: the counts of the whole queue)");
    cmd->add_option("--dataset", flags->dataset, "without JOB_IDs: follow this dataset's counts until nothing is queued or running");
    cmd->add_option("--interval", flags->interval_s, "seconds between polls")->check(CLI::PositiveNumber);
    cmd->add_option("--timeout", flags->timeout_s, "give up (exit code 2) after this many seconds; 0 = never");
  }
  {
    auto flags = std::make_shared<CancelFlags>();
    CLI::App* cmd = AddCommand(app, "cancel", "cancel queued or running jobs", [flags] { return Cancel(*flags); });
    AddServerFlags(cmd, &flags->server);
    cmd->add_option("JOB_ID", flags->job_ids, "jobs to cancel")->required();
  }
}

}  // namespace stas::cli
