#include "models/fused_ops.h"

#include <atomic>
#include <vector>

#include "common/check.h"

#if STAS_HAVE_FUSED_KERNELS
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "models/fused_ops_kernels.h"
#endif

namespace stas::models {

at::Tensor Modulation::Materialize() const {
  return base.defined() ? base + proj.to(at::kFloat) : proj.to(at::kFloat);
}

namespace {
std::atomic<bool> fused_kernels_enabled{true};
}  // namespace

bool HaveFusedKernels() { return STAS_HAVE_FUSED_KERNELS; }
void SetFusedKernelsEnabled(bool enabled) { fused_kernels_enabled = enabled; }
bool FusedKernelsEnabled() { return HaveFusedKernels() && fused_kernels_enabled; }

namespace {

at::Tensor FloatOrUndefined(const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : at::Tensor(); }

at::Tensor ReferenceModulatedLayerNorm(const at::Tensor& x, const Modulation& shift, const Modulation& scale,
                                       double eps, const LayerNormAffine& affine) {
  const at::Tensor normed = at::layer_norm(x.to(at::kFloat), {x.size(-1)}, FloatOrUndefined(affine.weight),
                                           FloatOrUndefined(affine.bias), eps);
  return (normed * (scale.Materialize() + 1.0) + shift.Materialize()).to(x.scalar_type());
}

at::Tensor ReferenceHeadLayerNormRope(const at::Tensor& x, const LayerNormAffine& affine, const at::Tensor& cos,
                                      const at::Tensor& sin, int64_t rope_begin, double eps) {
  const at::Tensor normed = at::layer_norm(x.to(at::kFloat), {x.size(-1)}, FloatOrUndefined(affine.weight),
                                           FloatOrUndefined(affine.bias), eps)
                                .to(x.scalar_type());
  const int64_t L = x.size(1);
  if (!cos.defined() || rope_begin >= L) return normed.contiguous();
  const at::Tensor tail = normed.narrow(1, rope_begin, L - rope_begin).to(at::kFloat);
  const auto sizes = tail.sizes();
  const at::Tensor pairs = tail.reshape({sizes[0], sizes[1], sizes[2], sizes[3] / 2, 2});
  const at::Tensor rotated = at::stack({-pairs.select(-1, 1), pairs.select(-1, 0)}, -1).reshape(sizes);
  const at::Tensor roped = (tail * cos + rotated * sin).to(x.scalar_type());
  return rope_begin == 0 ? roped : at::cat({normed.narrow(1, 0, rope_begin), roped}, 1);
}

at::Tensor ReferenceGatedResidual(const at::Tensor& x, const at::Tensor& y, const Modulation& gate) {
  return (x.to(at::kFloat) + y.to(at::kFloat) * gate.Materialize()).to(x.scalar_type());
}

at::Tensor ReferenceRmsNormRope(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& cos,
                                const at::Tensor& sin, int64_t heads, double eps) {
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor normed = (xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps) * weight).to(x.scalar_type());
  const int64_t B = x.size(0), L = x.size(1), Dh = x.size(2) / heads;
  const at::Tensor by_head = normed.view({B, L, heads, Dh});
  if (!cos.defined()) return by_head;
  // Interleaved pairs (x0, x1) -> (x0 c - x1 s, x0 s + x1 c).
  const at::Tensor pairs = by_head.to(at::kFloat).reshape({B, L, heads, Dh / 2, 2});
  const at::Tensor x0 = pairs.select(-1, 0), x1 = pairs.select(-1, 1);
  return at::stack({x0 * cos - x1 * sin, x0 * sin + x1 * cos}, -1).reshape({B, L, heads, Dh}).to(x.scalar_type());
}

#if STAS_HAVE_FUSED_KERNELS
bool Bf16Cuda(const at::Tensor& t) { return t.defined() && t.is_cuda() && t.scalar_type() == at::kBFloat16; }

// Whether the kernel path may take x: kernels enabled and x a CUDA bfloat16 tensor.
bool KernelInput(const at::Tensor& x) { return FusedKernelsEnabled() && Bf16Cuda(x); }

const uint16_t* Bf16Data(const at::Tensor& t) { return reinterpret_cast<const uint16_t*>(t.data_ptr<at::BFloat16>()); }

void* CurrentStream(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

// x [B, L, D] with a contiguous, even last dim and even strides (rows read in bfloat16 pairs).
bool PairRows(const at::Tensor& x) {
  return x.dim() == 3 && x.size(2) % 2 == 0 && x.stride(2) == 1 && x.stride(1) % 2 == 0 && x.stride(0) % 2 == 0 &&
         reinterpret_cast<uintptr_t>(x.data_ptr()) % 4 == 0;
}

kernels::Rows RowsOf(const at::Tensor& x) { return {x.stride(0), x.stride(1)}; }

uint16_t* MutableBf16Data(const at::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>()); }

// x [B, L, D] whose rows (b, l) sit at a uniform stride with a contiguous last dim (a contiguous tensor
// or a column slice of one); D even so rows are read in bfloat16 pairs.
bool UniformRows(const at::Tensor& x) {
  return x.dim() == 3 && x.size(2) % 2 == 0 && x.stride(2) == 1 && x.stride(0) == x.size(1) * x.stride(1) &&
         x.stride(1) % 2 == 0 && reinterpret_cast<uintptr_t>(x.data_ptr()) % 4 == 0;
}

// The kernel's view of a modulation for x [B, L, D], or false when its layout does not fit.
bool KernelModulation(const Modulation& m, const at::Tensor& x, const at::Tensor& base_f32,
                      kernels::ModulationArgs* args) {
  const at::Tensor& p = m.proj;
  if (!Bf16Cuda(p) || p.dim() != 3 || p.size(0) != x.size(0) || p.size(2) != x.size(2) || p.stride(2) != 1 ||
      (p.size(1) != 1 && p.size(1) != x.size(1)) || p.stride(1) % 2 != 0 || p.stride(0) % 2 != 0 ||
      reinterpret_cast<uintptr_t>(p.data_ptr()) % 4 != 0)
    return false;
  if (base_f32.defined() && (!base_f32.is_cuda() || base_f32.numel() != x.size(2))) return false;
  *args = {base_f32.defined() ? base_f32.data_ptr<float>() : nullptr, Bf16Data(p), p.stride(0), p.stride(1), p.size(1)};
  return true;
}

at::Tensor ContiguousFloat(const at::Tensor& t) { return t.defined() ? t.to(at::kFloat).contiguous() : at::Tensor(); }

// The kernel's view of an affine: both float32-convertible [D] CUDA tensors, or neither.
bool KernelAffine(const LayerNormAffine& affine, int64_t dim) {
  if (!affine.weight.defined() && !affine.bias.defined()) return true;
  return affine.weight.defined() && affine.bias.defined() && affine.weight.is_cuda() && affine.bias.is_cuda() &&
         affine.weight.numel() == dim && affine.bias.numel() == dim;
}

const float* FloatData(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

void CheckLaunch(int error, const char* what) {
  STAS_CHECK(error == cudaSuccess) << what << ": " << cudaGetErrorString(static_cast<cudaError_t>(error));
}
#endif

}  // namespace

at::Tensor ModulatedLayerNorm(const at::Tensor& x, const Modulation& shift, const Modulation& scale, double eps,
                              const LayerNormAffine& affine, const at::Tensor& out) {
  STAS_CHECK(x.dim() == 3) << "ModulatedLayerNorm: x must be [B, L, D], got " << x.sizes();
  STAS_CHECK(!out.defined() || (out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type()))
      << "ModulatedLayerNorm: out must match x " << x.sizes() << ", got " << out.sizes();
#if STAS_HAVE_FUSED_KERNELS
  const at::Tensor shift_base = ContiguousFloat(shift.base), scale_base = ContiguousFloat(scale.base);
  kernels::ModulationArgs shift_args{}, scale_args{};
  if (KernelInput(x) && PairRows(x) && (!out.defined() || (out.is_cuda() && PairRows(out))) &&
      KernelAffine(affine, x.size(2)) && KernelModulation(shift, x, shift_base, &shift_args) &&
      KernelModulation(scale, x, scale_base, &scale_args)) {
    const at::Tensor w = ContiguousFloat(affine.weight), b = ContiguousFloat(affine.bias);
    const at::Tensor result =
        out.defined() ? out : at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
    CheckLaunch(kernels::ModulatedLayerNorm(Bf16Data(x), RowsOf(x), FloatData(w), FloatData(b), shift_args, scale_args,
                                            1.0f, MutableBf16Data(result), RowsOf(result), x.size(0), x.size(1),
                                            x.size(2), static_cast<float>(eps), CurrentStream(x)),
                "modulated LayerNorm kernel");
    return result;
  }
#endif
  at::Tensor result = ReferenceModulatedLayerNorm(x, shift, scale, eps, affine);
  if (!out.defined()) return result;
  out.copy_(result);
  return out;
}

at::Tensor AffineLayerNorm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
#if STAS_HAVE_FUSED_KERNELS
  if (KernelInput(x) && UniformRows(x) && weight.is_cuda() && bias.is_cuda() && weight.numel() == x.size(2) &&
      bias.numel() == x.size(2)) {
    const at::Tensor w = ContiguousFloat(weight), b = ContiguousFloat(bias);
    const kernels::ModulationArgs scale{w.data_ptr<float>(), nullptr, 0, 0, 1};
    const kernels::ModulationArgs shift{b.data_ptr<float>(), nullptr, 0, 0, 1};
    at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
    CheckLaunch(kernels::ModulatedLayerNorm(Bf16Data(x), RowsOf(x), nullptr, nullptr, shift, scale, 0.0f,
                                            MutableBf16Data(out), RowsOf(out), x.size(0), x.size(1), x.size(2),
                                            static_cast<float>(eps), CurrentStream(x)),
                "affine LayerNorm kernel");
    return out;
  }
#endif
  return at::layer_norm(x.to(at::kFloat), {x.size(-1)}, weight, bias, eps).to(x.scalar_type());
}

