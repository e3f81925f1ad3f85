// DDIM sampling (eta = 0) as diffusers' CogVideoXDDIMScheduler, the sampler of the CogVideoX pipelines:
// betas from a linear / scaled_linear / squaredcos_cap_v2 schedule (or given), alphas_cumprod with the
// SNR shift a / (s + (1 - s) a) and optionally rescaled to zero terminal SNR (Lin et al. 2023), timesteps
// with linspace / leading / trailing spacing, epsilon / sample / v-prediction.
//
// Step at timestep t (previous timestep t - num_train_timesteps / N, integer division, as upstream):
//   x0 = from the prediction type; a = sqrt((1 - abar_prev) / (1 - abar_t)); b = sqrt(abar_prev) - sqrt(abar_t) a;
//   x_prev = a x_t + b x0, with abar_prev = 1 (set_alpha_to_one) or abar_0 before the first train step.
// The scalars are computed in float64 as upstream; the tensors stay in their dtype. Sample clipping and
// thresholding are refused with NotImplemented (no CogVideoX checkpoint uses them).
//
// Stateless apart from the schedule: Step may be called for any timestep of the schedule, in order.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace stas::models {

struct DDIMConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";  // linear, scaled_linear, squaredcos_cap_v2
  std::vector<double> trained_betas;            // overrides the schedule when non-empty
  bool set_alpha_to_one = true;
  int64_t steps_offset = 0;
  std::string prediction_type = "epsilon";      // epsilon, sample, v_prediction
  std::string timestep_spacing = "leading";     // linspace, leading, trailing
  bool rescale_betas_zero_snr = false;
  double snr_shift_scale = 3.0;

  // From diffusers' scheduler_config.json (defaults are CogVideoXDDIMScheduler's). InvalidArgument for
  // unknown or malformed values, NotImplemented for clip_sample / thresholding.
  static Result<DDIMConfig> FromJson(const Json& json);
};

class CogVideoXDDIMScheduler {
 public:
  // Validated by DDIMConfig::FromJson; a hand-built config is checked by SetTimesteps.
  explicit CogVideoXDDIMScheduler(DDIMConfig config);

  // Builds the schedule for `num_inference_steps` (1..num_train_timesteps).
  Status SetTimesteps(int num_inference_steps);

  const std::vector<int64_t>& timesteps() const { return timesteps_; }
  int num_inference_steps() const { return num_inference_steps_; }
  // alphas_cumprod after the SNR shift and rescale, float64 [num_train_timesteps].
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }
  double final_alpha_cumprod() const { return final_alpha_cumprod_; }

  // One DDIM step from `sample` at `timestep` given the model output there. Returns the previous sample
  // (same dtype/device as `sample`). InvalidArgument before SetTimesteps or for a timestep out of range.
  Result<at::Tensor> Step(const at::Tensor& model_output, int64_t timestep, const at::Tensor& sample) const;

 private:
  DDIMConfig config_;
  Status init_status_;
  std::vector<double> alphas_cumprod_;
  double final_alpha_cumprod_ = 1.0;
  int num_inference_steps_ = 0;
  std::vector<int64_t> timesteps_;
};

}  // namespace stas::models
