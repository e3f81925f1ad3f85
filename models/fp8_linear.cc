#include "models/fp8_linear.h"

#include <atomic>
#include <vector>

#include "common/check.h"
#include "common/torch_compat.h"

#if STAS_HAVE_FUSED_KERNELS
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "models/fused_ops_kernels.h"
#endif

namespace stas::models {
namespace {

constexpr double kFp8E4m3Max = 448.0;
constexpr double kTinyAmax = 1e-12;  // an all-zero row or tensor gets a finite scale

// Per-tensor or per-row (dim 1 kept) scale of a float32 tensor [M, K]: amax / 448.
at::Tensor ScaleOf(const at::Tensor& values, Fp8Scaling scaling) {
  const at::Tensor amax = scaling == Fp8Scaling::kPerRow ? values.abs().amax({1}, /*keepdim=*/true) : values.abs().amax();
  return amax.clamp_min(kTinyAmax) / kFp8E4m3Max;
}

at::Tensor ToFp8(const at::Tensor& values, const at::Tensor& scale) {
  return (values / scale).clamp(-kFp8E4m3Max, kFp8E4m3Max).to(compat::Float8E4m3());
}

// Whether _scaled_mm takes a bias together with per-row scales on this build (learned on first use).
std::atomic<int> rowwise_bias_supported{-1};

}  // namespace

Result<Fp8Scaling> ParseFp8Scaling(const std::string& name) {
  if (name == "row") return Fp8Scaling::kPerRow;
  if (name == "tensor") return Fp8Scaling::kPerTensor;
  return InvalidArgument("float8 scaling must be 'row' or 'tensor', got '" + name + "'");
}

const char* Fp8ScalingName(Fp8Scaling scaling) { return scaling == Fp8Scaling::kPerRow ? "row" : "tensor"; }

Status Fp8LinearSupport(const at::Device& device) {
  if (!compat::kHasScaledMm || !compat::kHasFloat8)
    return NotImplemented("float8 linear layers need LibTorch >= 2.5 (float8 _scaled_mm); this build has " +
                              compat::TorchVersionString());
  if (!device.is_cuda())
    return NotImplemented("float8 linear layers need a CUDA device (Hopper or newer), not " + device.str());
  return Status::Ok();
}

Result<Fp8Weight> QuantizeFp8Weight(const at::Tensor& weight, Fp8Scaling scaling) {
  if (!weight.defined() || weight.dim() != 2 || !at::isFloatingType(weight.scalar_type()))
    return InvalidArgument("float8 weight must be a floating [N, K] tensor");
  STAS_RETURN_IF_ERROR(Fp8LinearSupport(weight.device()));
  if (weight.size(0) % 16 != 0 || weight.size(1) % 16 != 0)
    return InvalidArgument("float8 weight [" + std::to_string(weight.size(0)) + ", " + std::to_string(weight.size(1)) +
                           "]: both sizes must be multiples of 16");
  const at::Tensor w = weight.to(at::kFloat);
  Fp8Weight q;
  q.scaling = scaling;
  const at::Tensor scale = ScaleOf(w, scaling);  // [N, 1] or scalar
  q.data = ToFp8(w, scale).contiguous();
  q.scale = scaling == Fp8Scaling::kPerRow ? scale.reshape({1, -1}).contiguous() : scale;
  return q;
}

at::Tensor Fp8Linear(const at::Tensor& x, const Fp8Weight& weight, const at::Tensor& bias, bool gelu_tanh_input) {
  STAS_CHECK(weight.defined()) << "Fp8Linear: the weight is not quantized";
  STAS_CHECK(x.size(-1) == weight.data.size(1))
      << "Fp8Linear: x has " << x.size(-1) << " features, the weight takes " << weight.data.size(1);
  const Status support = Fp8LinearSupport(x.device());
  STAS_CHECK(support.ok()) << support.ToString();
  const at::Tensor rows = x.reshape({-1, x.size(-1)});
  const int64_t M = rows.size(0), K = rows.size(1);
  at::Tensor a, a_scale;
#if STAS_HAVE_FUSED_KERNELS
  if (weight.scaling == Fp8Scaling::kPerRow && rows.scalar_type() == at::kBFloat16 && rows.stride(1) == 1 &&
      rows.stride(0) % 2 == 0 && K % 2 == 0 && reinterpret_cast<uintptr_t>(rows.data_ptr()) % 4 == 0) {
    // One kernel: per-token amax, scale and cast (and the GELU before them).
    a = at::empty({M, K}, rows.options().dtype(compat::Float8E4m3()));
    a_scale = at::empty({M, 1}, rows.options().dtype(at::kFloat));
    const int error = kernels::QuantizeRowsFp8(
        reinterpret_cast<const uint16_t*>(rows.data_ptr<at::BFloat16>()), rows.stride(0), gelu_tanh_input,
        static_cast<uint8_t*>(a.data_ptr()), a_scale.data_ptr<float>(), M, K,
        c10::cuda::getCurrentCUDAStream(rows.device().index()).stream());
    STAS_CHECK(error == cudaSuccess) << "float8 quantize kernel: " << cudaGetErrorString(static_cast<cudaError_t>(error));
  }
#endif
  if (!a.defined()) {
    at::Tensor values = (gelu_tanh_input ? at::gelu(rows, "tanh") : rows).to(at::kFloat);
    a_scale = ScaleOf(values, weight.scaling);
    a = ToFp8(values, a_scale).contiguous();
  }
  const at::ScalarType out_dtype = x.scalar_type();
  const at::Tensor b = bias.defined() ? bias.to(out_dtype) : at::Tensor();
  at::Tensor out;
  // Some LibTorch builds refuse a bias with per-row scales: then the bias is added after the GEMM.
  if (b.defined() && weight.scaling == Fp8Scaling::kPerRow && rowwise_bias_supported.load() != 1) {
    if (rowwise_bias_supported.load() == -1) {
      try {
        out = compat::ScaledMm(a, weight.data.t(), a_scale, weight.scale, b, out_dtype, /*fast_accum=*/true);
        rowwise_bias_supported = 1;
      } catch (const c10::Error&) {
        rowwise_bias_supported = 0;
      }
    }
    if (!out.defined()) out = compat::ScaledMm(a, weight.data.t(), a_scale, weight.scale, {}, out_dtype, true).add_(b);
  } else {
    out = compat::ScaledMm(a, weight.data.t(), a_scale, weight.scale, b, out_dtype, /*fast_accum=*/true);
  }
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = weight.data.size(0);
  return out.view(shape);
}

}  // namespace stas::models
