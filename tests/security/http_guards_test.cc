// The HTTP API's request guards and the calibration store, in-process (HttpApi on the in-memory
// store): DNS rebinding (Host), cross-site requests (Origin, content type), invalid UTF-8, calibrated
// channels as service data, all-or-nothing batches.
#include <gtest/gtest.h>

#include "coordinator/http_api.h"
#include "coordinator/memory_job_store.h"
#include "support/temp_dir.h"

namespace stas::coordinator {
namespace {

const Json kChannels = {{"format", "stas-ma-channels/1"}, {"model", "tiny"}, {"hidden_dim", 64}, {"num_blocks", 2},
                        {"tau", 100}, {"k", 8},
                        {"global", {{"channels", {3, 5}}, {"peak_median_ratios", {200.0, 150.0}}}}};

class HttpGuardsTest : public ::testing::Test {
 protected:
  HttpGuardsTest() : store_(&clock_), queue_(&store_, &clock_, QueueOptions()) {
    HttpApiOptions o;
    o.storage = storage_.path();
    api_ = std::make_unique<HttpApi>(&queue_, nullptr, &clock_, o);
  }
  HttpResponse Call(const std::string& method, const std::string& target, const std::string& body = "",
                    std::map<std::string, std::string> headers = {}) {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.body = body;
    r.headers = {{"host", "127.0.0.1:8080"}};
    if (method == "POST") r.headers["content-type"] = "application/json";
    for (auto& [k, v] : headers) r.headers[k] = v;
    return api_->Handle(r);
  }
  int64_t Jobs() { return static_cast<int64_t>(Json::parse(Call("GET", "/jobs").body)["jobs"].size()); }

  testing::TempDir storage_;
  FakeClock clock_;
  MemoryJobStore store_;
  JobQueue queue_;
  std::unique_ptr<HttpApi> api_;
};

TEST_F(HttpGuardsTest, AForeignHostIsRefused) {
  EXPECT_EQ(Call("GET", "/jobs", "", {{"host", "attacker.example"}}).status, 421);
  EXPECT_EQ(Call("GET", "/jobs", "", {{"host", "localhost:8080"}}).status, 200);
  EXPECT_EQ(Call("GET", "/jobs", "", {{"host", "[::1]:8080"}}).status, 200);
}

TEST_F(HttpGuardsTest, CrossSiteWritesAreRefused) {
  const std::string job = R"({"prompt":"csrf","steps":1})";
  EXPECT_EQ(Call("POST", "/jobs", job, {{"origin", "https://attacker.example"}}).status, 403);
  EXPECT_EQ(Call("POST", "/jobs", job, {{"origin", "null"}}).status, 403);
  EXPECT_EQ(Call("POST", "/jobs", job, {{"content-type", "text/plain"}}).status, 415);
  EXPECT_EQ(Jobs(), 0);
  EXPECT_EQ(Call("POST", "/jobs", job, {{"origin", "http://localhost:8080"}}).status, 201);
  EXPECT_EQ(Jobs(), 1);
}

TEST_F(HttpGuardsTest, InvalidUtf8Is400) {
  EXPECT_EQ(Call("GET", "/jobs/%ff").status, 400);
  EXPECT_EQ(Call("GET", "/jobs?state=%ff").status, 400);
  EXPECT_EQ(Call("GET", "/jobs/\xff").status, 400);
  EXPECT_EQ(Call("POST", "/jobs", "{\"prompt\":\"\xff\"}").status, 400);
  const std::string form = "--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n\xff\r\n--b--\r\n";
  EXPECT_EQ(Call("POST", "/v1/videos", form, {{"content-type", "multipart/form-data; boundary=b"}}).status, 400);
}

TEST_F(HttpGuardsTest, CalibrationsAreUploadedOnceAndTravelInTheJob) {
  auto posted = Call("POST", "/calibrations", kChannels.dump());
  ASSERT_EQ(posted.status, 201) << posted.body;
  const std::string id = Json::parse(posted.body)["id"];
  EXPECT_EQ(Call("POST", "/calibrations", kChannels.dump()).status, 200) << "content-addressed: same id again";
  EXPECT_EQ(Call("GET", "/calibrations/" + id).status, 200);
  EXPECT_EQ(Call("POST", "/calibrations", R"({"format":"nope"})").status, 400);
  EXPECT_EQ(Call("POST", "/calibrations", std::string(300 * 1024, ' ')).status, 413);

  auto job = Call("POST", "/jobs", Json({{"prompt", "steered"}, {"stas", {{"enabled", true}, {"calibration", id}}}}).dump());
  ASSERT_EQ(job.status, 201) << job.body;
  auto record = queue_.Get(Json::parse(job.body)["id"].get<std::string>());
  ASSERT_TRUE(record.ok() && *record);
  const Json spec = Json::parse((*record)->spec);
  EXPECT_EQ(spec["stas"]["channels"]["global"]["channels"], Json({3, 5})) << "the channels travel with the job";
  auto unknown = Call("POST", "/jobs", Json({{"prompt", "x"}, {"stas", {{"calibration", std::string(32, 'a')}}}}).dump());
  EXPECT_EQ(unknown.status, 400);
  auto file = Call("POST", "/jobs", Json({{"prompt", "x"}, {"stas", {{"channels_file", "/etc/shadow"}}}}).dump());
  EXPECT_EQ(file.status, 400);
}

TEST_F(HttpGuardsTest, ABatchIsAllOrNothingAndDryRunQueuesNothing) {
  Json ok = {{"jobs", {{{"prompt", "a"}}, {{"prompt", "b"}}}}, {"dry_run", true}};
  auto dry = Call("POST", "/jobs", ok.dump());
  EXPECT_EQ(dry.status, 200) << dry.body;
  EXPECT_EQ(Jobs(), 0);
  Json twice = {{"jobs", {{{"prompt", "a"}, {"output_name", "x"}}, {{"prompt", "b"}, {"output_name", "x"}}}}};
  EXPECT_EQ(Call("POST", "/jobs", twice.dump()).status, 400);
  Json costly = {{"jobs", {{{"prompt", "a"}}, {{"prompt", "b"}, {"frames", 81}, {"height", 720}, {"width", 1280}}}}};
  auto refused = Call("POST", "/jobs", costly.dump());
  EXPECT_EQ(refused.status, 400);
  EXPECT_NE(refused.body.find("limit"), std::string::npos) << refused.body;
  EXPECT_EQ(Jobs(), 0);
}

}  // namespace
}  // namespace stas::coordinator
