#include "steering/token_mask.h"

#include <algorithm>

#include "common/check.h"

namespace stas::steering {

const char* TokenClassName(TokenClass c) {
  switch (c) {
    case TokenClass::kFirstFrame: return "first_frame";
    case TokenClass::kBoundary: return "boundary";
    case TokenClass::kInterior: return "interior";
  }
  return "?";
}

MaskSpec MaskSpec::Resolve(const StasOptions& options, const models::TokenGrid& grid) {
  MaskSpec s;
  s.mode = options.boundary_mode;
  s.width = options.boundary_width < 0 ? grid.cols : options.boundary_width;
  s.chunk_frames = options.chunk_frames < 1 ? std::max<int64_t>(1, grid.frames - 1) : options.chunk_frames;
  return s;
}

std::string MaskSpec::ToString() const {
  if (mode == BoundaryMode::kRows) return "rows(width=" + std::to_string(width) + ")";
  return "frames(chunk=" + std::to_string(chunk_frames) + ")";
}

namespace {

// Whether later latent frame `frame` (>= 1) is the first or last frame of its temporal chunk.
bool IsChunkBoundaryFrame(int64_t frame, int64_t num_frames, int64_t chunk) {
  const int64_t pos = (frame - 1) % chunk;  // position inside its chunk
  return pos == 0 || pos == chunk - 1 || frame == num_frames - 1;
}

}  // namespace

TokenClass ClassifyToken(int64_t global_index, const models::TokenGrid& grid, const MaskSpec& spec) {
  STAS_CHECK(global_index >= 0 && global_index < grid.count()) << "token " << global_index << " outside the grid";
  const int64_t per_frame = grid.tokens_per_frame();
  const int64_t frame = global_index / per_frame;
  if (frame == 0) return TokenClass::kFirstFrame;
  if (spec.mode == BoundaryMode::kFrames)
    return IsChunkBoundaryFrame(frame, grid.frames, spec.chunk_frames) ? TokenClass::kBoundary
                                                                       : TokenClass::kInterior;
  const int64_t in_frame = global_index - frame * per_frame;
  // Head and tail overlap once 2 * width >= per_frame, which is then the whole frame.
  return (in_frame < spec.width || in_frame >= per_frame - spec.width) ? TokenClass::kBoundary
                                                                       : TokenClass::kInterior;
}

models::ShardLayout WholeGridLayout(const models::TokenGrid& grid) { return models::ShardLayout::For(grid.count(), 0, 1); }

models::ShardLayout EffectiveLayout(const models::TokenGrid& grid, const models::ShardLayout& shard) {
  if (shard.global_tokens == 0 && shard.local_tokens == 0) return WholeGridLayout(grid);
  STAS_CHECK_EQ(shard.global_tokens, grid.count()) << "shard layout and token grid disagree";
  return shard;
}

std::vector<TokenClass> ClassifyShardTokens(const models::TokenGrid& grid, const models::ShardLayout& shard,
                                            const MaskSpec& spec) {
  const models::ShardLayout layout = EffectiveLayout(grid, shard);
  std::vector<TokenClass> classes(static_cast<size_t>(layout.local_real_tokens()));
  for (size_t i = 0; i < classes.size(); ++i)
    classes[i] = ClassifyToken(layout.begin + static_cast<int64_t>(i), grid, spec);
  return classes;
}

std::vector<int64_t> SteeredLocalTokens(const models::TokenGrid& grid, const models::ShardLayout& shard,
                                        const MaskSpec& spec) {
  const std::vector<TokenClass> classes = ClassifyShardTokens(grid, shard, spec);
  std::vector<int64_t> out;
  for (size_t i = 0; i < classes.size(); ++i)
    if (classes[i] != TokenClass::kInterior) out.push_back(static_cast<int64_t>(i));
  return out;
}

}  // namespace stas::steering
