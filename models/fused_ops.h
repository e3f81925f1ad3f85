// Fused elementwise stages of a DiT block: the float32 "islands" between the GEMMs and attention
// (modulated and affine LayerNorm, gated residual, RMSNorm + RoPE, the FFN's GELU).
//
// Every function has one reference definition in ATen ops, used on the CPU, for dtypes other than
// bfloat16 and in builds without the CUDA kernels. On CUDA bfloat16 tensors of a build with the kernels
// (HaveFusedKernels()) each runs as one kernel (models/fused_ops_cuda.cu) that reads its inputs once and
// writes its output once, instead of the reference's chain of float32 passes. The kernels compute in
// float32 and round where the reference rounds, so the two agree up to float32 summation order.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace stas::models {

// A modulation vector per (sample, token): base[c] + proj[b, t, c] in float32. `proj` is [B, T, D]
// with T = 1 (one vector per sample, broadcast over the tokens) or T = L (one per token, Wan2.2);
// its last dim must be contiguous. `base` is [D] float32.
struct Modulation {
  at::Tensor base;
  at::Tensor proj;
  at::Tensor Materialize() const;  // [B, T, D] float32
};

// (LayerNorm(x) * (1 + scale) + shift) computed in float32 (LayerNorm without affine), returned in
// x's dtype. x [B, L, D].
at::Tensor ModulatedLayerNorm(const at::Tensor& x, const Modulation& shift, const Modulation& scale, double eps);

// LayerNorm(x) * weight + bias computed in float32 (weight, bias [D] float32), returned in x's dtype.
at::Tensor AffineLayerNorm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps);

// (x + y * gate) computed in float32, returned in x's dtype. x, y [B, L, D].
at::Tensor GatedResidual(const at::Tensor& x, const at::Tensor& y, const Modulation& gate);

// RMSNorm of x [B, L, D] over D (float32, `weight` [D] float32), rounded to x's dtype, then, when cos
// and sin are defined ([L, 1, Dh/2] float32), RoPE on the interleaved pairs of each of the `heads`
// heads of Dh = D / heads channels, in float32. Returns [B, L, heads, Dh] in x's dtype.
at::Tensor RmsNormRope(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& cos, const at::Tensor& sin,
                       int64_t heads, double eps);

// gelu_tanh(x W^T + b); on CUDA the GELU runs in the GEMM's epilogue (cuBLASLt).
at::Tensor LinearGeluTanh(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// Whether this build has the CUDA kernels, and whether they are used (default: yes when built).
// Disabling them (benchmarks, A/B checks) makes every function above run its reference; process-wide.
bool HaveFusedKernels();
void SetFusedKernelsEnabled(bool enabled);
bool FusedKernelsEnabled();

}  // namespace stas::models
