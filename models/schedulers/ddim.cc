#include "models/schedulers/ddim.h"

#include <cmath>

namespace stas::models {
namespace {

// The noise schedule as upstream computes it, including its dtypes (scaled_linear in float64, the others
// in float32), so alphas_cumprod matches to the last bit that matters.
Result<at::Tensor> AlphasCumprod(const DDIMConfig& c) {
  const int64_t n = c.num_train_timesteps;
  at::Tensor betas;
  if (!c.trained_betas.empty()) {
    if (static_cast<int64_t>(c.trained_betas.size()) != n)
      return InvalidArgument("DDIM: trained_betas has " + std::to_string(c.trained_betas.size()) +
                             " entries, num_train_timesteps is " + std::to_string(n));
    betas = at::tensor(c.trained_betas, at::kDouble).to(at::kFloat);
  } else if (c.beta_schedule == "linear") {
    betas = at::linspace(c.beta_start, c.beta_end, n, at::kFloat);
  } else if (c.beta_schedule == "scaled_linear") {
    betas = at::linspace(std::sqrt(c.beta_start), std::sqrt(c.beta_end), n, at::kDouble).pow(2);
  } else if (c.beta_schedule == "squaredcos_cap_v2") {
    std::vector<double> b(n);
    auto alpha_bar = [](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * M_PI / 2), 2); };
    for (int64_t i = 0; i < n; ++i) {
      const double t1 = static_cast<double>(i) / n, t2 = static_cast<double>(i + 1) / n;
      b[i] = std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999);
    }
    betas = at::tensor(b, at::kDouble).to(at::kFloat);
  } else {
    return InvalidArgument("DDIM: unknown beta_schedule '" + c.beta_schedule +
                           "' (linear, scaled_linear, squaredcos_cap_v2)");
  }
  at::Tensor abar = at::cumprod(1.0 - betas, 0);
  // SNR shift: scales the signal-to-noise ratio abar / (1 - abar) by 1 / snr_shift_scale.
  abar = abar / (c.snr_shift_scale + (1 - c.snr_shift_scale) * abar);
  if (c.rescale_betas_zero_snr) {
    // Shift sqrt(abar) so its last value is 0 and rescale so its first value is unchanged (zero terminal SNR).
    at::Tensor s = abar.sqrt();
    at::Tensor s0 = s[0].clone();
    at::Tensor sT = s[-1].clone();
    s = (s - sT) * (s0 / (s0 - sT));
    abar = s.pow(2);
  }
  return abar;
}

}  // namespace

Result<DDIMConfig> DDIMConfig::FromJson(const Json& json) {
  if (!json.is_object()) return InvalidArgument("DDIM scheduler config must be a JSON object");
  DDIMConfig c;
  Status parsed = CatchConfigErrors("DDIM scheduler config", [&] {
    c.num_train_timesteps = JsonValueOr<int64_t>(json, "num_train_timesteps", c.num_train_timesteps);
    c.beta_start = JsonValueOr<double>(json, "beta_start", c.beta_start);
    c.beta_end = JsonValueOr<double>(json, "beta_end", c.beta_end);
    c.beta_schedule = JsonValueOr<std::string>(json, "beta_schedule", c.beta_schedule);
    c.trained_betas = JsonValueOr<std::vector<double>>(json, "trained_betas", {});
    c.set_alpha_to_one = JsonValueOr<bool>(json, "set_alpha_to_one", c.set_alpha_to_one);
    c.steps_offset = JsonValueOr<int64_t>(json, "steps_offset", c.steps_offset);
    c.prediction_type = JsonValueOr<std::string>(json, "prediction_type", c.prediction_type);
    c.timestep_spacing = JsonValueOr<std::string>(json, "timestep_spacing", c.timestep_spacing);
    c.rescale_betas_zero_snr = JsonValueOr<bool>(json, "rescale_betas_zero_snr", c.rescale_betas_zero_snr);
    c.snr_shift_scale = JsonValueOr<double>(json, "snr_shift_scale", c.snr_shift_scale);
    // clip_sample / clip_sample_range / sample_max_value are accepted and ignored: upstream's
    // CogVideoXDDIMScheduler.step never clips.
  });
  STAS_RETURN_IF_ERROR(parsed);
  if (JsonValueOr<bool>(json, "thresholding", false))
    return NotImplemented("DDIM scheduler: dynamic thresholding is not supported");
  if (c.num_train_timesteps <= 0) return InvalidArgument("DDIM scheduler: num_train_timesteps must be positive");
  if (c.prediction_type != "epsilon" && c.prediction_type != "sample" && c.prediction_type != "v_prediction")
    return InvalidArgument("DDIM scheduler: unknown prediction_type '" + c.prediction_type +
                           "' (epsilon, sample, v_prediction)");
  if (c.timestep_spacing != "linspace" && c.timestep_spacing != "leading" && c.timestep_spacing != "trailing")
    return InvalidArgument("DDIM scheduler: unknown timestep_spacing '" + c.timestep_spacing +
                           "' (linspace, leading, trailing)");
  if (c.beta_schedule != "linear" && c.beta_schedule != "scaled_linear" && c.beta_schedule != "squaredcos_cap_v2" &&
      c.trained_betas.empty())
    return InvalidArgument("DDIM scheduler: unknown beta_schedule '" + c.beta_schedule +
                           "' (linear, scaled_linear, squaredcos_cap_v2)");
  return c;
}

