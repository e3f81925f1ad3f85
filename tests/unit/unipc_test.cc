// UniPC flow scheduler: the schedule against its closed form, exactness for a perfect data predictor,
// convergence order on a Gaussian whose probability-flow ODE is known in closed form, config errors
// and resumable state. (Bit-level agreement with diffusers is checked by the unipc_flow fixtures.)
#include <gtest/gtest.h>

#include <cmath>

#include "models/schedulers/unipc.h"

namespace stas::models {
namespace {

UniPCConfig FlowConfig(double shift, int order = 2) {
  UniPCConfig c;
  c.flow_shift = shift;
  c.solver_order = order;
  return c;
}

Json WanSchedulerJson() {
  return Json{{"num_train_timesteps", 1000}, {"solver_order", 2},         {"prediction_type", "flow_prediction"},
              {"predict_x0", true},          {"solver_type", "bh2"},      {"lower_order_final", true},
              {"disable_corrector", Json::array()}, {"use_flow_sigmas", true}, {"flow_shift", 3.0},
              {"timestep_spacing", "linspace"},     {"final_sigmas_type", "zero"}, {"solver_p", nullptr}};
}

TEST(UniPCSchedule, MatchesShiftedLinearSigmasAndTruncatedTimesteps) {
  for (double shift : {1.0, 3.0, 5.0}) {
    for (int steps : {1, 4, 10, 50}) {
      UniPCMultistepScheduler s(FlowConfig(shift));
      ASSERT_TRUE(s.SetTimesteps(steps).ok());
      ASSERT_EQ(s.timesteps().size(), static_cast<size_t>(steps));
      ASSERT_EQ(s.sigmas().size(), static_cast<size_t>(steps + 1));
      for (int i = 0; i < steps; ++i) {
        const double base = 1.0 - i * (1.0 - 1.0 / 1000.0) / steps;
        double shifted = shift * base / (1.0 + (shift - 1.0) * base);
        if (i == 0) shifted -= 1e-6;  // the first sigma is always 1 before the guard
        EXPECT_NEAR(s.sigmas()[i], shifted, 1e-7) << "shift " << shift << " steps " << steps << " i " << i;
        // Truncation of sigma * 1000 (none of these products is within rounding of an integer).
        EXPECT_EQ(s.timesteps()[i], static_cast<int64_t>(shifted * 1000.0));
        if (i > 0) EXPECT_LT(s.sigmas()[i], s.sigmas()[i - 1]);
      }
      EXPECT_EQ(s.sigmas()[steps], 0.0f);
      EXPECT_EQ(s.timesteps()[0], 999);
    }
  }
}

TEST(UniPCSchedule, SigmaMinFinalAndShiftTerminal) {
  UniPCConfig c = FlowConfig(3.0);
  c.final_sigmas_type = "sigma_min";
  UniPCMultistepScheduler a(c);
  ASSERT_TRUE(a.SetTimesteps(6).ok());
  EXPECT_EQ(a.sigmas()[6], a.sigmas()[5]);

  c.final_sigmas_type = "zero";
  c.shift_terminal = 0.1;
  UniPCMultistepScheduler b(c);
  ASSERT_TRUE(b.SetTimesteps(6).ok());
  EXPECT_NEAR(b.sigmas()[5], 0.1, 1e-6);  // stretched so the last step ends at shift_terminal
  EXPECT_NEAR(b.sigmas()[0], 1.0 - 1e-6, 1e-6);
}

// With a model that always predicts the same clean sample x0 (v = (x - x0) / sigma), every UniPC
// update is exact for any order: x_i = (1 - sigma_i) x0 + sigma_i eps, ending at x0.
TEST(UniPCStep, PerfectDataPredictorFollowsTheExactPath) {
  at::manual_seed(3);
  const at::Tensor x0 = at::randn({2, 4, 3, 5});
  const at::Tensor eps = at::randn({2, 4, 3, 5});
  for (int order : {1, 2, 3}) {
    for (int steps : {1, 2, 7, 20}) {
      UniPCMultistepScheduler s(FlowConfig(3.0, order));
      ASSERT_TRUE(s.SetTimesteps(steps).ok());
      at::Tensor x = x0 * (1 - s.sigmas()[0]) + eps * s.sigmas()[0];
      for (int i = 0; i < steps; ++i) {
        const at::Tensor v = (x - x0) / s.sigmas()[i];
        auto next = s.Step(v, x);
        ASSERT_TRUE(next.ok()) << next.status().ToString();
        x = *next;
        const float sigma = s.sigmas()[i + 1];
        EXPECT_LT((x - (x0 * (1 - sigma) + eps * sigma)).abs().max().item<float>(), 2e-5)
            << "order " << order << " steps " << steps << " step " << i;
      }
      EXPECT_LT((x - x0).abs().max().item<float>(), 2e-5);
      EXPECT_FALSE(s.Step(x, x).ok());  // the schedule is exhausted
    }
  }
}

// Data ~ N(mu, s^2) elementwise. The ideal flow predictor is known in closed form, and so is the
// probability-flow ODE: x(sigma) = alpha mu + sqrt(alpha^2 s^2 + sigma^2) z, z fixed by the start.
// Returns the error against it after all steps but the last (the last jumps to the posterior mean,
// which is the sampler's intent, not a point of the ODE).
double GaussianOdeError(int order, int steps, UniPCConfig config = FlowConfig(3.0)) {
  const double mu = 0.3, s2 = 0.25;
  config.solver_order = order;
  UniPCMultistepScheduler s(config);
  EXPECT_TRUE(s.SetTimesteps(steps).ok());
  at::Tensor x = at::linspace(-3, 3, 101, at::kDouble);
  const double sigma0 = s.sigmas()[0], alpha0 = 1 - sigma0;
  const at::Tensor z = (x - alpha0 * mu) / std::sqrt(alpha0 * alpha0 * s2 + sigma0 * sigma0);
  for (int i = 0; i + 1 < steps; ++i) {
    const double sigma = s.sigmas()[i], alpha = 1 - sigma;
    const at::Tensor x0_hat = mu + (alpha * s2 / (alpha * alpha * s2 + sigma * sigma)) * (x - alpha * mu);
    x = *s.Step((x - x0_hat) / sigma, x);
  }
  const double sigma = s.sigmas()[steps - 1], alpha = 1 - sigma;
  return (x - (alpha * mu + std::sqrt(alpha * alpha * s2 + sigma * sigma) * z)).abs().max().item<double>();
}

// In the asymptotic regime (many steps; the compared noise level moves with the step count, so few
// steps mix in other effects): the error shrinks like the solver's order, the corrector adds an order,
// and higher orders are more accurate.
TEST(UniPCStep, ConvergesWithTheSolversOrderOnAKnownOde) {
  const double first_200 = GaussianOdeError(1, 200), first_500 = GaussianOdeError(1, 500);
  const double second_200 = GaussianOdeError(2, 200), second_500 = GaussianOdeError(2, 500);
  const double third_500 = GaussianOdeError(3, 500);
  EXPECT_LT(first_500, first_200 / 2) << first_200 << " -> " << first_500;
  EXPECT_LT(second_500, second_200 / 4) << second_200 << " -> " << second_500;  // 2.5x steps, ~6x error
  EXPECT_LT(second_500, first_500 / 2.5) << first_500 << " vs " << second_500;
  EXPECT_LT(third_500, second_500 / 2.5) << second_500 << " vs " << third_500;
  UniPCConfig no_corrector = FlowConfig(3.0);
  for (int i = 0; i < 500; ++i) no_corrector.disable_corrector.push_back(i);
  EXPECT_LT(second_500, GaussianOdeError(2, 500, no_corrector) / 2.5);
  UniPCConfig bh1 = FlowConfig(3.0);
  bh1.solver_type = "bh1";
  EXPECT_LT(GaussianOdeError(2, 500, bh1), first_500 / 1.5);
  EXPECT_LT(GaussianOdeError(2, 10), GaussianOdeError(1, 10) / 3);  // also clearly better at few steps
}

TEST(UniPCStep, StateRestoreContinuesBitIdentically) {
  at::manual_seed(5);
  const at::Tensor start = at::randn({1, 3, 2, 4});
  std::vector<at::Tensor> outputs;
  for (int i = 0; i < 6; ++i) outputs.push_back(at::randn({1, 3, 2, 4}));
  UniPCMultistepScheduler whole(FlowConfig(5.0));
  ASSERT_TRUE(whole.SetTimesteps(6).ok());
  at::Tensor a = start;
  for (int i = 0; i < 6; ++i) a = *whole.Step(outputs[i], a);

  UniPCMultistepScheduler first(FlowConfig(5.0));
  ASSERT_TRUE(first.SetTimesteps(6).ok());
  at::Tensor b = start;
  for (int i = 0; i < 3; ++i) b = *first.Step(outputs[i], b);
  const UniPCMultistepScheduler::State state = first.SaveState();
  UniPCMultistepScheduler second(FlowConfig(5.0));
  ASSERT_TRUE(second.Restore(state).ok());
  EXPECT_EQ(second.step_index(), 3);
  for (int i = 3; i < 6; ++i) b = *second.Step(outputs[i], b);
  EXPECT_TRUE(at::equal(a, b));

  UniPCMultistepScheduler other_order(FlowConfig(5.0, 3));
  EXPECT_FALSE(other_order.Restore(state).ok());
}

TEST(UniPCConfig, ParsesTheWanConfigAndRefusesWhatItDoesNotImplement) {
  auto c = UniPCConfig::FromJson(WanSchedulerJson());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->solver_order, 2);
  EXPECT_EQ(c->flow_shift, 3.0);
  EXPECT_EQ(c->solver_type, "bh2");

