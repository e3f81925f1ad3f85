// TrackingWeightReader: what a loader took, and the refusal of tensors the configured model never used.
#include <gtest/gtest.h>

#include "common/tracking_weight_reader.h"

namespace stas {
namespace {

WeightStore Store(int extra) {
  std::map<std::string, at::Tensor> tensors = {{"a.weight", at::ones({2, 3})}, {"b.bias", at::zeros({3})}};
  for (int i = 0; i < extra; ++i) tensors["extra." + std::to_string(i)] = at::zeros({1});
  return WeightStore::FromTensors(tensors);
}

TEST(TrackingWeightReader, EverythingTakenIsOk) {
  TrackingWeightReader reader(Store(0), at::TensorOptions().dtype(at::kFloat));
  EXPECT_EQ(reader.Require("a.weight", {2, 3}).sum().item<float>(), 6.0f);
  EXPECT_EQ(reader.RequireFloat("b.bias", {3}).scalar_type(), at::kFloat);
  EXPECT_TRUE(reader.CheckAllUsed("model").ok());
}

TEST(TrackingWeightReader, LeftoversAreNamedAndCounted) {
  TrackingWeightReader reader(Store(7), at::TensorOptions().dtype(at::kFloat));
  reader.Require("a.weight", {2, 3});
  Status st = reader.CheckAllUsed("Tiny model");
  ASSERT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("Tiny model: 8 tensor(s) not used"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("b.bias, extra.0, extra.1, extra.2, extra.3, ..."), std::string::npos) << st.message();
}

TEST(TrackingWeightReader, IgnoredNamesAreTolerated) {
  TrackingWeightReader reader(Store(1), at::TensorOptions().dtype(at::kFloat));
  reader.Require("a.weight");
  reader.Require("b.bias");
  EXPECT_FALSE(reader.CheckAllUsed("m").ok());
  EXPECT_TRUE(reader.CheckAllUsed("m", {"extra.0"}).ok());
}

TEST(TrackingWeightReader, AMissingOrMisshapenTensorThrows) {
  TrackingWeightReader reader(Store(0), at::TensorOptions().dtype(at::kFloat));
  EXPECT_THROW(reader.Require("nope"), MissingWeightError);
  EXPECT_THROW(reader.Require("a.weight", {3, 2}), MissingWeightError);
}

}  // namespace
}  // namespace stas
