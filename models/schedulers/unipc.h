// UniPC multistep sampler (Zhao et al. 2023) with flow-matching sigmas, numerically as diffusers'
// UniPCMultistepScheduler configured the way the Wan pipelines use it: use_flow_sigmas with
// flow_shift, prediction_type flow_prediction, predict_x0 (data prediction), solver_type bh1/bh2,
// any solver_order, lower_order_final, disable_corrector, final_sigmas_type zero/sigma_min,
// shift_terminal. Other upstream options (karras/exponential/beta sigmas, dynamic shifting,
// thresholding, a solver_p, non-flow noise schedules) are refused with NotImplemented.
//
// Schedule for N steps: s_i = linspace(1, 1/num_train_timesteps, N+1)[:N] (float64), shifted
// s' = k s / (1 + (k-1) s) with k = flow_shift, s'_0 lowered by 1e-6 when within 1e-6 of 1;
// timesteps t_i = int64(s'_i * num_train_timesteps) (truncation); sigmas = float32(s') plus a final 0
// (or s'_{N-1} for sigma_min). Step i turns the model's flow prediction v at sigma_i into
// x0 = x - sigma_i v, applies the UniC corrector to the sample (for i > 0) and the UniP predictor to
// reach sigma_{i+1}; scalar coefficients are computed in float32 as upstream does.
//
// The scheduler holds the multistep history, so one instance serves one sampling run at a time (not
// thread-safe); State()/Restore() save and resume that history (latent checkpoints).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace stas::models {

struct UniPCConfig {
  int64_t num_train_timesteps = 1000;
  int solver_order = 2;
  std::string solver_type = "bh2";  // "bh1" or "bh2" (upstream maps midpoint/heun/logrho to bh2)
  bool lower_order_final = true;
  std::vector<int> disable_corrector;  // step indices i whose corrector (applied at step i + 1) is skipped
  double flow_shift = 1.0;
  std::string final_sigmas_type = "zero";  // "zero" or "sigma_min"
  std::optional<double> shift_terminal;
  std::string timestep_spacing = "linspace";  // kept for completeness: flow sigmas ignore it upstream

  // From diffusers' scheduler_config.json. Defaults follow diffusers except that use_flow_sigmas and
  // flow_prediction are required (their absence is NotImplemented, as non-flow schedules are).
  static Result<UniPCConfig> FromJson(const Json& json);
};

class UniPCMultistepScheduler {
 public:
  explicit UniPCMultistepScheduler(UniPCConfig config) : config_(std::move(config)) {}

  // Builds the schedule for `num_inference_steps` (>= 1) and resets the history.
  Status SetTimesteps(int num_inference_steps);

  int num_inference_steps() const { return static_cast<int>(timesteps_.size()); }
  // Timestep i, as the model is conditioned on it (an integer in [0, num_train_timesteps)).
  const std::vector<int64_t>& timesteps() const { return timesteps_; }
  // num_inference_steps + 1 noise levels, the last 0 (final_sigmas_type zero).
  const std::vector<float>& sigmas() const { return sigmas_; }
  // Index of the next Step (0 after SetTimesteps).
  int step_index() const { return step_index_; }

  // One sampling step: `model_output` is the flow prediction for `sample` at timesteps()[step_index()];
  // returns the sample at the next noise level (same dtype/device as `sample`). Fails when the schedule
  // is not set or exhausted, or the shapes differ.
  Result<at::Tensor> Step(const at::Tensor& model_output, const at::Tensor& sample);

  // The multistep history after some steps; Restore continues from it exactly (same config and step count).
  struct State {
    int num_inference_steps = 0;
    int step_index = 0;
    int lower_order_nums = 0;
    int last_order = 0;                   // order of the last predictor (the next corrector's order)
    std::vector<at::Tensor> model_outputs;  // converted (x0) outputs, oldest first; undefined = none yet
    at::Tensor last_sample;               // the sample before the last predictor; undefined at step 0
  };
  State SaveState() const;
  Status Restore(const State& state);

  const UniPCConfig& config() const { return config_; }

 private:
  float Lambda(float sigma) const;  // log(alpha) - log(sigma) with alpha = 1 - sigma, float32
  // The UniP predictor from sigma_i to sigma_{i+1} (data prediction, B(h) variant).
  at::Tensor Predict(const at::Tensor& sample, int order) const;
  // The UniC corrector of `this_sample` at sigma_i using the new converted output `model_t`.
  at::Tensor Correct(const at::Tensor& model_t, const at::Tensor& last_sample, const at::Tensor& this_sample,
                     int order) const;

  UniPCConfig config_;
  std::vector<int64_t> timesteps_;
  std::vector<float> sigmas_;
  int step_index_ = 0;
  int lower_order_nums_ = 0;
  int last_order_ = 0;
  std::vector<at::Tensor> model_outputs_;  // size solver_order, newest last
  at::Tensor last_sample_;
};

}  // namespace stas::models
