// WanTransformer under sequence parallelism: a forward sharded over the ranks equals the single-rank
// forward, the residual hook sees the right shard, and a STAS-like hook's AllReduceMax gives the same
// global maximum on every rank as on one rank.
#include <gtest/gtest.h>

#include <cmath>

#include "common/fixture.h"
#include "models/dit.h"
#include "models/wan/transformer.h"
#include "mpi_test_support.h"
#include "parallel/ulysses.h"

namespace stas::testing {
namespace {

using models::wan::WanTransformer;
using models::wan::WanTransformerConfig;

// Steers the first-frame tokens of two channels toward half the global max |h| of those channels
// (the shape of STAS: local max -> all-reduce(MAX) -> update by global token index), and records the
// reference value R per block. Under sequence parallelism it also checks that every rank of the
// group got the same R.
class StasLikeHook : public models::ResidualHook {
 public:
  void AfterBlock(at::Tensor& hidden, const models::BlockContext& context) override {
    const models::ShardLayout& shard = context.shard;
    const int64_t real = shard.local_real_tokens();
    const at::Tensor channels = hidden.narrow(2, 0, 2);  // [B, L_local, 2]
    at::Tensor local_max = real > 0 ? channels.narrow(1, 0, real).abs().amax({1, 2}).to(at::kFloat)
                                    : at::zeros({hidden.size(0)}, at::kFloat);
    at::Tensor reference = local_max;
    if (context.parallel != nullptr) {
      reference = context.parallel->AllReduceMax(local_max);
      // max(R) == min(R) over the group iff every rank holds the same R.
      const at::Tensor lowest = -context.parallel->AllReduceMax(-reference);
      if (!at::equal(reference, lowest)) consistent = false;
    }
    references.push_back(reference.clone());
    // Tokens of latent frame 0 among this rank's, by global index.
    const int64_t frame0_end = std::min(context.grid.tokens_per_frame(), shard.global_tokens);
    const int64_t first = shard.begin;
    const int64_t last = std::min(shard.begin + real, frame0_end);
    if (last > first) {
      at::Tensor target = channels.narrow(1, 0, last - first);
      // h' = h + lambda (alpha R sign(h) - h) with alpha = 0.5, lambda = 1.
      target.copy_(0.5 * reference.to(target.scalar_type()).view({-1, 1, 1}) * target.sign());
    }
    ++calls;
  }
  std::vector<at::Tensor> references;
  bool consistent = true;
  int calls = 0;
};

at::Tensor ForwardOrFail(const WanTransformer& model, const at::Tensor& latents, const at::Tensor& t,
                         const at::Tensor& text, const models::ForwardContext& context) {
  auto out = model.Forward(latents, t, text, context);
  EXPECT_TRUE(out.ok()) << out.status().ToString();
  return out.ok() ? *out : at::Tensor();
}

// Single rank vs sharded over `group` (sequence group of size >= 1), with the STAS-like hook in both.
void CheckShardedEqualsSingle(const WanTransformer& model, MPI_Comm group, const at::Tensor& latents,
                              const at::Tensor& t, const at::Tensor& text) {
  StasLikeHook single_hook;
  models::ForwardContext single;
  single.hook = &single_hook;
  const at::Tensor expected = ForwardOrFail(model, latents, t, text, single);

  auto comm = MakeCommunicator(group, "sequence group");
  parallel::UlyssesAttention ulysses(*comm);
  StasLikeHook sharded_hook;
  models::ForwardContext sharded;
  sharded.parallel = &ulysses;
  sharded.hook = &sharded_hook;
  const at::Tensor got = ForwardOrFail(model, latents, t, text, sharded);
  if (!expected.defined() || !got.defined()) return;

  EXPECT_EQ(got.sizes(), expected.sizes());
  EXPECT_TRUE(at::allclose(got, expected, 1e-4, 1e-4)) << "sp " << comm->size() << ": max abs error "
                                                       << (got - expected).abs().max().item<float>();
  EXPECT_TRUE(sharded_hook.consistent) << "AllReduceMax disagreed across ranks";
  ASSERT_EQ(sharded_hook.calls, model.config().num_layers);
  ASSERT_EQ(sharded_hook.references.size(), single_hook.references.size());
  for (size_t b = 0; b < single_hook.references.size(); ++b) {
    EXPECT_TRUE(at::allclose(sharded_hook.references[b], single_hook.references[b], 1e-4, 1e-4))
        << "block " << b << ": global max " << sharded_hook.references[b] << " vs single rank "
        << single_hook.references[b];
  }
}

// The shipped fixture (2 heads): sharded over 2 ranks (the first two of the world).
TEST(WanSequenceParallel, FixtureWeightsOverTwoRanksEqualOneRank) {
  auto fixture = Fixture::Open(std::string(STAS_FIXTURES_DIR) + "/wan_transformer_tiny");
  ASSERT_TRUE(fixture.ok()) << fixture.status().ToString();
  auto config = WanTransformerConfig::FromJson(fixture->config());
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  auto model = WanTransformer::Load(*config, fixture->weights());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto latents = fixture->Io("hidden_states");
  auto t = fixture->Io("timestep");
  auto text = fixture->Io("encoder_hidden_states");
  auto reference = fixture->Io("output");
  ASSERT_TRUE(latents.ok() && t.ok() && text.ok() && reference.ok());

  // The plain single-rank forward still matches the reference implementation's output.
  const at::Tensor plain = ForwardOrFail(*model, *latents, *t, *text, {});
  ASSERT_TRUE(plain.defined());
  EXPECT_TRUE(at::allclose(plain, *reference, 2e-4, 2e-4));

  const int sp = std::min(WorldSize(), 2);
  parallel::MpiComm pair = parallel::MpiComm::Split(MPI_COMM_WORLD, WorldRank() < sp ? 0 : MPI_UNDEFINED, WorldRank());
  if (!pair.valid()) return;  // ranks beyond the pair sit this one out
  CheckShardedEqualsSingle(*model, pair.get(), *latents, *t, *text);
}

// Random weights with the upstream key names for a config with `heads` heads (same on every rank).
WeightStore RandomWeights(const WanTransformerConfig& c, uint64_t seed) {
  std::map<std::string, at::Tensor> w;
  const int64_t d = c.dim();
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    w[name + ".weight"] = SeededRandn({out, in}, seed++) / std::sqrt(static_cast<double>(in));
    w[name + ".bias"] = SeededRandn({out}, seed++) * 0.02;
  };
  w["patch_embedding.weight"] =
      SeededRandn({d, c.in_channels, c.patch_size[0], c.patch_size[1], c.patch_size[2]}, seed++) * 0.1;
  w["patch_embedding.bias"] = SeededRandn({d}, seed++) * 0.02;
  linear("condition_embedder.time_embedder.linear_1", d, c.freq_dim);
  linear("condition_embedder.time_embedder.linear_2", d, d);
  linear("condition_embedder.time_proj", 6 * d, d);
  linear("condition_embedder.text_embedder.linear_1", d, c.text_dim);
  linear("condition_embedder.text_embedder.linear_2", d, d);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    for (const char* attn : {"attn1", "attn2"}) {
      for (const char* proj : {"to_q", "to_k", "to_v", "to_out.0"}) linear(b + attn + "." + proj, d, d);
      w[b + attn + ".norm_q.weight"] = 1.0 + 0.1 * SeededRandn({d}, seed++);
      w[b + attn + ".norm_k.weight"] = 1.0 + 0.1 * SeededRandn({d}, seed++);
    }
    w[b + "norm2.weight"] = 1.0 + 0.1 * SeededRandn({d}, seed++);
    w[b + "norm2.bias"] = 0.1 * SeededRandn({d}, seed++);
    linear(b + "ffn.net.0.proj", c.ffn_dim, d);
    linear(b + "ffn.net.2", d, c.ffn_dim);
    w[b + "scale_shift_table"] = SeededRandn({1, 6, d}, seed++) / std::sqrt(static_cast<double>(d));
  }
  w["scale_shift_table"] = SeededRandn({1, 2, d}, seed++) / std::sqrt(static_cast<double>(d));
  linear("proj_out", c.out_channels * c.patch_volume(), d);
  return WeightStore::FromTensors(std::move(w));
}

