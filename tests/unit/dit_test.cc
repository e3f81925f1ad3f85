// Helpers shared by the diffusion transformers (models/dit.h).
#include <gtest/gtest.h>

#include <vector>

#include "models/dit.h"

namespace stas::models {
namespace {

TEST(MapTokenChunks, PiecesGiveWhatOneCallGives) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({2, 10, 4});
  const at::Tensor w_in = at::randn({12, 4}), w_out = at::randn({4, 12});
  std::vector<int64_t> piece_tokens;
  auto feed_forward = [&](const at::Tensor& t) {
    piece_tokens.push_back(t.size(1));
    return at::linear(at::gelu(at::linear(t, w_in), "tanh"), w_out);
  };
  const at::Tensor whole = feed_forward(x);
  piece_tokens.clear();
  const at::Tensor chunked = MapTokenChunks(x, 6, feed_forward);  // batch 2: 3 tokens per piece
  EXPECT_EQ(piece_tokens, (std::vector<int64_t>{3, 3, 3, 1}));
  ASSERT_EQ(chunked.sizes(), whole.sizes());
  EXPECT_TRUE(at::allclose(chunked, whole, 1e-6, 1e-6));
}

TEST(MapTokenChunks, OneCallWhenTheTokensFit) {
  const at::Tensor x = at::randn({1, 5, 2});
  int calls = 0;
  auto identity = [&](const at::Tensor& t) {
    ++calls;
    return t;
  };
  EXPECT_TRUE(at::equal(MapTokenChunks(x, 5, identity), x));
  EXPECT_TRUE(at::equal(MapTokenChunks(x, 0, identity), x));  // 0: no chunking
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(MapTokenChunks(x, 1, identity).sizes(), x.sizes());  // one token per piece at least
  EXPECT_EQ(calls, 7);
}

}  // namespace
}  // namespace stas::models
