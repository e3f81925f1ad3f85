// HTTP API routing, parsing, validation and error codes (native and OpenAI-compatible), without
// sockets: HttpApi::Handle on the in-memory store. Also the small parsers (Redis URLs, bearer tokens,
// multipart forms, loopback addresses).
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <set>

#include "coordinator/auth.h"
#include "coordinator/http_api.h"
#include "coordinator/memory_job_store.h"
#include "coordinator/redis_client.h"
#include "support/temp_dir.h"

namespace stas::coordinator {
namespace {

class NullChannel : public WorkerChannel {
 public:
  void Send(const Json&) override {}
  void Close() override {}
  std::string peer() const override { return "test:1"; }
};

class HttpApiTest : public ::testing::Test {
 protected:
  HttpApiTest() : store_(&clock_), queue_(&store_, &clock_, QueueOptions{}) { Make(""); }

  void Make(const std::string& token) {
    DispatcherOptions d;
    d.storage = storage_.path();
    dispatcher_ = std::make_unique<Dispatcher>(&queue_, &clock_, d);
    HttpApiOptions o;
    o.token = token;
    o.storage = storage_.path();
    o.max_body_bytes = 64 * 1024;
    api_ = std::make_unique<HttpApi>(&queue_, dispatcher_.get(), &clock_, o);
  }

  HttpResponse Call(const std::string& method, const std::string& target, const std::string& body = "",
                    std::map<std::string, std::string> headers = {}) {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.body = body;
    r.headers = std::move(headers);
    // As every API client does: state-changing requests carry a JSON body (docs/SECURITY.md).
    if (method == "POST" && !r.headers.count("content-type")) r.headers["content-type"] = "application/json";
    return api_->Handle(r);
  }
  Json Body(const HttpResponse& r) { return Json::parse(r.body); }

  std::string Submit(const std::string& prompt, const std::string& extra = "") {
    auto r = Call("POST", "/jobs", R"({"prompt":")" + prompt + "\"" + extra + "}");
    EXPECT_EQ(r.status, 201) << r.body;
    return Body(r)["id"];
  }

  // Runs a job to completion the way a worker group would, reporting `output` (not written).
  void Complete(const std::string& id, const std::string& output) {
    // Start this very job (not the head of its queue) with a lease of our own.
    Transition t;
    t.job_id = id;
    t.now_ms = clock_.NowMs();
    t.from = {JobState::kQueued};
    t.to = JobState::kRunning;
    t.set = {{"lease", "test-lease"}, {"worker", "g"}};
    t.lease_op = Transition::LeaseOp::kSet;
    t.lease_token = "test-lease";
    t.lease_ttl_ms = 60000;
    auto started = store_.Apply(t);
    ASSERT_TRUE(started.ok() && started->applied) << "job " << id << " is not queued";
    ASSERT_TRUE(*queue_.GrantCommit(id, "test-lease"));
    ASSERT_EQ(*queue_.Complete(id, "test-lease", output, "", Json()), CompleteOutcome::kCompleted);
  }
  // The same, with `video_bytes` written as the MP4 under the storage folder.
  void Finish(const std::string& id, const std::string& output, const std::string& video_bytes) {
    storage_.Write(output, video_bytes);
    Complete(id, output);
  }