  auto with = [](const char* key, Json value) {
    Json j = WanSchedulerJson();
    j[key] = std::move(value);
    return UniPCConfig::FromJson(j).status().code();
  };
  EXPECT_EQ(with("use_flow_sigmas", false), StatusCode::kNotImplemented);
  EXPECT_EQ(with("prediction_type", "epsilon"), StatusCode::kNotImplemented);
  EXPECT_EQ(with("use_karras_sigmas", true), StatusCode::kNotImplemented);
  EXPECT_EQ(with("thresholding", true), StatusCode::kNotImplemented);
  EXPECT_EQ(with("use_dynamic_shifting", true), StatusCode::kNotImplemented);
  EXPECT_EQ(with("predict_x0", false), StatusCode::kNotImplemented);
  EXPECT_EQ(with("solver_type", "euler"), StatusCode::kInvalidArgument);
  EXPECT_EQ(with("solver_order", 0), StatusCode::kInvalidArgument);
  EXPECT_EQ(with("flow_shift", -1.0), StatusCode::kInvalidArgument);
  EXPECT_EQ(with("final_sigmas_type", "one"), StatusCode::kInvalidArgument);
  EXPECT_EQ(with("flow_shift", "three"), StatusCode::kInvalidArgument);
  EXPECT_EQ(with("solver_type", "midpoint"), StatusCode::kOk);  // upstream maps it to bh2
  EXPECT_EQ(UniPCConfig::FromJson(Json::array()).status().code(), StatusCode::kInvalidArgument);

  UniPCMultistepScheduler s(*c);
  EXPECT_FALSE(s.Step(at::zeros({2}), at::zeros({2})).ok());  // no schedule yet
  EXPECT_FALSE(s.SetTimesteps(0).ok());
  ASSERT_TRUE(s.SetTimesteps(3).ok());
  EXPECT_FALSE(s.Step(at::zeros({2}), at::zeros({3})).ok());
  EXPECT_EQ(s.step_index(), 0);
}

}  // namespace
}  // namespace stas::models
