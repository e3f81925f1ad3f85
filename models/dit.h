// The seams between a diffusion transformer and the layers above it (steering, parallel).
//
// models/ knows nothing of MPI or STAS. A transformer forward takes an optional ForwardContext:
//  - a SequenceParallel implementation (from parallel/) that supplies full-sequence self-attention over
//    sharded tokens, the gather of the sharded output, and the max-reduction STAS needs;
//  - a ResidualHook (from steering/) called on the residual stream after every block.
// With neither installed, a forward is plain single-device inference and pays nothing for them.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace stas::models {

// The global latent token grid after patchify: tokens are ordered (frame, row, col).
struct TokenGrid {
  int64_t frames = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t count() const { return frames * rows * cols; }
  int64_t tokens_per_frame() const { return rows * cols; }
};

// Which classifier-free-guidance branch a batch row belongs to.
enum class CfgBranch { kCond, kUncond };

// Sequence parallelism as seen by a model. One instance per process group; all ranks of the group
// call every method collectively, in the same order.
class SequenceParallel {
 public:
  virtual ~SequenceParallel() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // q, k, v: this rank's tokens [B, L_local, H, Dh] (L_local = padded L / size). Returns attention
  // over the whole sequence for this rank's tokens, [B, L_local, H, Dh]. `valid_tokens` is the global
  // count of real tokens: keys at global index >= valid_tokens are padding and must be ignored.
  virtual at::Tensor SelfAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                   int64_t valid_tokens) = 0;
  // Joint attention of a sequence that is a replicated prefix followed by the sharded tokens (CogVideoX:
  // text, then video). `prefix` q, k, v [B, L_prefix, H, Dh] are whole and identical on every rank;
  // `local` q, k, v [B, L_local, H, Dh] are this rank's tokens as in SelfAttention. Every query attends
  // over the prefix and the valid sharded tokens. Returns the prefix's output [B, L_prefix, H, Dh]
  // (identical on every rank) and this rank's tokens' output [B, L_local, H, Dh].
  struct Qkv {
    at::Tensor q, k, v;
  };
  struct JointOutput {
    at::Tensor prefix, local;
  };
  virtual JointOutput JointSelfAttention(const Qkv& prefix, const Qkv& local, double scale, int64_t valid_tokens) = 0;
  // x: [B, L_local, ...] on every rank -> [B, L_local * size, ...] in rank order.
  virtual at::Tensor GatherSequence(const at::Tensor& x) = 0;
  // Elementwise max over the group, in place semantics not required (returns the reduced tensor).
  virtual at::Tensor AllReduceMax(const at::Tensor& x) = 0;
};

// Where this rank's tokens sit in the global sequence.
struct ShardLayout {
  int64_t global_tokens = 0;  // real tokens in the whole sequence
  int64_t padded_tokens = 0;  // global_tokens rounded up to a multiple of the group size
  int64_t begin = 0;          // global index of this rank's first token
  int64_t local_tokens = 0;   // tokens this rank holds (padded_tokens / size)
  // Real (non-padding) tokens among this rank's local_tokens.
  int64_t local_real_tokens() const;
  static ShardLayout For(int64_t global_tokens, int rank, int size);
};

// The rows [shard.begin, shard.begin + shard.local_tokens) of dim 1 of x ([B, L, ...]); rows past the
// real tokens are zeros. x itself when the shard is the whole sequence.
at::Tensor ShardTokens(const at::Tensor& x, const ShardLayout& shard);

// fn applied to x ([B, L, ...]) in pieces along dim 1 of at most max_rows / B tokens (at least one),
// the results concatenated along dim 1; fn(x) itself when x fits in one piece or max_rows <= 0. For
// token-wise layers whose intermediate is wider than their input, such as a transformer's
// feed-forward: the peak memory is that of one piece, and each token's result is what one call would
// give, up to the rounding of GEMMs of another height.
at::Tensor MapTokenChunks(const at::Tensor& x, int64_t max_rows, const std::function<at::Tensor(const at::Tensor&)>& fn);

struct BlockContext {
  int block = 0;
  int num_blocks = 0;
  int step = -1;       // denoising step index, -1 outside a sampling loop
  int num_steps = 0;
  TokenGrid grid;      // the global video token grid
  ShardLayout shard;   // this rank's part of the video tokens
  int64_t text_tokens = 0;  // joint-attention models (CogVideoX): text tokens precede video tokens locally
  std::vector<CfgBranch> branches;  // one per batch row
  SequenceParallel* parallel = nullptr;  // null on a single rank
};

// Called after each transformer block with the residual stream [B, text_tokens + local_tokens, D],
// which the hook may modify in place (STAS) or only read (analysis).
class ResidualHook {
 public:
  virtual ~ResidualHook() = default;
  virtual void AfterBlock(at::Tensor& hidden, const BlockContext& context) = 0;
};

// CFG-parallelism as seen by a sampler: this rank computes one guidance branch and swaps its noise
// prediction with a partner rank computing the other (implemented in parallel/). Collective: every
// rank of the pair calls Exchange once per step.
class CfgPartner {
 public:
  virtual ~CfgPartner() = default;
  virtual CfgBranch branch() const = 0;
  // Sends this rank's prediction and returns the partner's (same shape).
  virtual at::Tensor Exchange(const at::Tensor& mine) = 0;
};

// Per-forward options shared by every DiT in models/.
struct ForwardContext {
  SequenceParallel* parallel = nullptr;
  ResidualHook* hook = nullptr;
  int step = -1;
  int num_steps = 0;
  std::vector<CfgBranch> branches;  // empty = all rows kCond
};

// The context a forward hands its hook: `forward`'s step, steps, branches (all kCond when empty) and
// group, for `num_blocks` blocks over `grid` of which this rank holds `shard`, for a batch of `batch`.
BlockContext MakeBlockContext(const ForwardContext& forward, int num_blocks, const TokenGrid& grid,
                              const ShardLayout& shard, int64_t batch);

}  // namespace stas::models