at::Tensor GatedResidual(const at::Tensor& x, const at::Tensor& y, const Modulation& gate) {
#if STAS_HAVE_FUSED_KERNELS
  const at::Tensor gate_base = ContiguousFloat(gate.base);
  kernels::ModulationArgs gate_args{};
  if (KernelInput(x) && Bf16Cuda(y) && PairRows(x) && PairRows(y) && x.sizes() == y.sizes() &&
      KernelModulation(gate, x, gate_base, &gate_args)) {
    at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
    CheckLaunch(kernels::GatedResidual(Bf16Data(x), RowsOf(x), Bf16Data(y), RowsOf(y), gate_args, MutableBf16Data(out),
                                       RowsOf(out), x.size(0), x.size(1), x.size(2), CurrentStream(x)),
                "gated residual kernel");
    return out;
  }
#endif
  return ReferenceGatedResidual(x, y, gate);
}

at::Tensor RmsNormRope(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& cos, const at::Tensor& sin,
                       int64_t heads, double eps) {
  STAS_CHECK(x.dim() == 3 && heads > 0 && x.size(2) % heads == 0 && (x.size(2) / heads) % 2 == 0)
      << "RmsNormRope: x must be [B, L, heads * Dh] with Dh even, got " << x.sizes() << " for " << heads << " heads";
#if STAS_HAVE_FUSED_KERNELS
  const bool rope = cos.defined();
  const int64_t L = x.size(1), Dh = x.size(2) / heads;
  if (KernelInput(x) && UniformRows(x) && weight.is_cuda() && weight.numel() == x.size(2) &&
      (!rope || (cos.is_cuda() && sin.is_cuda() && cos.numel() == L * Dh / 2 && sin.numel() == L * Dh / 2))) {
    const at::Tensor w = ContiguousFloat(weight);
    const at::Tensor c = rope ? ContiguousFloat(cos) : at::Tensor(), s = rope ? ContiguousFloat(sin) : at::Tensor();
    at::Tensor out = at::empty({x.size(0), L, heads, Dh}, x.options().memory_format(at::MemoryFormat::Contiguous));
    CheckLaunch(kernels::RmsNormRope(Bf16Data(x), x.stride(1), w.data_ptr<float>(), rope ? c.data_ptr<float>() : nullptr,
                                     rope ? s.data_ptr<float>() : nullptr,
                                     reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>()), x.size(0) * L, L,
                                     x.size(2), Dh, static_cast<float>(eps), CurrentStream(x)),
                "RMSNorm + RoPE kernel");
    return out;
  }