// 12 heads (Wan2.1-1.3B's count) split over every world size of the tests: sp = all ranks, with token
// counts that do and do not divide by the ranks, two samples with different timesteps.
TEST(WanSequenceParallel, TwelveHeadsOverAllRanksEqualOneRank) {
  auto config = WanTransformerConfig::FromJson(Json::parse(R"({
      "patch_size": [1, 2, 2], "num_attention_heads": 12, "attention_head_dim": 8, "in_channels": 16,
      "out_channels": 16, "text_dim": 32, "freq_dim": 256, "ffn_dim": 64, "num_layers": 2,
      "cross_attn_norm": true, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 64})"));
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  auto model = WanTransformer::Load(*config, RandomWeights(*config, 42));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const at::Tensor text = SeededRandn({2, 7, 32}, 9);
  const at::Tensor t = at::tensor({999.0f, 500.0f});
  // 2 x 2 x 3 = 12 tokens (divides by 2, 3, 4); 3 x 3 x 5 = 45 tokens (pads for 2 and 4).
  for (const std::vector<int64_t>& size : {std::vector<int64_t>{2, 2, 4, 6}, std::vector<int64_t>{2, 3, 6, 10}}) {
    SCOPED_TRACE("latents [2, 16, " + std::to_string(size[1]) + ", " + std::to_string(size[2]) + ", " +
                 std::to_string(size[3]) + "]");
    const at::Tensor latents = SeededRandn({size[0], 16, size[1], size[2], size[3]}, 11);
    CheckShardedEqualsSingle(*model, MPI_COMM_WORLD, latents, t, text);
  }
}

}  // namespace
}  // namespace stas::testing
