// Which video tokens STAS steers, from GLOBAL token indices (docs/STAS.md, "Token mask").
//
// Tokens are ordered (latent frame, row, col). The mask is
//  - every token of latent frame 0 (the first-frame tokens), plus
//  - rows mode (default): for each later latent frame, the first and last `width` tokens of its raster
//    block (default width = one row = grid.cols tokens; width >= half a frame takes the whole frame;
//    width 0 keeps only frame 0);
//  - frames mode: whole latent frames at temporal-chunk boundaries. Frames 1..F-1 are cut into
//    consecutive chunks of `chunk_frames` latent frames (-1: one chunk of all of them); the first and
//    last frame of each chunk are steered whole.
// Because the rule is a function of the global index, each sequence-parallel shard builds exactly its
// own part from ShardLayout.begin / local_tokens; padding tokens (global index >= global_tokens) are
// never in the mask. Pure host code, no tensors: cheap to test, built once per shape by the hooks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/dit.h"
#include "steering/stas_options.h"

namespace stas::steering {

// Class of a video token in the MA hierarchy (first frame > boundary > interior).
enum class TokenClass : uint8_t { kFirstFrame = 0, kBoundary = 1, kInterior = 2 };
const char* TokenClassName(TokenClass c);

// The mask rule with its defaults resolved against one token grid.
struct MaskSpec {
  BoundaryMode mode = BoundaryMode::kRows;
  int64_t width = 0;          // rows mode: head/tail tokens per later frame (already resolved, >= 0)
  int64_t chunk_frames = 0;   // frames mode: latent frames per temporal chunk (resolved, >= 1)

  // width -1 -> grid.cols; chunk_frames -1 -> max(1, frames - 1).
  static MaskSpec Resolve(const StasOptions& options, const models::TokenGrid& grid);
  std::string ToString() const;
};

// Class of the token at `global_index` (must be < grid.count()).
TokenClass ClassifyToken(int64_t global_index, const models::TokenGrid& grid, const MaskSpec& spec);

// Classes of this shard's real tokens, in local order (size = shard.local_real_tokens(); when
// shard.global_tokens == 0 the shard is taken to be the whole grid on one rank).
std::vector<TokenClass> ClassifyShardTokens(const models::TokenGrid& grid, const models::ShardLayout& shard,
                                            const MaskSpec& spec);

// Local indices (0-based within this shard's video tokens, ascending) of the steered tokens: every
// token whose class is first-frame or boundary.
std::vector<int64_t> SteeredLocalTokens(const models::TokenGrid& grid, const models::ShardLayout& shard,
                                        const MaskSpec& spec);

// The layout of a single unsharded rank holding the whole grid.
models::ShardLayout WholeGridLayout(const models::TokenGrid& grid);
// `shard` itself, or WholeGridLayout(grid) when the shard was left default-constructed.
models::ShardLayout EffectiveLayout(const models::TokenGrid& grid, const models::ShardLayout& shard);

}  // namespace stas::steering
