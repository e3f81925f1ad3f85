#include "models/dit.h"

#include <algorithm>

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

}  // namespace stas::models
