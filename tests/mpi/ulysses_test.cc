// UlyssesAttention over N ranks equals single-process full attention, also with a replicated prefix
// (JointSelfAttention, the text tokens of CogVideoX).
#include <gtest/gtest.h>

#include <cmath>

#include "common/check.h"
#include "models/dit.h"
#include "mpi_test_support.h"
#include "parallel/ulysses.h"

namespace stas::testing {
namespace {

struct Case {
  int64_t batch;
  int64_t tokens;  // global, real
  int64_t heads;
  int64_t head_dim;
};

// Runs one case: every rank builds the same global q, k, v, keeps its shard (padding filled with
// large junk that would change the result if a padded key were attended to), and compares its part
// of the sharded result, and the gathered whole, with the reference.
void CheckAgainstReference(const Case& c, uint64_t seed) {
  SCOPED_TRACE("B " + std::to_string(c.batch) + " L " + std::to_string(c.tokens) + " H " + std::to_string(c.heads));
  auto comm = MakeCommunicator(MPI_COMM_WORLD, "sequence group");
  parallel::UlyssesAttention ulysses(*comm);
  const int n = WorldSize();
  const auto shard = models::ShardLayout::For(c.tokens, WorldRank(), n);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));

  const at::Tensor q = SeededRandn({c.batch, c.tokens, c.heads, c.head_dim}, seed);
  const at::Tensor k = SeededRandn({c.batch, c.tokens, c.heads, c.head_dim}, seed + 1);
  const at::Tensor v = SeededRandn({c.batch, c.tokens, c.heads, c.head_dim}, seed + 2);
  const at::Tensor expected =
      ReferenceAttention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale).transpose(1, 2);

  auto padded = [&](const at::Tensor& x, uint64_t junk_seed) {
    const int64_t pad = shard.padded_tokens - c.tokens;
    if (pad == 0) return x;
    const at::Tensor junk = SeededRandn({c.batch, pad, c.heads, c.head_dim}, junk_seed) * 50.0 + 20.0;
    return at::cat({x, junk}, 1);
  };
  const at::Tensor q_local = padded(q, seed + 10).narrow(1, shard.begin, shard.local_tokens);
  const at::Tensor k_local = padded(k, seed + 11).narrow(1, shard.begin, shard.local_tokens);
  const at::Tensor v_local = padded(v, seed + 12).narrow(1, shard.begin, shard.local_tokens);

  if (shard.padded_tokens > c.tokens) {
    // The junk must matter: attending to the padded keys would give a clearly different answer, so
    // the comparisons below catch an implementation that does not drop them.
    const at::Tensor with_junk = ReferenceAttention(padded(q, seed + 10).transpose(1, 2),
                                                    padded(k, seed + 11).transpose(1, 2),
                                                    padded(v, seed + 12).transpose(1, 2), scale)
                                     .transpose(1, 2)
                                     .narrow(1, 0, c.tokens);
    EXPECT_GT((with_junk - expected).abs().max().item<float>(), 1e-2);
  }
  const at::Tensor out = ulysses.SelfAttention(q_local, k_local, v_local, scale, c.tokens);
  const at::Tensor gathered = ulysses.GatherSequence(out);
  // A rank holding only padding contributes nothing to the maximum.
  const at::Tensor local_abs_max = shard.local_real_tokens() > 0
                                       ? q_local.narrow(1, 0, shard.local_real_tokens()).abs().amax({1, 2, 3})
                                       : at::zeros({c.batch});
  const at::Tensor global_abs_max = ulysses.AllReduceMax(local_abs_max);

  ASSERT_EQ(out.sizes(), q_local.sizes());
  EXPECT_TRUE(at::isfinite(out).all().item<bool>()) << "padded queries must still give finite values";
  const int64_t real = shard.local_real_tokens();
  if (real > 0) {
    const at::Tensor mine = out.narrow(1, 0, real);
    const at::Tensor want = expected.narrow(1, shard.begin, real);
    EXPECT_TRUE(at::allclose(mine, want, 1e-5, 1e-5)) << "max abs error " << (mine - want).abs().max().item<float>();
  }
  ASSERT_EQ(gathered.size(1), shard.padded_tokens);
  const at::Tensor whole = gathered.narrow(1, 0, c.tokens);
  EXPECT_TRUE(at::allclose(whole, expected, 1e-5, 1e-5)) << "max abs error "
                                                           << (whole - expected).abs().max().item<float>();
  EXPECT_TRUE(at::equal(global_abs_max, q.abs().amax({1, 2, 3})));
}

TEST(UlyssesAttention, TokenCountsThatDivideByTheRanks) {
  const int n = WorldSize();
  CheckAgainstReference({2, 6 * n, 12, 8}, 100);
  CheckAgainstReference({1, n, 12, 16}, 200);  // one token per rank
}

