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

TEST(FusedOps, ModulatedLayerNormWithAffineIntoASliceOfAJointSequence) {
  // CogVideoX: the norm's own weight and bias, a base-free modulation, the output written into the
  // video part of a [text; video] sequence.
  const int64_t B = 2, Lt = 3, Lv = 4, D = 8;
  const at::Tensor x = Randn({B, Lv, D}, 21) * 2 - 1;
  const at::Tensor w = Randn({D}, 22), b = Randn({D}, 23);
  const at::Tensor proj = Randn({B, 1, 6, D}, 24);
  const Modulation shift{{}, proj.select(2, 0)}, scale{{}, proj.select(2, 1)};
  const at::Tensor joint = at::full({B, Lt + Lv, D}, 7.0);
  const at::Tensor out = ModulatedLayerNorm(x, shift, scale, 1e-5, {w, b}, joint.narrow(1, Lt, Lv));
  const at::Tensor xd = x.to(at::kDouble);
  const at::Tensor mean = xd.mean(-1, true), var = (xd - mean).pow(2).mean(-1, true);
  const at::Tensor normed = (xd - mean) / (var + 1e-5).sqrt() * w.to(at::kDouble) + b.to(at::kDouble);
  const at::Tensor expected = normed * (1 + proj.select(2, 1).to(at::kDouble)) + proj.select(2, 0).to(at::kDouble);
  EXPECT_LT(MaxAbsDiff(joint.narrow(1, Lt, Lv), expected), 1e-5);
  EXPECT_LT(MaxAbsDiff(out, expected), 1e-5) << "returns the slice it wrote";
  EXPECT_EQ(MaxAbsDiff(joint.narrow(1, 0, Lt), at::full({B, Lt, D}, 7.0)), 0.0) << "the text part is untouched";
  EXPECT_THROW(ModulatedLayerNorm(x, shift, scale, 1e-5, {w, b}, joint.narrow(1, 0, Lt)), std::exception)
      << "an output of another shape is refused";
}

TEST(FusedOps, GatedResidualOfASliceWithoutABase) {
  const at::Tensor x = Randn({2, 4, 6}, 25), joint = Randn({2, 7, 6}, 26), gate = Randn({2, 1, 6}, 27);
  const at::Tensor y = joint.narrow(1, 3, 4);
  const at::Tensor expected = x.to(at::kDouble) + y.to(at::kDouble) * gate.to(at::kDouble);
  EXPECT_LT(MaxAbsDiff(GatedResidual(x, y, Modulation{{}, gate}), expected), 1e-6);
}

TEST(FusedOps, HeadLayerNormRopeNormalizesEachHeadAndRotatesOnlyTheTail) {
  const int64_t B = 2, L = 5, H = 3, Dh = 4, begin = 2;
  // q of a [B, L, 3, H, Dh] projection: heads at a stride of Dh, tokens at 3 H Dh.
  const at::Tensor qkv = Randn({B, L, 3, H, Dh}, 28) * 2 + 0.5;
  const at::Tensor x = qkv.select(2, 0);
  const at::Tensor w = Randn({Dh}, 29), b = Randn({Dh}, 30);
  const at::Tensor angles = Randn({L - begin, 1, Dh / 2}, 31);
  const at::Tensor cos = at::repeat_interleave(angles.cos(), 2, -1), sin = at::repeat_interleave(angles.sin(), 2, -1);
  const at::Tensor out = HeadLayerNormRope(x, {w, b}, cos, sin, begin, 1e-6);
  ASSERT_EQ(out.sizes(), x.sizes());
  EXPECT_TRUE(out.is_contiguous());
  const at::Tensor xd = x.to(at::kDouble);
  const at::Tensor mean = xd.mean(-1, true), var = (xd - mean).pow(2).mean(-1, true);
  const at::Tensor normed = (xd - mean) / (var + 1e-6).sqrt() * w.to(at::kDouble) + b.to(at::kDouble);
  EXPECT_LT(MaxAbsDiff(out.narrow(1, 0, begin), normed.narrow(1, 0, begin)), 1e-5) << "text tokens: no RoPE";
  const at::Tensor tail = normed.narrow(1, begin, L - begin);
  const at::Tensor x0 = tail.slice(-1, 0, Dh, 2), x1 = tail.slice(-1, 1, Dh, 2);
  const at::Tensor c = angles.cos().to(at::kDouble), s = angles.sin().to(at::kDouble);
  const at::Tensor rotated = at::stack({x0 * c - x1 * s, x0 * s + x1 * c}, -1).reshape(tail.sizes());
  EXPECT_LT(MaxAbsDiff(out.narrow(1, begin, L - begin), rotated), 1e-5);
  EXPECT_LT(MaxAbsDiff(HeadLayerNormRope(x, {w, b}, {}, {}, 0, 1e-6), normed), 1e-5) << "without tables";
  EXPECT_THROW(HeadLayerNormRope(x, {w, b}, cos, sin, 1, 1e-6), std::exception) << "tables of the wrong length";
}

TEST(FusedOps, LinearGeluTanhOnTheCpu) {
  const at::Tensor x = Randn({2, 3, 8}, 13), w = Randn({5, 8}, 14), b = Randn({5}, 15);
  const at::Tensor expected = at::gelu(at::linear(x, w, b), "tanh");
  EXPECT_LT(MaxAbsDiff(LinearGeluTanh(x, w, b), expected), 1e-6);
}

}  // namespace
}  // namespace stas::models
