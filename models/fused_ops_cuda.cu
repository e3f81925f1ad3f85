// CUDA kernels behind models/fused_ops.h. One thread block per token row: the row is read in pairs of
// bfloat16 values (D is even), statistics are reduced over the block, and the output is written once.
// Arithmetic is float32 with explicit round-to-nearest operations (no fused multiply-add), in the
// reference's order, so results match the ATen reference up to the order of the row reductions.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "models/fused_ops_kernels.h"

namespace stas::models::kernels {
namespace {

using bf16 = __nv_bfloat16;
using bf162 = __nv_bfloat162;

constexpr int kMaxThreads = 256;

// Threads for a row of `dim` values handled in pairs: a multiple of 32, at most kMaxThreads.
int ThreadsFor(int64_t dim) {
  const int64_t pairs = dim / 2;
  const int64_t warps = (pairs + 31) / 32;
  return static_cast<int>(warps * 32 < kMaxThreads ? warps * 32 : kMaxThreads);
}

// The sum of `value` over the block, returned to every thread. `shared` holds one float per warp.
__device__ float BlockSum(float value, float* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // an earlier call may still be reading `shared`
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  value = lane < static_cast<int>(blockDim.x / 32) ? shared[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

__device__ float2 LoadPair(const uint16_t* p) {
  return __bfloat1622float2(*reinterpret_cast<const bf162*>(p));
}

__device__ void StorePair(uint16_t* p, float a, float b) {
  *reinterpret_cast<bf162*>(p) = __floats2bfloat162_rn(a, b);
}

// base[c] + proj[b, t, c] for the pair (c, c + 1).
__device__ float2 ModulationPair(const ModulationArgs& m, int64_t b, int64_t l, int64_t c) {
  if (m.proj == nullptr) return make_float2(m.base[c], m.base[c + 1]);
  const int64_t t = m.tokens == 1 ? 0 : l;
  const float2 p = LoadPair(m.proj + b * m.proj_batch_stride + t * m.proj_row_stride + c);
  if (m.base == nullptr) return p;
  return make_float2(__fadd_rn(m.base[c], p.x), __fadd_rn(m.base[c + 1], p.y));
}

__device__ int64_t RowOffset(Rows rows, int64_t b, int64_t l) { return b * rows.batch + l * rows.row; }

__global__ void ModulatedLayerNormKernel(const uint16_t* x, Rows x_rows, const float* weight, const float* bias,
                                         ModulationArgs shift, ModulationArgs scale, float scale_offset, uint16_t* out,
                                         Rows out_rows, int64_t length, int64_t dim, float eps) {
  __shared__ float shared[32];
  const int64_t row = blockIdx.x;
  const int64_t b = row / length, l = row % length;
  const uint16_t* xr = x + RowOffset(x_rows, b, l);
  float sum = 0.0f;
  for (int64_t c = 2 * threadIdx.x; c < dim; c += 2 * blockDim.x) {
    const float2 v = LoadPair(xr + c);
    sum += v.x + v.y;
  }
  const float mean = BlockSum(sum, shared) / static_cast<float>(dim);
  float squares = 0.0f;
  for (int64_t c = 2 * threadIdx.x; c < dim; c += 2 * blockDim.x) {
    const float2 v = LoadPair(xr + c);
    const float d0 = v.x - mean, d1 = v.y - mean;
    squares += d0 * d0 + d1 * d1;
  }
  const float rstd = rsqrtf(BlockSum(squares, shared) / static_cast<float>(dim) + eps);
  uint16_t* o = out + RowOffset(out_rows, b, l);
  for (int64_t c = 2 * threadIdx.x; c < dim; c += 2 * blockDim.x) {
    const float2 v = LoadPair(xr + c);
    const float2 sh = ModulationPair(shift, b, l, c);
    const float2 sc = ModulationPair(scale, b, l, c);
    float n0 = __fmul_rn(__fsub_rn(v.x, mean), rstd), n1 = __fmul_rn(__fsub_rn(v.y, mean), rstd);
    if (weight != nullptr) {
      n0 = __fadd_rn(__fmul_rn(n0, weight[c]), bias[c]);
      n1 = __fadd_rn(__fmul_rn(n1, weight[c + 1]), bias[c + 1]);
    }
    StorePair(o + c, __fadd_rn(__fmul_rn(n0, __fadd_rn(sc.x, scale_offset)), sh.x),
              __fadd_rn(__fmul_rn(n1, __fadd_rn(sc.y, scale_offset)), sh.y));
  }
}

__global__ void GatedResidualKernel(const uint16_t* x, Rows x_rows, const uint16_t* y, Rows y_rows, ModulationArgs gate,
                                    uint16_t* out, Rows out_rows, int64_t length, int64_t dim) {
  const int64_t row = blockIdx.x;
  const int64_t b = row / length, l = row % length;
  const uint16_t* xr = x + RowOffset(x_rows, b, l);
  const uint16_t* yr = y + RowOffset(y_rows, b, l);
  uint16_t* o = out + RowOffset(out_rows, b, l);
  for (int64_t c = 2 * threadIdx.x; c < dim; c += 2 * blockDim.x) {
    const float2 xv = LoadPair(xr + c), yv = LoadPair(yr + c);
    const float2 g = ModulationPair(gate, b, l, c);
    StorePair(o + c, __fadd_rn(xv.x, __fmul_rn(yv.x, g.x)), __fadd_rn(xv.y, __fmul_rn(yv.y, g.y)));
  }
}

__global__ void RmsNormRopeKernel(const uint16_t* x, int64_t x_row_stride, const float* weight, const float* cos,
                                  const float* sin, uint16_t* out, int64_t length, int64_t dim, int64_t head_dim,
                                  float eps) {
  __shared__ float shared[32];
  const int64_t row = blockIdx.x;
  const int64_t l = row % length;
  const uint16_t* xr = x + row * x_row_stride;
  float squares = 0.0f;
  for (int64_t c = 2 * threadIdx.x; c < dim; c += 2 * blockDim.x) {
    const float2 v = LoadPair(xr + c);
    squares += v.x * v.x + v.y * v.y;
  }
  const float rstd = rsqrtf(BlockSum(squares, shared) / static_cast<float>(dim) + eps);
  const int64_t half = head_dim / 2;
  uint16_t* o = out + row * dim;
  for (int64_t c = 2 * threadIdx.x; c < dim; c += 2 * blockDim.x) {
    const float2 v = LoadPair(xr + c);
    // The reference rounds the normalized values to bfloat16 before rotating them.
    const float x0 = __bfloat162float(__float2bfloat16_rn(__fmul_rn(__fmul_rn(v.x, rstd), weight[c])));
    const float x1 = __bfloat162float(__float2bfloat16_rn(__fmul_rn(__fmul_rn(v.y, rstd), weight[c + 1])));
    if (cos == nullptr) {
      StorePair(o + c, x0, x1);
      continue;
    }
    const int64_t i = l * half + (c % head_dim) / 2;
    const float cs = cos[i], sn = sin[i];
    StorePair(o + c, __fsub_rn(__fmul_rn(x0, cs), __fmul_rn(x1, sn)), __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, cs)));
  }
}


// One warp per (token, head) row of head_dim values, each lane a pair at a time.
__global__ void HeadLayerNormRopeKernel(const uint16_t* x, Rows x_rows, const float* weight, const float* bias,
                                        const float* cos, const float* sin, int64_t rope_begin, uint16_t* out,
                                        int64_t rows, int64_t length, int64_t heads, int64_t head_dim, float eps) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;  // whole warps leave together
  const int lane = threadIdx.x % 32;
  const int64_t h = row % heads, token = row / heads;
  const int64_t b = token / length, l = token % length;
  const uint16_t* xr = x + RowOffset(x_rows, b, l) + h * head_dim;
  float sum = 0.0f;
  for (int64_t c = 2 * lane; c < head_dim; c += 64) {
    const float2 v = LoadPair(xr + c);
    sum += v.x + v.y;
  }
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  const float mean = sum / static_cast<float>(head_dim);
  float squares = 0.0f;
  for (int64_t c = 2 * lane; c < head_dim; c += 64) {
    const float2 v = LoadPair(xr + c);
    const float d0 = v.x - mean, d1 = v.y - mean;
    squares += d0 * d0 + d1 * d1;
  }
  for (int offset = 16; offset > 0; offset >>= 1) squares += __shfl_xor_sync(0xffffffffu, squares, offset);
  const float rstd = rsqrtf(squares / static_cast<float>(head_dim) + eps);
  const bool rope = cos != nullptr && l >= rope_begin;
  uint16_t* o = out + row * head_dim;
  for (int64_t c = 2 * lane; c < head_dim; c += 64) {
    const float2 v = LoadPair(xr + c);
    float n0 = __fmul_rn(__fsub_rn(v.x, mean), rstd), n1 = __fmul_rn(__fsub_rn(v.y, mean), rstd);
    if (weight != nullptr) {
      n0 = __fadd_rn(__fmul_rn(n0, weight[c]), bias[c]);
      n1 = __fadd_rn(__fmul_rn(n1, weight[c + 1]), bias[c + 1]);
    }
    // The reference rounds the normalized values to bfloat16 before rotating them.
    const float x0 = __bfloat162float(__float2bfloat16_rn(n0)), x1 = __bfloat162float(__float2bfloat16_rn(n1));
    if (!rope) {
      StorePair(o + c, x0, x1);
      continue;
    }
    const int64_t i = (l - rope_begin) * head_dim + c;
    // (x0, x1) * cos + (-x1, x0) * sin, the tables holding each angle twice.
    StorePair(o + c, __fadd_rn(__fmul_rn(x0, cos[i]), __fmul_rn(-x1, sin[i])),
              __fadd_rn(__fmul_rn(x1, cos[i + 1]), __fmul_rn(x0, sin[i + 1])));
  }
}

__device__ float GeluTanh(float v) {
  const float inner = 0.7978845608028654f * (v + 0.044715f * v * v * v);
  return 0.5f * v * (1.0f + tanhf(inner));
}

constexpr float kFp8E4m3Max = 448.0f;

__global__ void QuantizeRowsFp8Kernel(const uint16_t* x, int64_t x_row_stride, bool gelu_tanh, uint8_t* out,
                                      float* scale, int64_t dim) {
  __shared__ float shared[32];
  const int64_t row = blockIdx.x;
  const uint16_t* xr = x + row * x_row_stride;
  auto value = [&](float v) { return gelu_tanh ? __bfloat162float(__float2bfloat16_rn(GeluTanh(v))) : v; };
  float amax = 0.0f;
  for (int64_t c = 2 * threadIdx.x; c < dim; c += 2 * blockDim.x) {
    const float2 v = LoadPair(xr + c);
    amax = fmaxf(amax, fmaxf(fabsf(value(v.x)), fabsf(value(v.y))));
  }
  // Block max through the sum's shared slots: reduce within warps, then across them.
  for (int offset = 16; offset > 0; offset >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = amax;
  __syncthreads();
  amax = lane < static_cast<int>(blockDim.x / 32) ? shared[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
  const float s = fmaxf(amax, 1e-12f) / kFp8E4m3Max;
  if (threadIdx.x == 0) scale[row] = s;
  const float inv = 1.0f / s;
  uint8_t* o = out + row * dim;
  for (int64_t c = 2 * threadIdx.x; c < dim; c += 2 * blockDim.x) {
    const float2 v = LoadPair(xr + c);
    const float2 q = make_float2(value(v.x) * inv, value(v.y) * inv);
    const __nv_fp8x2_e4m3 packed(q);  // round to nearest, saturating
    *reinterpret_cast<__nv_fp8x2_storage_t*>(o + c) = packed.__x;
  }
}

}  // namespace

int ModulatedLayerNorm(const uint16_t* x, Rows x_rows, const float* weight, const float* bias, ModulationArgs shift,
                       ModulationArgs scale, float scale_offset, uint16_t* out, Rows out_rows, int64_t batch,
                       int64_t length, int64_t dim, float eps, void* stream) {
  ModulatedLayerNormKernel<<<batch * length, ThreadsFor(dim), 0, static_cast<cudaStream_t>(stream)>>>(
      x, x_rows, weight, bias, shift, scale, scale_offset, out, out_rows, length, dim, eps);
  return static_cast<int>(cudaGetLastError());
}

int GatedResidual(const uint16_t* x, Rows x_rows, const uint16_t* y, Rows y_rows, ModulationArgs gate, uint16_t* out,
                  Rows out_rows, int64_t batch, int64_t length, int64_t dim, void* stream) {
  GatedResidualKernel<<<batch * length, ThreadsFor(dim), 0, static_cast<cudaStream_t>(stream)>>>(
      x, x_rows, y, y_rows, gate, out, out_rows, length, dim);
  return static_cast<int>(cudaGetLastError());
}

int HeadLayerNormRope(const uint16_t* x, Rows x_rows, const float* weight, const float* bias, const float* cos,
                      const float* sin, int64_t rope_begin, uint16_t* out, int64_t batch, int64_t length,
                      int64_t heads, int64_t head_dim, float eps, void* stream) {
  constexpr int kWarps = 8;
  const int64_t rows = batch * length * heads;
  HeadLayerNormRopeKernel<<<(rows + kWarps - 1) / kWarps, kWarps * 32, 0, static_cast<cudaStream_t>(stream)>>>(
      x, x_rows, weight, bias, cos, sin, rope_begin, out, rows, length, heads, head_dim, eps);
  return static_cast<int>(cudaGetLastError());
}

int QuantizeRowsFp8(const uint16_t* x, int64_t x_row_stride, bool gelu_tanh, uint8_t* out, float* scale, int64_t rows,
                    int64_t dim, void* stream) {
  QuantizeRowsFp8Kernel<<<rows, ThreadsFor(dim), 0, static_cast<cudaStream_t>(stream)>>>(x, x_row_stride, gelu_tanh,
                                                                                         out, scale, dim);
  return static_cast<int>(cudaGetLastError());
}

int RmsNormRope(const uint16_t* x, int64_t x_row_stride, const float* weight, const float* cos, const float* sin,
                uint16_t* out, int64_t rows, int64_t length, int64_t dim, int64_t head_dim, float eps, void* stream) {
  RmsNormRopeKernel<<<rows, ThreadsFor(dim), 0, static_cast<cudaStream_t>(stream)>>>(
      x, x_row_stride, weight, cos, sin, out, length, dim, head_dim, eps);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace stas::models::kernels