TEST(UlyssesAttention, TokenCountsThatNeedPadding) {
  const int n = WorldSize();
  if (n == 1) GTEST_SKIP() << "one rank never pads";
  CheckAgainstReference({2, 6 * n + 1, 12, 8}, 300);
  CheckAgainstReference({1, 5 * n - 1, 24, 4}, 400);
  // Fewer tokens than ranks: the last ranks hold nothing but padding.
  CheckAgainstReference({1, n - 1, 12, 8}, 500);
}

// A whole prefix of `prefix_tokens` on every rank, then `tokens` sharded ones (with junk padding): both
// outputs must equal full attention over [prefix; tokens].
void CheckJointAgainstReference(const Case& c, int64_t prefix_tokens, uint64_t seed) {
  SCOPED_TRACE("joint: prefix " + std::to_string(prefix_tokens) + " L " + std::to_string(c.tokens));
  auto comm = MakeCommunicator(MPI_COMM_WORLD, "sequence group");
  parallel::UlyssesAttention ulysses(*comm);
  const auto shard = models::ShardLayout::For(c.tokens, WorldRank(), WorldSize());
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  const int64_t total = prefix_tokens + c.tokens;
  const at::Tensor q = SeededRandn({c.batch, total, c.heads, c.head_dim}, seed);
  const at::Tensor k = SeededRandn({c.batch, total, c.heads, c.head_dim}, seed + 1);
  const at::Tensor v = SeededRandn({c.batch, total, c.heads, c.head_dim}, seed + 2);
  const at::Tensor expected =
      ReferenceAttention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale).transpose(1, 2);
  auto local = [&](const at::Tensor& x, uint64_t junk_seed) {
    at::Tensor tokens = x.narrow(1, prefix_tokens, c.tokens);
    const int64_t pad = shard.padded_tokens - c.tokens;
    if (pad > 0) tokens = at::cat({tokens, SeededRandn({c.batch, pad, c.heads, c.head_dim}, junk_seed) * 50.0 + 20.0}, 1);
    return tokens.narrow(1, shard.begin, shard.local_tokens);
  };
  auto prefix = [&](const at::Tensor& x) { return x.narrow(1, 0, prefix_tokens); };
  const auto out = ulysses.JointSelfAttention({prefix(q), prefix(k), prefix(v)},
                                              {local(q, seed + 10), local(k, seed + 11), local(v, seed + 12)}, scale,
                                              c.tokens);
  ASSERT_EQ(out.prefix.sizes(), prefix(q).sizes());
  ASSERT_EQ(out.local.sizes(), at::IntArrayRef({c.batch, shard.local_tokens, c.heads, c.head_dim}));
  EXPECT_TRUE(at::allclose(out.prefix, prefix(expected), 1e-5, 1e-5))
      << "prefix max abs error " << (out.prefix - prefix(expected)).abs().max().item<float>();
  const int64_t real = shard.local_real_tokens();
  if (real > 0) {
    const at::Tensor want = expected.narrow(1, prefix_tokens + shard.begin, real);
    EXPECT_TRUE(at::allclose(out.local.narrow(1, 0, real), want, 1e-5, 1e-5))
        << "tokens max abs error " << (out.local.narrow(1, 0, real) - want).abs().max().item<float>();
  }
  // Every rank ends with the same prefix output (the text stream stays replicated).
  const at::Tensor highest = ulysses.AllReduceMax(out.prefix);
  EXPECT_TRUE(at::equal(highest, out.prefix));
}

TEST(UlyssesAttention, JointAttentionWithAReplicatedPrefix) {
  const int n = WorldSize();
  CheckJointAgainstReference({2, 4 * n, 12, 8}, 5, 600);
  CheckJointAgainstReference({1, 3 * n + 1, 24, 4}, 7, 700);  // padding on the last rank
}

TEST(UlyssesAttention, HeadsThatDoNotSplitAreRefusedOnEveryRank) {
  const int n = WorldSize();
  if (n == 1) GTEST_SKIP() << "every head count splits over one rank";
  auto comm = MakeCommunicator(MPI_COMM_WORLD, "sequence group");
  parallel::UlyssesAttention ulysses(*comm);
  const int64_t heads = n + 1;  // never divisible by n > 1
  const at::Tensor x = at::zeros({1, 2, heads, 4});
  try {
    ulysses.SelfAttention(x, x, x, 0.5, 2 * n);
    ADD_FAILURE() << "expected a CheckFailure";
  } catch (const CheckFailure& e) {
    const std::string expected = std::to_string(heads) + " attention heads do not split over " + std::to_string(n) +
                                 " ranks: use --sp in {";
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
  // Nobody entered a collective: the group is still in step.
  EXPECT_EQ(comm->AllReduce(at::ones({1}), parallel::ReduceOp::kSum).item<float>(), static_cast<float>(n));
}

}  // namespace
}  // namespace stas::testing