CogVideoXDDIMScheduler::CogVideoXDDIMScheduler(DDIMConfig config) : config_(std::move(config)) {
  Result<at::Tensor> abar = AlphasCumprod(config_);
  if (!abar.ok()) {
    init_status_ = abar.status();
    return;
  }
  at::Tensor a = abar->to(at::kDouble).contiguous();
  alphas_cumprod_.assign(a.data_ptr<double>(), a.data_ptr<double>() + a.numel());
  final_alpha_cumprod_ = config_.set_alpha_to_one ? 1.0 : alphas_cumprod_.front();
}

Status CogVideoXDDIMScheduler::SetTimesteps(int n) {
  STAS_RETURN_IF_ERROR(init_status_);
  const int64_t T = config_.num_train_timesteps;
  if (n < 1 || n > T)
    return InvalidArgument("DDIM: num_inference_steps must be in [1, " + std::to_string(T) + "], got " +
                           std::to_string(n));
  std::vector<int64_t> ts(n);
  if (config_.timestep_spacing == "linspace") {
    // np.linspace(0, T-1, n).round() reversed.
    for (int i = 0; i < n; ++i) {
      const double v = n == 1 ? 0.0 : static_cast<double>(T - 1) * i / (n - 1);
      ts[n - 1 - i] = static_cast<int64_t>(std::nearbyint(v));
    }
  } else if (config_.timestep_spacing == "leading") {
    const int64_t ratio = T / n;
    for (int i = 0; i < n; ++i) ts[n - 1 - i] = i * ratio + config_.steps_offset;
  } else {  // trailing: round(arange(T, 0, -T/n)) - 1, i.e. T - i T/n for i < n (numpy's start + i*step)
    const double ratio = static_cast<double>(T) / n;
    std::vector<int64_t> values;
    for (int i = 0; i < n; ++i) values.push_back(static_cast<int64_t>(std::nearbyint(T - i * ratio)) - 1);
    ts = values;
  }
  for (int64_t t : ts)
    if (t < 0 || t >= T)
      return InvalidArgument("DDIM: timestep " + std::to_string(t) + " out of range (steps_offset too large?)");
  timesteps_ = std::move(ts);
  num_inference_steps_ = n;
  return Status::Ok();
}

Result<at::Tensor> CogVideoXDDIMScheduler::Step(const at::Tensor& model_output, int64_t timestep,
                                                const at::Tensor& sample) const {
  if (num_inference_steps_ == 0) return InvalidArgument("DDIM: Step before SetTimesteps");
  const int64_t T = config_.num_train_timesteps;
  if (timestep < 0 || timestep >= T)
    return InvalidArgument("DDIM: timestep " + std::to_string(timestep) + " out of range");
  if (model_output.sizes() != sample.sizes())
    return InvalidArgument("DDIM: model output and sample shapes differ");
  const int64_t prev = timestep - T / num_inference_steps_;
  const double abar_t = alphas_cumprod_[timestep];
  const double abar_prev = prev >= 0 ? alphas_cumprod_[prev] : final_alpha_cumprod_;
  const double beta_t = 1 - abar_t;
  const at::Tensor out = model_output.to(sample.scalar_type());
  at::Tensor x0;
  if (config_.prediction_type == "epsilon") {
    x0 = (sample - std::sqrt(beta_t) * out) / std::sqrt(abar_t);
  } else if (config_.prediction_type == "sample") {
    x0 = out;
  } else {  // v_prediction
    x0 = std::sqrt(abar_t) * sample - std::sqrt(beta_t) * out;
  }
  const double a = std::sqrt((1 - abar_prev) / (1 - abar_t));
  const double b = std::sqrt(abar_prev) - std::sqrt(abar_t) * a;
  return a * sample + b * x0;
}

}  // namespace stas::models
