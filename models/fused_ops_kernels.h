// Launchers of the CUDA kernels behind models/fused_ops.h and models/fp8_linear.h (no LibTorch here: raw
// pointers, the stream). bfloat16 tensors are passed as uint16_t pointers, float8 e4m3 ones as uint8_t.
// Each returns the launch's cudaError_t as an int.
#pragma once

#include <cstdint>

namespace stas::models::kernels {

// Where row (b, l) of a [B, L, D] tensor with a contiguous last dim starts: b * batch + l * row.
struct Rows {
  int64_t batch;
  int64_t row;
};

// Rows are (b, l) with l in [0, L); a modulation row is b * T + (T == 1 ? 0 : l), its element c is
// base[c] + proj[b * proj_batch_stride + t * proj_row_stride + c] (base[c] alone when proj is null,
// proj alone when base is null).
struct ModulationArgs {
  const float* base;
  const uint16_t* proj;
  int64_t proj_batch_stride;
  int64_t proj_row_stride;
  int64_t tokens;  // T
};

// out = (LayerNorm(x) [* weight + bias]) * (scale_offset + scale) + shift: scale_offset 1 for adaLN
// modulation, 0 for an affine LayerNorm passed as (scale = weight, shift = bias). weight and bias
// (float32 [dim]) may be null (no affine before the modulation).
int ModulatedLayerNorm(const uint16_t* x, Rows x_rows, const float* weight, const float* bias, ModulationArgs shift,
                       ModulationArgs scale, float scale_offset, uint16_t* out, Rows out_rows, int64_t batch,
                       int64_t length, int64_t dim, float eps, void* stream);

// out = x + y * gate (out may be x).
int GatedResidual(const uint16_t* x, Rows x_rows, const uint16_t* y, Rows y_rows, ModulationArgs gate, uint16_t* out,
                  Rows out_rows, int64_t batch, int64_t length, int64_t dim, void* stream);

// cos/sin: [length, head_dim / 2] float32 or null (no RoPE).
int RmsNormRope(const uint16_t* x, int64_t x_row_stride, const float* weight, const float* cos, const float* sin,
                uint16_t* out, int64_t rows, int64_t length, int64_t dim, int64_t head_dim, float eps, void* stream);

// Per-head LayerNorm of x [B, L, H, head_dim] (heads at a stride of head_dim within a row; weight/bias
// float32 [head_dim] or null), rounded to bfloat16, then RoPE with full-width tables cos/sin
// [length - rope_begin, head_dim] (null: none) on the tokens l >= rope_begin. out: contiguous.
int HeadLayerNormRope(const uint16_t* x, Rows x_rows, const float* weight, const float* bias, const float* cos,
                      const float* sin, int64_t rope_begin, uint16_t* out, int64_t batch, int64_t length,
                      int64_t heads, int64_t head_dim, float eps, void* stream);

// Quantizes each row of x [rows, dim] (row stride x_row_stride, dim even) to float8 e4m3 with its own
// scale: scale[r] = max(amax(row), tiny) / 448, out[r, c] = saturate(x[r, c] / scale[r]). With gelu_tanh
// the row is first mapped through the tanh GELU (computed in float32 from the bfloat16 value, rounded
// to bfloat16 as the unfused op would). out: contiguous [rows, dim]; scale: float32 [rows].
int QuantizeRowsFp8(const uint16_t* x, int64_t x_row_stride, bool gelu_tanh, uint8_t* out, float* scale, int64_t rows,
                    int64_t dim, void* stream);

}  // namespace stas::models::kernels
