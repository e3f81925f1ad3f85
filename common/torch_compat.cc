#include "common/torch_compat.h"

#include <cmath>
#include <stdexcept>
#include <vector>

namespace stas::compat {

std::optional<at::ScalarType> ScalarTypeForSafetensorsDtype(const std::string& d) {
  if (d == "BOOL") return at::kBool;
  if (d == "U8") return at::kByte;
  if (d == "I8") return at::kChar;
  if (d == "I16") return at::kShort;
  if (d == "I32") return at::kInt;
  if (d == "I64") return at::kLong;
  if (d == "F16") return at::kHalf;
  if (d == "BF16") return at::kBFloat16;
  if (d == "F32") return at::kFloat;
  if (d == "F64") return at::kDouble;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  if (d == "U16") return at::kUInt16;
  if (d == "U32") return at::kUInt32;
  if (d == "U64") return at::kUInt64;
#endif
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  if (d == "F8_E4M3") return at::kFloat8_e4m3fn;
  if (d == "F8_E5M2") return at::kFloat8_e5m2;
#endif
  return std::nullopt;
}

at::Tensor ScaledDotProductAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     double scale, const std::optional<at::Tensor>& attn_mask) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, attn_mask, /*dropout_p=*/0.0, /*is_causal=*/false,
                                          scale);
#else
  auto scores = at::matmul(q, k.transpose(-2, -1)) * scale;
  if (attn_mask) scores = scores.masked_fill(attn_mask->logical_not(), -std::numeric_limits<float>::infinity());
  return at::matmul(at::softmax(scores, -1), v);
#endif
}

at::ScalarType Float8E4m3() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  return at::kFloat8_e4m3fn;
#else
  throw std::runtime_error("float8 needs LibTorch >= 2.1; this build has " TORCH_VERSION);
#endif
}

at::Tensor ScaledMm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& scale_a, const at::Tensor& scale_b,
                    const at::Tensor& bias, at::ScalarType out_dtype, bool fast_accum) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
  const std::optional<at::Tensor> bias_opt = bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
  return at::_scaled_mm(a, b, scale_a, scale_b, bias_opt, /*scale_result=*/std::nullopt, out_dtype, fast_accum);
#else
  (void)a, (void)b, (void)scale_a, (void)scale_b, (void)bias, (void)out_dtype, (void)fast_accum;
  throw std::runtime_error("float8 matmuls (_scaled_mm with per-row scales) need LibTorch >= 2.5; this build has " TORCH_VERSION);
#endif
}

std::optional<AttentionKernel> ParseAttentionKernel(const std::string& name) {
  if (name == "auto") return AttentionKernel::kAuto;
  if (name == "flash") return AttentionKernel::kFlash;
  if (name == "cudnn") return AttentionKernel::kCudnn;
  return std::nullopt;
}

std::string PreferAttentionKernel(AttentionKernel kernel) {
  if (kernel == AttentionKernel::kAuto) return "";
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 6)
  auto& context = at::globalContext();
  if (kernel == AttentionKernel::kFlash) {
    context.setSDPUseFlash(true);
    context.setSDPUseCuDNN(false);
    return "";
  }
  // cuDNN first, the rest in LibTorch's order (a fixed list would break when LibTorch adds a backend).
  context.setSDPUseCuDNN(true);
  std::vector<int64_t> order{static_cast<int64_t>(at::SDPBackend::cudnn_attention)};
  for (at::SDPBackend backend : context.sDPPriorityOrder())
    if (backend != at::SDPBackend::cudnn_attention) order.push_back(static_cast<int64_t>(backend));
  context.setSDPPriorityOrder(order);
  return "";
#else
  return "choosing the attention kernel needs LibTorch >= 2.6; this build has " TORCH_VERSION;
#endif
}

std::string AttentionKernelFor(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 6)
  switch (static_cast<at::SDPBackend>(at::_fused_sdp_choice(q, k, v))) {
    case at::SDPBackend::flash_attention: return "flash";
    case at::SDPBackend::cudnn_attention: return "cudnn";
    case at::SDPBackend::efficient_attention: return "efficient";
    case at::SDPBackend::math: return "math";
    default: return "unknown";
  }
#else
  (void)q, (void)k, (void)v;
  return "unknown";
#endif
}

std::string TorchVersionString() { return TORCH_VERSION; }

}  // namespace stas::compat