  testing::TempDir storage_;
  FakeClock clock_;
  MemoryJobStore store_;
  JobQueue queue_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<HttpApi> api_;
};

TEST_F(HttpApiTest, PostAJobThenGetIt) {
  auto r = Call("POST", "/jobs", R"({"prompt":"a red fox","seed":3,"steps":4,"frames":5})");
  ASSERT_EQ(r.status, 201) << r.body;
  const std::string id = Body(r)["id"];
  EXPECT_TRUE(std::regex_match(id, std::regex("[0-9a-f]{32}")));
  EXPECT_TRUE(Body(r)["created"].get<bool>());
  auto g = Call("GET", "/jobs/" + id);
  ASSERT_EQ(g.status, 200) << g.body;
  Json job = Body(g);
  EXPECT_EQ(job["id"], id);
  EXPECT_EQ(job["state"], "queued");
  EXPECT_EQ(job["progress"]["step"], 0);
  EXPECT_EQ(job["progress"]["steps"], 0);
  EXPECT_EQ(job["attempts"], 0);
  EXPECT_EQ(job["prompt"], "a red fox");
  EXPECT_EQ(job["spec"]["steps"], 4);
  EXPECT_FALSE(job.contains("output"));
  // The same job again: same id, 200, nothing new.
  auto again = Call("POST", "/jobs", R"({"seed":3,"prompt":"a red fox","frames":5,"steps":4})");
  EXPECT_EQ(again.status, 200);
  EXPECT_EQ(Body(again)["id"], id);
  EXPECT_FALSE(Body(again)["created"].get<bool>());
}

TEST_F(HttpApiTest, BadInputIs400NamingTheFieldAndChangesNothing) {
  struct Case {
    std::string body, field;
  };
  const Case cases[] = {
      {"{not json", "body"},
      {"[1,2]", "body"},
      {R"({"prompt":"x","colour":"red"})", "colour"},
      {R"({"prompt":"x","frames":10})", "frames"},
      {R"({"prompt":"x","height":100})", "height"},
      {R"({"prompt":"x","steps":0})", "steps"},
      {R"({"prompt":""})", "prompt"},
      {R"({"prompt":"x","seed":-1})", "seed"},
      {R"({"prompt":"x","model":"no-such-model"})", "model"},
      {R"({"prompt":"x","output_name":"../escape"})", "output_name"},
      {R"({"prompt":"x","stas":{"alpha":1,"warp":2}})", "stas.warp"},
      {R"({"prompt":")" + std::string(9000, 'a') + R"("})", "prompt"},
  };
  for (const auto& c : cases) {
    auto r = Call("POST", "/jobs", c.body);
    EXPECT_EQ(r.status, 400) << c.body.substr(0, 80) << " -> " << r.body;
    Json b = Body(r);
    EXPECT_TRUE(b["error"].is_string() && !b["error"].get<std::string>().empty()) << r.body;
    EXPECT_EQ(b.value("field", ""), c.field) << c.body.substr(0, 80) << " -> " << r.body;
  }
  EXPECT_EQ(*store_.Count(IndexRef::All()), 0);
}

TEST_F(HttpApiTest, BatchesAreValidatedWholeBeforeAnythingIsQueued) {
  auto bad = Call("POST", "/jobs", R"({"jobs":[{"prompt":"ok"},{"prompt":"x","frames":6}]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(Body(bad)["field"], "jobs[1].frames") << bad.body;
  EXPECT_EQ(*store_.Count(IndexRef::All()), 0);
  EXPECT_EQ(Call("POST", "/jobs", R"({"jobs":[]})").status, 400);
  EXPECT_EQ(Body(Call("POST", "/jobs", R"({"jobs":[{"prompt":"a"}],"extra":1})"))["field"], "extra");

  auto ok = Call("POST", "/jobs", R"({"dataset":"birds","jobs":[{"prompt":"a"},{"prompt":"b"},{"prompt":"a"}]})");
  ASSERT_EQ(ok.status, 201) << ok.body;
  Json b = Body(ok);
  ASSERT_EQ(b["ids"].size(), 3u);
  EXPECT_EQ(b["ids"][0], b["ids"][2]) << "duplicates inside a batch collapse to one job";
  EXPECT_EQ(b["created"], 2);
  EXPECT_EQ(b["existing"], 1);
  auto list = Body(Call("GET", "/jobs?dataset=birds"));
  EXPECT_EQ(list["count"], 2);
  EXPECT_EQ(list["jobs"][0]["dataset"], "birds");
}

TEST_F(HttpApiTest, ListingValidatesItsQuery) {
  Submit("a");
  clock_.AdvanceMs(5);
  const std::string newest = Submit("b");
  auto all = Call("GET", "/jobs");
  ASSERT_EQ(all.status, 200);
  EXPECT_EQ(Body(all)["count"], 2);
  EXPECT_EQ(Body(all)["total"], 2);
  EXPECT_EQ(Body(all)["jobs"][0]["id"], newest);
  EXPECT_EQ(Body(Call("GET", "/jobs?state=queued&limit=1"))["count"], 1);
  EXPECT_EQ(Body(Call("GET", "/jobs?state=done"))["count"], 0);
  EXPECT_EQ(Body(Call("GET", "/jobs?state=sleeping"))["field"], "state");
  EXPECT_EQ(Body(Call("GET", "/jobs?limit=0"))["field"], "limit");
  EXPECT_EQ(Body(Call("GET", "/jobs?limit=abc"))["field"], "limit");
  EXPECT_EQ(Call("GET", "/jobs?status=queued").status, 400);
}

TEST_F(HttpApiTest, UnknownIdsAre404AndWrongMethods405) {
  EXPECT_EQ(Call("GET", "/jobs/0123456789abcdef0123456789abcdef").status, 404);
  EXPECT_EQ(Call("GET", "/jobs/not-an-id").status, 404);
  EXPECT_EQ(Call("DELETE", "/jobs/0123456789abcdef0123456789abcdef").status, 404);
  EXPECT_EQ(Call("GET", "/nowhere").status, 404);
  auto r = Call("PUT", "/jobs");
  EXPECT_EQ(r.status, 405);
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(r.headers[0].first, "Allow");
}

TEST_F(HttpApiTest, DeleteCancelsAndFinishedJobsAreAConflict) {
  const std::string id = Submit("a");
  auto d = Call("DELETE", "/jobs/" + id);
  ASSERT_EQ(d.status, 200) << d.body;
  EXPECT_EQ(Body(d)["state"], "cancelled");
  EXPECT_TRUE(Body(d)["cancelled"].get<bool>());
  auto again = Call("DELETE", "/jobs/" + id);
  EXPECT_EQ(again.status, 200);
  EXPECT_FALSE(Body(again)["cancelled"].get<bool>());

  const std::string done = Submit("b");
  Finish(done, "single/b.mp4", "mp4 bytes");
  auto conflict = Call("DELETE", "/jobs/" + done);
  EXPECT_EQ(conflict.status, 409);
  EXPECT_EQ(Body(conflict)["state"], "done");
}

TEST_F(HttpApiTest, VideosAreServedFromTheStorageFolderOnly) {
  const std::string id = Submit("a");
  EXPECT_EQ(Call("GET", "/jobs/" + id + "/video").status, 409) << "not done yet";
  Finish(id, "single/a.mp4", "not really an mp4");
  auto job = Body(Call("GET", "/jobs/" + id));
  EXPECT_EQ(job["state"], "done");
  EXPECT_EQ(job["output"], "single/a.mp4");
  EXPECT_EQ(job["video_url"], "/jobs/" + id + "/video");
  auto v = Call("GET", "/jobs/" + id + "/video");
  ASSERT_EQ(v.status, 200) << v.body;
  EXPECT_EQ(v.content_type, "video/mp4");
  EXPECT_EQ(v.file_path, storage_.File("single/a.mp4"));

  // A worker that reports a path outside the storage folder gets nothing served.
  const std::string outside = Submit("b");
  testing::TempDir elsewhere;
  Complete(outside, elsewhere.Write("secret.mp4", "x"));
  EXPECT_EQ(Call("GET", "/jobs/" + outside + "/video").status, 404);
  const std::string escaping = Submit("c");
  elsewhere.Write("c.mp4", "x");
  Complete(escaping, "../" + std::filesystem::path(elsewhere.path()).filename().string() + "/c.mp4");
  EXPECT_EQ(Call("GET", "/jobs/" + escaping + "/video").status, 404);
  const std::string missing = Submit("d");
  Complete(missing, "single/d.mp4");
  EXPECT_EQ(Call("GET", "/jobs/" + missing + "/video").status, 404);
}

TEST_F(HttpApiTest, BodiesOverTheLimitAre413) {
  auto r = Call("POST", "/jobs", std::string(64 * 1024 + 1, ' '));
  EXPECT_EQ(r.status, 413);
}

TEST_F(HttpApiTest, TheTokenGuardsEverythingButTheStatusPageAndHealth) {
  Make("s3cret");
  EXPECT_EQ(Call("GET", "/jobs").status, 401);
  EXPECT_EQ(Call("GET", "/jobs", "", {{"authorization", "Bearer nope"}}).status, 401);
  EXPECT_EQ(Call("GET", "/jobs", "", {{"authorization", "Bearer s3cret"}}).status, 200);
  EXPECT_EQ(Call("GET", "/metrics").status, 401);
  EXPECT_EQ(Call("POST", "/v1/videos", "{}").status, 401);
  EXPECT_EQ(Call("GET", "/healthz").status, 200);
  auto page = Call("GET", "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("<html"), std::string::npos);
  EXPECT_EQ(Call("GET", "/jobs").headers.at(0).first, "WWW-Authenticate");
}

TEST_F(HttpApiTest, HealthMetricsStatsAndWorkers) {
  Submit("a");
  auto h = Call("GET", "/healthz");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(Body(h)["redis"], "ok");
  auto m = Call("GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.content_type.rfind("text/plain", 0), 0u);
  for (const char* line : {"stas_redis_up 1", "stas_jobs{state=\"queued\"} 1", "stas_jobs{state=\"done\"} 0",
                           "stas_jobs_submitted_total 1", "stas_jobs_completed_total 0", "stas_lease_expiries_total 0",
                           "stas_workers_connected 0", "stas_step_throughput 0", "# TYPE stas_steps_total counter"})
    EXPECT_NE(m.body.find(line), std::string::npos) << line << "\n" << m.body;
  auto s = Body(Call("GET", "/stats"));
  EXPECT_EQ(s["jobs"]["queued"], 1);
  EXPECT_EQ(s["workers"]["connected"], 0);
  EXPECT_EQ(Body(Call("GET", "/workers"))["count"], 0);
  store_.SetUnavailable(true);
  auto down = Call("GET", "/healthz");
  EXPECT_EQ(down.status, 503);
  EXPECT_EQ(Body(down)["status"], "unavailable");
  EXPECT_NE(Call("GET", "/metrics").body.find("stas_redis_up 0"), std::string::npos);
  EXPECT_EQ(Call("GET", "/jobs").status, 503);
}

TEST_F(HttpApiTest, QueueDepthPerModelAndModelsWithoutAGroup) {
  Submit("a");
  Submit("b", R"(,"model":"Wan2.1-T2V-1.3B-Diffusers")");
  auto s = Body(Call("GET", "/stats"));
  EXPECT_EQ(s["queues"]["tiny"]["depth"], 1);
  EXPECT_EQ(s["queues"]["Wan2.1-T2V-1.3B-Diffusers"]["depth"], 1);
  EXPECT_FALSE(s["queues"]["tiny"]["served"].get<bool>());
  EXPECT_EQ(s["models_without_group"].size(), 2u);
  auto ch = std::make_shared<NullChannel>();
  dispatcher_->OnConnect(1, ch);
  dispatcher_->OnMessage(1, {{"type", "hello"}, {"worker", "w"}, {"model", "tiny"}});
  s = Body(Call("GET", "/stats"));
  EXPECT_TRUE(s["queues"]["tiny"]["served"].get<bool>());
  EXPECT_EQ(s["models_without_group"], Json::array({"Wan2.1-T2V-1.3B-Diffusers"}));
  auto m = Call("GET", "/metrics").body;
  EXPECT_NE(m.find("stas_queue_depth{model=\"Wan2.1-T2V-1.3B-Diffusers\",served=\"0\"} 1"), std::string::npos) << m;
  EXPECT_NE(m.find("stas_models_without_group 1"), std::string::npos) << m;
}

TEST_F(HttpApiTest, CountsLookupAndCursorPages) {
  std::vector<std::string> ids;
  std::string batch = R"({"dataset":"d","jobs":[)";
  for (int i = 0; i < 25; ++i) batch += std::string(i ? "," : "") + R"({"prompt":"p)" + std::to_string(i) + R"("})";
  batch += "]}";
  auto posted = Call("POST", "/jobs", batch);
  ASSERT_EQ(posted.status, 201) << posted.body;
  const Json posted_body = Body(posted);
  for (const auto& id : posted_body["ids"]) ids.push_back(id);
  auto again = Body(Call("POST", "/jobs", batch));
  EXPECT_EQ(again["created"], 0);
  EXPECT_EQ(again["existing"], 25);
  ASSERT_EQ(Call("DELETE", "/jobs/" + ids[0]).status, 200);
  auto counts = Body(Call("GET", "/counts?dataset=d"));
  EXPECT_EQ(counts["counts"]["queued"], 24);
  EXPECT_EQ(counts["counts"]["cancelled"], 1);
  EXPECT_EQ(counts["total"], 25);
  EXPECT_EQ(counts["finished"], 1);
  EXPECT_EQ(Body(Call("GET", "/counts"))["dataset"], nullptr);
  EXPECT_EQ(Call("GET", "/counts?bogus=1").status, 400);
  // Cursor pages of the dataset's queued jobs.
  std::set<std::string> seen;
  std::string target = "/jobs?dataset=d&state=queued&limit=10";
  for (int page = 0; page < 5; ++page) {
    const Json body = Body(Call("GET", target));
    EXPECT_EQ(body["total"], 24);
    for (const auto& j : body["jobs"]) EXPECT_TRUE(seen.insert(j["id"]).second);
    if (body["next"].is_null()) break;
    target = "/jobs?dataset=d&state=queued&limit=10&after=" + body["next"].get<std::string>();
  }
  EXPECT_EQ(seen.size(), 24u);
  EXPECT_EQ(Call("GET", "/jobs?after=nothex").status, 400);
  EXPECT_EQ(Call("GET", "/jobs?after=0123456789abcdef0123456789abcdef").status, 400);
  EXPECT_EQ(Call("GET", "/jobs?after=" + ids[1] + "&offset=3").status, 400);
  // One request for many jobs.
  auto lookup = Call("POST", "/jobs/lookup",
                     Json{{"ids", {ids[0], ids[5], "0123456789abcdef0123456789abcdef"}}}.dump());
  ASSERT_EQ(lookup.status, 200) << lookup.body;
  EXPECT_EQ(Body(lookup)["jobs"].size(), 2u);
  EXPECT_EQ(Body(lookup)["jobs"][0]["state"], "cancelled");
  EXPECT_EQ(Body(lookup)["missing"], Json::array({"0123456789abcdef0123456789abcdef"}));
  EXPECT_EQ(Call("POST", "/jobs/lookup", R"({"ids":[5]})").status, 400);
  EXPECT_EQ(Call("GET", "/jobs/lookup").status, 405);
  // The OpenAI list pages by cursor both ways.
  auto first = Body(Call("GET", "/v1/videos?limit=20"));
  EXPECT_TRUE(first["has_more"].get<bool>());
  auto rest = Body(Call("GET", "/v1/videos?limit=20&after=" + first["last_id"].get<std::string>()));
  EXPECT_FALSE(rest["has_more"].get<bool>());
  EXPECT_EQ(first["data"].size() + rest["data"].size(), 25u);
  auto asc = Body(Call("GET", "/v1/videos?limit=100&order=asc"));
  EXPECT_EQ(asc["data"].size(), 25u);
  EXPECT_EQ(asc["data"][0]["id"], rest["data"].back()["id"]);
}

TEST_F(HttpApiTest, RedisAndFileWorkRunsOffTheLoopWithTheServedModelsOfTheLoop) {
  HttpRequest big{"POST", "/jobs", {}, std::string(20 << 10, ' ') + "{}"};
  EXPECT_TRUE(api_->ShouldOffload(big));
  for (const char* target : {"/jobs", "/jobs?state=queued&dataset=d", "/counts?dataset=d", "/jobs/0123", "/v1/videos",
                             "/v1/videos/abc/content", "/calibrations/abc"})
    EXPECT_TRUE(api_->ShouldOffload({"GET", target, {}, ""})) << target;
  EXPECT_TRUE(api_->ShouldOffload({"POST", "/jobs", {}, "{}"})) << "single jobs too";
  EXPECT_TRUE(api_->ShouldOffload({"DELETE", "/jobs/0123", {}, ""}));
  EXPECT_TRUE(api_->ShouldOffload({"POST", "/v1/videos", {}, "{}"}));
  for (const char* target : {"/stats", "/metrics"}) EXPECT_TRUE(api_->ShouldOffload({"GET", target, {}, ""})) << target;
  for (const char* target : {"/", "/healthz", "/workers"})
    EXPECT_FALSE(api_->ShouldOffload({"GET", target, {}, ""})) << target << " needs no Redis round trip but a PING";
  // The worker thread's instance has no dispatcher: the served models come with the request.
  HttpApi bulk(&queue_, nullptr, &clock_, HttpApiOptions{});
  const std::string batch = R"({"jobs":[{"prompt":"x","model":"my-own-model"}]})";
  HttpRequest r{"POST", "/jobs", {{"content-type", "application/json"}}, batch};
  EXPECT_EQ(bulk.HandleOffLoop(r, {}).status, 400) << "no group serves that model";
  auto ok = bulk.HandleOffLoop(r, {"/models/my-own-model"});
  EXPECT_EQ(ok.status, 201) << ok.body;
  // /stats off the loop reports the loop's dispatcher snapshot and served models.
  Dispatcher::Snapshot snap;
  snap.workers = 3;
  auto stats = bulk.HandleOffLoop({"GET", "/stats", {}, ""}, {"/models/my-own-model"}, snap);
  ASSERT_EQ(stats.status, 200) << stats.body;
  const Json sb = Json::parse(stats.body);
  EXPECT_EQ(sb["workers"]["connected"], 3) << sb.dump();
  EXPECT_EQ(sb["queues"]["my-own-model"]["served"], true) << sb.dump();
  EXPECT_EQ(sb["queues"]["my-own-model"]["depth"], 1) << sb.dump();
}

// ------------------------------------------------------------------------------------------- OpenAI

TEST_F(HttpApiTest, OpenAiCreateConvertsSizeAndSecondsIntoTheSpec) {
  auto r = Call("POST", "/v1/videos", R"({"model":"tiny","prompt":"a kite","size":"96x64","seconds":"1","seed":9})");
  ASSERT_EQ(r.status, 200) << r.body;
  Json v = Body(r);
  EXPECT_EQ(v["object"], "video");
  EXPECT_EQ(v["status"], "queued");
  EXPECT_EQ(v["progress"], 0);
  EXPECT_EQ(v["size"], "96x64");
  EXPECT_EQ(v["seconds"], "1");
  EXPECT_EQ(v["model"], "tiny");
  EXPECT_TRUE(v["error"].is_null());
  EXPECT_EQ(v["created_at"], clock_.NowMs() / 1000);
  const std::string id = v["id"];
  Json spec = Body(Call("GET", "/jobs/" + id))["spec"];
  EXPECT_EQ(spec["width"], 96);
  EXPECT_EQ(spec["height"], 64);
  EXPECT_EQ(spec["frames"], FramesForSeconds(1, 16));
  EXPECT_EQ(spec["seed"], 9);
  EXPECT_EQ(Body(Call("GET", "/v1/videos/" + id))["id"], id);
  EXPECT_EQ(Body(Call("GET", "/v1/videos/video_" + id))["id"], id);
}

TEST_F(HttpApiTest, FramesForSecondsIsTheNearest4kPlus1) {
  EXPECT_EQ(FramesForSeconds(5, 16), 81);
  for (double s : {0.1, 0.5, 1.0, 2.0, 3.3, 5.0, 10.0}) {
    for (int fps : {8, 16, 24}) {
      const int f = FramesForSeconds(s, fps);
      EXPECT_EQ((f - 1) % 4, 0) << s << "s @" << fps;
      EXPECT_GE(f, 1);
      EXPECT_LE(std::abs(f - s * fps), 2.0 + 1e-9) << s << "s @" << fps;
    }
  }
}

TEST_F(HttpApiTest, OpenAiMultipartFormsWork) {
  const std::string boundary = "XyZ123";
  auto part = [&](const std::string& name, const std::string& value) {
    return "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n\r\n" + value + "\r\n";
  };
  const std::string body = part("prompt", "a kite\nover a hill") + part("model", "tiny") + part("seconds", "2") +
                           part("steps", "3") + "--" + boundary + "--\r\n";
  auto r = Call("POST", "/v1/videos", body, {{"content-type", "multipart/form-data; boundary=" + boundary}});
  ASSERT_EQ(r.status, 200) << r.body;
  Json spec = Body(Call("GET", "/jobs/" + Body(r)["id"].get<std::string>()))["spec"];
  EXPECT_EQ(spec["prompt"], "a kite\nover a hill");
  EXPECT_EQ(spec["steps"], 3);
  EXPECT_EQ(spec["frames"], FramesForSeconds(2, 16));
  const std::string file = "--" + boundary +
                           "\r\nContent-Disposition: form-data; name=\"input_reference\"; filename=\"a.png\"\r\n\r\nPNG\r\n--" +
                           boundary + "--\r\n";
  auto rejected = Call("POST", "/v1/videos", file, {{"content-type", "multipart/form-data; boundary=" + boundary}});
  EXPECT_EQ(rejected.status, 400);
  EXPECT_EQ(Body(rejected)["error"]["param"], "input_reference");
}

TEST_F(HttpApiTest, OpenAiErrorsUseTheOpenAiShape) {
  auto unknown = Call("POST", "/v1/videos", R"({"prompt":"x","colour":"red"})");
  EXPECT_EQ(unknown.status, 400);
  EXPECT_EQ(Body(unknown)["error"]["param"], "colour");
  EXPECT_EQ(Body(unknown)["error"]["type"], "invalid_request_error");
  EXPECT_EQ(Body(Call("POST", "/v1/videos", R"({"prompt":"x","size":"big"})"))["error"]["param"], "size");
  EXPECT_EQ(Body(Call("POST", "/v1/videos", R"({"prompt":"x","seconds":"-2"})"))["error"]["param"], "seconds");
  EXPECT_EQ(Body(Call("POST", "/v1/videos", R"({"prompt":"x","seconds":1,"frames":5})"))["error"]["param"], "seconds");
  EXPECT_EQ(Body(Call("POST", "/v1/videos", R"({"prompt":"x","size":"100x64"})"))["error"]["param"], "width");
  auto missing = Call("GET", "/v1/videos/0123456789abcdef0123456789abcdef");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(Body(missing)["error"]["code"], "not_found");
  EXPECT_EQ(*store_.Count(IndexRef::All()), 0);
}

TEST_F(HttpApiTest, OpenAiLifecycleListContentAndDelete) {
  const std::string a = Body(Call("POST", "/v1/videos", R"({"prompt":"a"})"))["id"];
  clock_.AdvanceMs(1000);
  const std::string b = Body(Call("POST", "/v1/videos", R"({"prompt":"b"})"))["id"];
  clock_.AdvanceMs(1000);
  const std::string c = Body(Call("POST", "/v1/videos", R"({"prompt":"c"})"))["id"];
  auto list = Body(Call("GET", "/v1/videos?limit=2"));
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 2u);
  EXPECT_EQ(list["data"][0]["id"], c);
  EXPECT_TRUE(list["has_more"].get<bool>());
  auto rest = Body(Call("GET", "/v1/videos?limit=2&after=" + list["last_id"].get<std::string>()));
  ASSERT_EQ(rest["data"].size(), 1u);
  EXPECT_EQ(rest["data"][0]["id"], a);
  EXPECT_FALSE(rest["has_more"].get<bool>());
  auto asc = Body(Call("GET", "/v1/videos?order=asc"));
  ASSERT_EQ(asc["data"].size(), 3u);
  EXPECT_EQ(asc["data"][0]["id"], a);

  EXPECT_EQ(Call("GET", "/v1/videos/" + b + "/content").status, 409);
  Finish(b, "single/b.mp4", "video");
  auto done = Body(Call("GET", "/v1/videos/" + b));
  EXPECT_EQ(done["status"], "completed");
  EXPECT_EQ(done["progress"], 100);
  EXPECT_FALSE(done["completed_at"].is_null());
  auto content = Call("GET", "/v1/videos/" + b + "/content");
  ASSERT_EQ(content.status, 200);
  EXPECT_EQ(content.file_path, storage_.File("single/b.mp4"));
  EXPECT_EQ(Call("GET", "/v1/videos/" + b + "/content?variant=thumbnail").status, 400);

  auto del = Call("DELETE", "/v1/videos/" + b);
  ASSERT_EQ(del.status, 200);
  EXPECT_EQ(Body(del)["object"], "video.deleted");
  EXPECT_TRUE(Body(del)["deleted"].get<bool>());
  EXPECT_EQ(Call("GET", "/v1/videos/" + b).status, 404);
  EXPECT_FALSE(std::filesystem::exists(storage_.File("single/b.mp4")));
  auto cancelled = Call("DELETE", "/jobs/" + a);
  EXPECT_EQ(Body(Call("GET", "/v1/videos/" + a))["status"], "failed");
  EXPECT_EQ(Body(Call("GET", "/v1/videos/" + a))["error"]["code"], "cancelled");
}

// --------------------------------------------------------------------------------------- parsers

TEST(CoordinatorModels, ACheckpointFolderIsReadOnceUntilItsModelIndexChanges) {
  testing::TempDir dir;
  dir.Write("ckpt/model_index.json", R"({"_class_name": "WanPipeline", "vae": ["diffusers", "AutoencoderKLWan"]})");
  dir.Write("ckpt/vae/config.json", R"({"z_dim": 16})");
  auto first = ResolveModelFamily(dir.File("ckpt"), {});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->family, "wan2.1");
  // A change the cache does not watch (another config file) is not seen: the description came from memory.
  dir.Write("ckpt/vae/config.json", R"({"is_residual": true})");
  auto cached = ResolveModelFamily(dir.File("ckpt"), {});
  ASSERT_TRUE(cached.ok());
  EXPECT_EQ(cached->family, "wan2.1") << "read again instead of cached";
  // A new model_index.json (another size) is read again.
  dir.Write("ckpt/model_index.json", R"({"_class_name": "CogVideoXPipeline"})");
  auto changed = ResolveModelFamily(dir.File("ckpt"), {});
  ASSERT_TRUE(changed.ok()) << changed.status().ToString();
  EXPECT_EQ(changed->family, "cogvideox");
  // A broken one is an error, not a stale description.
  dir.Write("ckpt/model_index.json", "{oops, not json at all}");
  EXPECT_FALSE(ResolveModelFamily(dir.File("ckpt"), {}).ok());
}

TEST(CoordinatorParsers, RedisUrls) {
  auto a = ParseRedisUrl("redis://127.0.0.1:6380");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 6380);
  EXPECT_TRUE(a->password.empty());
  auto b = ParseRedisUrl("redis://:p%40ss@redis.internal/2");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "redis.internal");
  EXPECT_EQ(b->port, 6379);
  EXPECT_EQ(b->password, "p@ss");
  EXPECT_EQ(b->db, 2);
  auto c = ParseRedisUrl("redis://alice:secret@[::1]:7000");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->username, "alice");
  EXPECT_EQ(c->host, "::1");
  EXPECT_EQ(c->port, 7000);
  EXPECT_TRUE(ParseRedisUrl("localhost:6379").ok());
  EXPECT_FALSE(ParseRedisUrl("rediss://host:1").ok());
  EXPECT_FALSE(ParseRedisUrl("redis://host:99999").ok());
  EXPECT_FALSE(ParseRedisUrl("redis://host:12ab").ok());
  EXPECT_FALSE(ParseRedisUrl("redis://").ok());
}