#endif
  return ReferenceRmsNormRope(x, weight, cos, sin, heads, eps);
}

at::Tensor HeadLayerNormRope(const at::Tensor& x, const LayerNormAffine& affine, const at::Tensor& cos,
                             const at::Tensor& sin, int64_t rope_begin, double eps) {
  STAS_CHECK(x.dim() == 4 && x.size(3) % 2 == 0 && rope_begin >= 0 && rope_begin <= x.size(1))
      << "HeadLayerNormRope: x must be [B, L, H, Dh] with Dh even and 0 <= rope_begin <= L, got " << x.sizes()
      << " and rope_begin " << rope_begin;
  const int64_t L = x.size(1), Dh = x.size(3);
  STAS_CHECK(!cos.defined() || (cos.numel() == (L - rope_begin) * Dh && sin.defined() && sin.numel() == cos.numel()))
      << "HeadLayerNormRope: cos/sin must hold " << (L - rope_begin) << " x " << Dh << " values";
#if STAS_HAVE_FUSED_KERNELS
  const bool rope = cos.defined() && rope_begin < L;
  // Heads must sit at a stride of Dh inside a token's row (the layout of a [.., H, Dh] projection).
  if (KernelInput(x) && x.stride(3) == 1 && x.stride(2) == Dh && x.stride(1) % 2 == 0 && x.stride(0) % 2 == 0 &&
      reinterpret_cast<uintptr_t>(x.data_ptr()) % 4 == 0 && KernelAffine(affine, Dh) &&
      (!rope || (cos.is_cuda() && sin.is_cuda()))) {
    const at::Tensor w = ContiguousFloat(affine.weight), b = ContiguousFloat(affine.bias);
    const at::Tensor c = rope ? ContiguousFloat(cos) : at::Tensor(), s = rope ? ContiguousFloat(sin) : at::Tensor();
    at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
    CheckLaunch(kernels::HeadLayerNormRope(Bf16Data(x), RowsOf(x), FloatData(w), FloatData(b), FloatData(c),
                                           FloatData(s), rope_begin, MutableBf16Data(out), x.size(0), L, x.size(2), Dh,
                                           static_cast<float>(eps), CurrentStream(x)),
                "head LayerNorm + RoPE kernel");
    return out;
  }
#endif
  return ReferenceHeadLayerNormRope(x, affine, cos, sin, rope_begin, eps);
}

at::Tensor LinearGeluTanh(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  // The CUDA GEMM applies the tanh GELU in its epilogue; the CPU kernel of the same op uses the exact
  // GELU, so the CPU keeps the separate activation.
  if (FusedKernelsEnabled() && x.is_cuda() && bias.defined() && x.dim() >= 2) {
    const at::Tensor rows = x.reshape({-1, x.size(-1)});
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = weight.size(0);
    return at::_addmm_activation(bias, rows, weight.t(), 1, 1, /*use_gelu=*/true).view(shape);
  }
  return at::gelu(at::linear(x, weight, bias), "tanh");
}

}  // namespace stas::models
