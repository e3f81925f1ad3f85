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
// its last dim must be contiguous. `base` is [D] float32, or undefined for none (CogVideoX, whose
// modulation linear carries the bias).
struct Modulation {
  at::Tensor base;
  at::Tensor proj;
  at::Tensor Materialize() const;  // [B, T, D] float32
};

// The optional elementwise affine of a LayerNorm: weight and bias [D], float32 (both or neither).
struct LayerNormAffine {
  at::Tensor weight, bias;
};

// (LayerNorm(x) * (1 + scale) + shift) computed in float32, returned in x's dtype. x [B, L, D] with a
// contiguous last dim (rows at any batch and row stride, e.g. a slice of a longer sequence). `affine`
// defined: the LayerNorm's own weight and bias apply first (CogVideoX's norms). `out` defined: a
// [B, L, D] tensor of x's dtype with a contiguous last dim (e.g. a slice of a joint sequence) that
// receives the result, which is also returned; otherwise a new contiguous tensor.
at::Tensor ModulatedLayerNorm(const at::Tensor& x, const Modulation& shift, const Modulation& scale, double eps,
                              const LayerNormAffine& affine = {}, const at::Tensor& out = {});

// LayerNorm(x) * weight + bias computed in float32 (weight, bias [D] float32), returned in x's dtype.
at::Tensor AffineLayerNorm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps);

// (x + y * gate) computed in float32, returned in x's dtype as a new contiguous tensor. x, y [B, L, D]
// with contiguous last dims (y may be a slice of a longer sequence).
at::Tensor GatedResidual(const at::Tensor& x, const at::Tensor& y, const Modulation& gate);

// RMSNorm of x [B, L, D] over D (float32, `weight` [D] float32), rounded to x's dtype, then, when cos
// and sin are defined ([L, 1, Dh/2] float32), RoPE on the interleaved pairs of each of the `heads`
// heads of Dh = D / heads channels, in float32. Returns [B, L, heads, Dh] in x's dtype.
at::Tensor RmsNormRope(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& cos, const at::Tensor& sin,
                       int64_t heads, double eps);

// LayerNorm over the last dim of x [B, L, H, Dh] (each head on its own; `affine` float32 [Dh] or
// undefined), rounded to x's dtype, then, when cos is defined, RoPE on the interleaved pairs of the
// tokens l >= rope_begin with full-width tables cos/sin [L - rope_begin, 1, Dh] float32 (each pair's
// angle twice: x * cos + (-x1, x0) * sin), in float32. Returns a contiguous [B, L, H, Dh] in x's dtype.
// x's last dim must be contiguous (e.g. q or k of a [B, L, 3, H, Dh] projection). CogVideoX's q/k norm.
at::Tensor HeadLayerNormRope(const at::Tensor& x, const LayerNormAffine& affine, const at::Tensor& cos,
                             const at::Tensor& sin, int64_t rope_begin, double eps);

// gelu_tanh(x W^T + b); on CUDA the GELU runs in the GEMM's epilogue (cuBLASLt).
at::Tensor LinearGeluTanh(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// Whether this build has the CUDA kernels, and whether they are used (default: yes when built).
// Disabling them (benchmarks, A/B checks) makes every function above run its reference; process-wide.
bool HaveFusedKernels();
void SetFusedKernelsEnabled(bool enabled);
bool FusedKernelsEnabled();

}  // namespace stas::models
