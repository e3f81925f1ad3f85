// The fused CUDA kernels (models/fused_ops_cuda.cu) against their ATen reference on the same CUDA
// bfloat16 inputs: per-sample and per-token modulations, strided q/k slices, RoPE on and off. The
// kernels round where the reference rounds, so the outputs differ by at most one bfloat16 step where
// a float32 reduction order tips the rounding. Skipped without a CUDA device or the kernels.
#include <gtest/gtest.h>

#include "models/fp8_linear.h"
#include "models/fused_ops.h"

namespace stas::models {
namespace {

at::Tensor CudaRandn(std::vector<int64_t> shape, uint64_t seed, at::ScalarType dtype = at::kBFloat16) {
  at::manual_seed(seed);
  return at::randn(shape, at::kFloat).to(at::kCUDA, dtype);
}

// Runs fn with the kernels and with the reference; returns the largest difference relative to the
// reference's largest magnitude.
template <typename Fn>
double KernelVsReference(Fn fn) {
  SetFusedKernelsEnabled(true);
  const at::Tensor fused = fn().to(at::kFloat);
  SetFusedKernelsEnabled(false);
  const at::Tensor reference = fn().to(at::kFloat);
  SetFusedKernelsEnabled(true);
  EXPECT_EQ(fused.sizes(), reference.sizes());
  EXPECT_TRUE(fused.isfinite().all().item<bool>());
  return ((fused - reference).abs().max() / reference.abs().max()).item<double>();
}

class FusedOpsGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
    if (!HaveFusedKernels()) GTEST_SKIP() << "built without the fused kernels";
  }
};

TEST_F(FusedOpsGpu, LayerNormsAndGatedResidual) {
  const int64_t B = 2, L = 999, D = 1536;
  const at::Tensor x = CudaRandn({B, L, D}, 1) * 4, y = CudaRandn({B, L, D}, 2);
  for (int64_t tokens : {int64_t{1}, L}) {
    // As the transformer passes them: one [B, T, 6, D] projection, a slice per modulation.
    const at::Tensor proj = CudaRandn({B, tokens, 6, D}, 3);
    const at::Tensor base = CudaRandn({6, D}, 4, at::kFloat);
    auto mod = [&](int64_t j) { return Modulation{base[j], proj.select(2, j)}; };
    EXPECT_LT(KernelVsReference([&] { return ModulatedLayerNorm(x, mod(0), mod(1), 1e-6); }), 1e-2) << tokens;
    EXPECT_LT(KernelVsReference([&] { return GatedResidual(x, y, mod(2)); }), 1e-2) << tokens;
  }
  const at::Tensor w = CudaRandn({D}, 11, at::kFloat), b = CudaRandn({D}, 12, at::kFloat);
  EXPECT_LT(KernelVsReference([&] { return AffineLayerNorm(x, w, b, 1e-6); }), 1e-2);
}

TEST_F(FusedOpsGpu, RmsNormRopeOnStridedSlices) {
  const int64_t B = 2, L = 777, H = 12, Dh = 128, D = H * Dh;
  const at::Tensor qkv = CudaRandn({B, L, 3 * D}, 5);
  const at::Tensor weight = CudaRandn({D}, 6, at::kFloat) + 1;
  const at::Tensor angles = CudaRandn({L, 1, Dh / 2}, 7, at::kFloat) * 3;
  const at::Tensor cos = angles.cos(), sin = angles.sin();
  for (int64_t part : {0, 1}) {
    const at::Tensor x = qkv.narrow(2, part * D, D);
    EXPECT_LT(KernelVsReference([&] { return RmsNormRope(x, weight, cos, sin, H, 1e-6); }), 1e-2) << part;
    EXPECT_LT(KernelVsReference([&] { return RmsNormRope(x, weight, {}, {}, H, 1e-6); }), 1e-2) << part;
  }
}

TEST_F(FusedOpsGpu, CogVideoXStagesOnSlicesOfTheJointSequence) {
  const int64_t B = 2, Lt = 226, Lv = 1350, H = 48, Dh = 64, D = H * Dh;
  const at::Tensor video = CudaRandn({B, Lv, D}, 13) * 3, joint_y = CudaRandn({B, Lt + Lv, D}, 14);
  const at::Tensor w = CudaRandn({D}, 15, at::kFloat) + 1, b = CudaRandn({D}, 16, at::kFloat);
  const at::Tensor proj = CudaRandn({B, 1, 6, D}, 17);
  const Modulation shift{{}, proj.select(2, 0)}, scale{{}, proj.select(2, 1)}, gate{{}, proj.select(2, 2)};
  EXPECT_LT(KernelVsReference([&] {
              const at::Tensor joint = at::zeros({B, Lt + Lv, D}, video.options());
              ModulatedLayerNorm(video, shift, scale, 1e-5, {w, b}, joint.narrow(1, Lt, Lv));
              return joint;
            }),
            1e-2);
  EXPECT_LT(KernelVsReference([&] { return GatedResidual(video, joint_y.narrow(1, Lt, Lv), gate); }), 1e-2);
  const at::Tensor qkv = CudaRandn({B, Lt + Lv, 3, H, Dh}, 18);
  const at::Tensor hw = CudaRandn({Dh}, 19, at::kFloat) + 1, hb = CudaRandn({Dh}, 20, at::kFloat);
  const at::Tensor angles = CudaRandn({Lv, 1, Dh / 2}, 21, at::kFloat) * 3;
  const at::Tensor cos = at::repeat_interleave(angles.cos(), 2, -1), sin = at::repeat_interleave(angles.sin(), 2, -1);
  for (int64_t part : {0, 1})
    EXPECT_LT(KernelVsReference([&] { return HeadLayerNormRope(qkv.select(2, part), {hw, hb}, cos, sin, Lt, 1e-6); }),
              1e-2)
        << part;
}

TEST_F(FusedOpsGpu, Fp8LinearIsCloseToBf16) {
  if (!Fp8LinearSupport(at::Device(at::kCUDA, 0)).ok()) GTEST_SKIP() << "no float8 GEMM here";
  const at::Tensor x = CudaRandn({2, 300, 1536}, 22), w = CudaRandn({2048, 1536}, 23) * 0.03, b = CudaRandn({2048}, 24);
  const at::Tensor exact = at::linear(x, w, b).to(at::kFloat);
  for (Fp8Scaling scaling : {Fp8Scaling::kPerRow, Fp8Scaling::kPerTensor}) {
    auto q = QuantizeFp8Weight(w, scaling);
    ASSERT_TRUE(q.ok()) << q.status().ToString();
    const at::Tensor approx = Fp8Linear(x, *q, b).to(at::kFloat);
    EXPECT_LT(((approx - exact).norm() / exact.norm()).item<double>(), 0.1) << Fp8ScalingName(scaling);
  }
}

TEST_F(FusedOpsGpu, LinearGeluTanhInTheGemmEpilogue) {
  const at::Tensor x = CudaRandn({2, 300, 256}, 8), w = CudaRandn({512, 256}, 9) * 0.05, b = CudaRandn({512}, 10);
  EXPECT_LT(KernelVsReference([&] { return LinearGeluTanh(x, w, b); }), 2e-2);
}

}  // namespace
}  // namespace stas::models
