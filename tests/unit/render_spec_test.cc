// RenderSpec: every bad input of docs/DESIGN.md#bad-input is refused with a clear message, and job ids are
// stable content hashes (re-submitting the same job yields the same id).
#include <gtest/gtest.h>

#include <cstdio>
#include <set>

#include "common/json.h"
#include "support/temp_dir.h"
#include "models/registry.h"
#include "jobspec/render_spec.h"

namespace stas::jobspec {
namespace {

// A registered family's rules by name (models/registry.h).
models::ModelDescription Family(const std::string& name) {
  auto d = models::DescribeFamily(name);
  EXPECT_TRUE(d.ok()) << name;
  return d.ok() ? *d : models::ModelDescription{};
}

// The family name InspectModel reads for a model argument ("" on error).
std::string DetectedFamily(const std::string& model) {
  auto d = models::InspectModel(model);
  return d.ok() ? d->family : "";
}

RenderSpec Valid() {
  RenderSpec s;
  s.prompt = "a red fox in the snow";
  s.seed = 42;
  s.model = "tiny";
  return s;
}

// The path a client takes: JSON text -> parse -> strict decode.
Result<RenderSpec> FromText(const std::string& text) {
  STAS_ASSIGN_OR_RETURN(Json j, ParseJson(text, "request body"));
  return RenderSpec::FromJson(j);
}

void ExpectRefused(const Status& st, const std::string& fragment) {
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find(fragment), std::string::npos) << "message: " << st.message() << "\nwanted: " << fragment;
}

TEST(RenderSpec, AValidSpecPassesAndRoundTripsThroughJson) {
  RenderSpec s = Valid();
  s.negative_prompt = "blurry";
  s.height = 480;
  s.width = 832;
  s.frames = 81;
  s.steps = 50;
  s.fps = 16;
  s.guidance = 5.0;
  s.shift = 3.0;
  s.stas.enabled = true;
  s.stas.blocks = {0, 3};
  s.output_name = "fox";
  s.dataset = "animals";
  s.priority = 3;
  ASSERT_TRUE(s.Validate().ok()) << s.Validate().ToString();
  auto back = RenderSpec::FromJson(s.ToJson());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->ToJson(), s.ToJson());
  auto text = FromText(s.ToJson().dump());
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->JobId(), s.JobId());
}

TEST(RenderSpec, MalformedJsonIsRefused) {
  auto r = FromText("{\"prompt\": \"fox\", ");
  ExpectRefused(r.status(), "not valid JSON");
  ExpectRefused(FromText("[1, 2]").status(), "must be a JSON object");
  ExpectRefused(FromText("\"just a string\"").status(), "must be a JSON object");
}

TEST(RenderSpec, UnknownFieldsAreRefusedByName) {
  ExpectRefused(FromText(R"({"prompt": "fox", "colour": "red"})").status(), "unknown field 'colour'");
  ExpectRefused(FromText(R"({"prompt": "fox", "stas": {"enabled": true, "strength": 2}})").status(),
                "unknown stas setting 'strength'");
}

TEST(RenderSpec, WrongTypesAreRefusedNamingTheField) {
  ExpectRefused(FromText(R"({"prompt": 7})").status(), "'prompt' must be a string");
  ExpectRefused(FromText(R"({"prompt": "fox", "frames": "81"})").status(), "'frames' must be an integer");
  ExpectRefused(FromText(R"({"prompt": "fox", "frames": 8.5})").status(), "'frames' must be an integer");
  ExpectRefused(FromText(R"({"prompt": "fox", "guidance": "high"})").status(), "'guidance' must be a number");
  ExpectRefused(FromText(R"({"prompt": "fox", "seed": -1})").status(), "'seed' must be a non-negative integer");
  ExpectRefused(FromText(R"({"prompt": "fox", "seed": 1.5})").status(), "'seed' must be a non-negative integer");
}

TEST(RenderSpec, IntegersBeyondIntRangeAreRefusedNotWrapped) {
  // 2^32 + 81 would wrap to 81 (a valid frame count) if narrowed silently.
  ExpectRefused(FromText(R"({"prompt": "fox", "frames": 4294967377})").status(), "'frames'");
  ExpectRefused(FromText(R"({"prompt": "fox", "steps": -4294967295})").status(), "'steps'");
  ExpectRefused(FromText(R"({"prompt": "fox", "priority": 9999999999})").status(), "'priority'");
}

