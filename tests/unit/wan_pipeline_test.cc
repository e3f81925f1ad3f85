// The Wan sampling loop on a small random model: initial noise, equivalences between the ways of
// running guidance (two forwards, a batch of 2B, a CFG partner on another thread), per-token
// timesteps, sequence parallelism, hooks, progress, cancellation and resuming from saved state.
#include <gtest/gtest.h>

#include <mutex>
#include <thread>

#include "models/wan/pipeline.h"
#include "support/wan_test_models.h"

namespace stas::models::wan {
namespace {

WanTransformerConfig SmallConfig() {
  WanTransformerConfig c;
  c.num_attention_heads = 2;
  c.attention_head_dim = 12;
  c.in_channels = 4;
  c.out_channels = 4;
  c.text_dim = 8;
  c.freq_dim = 32;
  c.ffn_dim = 32;
  c.num_layers = 2;
  c.rope_max_seq_len = 32;
  return c;
}

const WanTransformer& Model() {
  static const WanTransformer model = [] {
    const WanTransformerConfig c = SmallConfig();
    return *WanTransformer::Load(c, WeightStore::FromTensors(testing::RandomWanTensors(c, 17)));
  }();
  return model;
}

UniPCConfig Scheduler() {
  UniPCConfig c;
  c.flow_shift = 3.0;
  return c;
}

struct Inputs {
  at::Tensor latents, prompt, negative;
};

Inputs MakeInputs(int64_t batch = 1) {
  at::manual_seed(31);
  return {at::randn({batch, 4, 3, 4, 6}), at::randn({batch, 5, 8}), at::randn({batch, 5, 8})};
}

WanSamplingOptions Options(int steps = 4) {
  WanSamplingOptions o;
  o.num_inference_steps = steps;
  o.guidance_scale = 5.0;
  return o;
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(WanInitialNoise, ShapeFromTheVaeCompressionAndSeedDeterminism) {
  auto a = InitialNoise(42, 2, 16, 33, 64, 96);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->sizes(), at::IntArrayRef({2, 16, 9, 8, 12}));
  EXPECT_EQ(a->device(), at::Device(at::kCPU));
  EXPECT_TRUE(at::equal(*a, *InitialNoise(42, 2, 16, 33, 64, 96)));
  EXPECT_FALSE(at::equal(*a, *InitialNoise(43, 2, 16, 33, 64, 96)));
  // The draw is at::randn from a CPU generator seeded with the job seed (documented contract).
  at::Generator g = at::detail::createCPUGenerator(42);
  EXPECT_TRUE(at::equal(*a, at::randn({2, 16, 9, 8, 12}, g, at::TensorOptions().dtype(at::kFloat))));

  auto wan22 = VaeCompression::FromVaeConfig(Json{{"scale_factor_temporal", 4}, {"scale_factor_spatial", 16}});
  ASSERT_TRUE(wan22.ok());
  EXPECT_EQ(InitialNoise(1, 1, 48, 81, 704, 1280, *wan22)->sizes(), at::IntArrayRef({1, 48, 21, 44, 80}));
  EXPECT_EQ(VaeCompression::FromVaeConfig(Json::object())->spatial, 8);

  EXPECT_EQ(InitialNoise(1, 1, 16, 34, 64, 64).status().code(), StatusCode::kInvalidArgument);  // not 4k+1
  EXPECT_EQ(InitialNoise(1, 1, 16, 33, 60, 64).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(InitialNoise(1, 0, 16, 33, 64, 64).status().code(), StatusCode::kInvalidArgument);
}

TEST(WanSampler, BatchedGuidanceAndPerTokenTimestepsEqualTheDefaultLoop) {
  const Inputs in = MakeInputs(2);
  const WanSampler sampler(Model(), Scheduler());
  auto reference = sampler.Sample(in.latents, in.prompt, in.negative, Options());
  ASSERT_TRUE(reference.ok()) << reference.status().ToString();
  EXPECT_GT(MaxAbsDiff(*reference, in.latents), 1e-2);  // it did something

  WanSamplingOptions batched = Options();
  batched.batched_cfg = true;
  EXPECT_LT(MaxAbsDiff(*sampler.Sample(in.latents, in.prompt, in.negative, batched), *reference), 1e-5);

  // Wan2.2 expand_timesteps: every token conditioned on t is the same as the per-sample t.
  WanSamplingOptions expanded = Options();
  expanded.expand_timesteps = true;
  EXPECT_LT(MaxAbsDiff(*sampler.Sample(in.latents, in.prompt, in.negative, expanded), *reference), 1e-5);

  // Guidance changes the result; without it no negative embeddings are needed.
  WanSamplingOptions unguided = Options();
  unguided.guidance_scale = 1.0;
  auto plain = sampler.Sample(in.latents, in.prompt, at::Tensor(), unguided);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_GT(MaxAbsDiff(*plain, *reference), 1e-3);

  // A different shift is a different schedule.
  WanSamplingOptions shifted = Options();
  shifted.shift = 1.0;
  EXPECT_GT(MaxAbsDiff(*sampler.Sample(in.latents, in.prompt, in.negative, shifted), *reference), 1e-4);
}

TEST(WanSampler, RejectsInconsistentInputs) {
  const Inputs in = MakeInputs();
  const WanSampler sampler(Model(), Scheduler());
  EXPECT_EQ(sampler.Sample(in.latents, in.prompt, at::Tensor(), Options()).status().code(),
            StatusCode::kInvalidArgument);  // guidance without negatives
  EXPECT_EQ(sampler.Sample(in.latents, at::randn({2, 5, 8}), in.negative, Options()).status().code(),
            StatusCode::kInvalidArgument);
  WanSamplingOptions zero_steps = Options(0);
  EXPECT_EQ(sampler.Sample(in.latents, in.prompt, in.negative, zero_steps).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(sampler.Sample(at::randn({1, 4, 3, 5, 6}), in.prompt, in.negative, Options()).status().code(),
            StatusCode::kInvalidArgument);  // odd latent height reaches the transformer's check
}

TEST(WanSampler, ProgressCancellationAndResumeFromSavedState) {
  const Inputs in = MakeInputs();
  const WanSampler sampler(Model(), Scheduler());
  std::vector<int> steps_seen;
  std::vector<float> sigmas_seen;
  std::optional<UniPCMultistepScheduler::State> saved;
  at::Tensor saved_latents;
  WanSamplingOptions options = Options(5);
  options.on_step = [&](const StepProgress& p) {
    steps_seen.push_back(p.step);
    sigmas_seen.push_back(p.sigma);
    EXPECT_EQ(p.num_steps, 5);
    if (p.step == 1) {
      saved = p.scheduler->SaveState();
      saved_latents = p.latents->clone();
    }
  };
  const at::Tensor full = *sampler.Sample(in.latents, in.prompt, in.negative, options);
  EXPECT_EQ(steps_seen, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(sigmas_seen.back(), 0.0f);
  ASSERT_TRUE(saved.has_value());

  // Cancellation is checked before every step and leaves a clear status.
  int polls = 0;
  WanSamplingOptions cancelling = Options(5);
  cancelling.should_cancel = [&] { return ++polls > 2; };
  auto cancelled = sampler.Sample(in.latents, in.prompt, in.negative, cancelling);
  EXPECT_EQ(cancelled.status().code(), StatusCode::kAborted);
  EXPECT_EQ(polls, 3);

  // Resuming from the state saved after step 1 reproduces the uninterrupted run exactly.
  WanSamplingOptions resume = Options(5);
  resume.resume = &*saved;
  auto resumed = sampler.Sample(saved_latents, in.prompt, in.negative, resume);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  EXPECT_TRUE(at::equal(*resumed, full));
  WanSamplingOptions mismatched = Options(6);
  mismatched.resume = &*saved;
  EXPECT_EQ(sampler.Sample(saved_latents, in.prompt, in.negative, mismatched).status().code(),
            StatusCode::kInvalidArgument);
}

class BranchRecorder final : public ResidualHook {
 public:
  void AfterBlock(at::Tensor&, const BlockContext& c) override {
    std::lock_guard<std::mutex> lock(mu);
    if (c.block == 0) calls.push_back({c.step, c.num_steps, c.branches});
  }
  struct Call {
    int step, num_steps;
    std::vector<CfgBranch> branches;
  };
  std::mutex mu;
  std::vector<Call> calls;
};

TEST(WanSampler, HooksSeeStepsAndGuidanceBranches) {
  const Inputs in = MakeInputs();
  const WanSampler sampler(Model(), Scheduler());
  BranchRecorder two_forwards, one_batch;
  WanSamplingOptions options = Options(3);
  options.hook = &two_forwards;
  ASSERT_TRUE(sampler.Sample(in.latents, in.prompt, in.negative, options).ok());
  ASSERT_EQ(two_forwards.calls.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(two_forwards.calls[i].step, static_cast<int>(i / 2));
    EXPECT_EQ(two_forwards.calls[i].num_steps, 3);
    EXPECT_EQ(two_forwards.calls[i].branches,
              std::vector<CfgBranch>{i % 2 == 0 ? CfgBranch::kCond : CfgBranch::kUncond});
  }
  options.hook = &one_batch;
  options.batched_cfg = true;
  ASSERT_TRUE(sampler.Sample(in.latents, in.prompt, in.negative, options).ok());
  ASSERT_EQ(one_batch.calls.size(), 3u);
  EXPECT_EQ(one_batch.calls[0].branches, (std::vector<CfgBranch>{CfgBranch::kCond, CfgBranch::kUncond}));
}

TEST(WanSampler, CfgPartnerAndSequenceParallelGiveTheSameLatents) {
  const Inputs in = MakeInputs();
  const WanSampler sampler(Model(), Scheduler());
  const at::Tensor reference = *sampler.Sample(in.latents, in.prompt, in.negative, Options());

  testing::Rendezvous pair(2);
  std::vector<at::Tensor> cfg_results(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      testing::ThreadCfgPartner partner(r == 0 ? CfgBranch::kCond : CfgBranch::kUncond, pair);
      WanSamplingOptions o = Options();
      o.cfg_partner = &partner;
      auto out = sampler.Sample(in.latents, in.prompt, in.negative, o);
      if (out.ok()) cfg_results[r] = *out;
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(cfg_results[r].defined());
    EXPECT_LT(MaxAbsDiff(cfg_results[r], reference), 1e-5);
  }
  EXPECT_TRUE(at::equal(cfg_results[0], cfg_results[1]));  // both halves keep identical latents

  // 3 x 2 x 3 = 18 tokens over 4 simulated ranks (padding on the last), per-token timesteps too.
  for (bool expand : {false, true}) {
    std::vector<at::Tensor> sp_results(4);
    testing::RunRanks(4, [&](int rank, SequenceParallel& parallel) {
      WanSamplingOptions o = Options();
      o.parallel = &parallel;
      o.expand_timesteps = expand;
      auto out = sampler.Sample(in.latents, in.prompt, in.negative, o);
      if (out.ok()) sp_results[rank] = *out;
    });
    for (int r = 0; r < 4; ++r) {
      ASSERT_TRUE(sp_results[r].defined()) << "rank " << r;
      EXPECT_LT(MaxAbsDiff(sp_results[r], reference), 2e-5) << "rank " << r;
    }
  }
}

}  // namespace
}  // namespace stas::models::wan
