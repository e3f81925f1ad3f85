// Launchers of the CUDA kernels behind models/fused_ops.h (no LibTorch here: raw pointers, the stream).
// bfloat16 tensors are passed as uint16_t pointers. Each returns the launch's cudaError_t as an int.
#pragma once

#include <cstdint>

namespace stas::models::kernels {

// Rows are (b, l) with l in [0, L); a modulation row is b * T + (T == 1 ? 0 : l), its element c is
// base[c] + proj[b * proj_batch_stride + t * proj_row_stride + c] (base[c] alone when proj is null).
struct ModulationArgs {
  const float* base;
  const uint16_t* proj;
  int64_t proj_batch_stride;
  int64_t proj_row_stride;
  int64_t tokens;  // T
};

// out = LayerNorm(x) * (scale_offset + scale) + shift: scale_offset 1 for adaLN modulation, 0 for an
// affine LayerNorm (scale = weight, shift = bias).
int ModulatedLayerNorm(const uint16_t* x, int64_t x_row_stride, ModulationArgs shift, ModulationArgs scale,
                       float scale_offset, uint16_t* out, int64_t batch, int64_t length, int64_t dim, float eps,
                       void* stream);

int GatedResidual(const uint16_t* x, const uint16_t* y, int64_t y_row_stride, ModulationArgs gate, uint16_t* out,
                  int64_t batch, int64_t length, int64_t dim, void* stream);

// cos/sin: [length, head_dim / 2] float32 or null (no RoPE).
int RmsNormRope(const uint16_t* x, int64_t x_row_stride, const float* weight, const float* cos, const float* sin,
                uint16_t* out, int64_t rows, int64_t length, int64_t dim, int64_t head_dim, float eps, void* stream);

}  // namespace stas::models::kernels
