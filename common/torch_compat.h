// Differences between LibTorch 1.13 (Debian, CPU) and 2.x (pip, CUDA) kept in one place.
#pragma once

#include <ATen/ATen.h>
#include <torch/version.h>

#include <optional>
#include <string>

namespace stas::compat {

constexpr bool kHasFusedSdpa = TORCH_VERSION_MAJOR >= 2;
constexpr bool kHasUnsignedWideTypes = TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3);
constexpr bool kHasFloat8 = TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1);
// at::_scaled_mm with per-row (float32 [M, 1] x [1, N]) scales and a bfloat16 output: LibTorch >= 2.5.
constexpr bool kHasScaledMm = TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5);

// Maps a safetensors dtype name to the ATen scalar type, when this LibTorch has one.
std::optional<at::ScalarType> ScalarTypeForSafetensorsDtype(const std::string& dtype);

// softmax(q k^T * scale) v over [B, H, L, D] tensors; uses the fused kernel where LibTorch has it.
// attn_mask (optional) is boolean, broadcastable to [B, H, Lq, Lk], true = attend.
at::Tensor ScaledDotProductAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     double scale, const std::optional<at::Tensor>& attn_mask = std::nullopt);

// The float8 e4m3 ("fn": finite, max 448) dtype; throws where this LibTorch has none (!kHasFloat8).
at::ScalarType Float8E4m3();

// a [M, K] float8 (row-major) times b [K, N] float8 (column-major, e.g. a [N, K] weight transposed),
// each scaled by its float32 scale (a scalar each, or [M, 1] and [1, N]), plus bias ([N], out_dtype,
// optional), returned in out_dtype; fast_accum: Hopper's faster, less exact float8 accumulation.
// Throws where this LibTorch has no _scaled_mm (!kHasScaledMm).
at::Tensor ScaledMm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& scale_a, const at::Tensor& scale_b,
                    const at::Tensor& bias, at::ScalarType out_dtype, bool fast_accum);

// Which fused kernel scaled_dot_product_attention runs on CUDA. kAuto leaves LibTorch's own choice
// (on Hopper: FlashAttention-2, or cuDNN's fused attention where LibTorch prefers it); kFlash and
// kCudnn put that kernel first, falling back as LibTorch does when it cannot take the inputs.
enum class AttentionKernel { kAuto, kFlash, kCudnn };
constexpr bool kHasAttentionKernelChoice =
    TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 6);
// "auto", "flash", "cudnn" -> the kernel; nullopt for anything else.
std::optional<AttentionKernel> ParseAttentionKernel(const std::string& name);
// Sets the process-wide preference. Returns an error text (empty on success) where this LibTorch
// cannot choose (!kHasAttentionKernelChoice) and the choice is not kAuto.
std::string PreferAttentionKernel(AttentionKernel kernel);
// The kernel LibTorch picks for these [B, H, L, D] inputs now: "flash", "cudnn", "efficient", "math",
// or "unknown" where this LibTorch cannot say.
std::string AttentionKernelFor(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

std::string TorchVersionString();

}  // namespace stas::compat
