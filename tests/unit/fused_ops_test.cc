// The fused DiT stages (models/fused_ops.h) on the CPU, where they run their reference: each against
// the formula written out in float64, with per-sample and per-token modulations and strided inputs.
#include <gtest/gtest.h>

#include "models/fused_ops.h"

namespace stas::models {
namespace {

at::Tensor Randn(std::vector<int64_t> shape, uint64_t seed) {
  at::manual_seed(seed);
  return at::randn(shape, at::kFloat);
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(FusedOps, ModulatedLayerNormMatchesTheFormula) {
  const at::Tensor x = Randn({2, 5, 8}, 1) * 3 + 1;
  for (int64_t tokens : {1, 5}) {
    const Modulation shift{Randn({8}, 2), Randn({2, tokens, 8}, 3)};
    const Modulation scale{Randn({8}, 4), Randn({2, tokens, 8}, 5)};
    const at::Tensor xd = x.to(at::kDouble);
    const at::Tensor mean = xd.mean(-1, true);
    const at::Tensor var = (xd - mean).pow(2).mean(-1, true);
    const at::Tensor expected = (xd - mean) / at::sqrt(var + 1e-6) * (1 + scale.Materialize().to(at::kDouble)) +
                                shift.Materialize().to(at::kDouble);
    EXPECT_LT(MaxAbsDiff(ModulatedLayerNorm(x, shift, scale, 1e-6), expected), 1e-5) << tokens << " tokens";
  }
}

TEST(FusedOps, AffineLayerNormMatchesTheFormula) {
  const at::Tensor x = Randn({2, 5, 8}, 16) * 2 - 1, w = Randn({8}, 17), b = Randn({8}, 18);
  const at::Tensor xd = x.to(at::kDouble);
  const at::Tensor mean = xd.mean(-1, true);
  const at::Tensor expected = (xd - mean) / at::sqrt((xd - mean).pow(2).mean(-1, true) + 1e-6) * w.to(at::kDouble) +
                              b.to(at::kDouble);
  EXPECT_LT(MaxAbsDiff(AffineLayerNorm(x, w, b, 1e-6), expected), 1e-5);
}

TEST(FusedOps, GatedResidualMatchesTheFormula) {
  const at::Tensor x = Randn({2, 3, 6}, 6), y = Randn({2, 3, 6}, 7);
  const Modulation gate{Randn({6}, 8), Randn({2, 1, 6}, 9)};
  const at::Tensor expected = x + y * (gate.base + gate.proj);
  EXPECT_LT(MaxAbsDiff(GatedResidual(x, y, gate), expected), 1e-6);
}

TEST(FusedOps, RmsNormRopeNormalizesAndRotatesEachHeadsPairs) {
  const int64_t B = 2, L = 4, H = 3, Dh = 4, D = H * Dh;
  // x as the first third of a fused qkv projection: a strided view, as in the transformer.
  const at::Tensor qkv = Randn({B, L, 3 * D}, 10);
  const at::Tensor x = qkv.narrow(2, 0, D);
  const at::Tensor weight = Randn({D}, 11) + 2;
  const at::Tensor angles = Randn({L, 1, Dh / 2}, 12);
  const at::Tensor cos = angles.cos(), sin = angles.sin();
  const at::Tensor out = RmsNormRope(x, weight, cos, sin, H, 1e-6);
  ASSERT_EQ(out.sizes(), at::IntArrayRef({B, L, H, Dh}));

  const at::Tensor xd = x.to(at::kDouble);
  const at::Tensor normed = (xd / at::sqrt(xd.pow(2).mean(-1, true) + 1e-6) * weight.to(at::kDouble)).view({B, L, H, Dh});
  const at::Tensor no_rope = RmsNormRope(x, weight, {}, {}, H, 1e-6);
  EXPECT_LT(MaxAbsDiff(no_rope, normed), 1e-5);
  // Pair (2i, 2i+1) of every head of token l turns by angle[l, i].
  const at::Tensor x0 = normed.select(-1, 0), x1 = normed.select(-1, 1);
  const at::Tensor c = cos.to(at::kDouble).select(-1, 0), s = sin.to(at::kDouble).select(-1, 0);  // [L, 1]
  EXPECT_LT(MaxAbsDiff(out.select(-1, 0), x0 * c - x1 * s), 1e-5);
  EXPECT_LT(MaxAbsDiff(out.select(-1, 1), x0 * s + x1 * c), 1e-5);
  EXPECT_THROW(RmsNormRope(x, weight, cos, sin, 5, 1e-6), std::exception) << "12 channels do not split into 5 heads";
}

TEST(FusedOps, LinearGeluTanhOnTheCpu) {
  const at::Tensor x = Randn({2, 3, 8}, 13), w = Randn({5, 8}, 14), b = Randn({5}, 15);
  const at::Tensor expected = at::gelu(at::linear(x, w, b), "tanh");
  EXPECT_LT(MaxAbsDiff(LinearGeluTanh(x, w, b), expected), 1e-6);
}

}  // namespace
}  // namespace stas::models