TEST(RenderSpec, FramesMustBeFourKPlusOne) {
  for (int frames : {0, 2, 10, 80, 82, -3}) {
    RenderSpec s = Valid();
    s.frames = frames;
    ExpectRefused(s.Validate(), "frames must be 4k+1");
  }
  for (int frames : {1, 5, 9, 81, 121}) {
    RenderSpec s = Valid();
    s.frames = frames;
    EXPECT_TRUE(s.Validate().ok()) << frames;
  }
  ExpectRefused(FromText(R"({"prompt": "fox", "frames": 10})").status(), "frames must be 4k+1");
}

TEST(RenderSpec, SizesMustBeMultiplesOf16And32ForWan22) {
  for (int bad : {0, 8, 50, 481, -16}) {
    RenderSpec h = Valid();
    h.height = bad;
    ExpectRefused(h.Validate(), "height must be a multiple of 16");
    RenderSpec w = Valid();
    w.width = bad;
    ExpectRefused(w.Validate(), "width must be a multiple of 16");
  }
  RenderSpec s = Valid();
  s.height = 480;
  s.width = 848;  // a multiple of 16, not of 32
  EXPECT_TRUE(s.Validate().ok());
  EXPECT_TRUE(s.ValidateFor(Family("wan2.1")).ok());
  EXPECT_TRUE(s.ValidateFor(Family("tiny")).ok());
  ExpectRefused(s.ValidateFor(Family("wan2.2")), "width must be a multiple of 32 for wan2.2");

  // CogVideoX's VAE needs an odd number of latent frames: 8k+1 frames.
  for (int frames : {49, 9, 1}) {
    s.frames = frames;
    EXPECT_TRUE(s.ValidateFor(Family("cogvideox")).ok()) << frames;
  }
  s.frames = 45;  // 4k+1 but 12 latent frames
  EXPECT_TRUE(s.ValidateFor(Family("wan2.1")).ok());
  ExpectRefused(s.ValidateFor(Family("cogvideox")), "frames must be 8k+1 for cogvideox");
}

TEST(RenderSpec, StepsMustBeWithinOneToAThousand) {
  for (int steps : {0, -1, 1001}) {
    RenderSpec s = Valid();
    s.steps = steps;
    ExpectRefused(s.Validate(), "steps must be in [1, 1000]");
  }
  for (int steps : {1, 1000}) {
    RenderSpec s = Valid();
    s.steps = steps;
    EXPECT_TRUE(s.Validate().ok());
  }
}

TEST(RenderSpec, PromptsOver8KiBAreRefused) {
  RenderSpec s = Valid();
  s.prompt = std::string(kMaxPromptBytes, 'a');
  EXPECT_TRUE(s.Validate().ok());
  s.prompt += "a";
  ExpectRefused(s.Validate(), "the limit is 8 KiB");
  RenderSpec n = Valid();
  n.negative_prompt = std::string(kMaxPromptBytes + 1, 'b');
  ExpectRefused(n.Validate(), "negative prompt is over 8 KiB");
  RenderSpec e = Valid();
  e.prompt.clear();
  ExpectRefused(e.Validate(), "prompt must not be empty");
}

TEST(RenderSpec, OutputAndDatasetNamesWithPathSeparatorsAreRefused) {
  for (const std::string bad : {"a/b", "a\\b", "/abs"}) {
    RenderSpec o = Valid();
    o.output_name = bad;
    ExpectRefused(o.Validate(), "output name '" + bad + "' must not contain path separators");
    RenderSpec d = Valid();
    d.dataset = bad;
    ExpectRefused(d.Validate(), "dataset name '" + bad + "' must not contain path separators");
  }
  for (const std::string bad : {"..", "."}) {
    RenderSpec o = Valid();
    o.output_name = bad;
    ExpectRefused(o.Validate(), "output name must not be '.' or '..'");
    RenderSpec d = Valid();
    d.dataset = bad;
    ExpectRefused(d.Validate(), "dataset name must not be '.' or '..'");
  }
  // A leading '.' (hidden and temporary files) is refused before separators: "../escape" too.
  for (const std::string bad : {"../escape", ".hidden"}) {
    RenderSpec o = Valid();
    o.output_name = bad;
    ExpectRefused(o.Validate(), "output name must not start with '.'");
    RenderSpec d = Valid();
    d.dataset = bad;
    ExpectRefused(d.Validate(), "dataset name must not start with '.'");
  }
  RenderSpec control = Valid();
  control.output_name = "a\nb";
  ExpectRefused(control.Validate(), "control characters");
}

