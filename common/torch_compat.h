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

// Maps a safetensors dtype name to the ATen scalar type, when this LibTorch has one.
std::optional<at::ScalarType> ScalarTypeForSafetensorsDtype(const std::string& dtype);

// softmax(q k^T * scale) v over [B, H, L, D] tensors; uses the fused kernel where LibTorch has it.
// attn_mask (optional) is boolean, broadcastable to [B, H, Lq, Lk], true = attend.
at::Tensor ScaledDotProductAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     double scale, const std::optional<at::Tensor>& attn_mask = std::nullopt);

std::string TorchVersionString();

}  // namespace stas::compat