TEST(CoordinatorParsers, TokensAndLoopback) {
  EXPECT_EQ(BearerToken("Bearer abc").value_or(""), "abc");
  EXPECT_EQ(BearerToken("bearer   abc ").value_or(""), "abc");
  EXPECT_FALSE(BearerToken("Basic abc").has_value());
  EXPECT_FALSE(BearerToken("Bearer ").has_value());
  EXPECT_TRUE(TokenMatches("abc", "abc"));
  EXPECT_FALSE(TokenMatches("abd", "abc"));
  EXPECT_FALSE(TokenMatches("", ""));
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.1.2.3"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_TRUE(IsLoopbackHost("[::1]"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("::"));
  EXPECT_FALSE(IsLoopbackHost("10.0.0.5"));
  EXPECT_FALSE(IsLoopbackHost("example.com"));
}

TEST(CoordinatorParsers, MultipartRejectsMalformedBodies) {
  EXPECT_FALSE(ParseMultipartForm("multipart/form-data", "x").ok());
  EXPECT_FALSE(ParseMultipartForm("multipart/form-data; boundary=b", "no boundary here").ok());
  EXPECT_FALSE(ParseMultipartForm("multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated").ok());
  auto ok = ParseMultipartForm("multipart/form-data; boundary=\"b\"",
                               "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b--\r\n");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ((*ok)["a"], "1");
}

}  // namespace
}  // namespace stas::coordinator
