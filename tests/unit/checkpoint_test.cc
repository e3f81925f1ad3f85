#include "common/checkpoint.h"

#include <gtest/gtest.h>

#include "common/check.h"
#include "common/fixture.h"
#include "support/temp_dir.h"

namespace stas {
namespace {

TEST(WeightStore, ShardedIndexResolvesEveryTensor) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.File("transformer"));
  ASSERT_TRUE(WriteSafetensors(dir.File("transformer/model-00001-of-00002.safetensors"), {{"a.weight", at::ones({2})}}).ok());
  ASSERT_TRUE(WriteSafetensors(dir.File("transformer/model-00002-of-00002.safetensors"), {{"b.bias", at::zeros({3})}}).ok());
  dir.Write("transformer/diffusion_pytorch_model.safetensors.index.json",
            R"({"metadata":{},"weight_map":{"a.weight":"model-00001-of-00002.safetensors",)"
            R"("b.bias":"model-00002-of-00002.safetensors"}})");
  dir.Write("transformer/config.json", R"({"num_layers": 30})");
  dir.Write("model_index.json", R"({"_class_name":"WanPipeline","transformer":["diffusers","WanTransformer3DModel"]})");

  auto ckpt = CheckpointFolder::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  EXPECT_EQ(ckpt->PipelineClass(), "WanPipeline");
  EXPECT_EQ(ckpt->Components(), std::vector<std::string>{"transformer"});
  auto config = ckpt->ComponentConfig("transformer");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ((*config)["num_layers"], 30);
  auto store = ckpt->ComponentWeights("transformer");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(store->Names(), (std::vector<std::string>{"a.weight", "b.bias"}));
  EXPECT_TRUE(at::equal(*store->Get("b.bias"), at::zeros({3})));
  EXPECT_EQ(ckpt->ComponentWeights("vae").status().code(), StatusCode::kNotFound);
}

TEST(WeightStore, SingleFileFolderAndPrefixView) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteSafetensors(dir.File("w.safetensors"), {{"vae.x", at::ones({1})}, {"transformer.y", at::ones({2})}}).ok());
  auto store = WeightStore::OpenDirectory(dir.path());
  ASSERT_TRUE(store.ok());
  auto vae = store->WithPrefix("vae.");
  EXPECT_TRUE(vae.Has("x"));
  EXPECT_FALSE(vae.Has("y"));
  EXPECT_EQ(vae.Names(), std::vector<std::string>{"x"});
}

TEST(WeightStore, RejectsDuplicateTensorsAcrossShardsAndEscapingShardNames) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteSafetensors(dir.File("a.safetensors"), {{"x", at::ones({1})}}).ok());
  ASSERT_TRUE(WriteSafetensors(dir.File("b.safetensors"), {{"x", at::ones({1})}}).ok());
  EXPECT_EQ(WeightStore::OpenDirectory(dir.path()).status().code(), StatusCode::kInvalidArgument);

  testing::TempDir dir2;
  dir2.Write("m.safetensors.index.json", R"({"weight_map":{"x":"../../etc/passwd"}})");
  auto r = WeightStore::OpenDirectory(dir2.path());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("plain file name"), std::string::npos);
}

TEST(WeightReader, ShapeMismatchAndMissingAreClearErrors) {
  auto store = WeightStore::FromTensors({{"w", at::ones({2, 3})}});
  WeightReader reader(store, at::TensorOptions().dtype(at::kFloat));
  EXPECT_EQ(reader.Require("w", {2, 3}).sizes(), (std::vector<int64_t>{2, 3}));
  auto loaded = LoadModelWeights<int>("test", [&] {
    reader.Require("w", {3, 2});
    return 1;
  });
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("expected [3, 2]"), std::string::npos) << loaded.status().message();
  EXPECT_FALSE(reader.Optional("missing").has_value());
}

TEST(Checkpoint, MissingFolderOrIndex) {
  testing::TempDir dir;
  EXPECT_EQ(CheckpointFolder::Open(dir.File("nope")).status().code(), StatusCode::kNotFound);
  auto r = CheckpointFolder::Open(dir.path());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("model_index.json"), std::string::npos);
}

TEST(CompareTensors, ToleranceIsElementwiseAtolPlusRtol) {
  at::Tensor ref = at::tensor({1.0f, 100.0f});
  Tolerance tol{1e-3, 1e-2};
  EXPECT_TRUE(CompareTensors("x", ref + at::tensor({1e-3f, 0.9f}), ref, tol).ok());
  auto bad = CompareTensors("x", ref + at::tensor({2e-2f, 0.0f}), ref, tol);
  EXPECT_FALSE(bad.ok());
  EXPECT_NEAR(bad.max_abs_error, 2e-2, 1e-6);
  EXPECT_TRUE(CompareTensors("x", at::zeros({3}), at::zeros({2}), tol).shape_mismatch);
  EXPECT_FALSE(CompareTensors("x", at::full({1}, NAN), at::zeros({1}), tol).ok());
}

TEST(Status, ResultCarriesValueOrError) {
  Result<int> good = 3;
  EXPECT_TRUE(good.ok());
  EXPECT_EQ(*good, 3);
  Result<int> bad = InvalidArgument("frames must be 4k+1");
  EXPECT_EQ(bad.status().ToString(), "InvalidArgument: frames must be 4k+1");
  EXPECT_THROW(bad.value(), CheckFailure);
}

}  // namespace
}  // namespace stas