TEST(RenderSpec, OtherRangesAndStasOptionsAreChecked) {
  RenderSpec fps = Valid();
  fps.fps = 0;
  ExpectRefused(fps.Validate(), "fps must be in [1, 240]");
  RenderSpec g = Valid();
  g.guidance = -1;
  ExpectRefused(g.Validate(), "guidance must be in [0, 100]");
  RenderSpec k = Valid();
  k.shift = 0;
  ExpectRefused(k.Validate(), "shift must be in (0, 100]");
  RenderSpec a = Valid();
  a.stas.alpha = -2;
  ExpectRefused(a.Validate(), "stas alpha");
  RenderSpec b = Valid();
  b.stas.blocks = {-1};
  ExpectRefused(b.Validate(), "stas blocks");
  RenderSpec m = Valid();
  m.model.clear();
  ExpectRefused(m.Validate(), "model must be");
}

TEST(RenderSpec, UnknownModelsAreRefusedClearly) {
  testing::TempDir dir;
  auto missing = models::InspectModel(dir.File("no-such-model"));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("checkpoint folder not found"), std::string::npos);
  dir.Write("empty/readme.txt", "not a checkpoint");
  auto empty = models::InspectModel(dir.File("empty"));
  EXPECT_EQ(empty.status().code(), StatusCode::kNotFound);
  EXPECT_NE(empty.status().message().find("no model_index.json"), std::string::npos);
  dir.Write("sd/model_index.json", R"({"_class_name": "StableDiffusionPipeline"})");
  auto other = models::InspectModel(dir.File("sd"));
  ExpectRefused(other.status(), "is not a Wan or CogVideoX pipeline");
  dir.Write("broken/model_index.json", "{oops");
  EXPECT_FALSE(models::InspectModel(dir.File("broken")).ok());
}

TEST(RenderSpec, ModelFamiliesAreDetectedFromTheCheckpointFolder) {
  testing::TempDir dir;
  EXPECT_EQ(DetectedFamily("tiny"), "tiny");
  dir.Write("wan21/model_index.json", R"({"_class_name": "WanPipeline", "vae": ["diffusers", "AutoencoderKLWan"]})");
  dir.Write("wan21/vae/config.json", R"({"z_dim": 16})");
  EXPECT_EQ(DetectedFamily(dir.File("wan21")), "wan2.1");
  dir.Write("wan22/model_index.json", R"({"_class_name": "WanPipeline", "expand_timesteps": true})");
  EXPECT_EQ(DetectedFamily(dir.File("wan22")), "wan2.2");
  dir.Write("wan22vae/model_index.json", R"({"_class_name": "WanPipeline"})");
  dir.Write("wan22vae/vae/config.json", R"({"is_residual": true})");
  EXPECT_EQ(DetectedFamily(dir.File("wan22vae")), "wan2.2");
  dir.Write("cog/model_index.json", R"({"_class_name": "CogVideoXPipeline"})");
  EXPECT_EQ(DetectedFamily(dir.File("cog")), "cogvideox");
}

TEST(RenderSpec, DefaultsFollowTheFamily) {
  RenderSpec wan = Valid();
  wan.ResolveDefaults(Family("wan2.1"));
  EXPECT_EQ(*wan.height, 480);
  EXPECT_EQ(*wan.width, 832);
  EXPECT_EQ(*wan.frames, 81);
  EXPECT_EQ(*wan.fps, 16);
  EXPECT_EQ(*wan.steps, 50);
  EXPECT_EQ(*wan.guidance, 5.0);
  EXPECT_EQ(*wan.shift, 3.0);
  RenderSpec hd = Valid();
  hd.height = 720;
  hd.width = 1280;
  hd.ResolveDefaults(Family("wan2.1"));
  EXPECT_EQ(*hd.shift, 5.0);
  RenderSpec given = Valid();
  given.steps = 7;
  given.shift = 2.0;
  given.ResolveDefaults(Family("wan2.2"));
  EXPECT_EQ(*given.steps, 7);  // explicit values are kept
  EXPECT_EQ(*given.shift, 2.0);
  EXPECT_EQ(*given.height % 32, 0);
  RenderSpec tiny = Valid();
  tiny.ResolveDefaults(Family("tiny"));
  EXPECT_TRUE(tiny.Validate().ok());
  EXPECT_TRUE(tiny.ValidateFor(Family("tiny")).ok());
}

