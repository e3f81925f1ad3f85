// Opt-in float8 (e4m3) linear layers for the DiT blocks: y = x W^T + b with W quantized once (at load,
// per output row or per tensor) and x quantized on the fly (per token or per tensor), one float8 GEMM
// (at::_scaled_mm) with a bfloat16 output. Never the default: it trades accuracy (about 3 significant
// bits per value) for speed, and the callers (WanTransformer::UseFp8Linears, the benches) ask for it.
//
// Needs CUDA and LibTorch >= 2.5 (float8 dtypes and _scaled_mm with per-row scales); elsewhere
// Fp8LinearSupport says why not, and every entry point fails with that message.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "common/status.h"

namespace stas::models {

enum class Fp8Scaling {
  kPerRow,     // weight: one scale per output channel; activation: one per token (the accurate choice)
  kPerTensor,  // one scale for the whole weight and one for the whole activation
};

// "row" or "tensor"; InvalidArgument otherwise.
Result<Fp8Scaling> ParseFp8Scaling(const std::string& name);
const char* Fp8ScalingName(Fp8Scaling scaling);

// OK where float8 linears can run on `device`; NotImplemented naming what is missing otherwise
// (a CPU device, a LibTorch without _scaled_mm such as the CPU build's 1.13).
Status Fp8LinearSupport(const at::Device& device);

// A weight [N, K] quantized to float8 e4m3: data [N, K] (K contiguous) and its float32 scale ([1, N]
// per row, a scalar per tensor) such that weight ~ data * scale.
struct Fp8Weight {
  at::Tensor data;
  at::Tensor scale;
  Fp8Scaling scaling = Fp8Scaling::kPerRow;
  bool defined() const { return data.defined(); }
};

// Quantizes a [N, K] floating weight on its device: scale = amax / 448 per row or per tensor. Fails
// as Fp8LinearSupport does, and with InvalidArgument when the shape does not suit the float8 GEMM (N and
// K must be multiples of 16).
Result<Fp8Weight> QuantizeFp8Weight(const at::Tensor& weight, Fp8Scaling scaling);

// x [..., K] (bfloat16, CUDA) times the quantized weight, plus bias ([N], x's dtype, may be undefined),
// in x's dtype. gelu_tanh_input: x passes through the tanh GELU before it is quantized (the FFN's
// activation, fused into the quantization on the per-row path). Throws (c10::Error / std::runtime_error)
// where Fp8LinearSupport fails.
at::Tensor Fp8Linear(const at::Tensor& x, const Fp8Weight& weight, const at::Tensor& bias, bool gelu_tanh_input = false);

}  // namespace stas::models
