#include "models/dit.h"

#include <algorithm>
#include <vector>

namespace stas::models {

int64_t ShardLayout::local_real_tokens() const {
  return std::clamp<int64_t>(global_tokens - begin, 0, local_tokens);
}

ShardLayout ShardLayout::For(int64_t global_tokens, int rank, int size) {
  ShardLayout s;
  s.global_tokens = global_tokens;
  s.padded_tokens = (global_tokens + size - 1) / size * size;
  s.local_tokens = s.padded_tokens / size;
  s.begin = s.local_tokens * rank;
  return s;
}

at::Tensor MapTokenChunks(const at::Tensor& x, int64_t max_rows, const std::function<at::Tensor(const at::Tensor&)>& fn) {
  const int64_t tokens = x.size(1);
  const int64_t chunk_tokens = std::max<int64_t>(1, max_rows / std::max<int64_t>(1, x.size(0)));
  if (max_rows <= 0 || tokens <= chunk_tokens) return fn(x);
  std::vector<at::Tensor> pieces;
  for (int64_t begin = 0; begin < tokens; begin += chunk_tokens)
    pieces.push_back(fn(x.narrow(1, begin, std::min(chunk_tokens, tokens - begin))));
  return at::cat(pieces, 1);
}

at::Tensor ShardTokens(const at::Tensor& x, const ShardLayout& shard) {
  if (shard.begin == 0 && shard.local_tokens == x.size(1)) return x;
  const int64_t real = shard.local_real_tokens();
  at::Tensor part = x.narrow(1, std::min(shard.begin, x.size(1)), real);
  if (real == shard.local_tokens) return part;
  std::vector<int64_t> pad_shape = x.sizes().vec();
  pad_shape[1] = shard.local_tokens - real;
  return at::cat({part, at::zeros(pad_shape, x.options())}, 1);
}

BlockContext MakeBlockContext(const ForwardContext& forward, int num_blocks, const TokenGrid& grid,
                              const ShardLayout& shard, int64_t batch) {
  BlockContext c;
  c.num_blocks = num_blocks;
  c.step = forward.step;
  c.num_steps = forward.num_steps;
  c.grid = grid;
  c.shard = shard;
  c.branches = forward.branches.empty() ? std::vector<CfgBranch>(batch, CfgBranch::kCond) : forward.branches;
  c.parallel = forward.parallel;
  return c;
}

}  // namespace stas::models