TEST(JobId, IsAStable32HexContentHash) {
  const RenderSpec s = Valid();
  const std::string id = s.JobId();
  ASSERT_EQ(id.size(), 32u);
  for (char c : id) EXPECT_TRUE(std::isxdigit(static_cast<unsigned char>(c)) && !std::isupper(c)) << id;
  EXPECT_EQ(Valid().JobId(), id);                                  // same input, same id
  EXPECT_EQ(RenderSpec::FromJson(s.ToJson())->JobId(), id);        // idempotent through JSON
  EXPECT_EQ(RenderSpec::FromJson(RenderSpec::FromJson(s.ToJson())->ToJson())->JobId(), id);
  // Key order and whitespace of the submitted JSON do not matter.
  auto a = FromText(R"({"prompt": "a red fox in the snow", "seed": 42, "model": "tiny"})");
  auto b = FromText(R"({ "model":"tiny","seed":42,   "prompt":"a red fox in the snow" })");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->JobId(), id);
  EXPECT_EQ(b->JobId(), id);
}

// The documented scheme: two 64-bit FNV-1a hashes (offset bases 0xcbf29ce484222325 and
// 0x9e3779b97f4a7c15) of the spec's canonical JSON (sorted keys, no priority/output_name/dataset).
TEST(JobId, FollowsTheDocumentedHashOfTheCanonicalJson) {
  RenderSpec s = Valid();
  s.frames = 17;
  s.stas.enabled = true;
  auto fnv = [](const std::string& text, uint64_t h) {
    for (unsigned char c : text) {
      h ^= c;
      h *= 1099511628211ull;
    }
    return h;
  };
  Json canonical = s.ToJson();
  canonical.erase("priority");
  canonical.erase("output_name");
  canonical.erase("dataset");
  const std::string text = canonical.dump();
  char expected[33];
  std::snprintf(expected, sizeof(expected), "%016llx%016llx",
                static_cast<unsigned long long>(fnv(text, 0xcbf29ce484222325ull)),
                static_cast<unsigned long long>(fnv(text, 0x9e3779b97f4a7c15ull)));
  EXPECT_EQ(s.JobId(), expected);
}

TEST(JobId, ChangesWithEverythingThatChangesTheVideoAndNothingElse) {
  const std::string base = Valid().JobId();
  std::set<std::string> ids{base};
  auto differs = [&](RenderSpec s, const char* what) {
    const std::string id = s.JobId();
    EXPECT_NE(id, base) << what;
    EXPECT_TRUE(ids.insert(id).second) << what << " collides with another variant";
  };
  RenderSpec s;
  s = Valid(); s.prompt += "!"; differs(s, "prompt");
  s = Valid(); s.negative_prompt = "blurry"; differs(s, "negative prompt");
  s = Valid(); s.seed = 43; differs(s, "seed");
  s = Valid(); s.model = "/models/wan"; differs(s, "model");
  s = Valid(); s.height = 64; differs(s, "height");
  s = Valid(); s.width = 64; differs(s, "width");
  s = Valid(); s.frames = 9; differs(s, "frames");
  s = Valid(); s.steps = 4; differs(s, "steps");
  s = Valid(); s.fps = 24; differs(s, "fps");
  s = Valid(); s.guidance = 4.0; differs(s, "guidance");
  s = Valid(); s.shift = 5.0; differs(s, "shift");
  s = Valid(); s.stas.enabled = true; differs(s, "stas on");
  s = Valid(); s.stas.alpha = 2.0; differs(s, "stas alpha");
  s = Valid(); s.stas.blocks = {1}; differs(s, "stas blocks");
  // Scheduling and naming do not change the video, so they keep the id (the service dedupes on it).
  s = Valid(); s.priority = 9; EXPECT_EQ(s.JobId(), base);
  s = Valid(); s.output_name = "fox"; EXPECT_EQ(s.JobId(), base);
  s = Valid(); s.dataset = "animals"; EXPECT_EQ(s.JobId(), base);
}

}  // namespace
}  // namespace stas::jobspec
