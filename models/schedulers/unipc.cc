#include "models/schedulers/unipc.h"

#include <algorithm>
#include <cmath>

#include "common/check.h"

namespace stas::models {
namespace {

// Solves the small dense system a x = b (row-major n x n) by Gaussian elimination with partial
// pivoting, in double.
std::vector<double> SolveSmall(std::vector<double> a, std::vector<double> b) {
  const size_t n = b.size();
  for (size_t col = 0; col < n; ++col) {
    size_t pivot = col;
    for (size_t r = col + 1; r < n; ++r)
      if (std::fabs(a[r * n + col]) > std::fabs(a[pivot * n + col])) pivot = r;
    if (pivot != col) {
      for (size_t c = 0; c < n; ++c) std::swap(a[col * n + c], a[pivot * n + c]);
      std::swap(b[col], b[pivot]);
    }
    for (size_t r = col + 1; r < n; ++r) {
      const double f = a[r * n + col] / a[col * n + col];
      for (size_t c = col; c < n; ++c) a[r * n + c] -= f * a[col * n + c];
      b[r] -= f * b[col];
    }
  }
  std::vector<double> x(n);
  for (size_t i = n; i-- > 0;) {
    double s = b[i];
    for (size_t c = i + 1; c < n; ++c) s -= a[i * n + c] * x[c];
    x[i] = s / a[i * n + i];
  }
  return x;
}

// The B(h) coefficients shared by predictor and corrector (float32 like upstream's 0-dim tensors).
struct BhCoefficients {
  float hh = 0;       // -h (data prediction)
  float h_phi_1 = 0;  // expm1(hh)
  float B_h = 0;
  std::vector<float> b;  // b_i = h_phi_i * i! / B_h, i = 1..order
};

BhCoefficients ComputeBh(float h, int order, bool bh1) {
  BhCoefficients c;
  c.hh = -h;
  c.h_phi_1 = std::expm1(c.hh);
  float h_phi_k = c.h_phi_1 / c.hh - 1.0f;
  int64_t factorial = 1;
  c.B_h = bh1 ? c.hh : std::expm1(c.hh);
  for (int i = 1; i <= order; ++i) {
    c.b.push_back(h_phi_k * static_cast<float>(factorial) / c.B_h);
    factorial *= i + 1;
    h_phi_k = h_phi_k / c.hh - static_cast<float>(1.0 / static_cast<double>(factorial));
  }
  return c;
}

// R[i][j] = rks[j]^i for i, j < n.
std::vector<double> PowerMatrix(const std::vector<float>& rks, size_t n) {
  std::vector<double> r(n * n);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) r[i * n + j] = std::pow(static_cast<double>(rks[j]), static_cast<double>(i));
  return r;
}

}  // namespace

Result<UniPCConfig> UniPCConfig::FromJson(const Json& json) {
  if (!json.is_object()) return InvalidArgument("UniPC scheduler config must be a JSON object");
  UniPCConfig c;
  bool use_flow_sigmas = false, predict_x0 = true, thresholding = false, dynamic_shifting = false;
  bool other_sigmas = false, has_solver_p = false;
  std::string prediction_type;
  Status parsed = CatchConfigErrors("UniPC scheduler config", [&] {
    c.num_train_timesteps = JsonValueOr<int64_t>(json, "num_train_timesteps", c.num_train_timesteps);
    c.solver_order = JsonValueOr<int>(json, "solver_order", c.solver_order);
    c.solver_type = JsonValueOr<std::string>(json, "solver_type", c.solver_type);
    c.lower_order_final = JsonValueOr<bool>(json, "lower_order_final", c.lower_order_final);
    c.disable_corrector = JsonValueOr<std::vector<int>>(json, "disable_corrector", {});
    c.flow_shift = JsonValueOr<double>(json, "flow_shift", c.flow_shift);
    c.final_sigmas_type = JsonValueOr<std::string>(json, "final_sigmas_type", c.final_sigmas_type);
    c.timestep_spacing = JsonValueOr<std::string>(json, "timestep_spacing", c.timestep_spacing);
    if (json.contains("shift_terminal") && !json["shift_terminal"].is_null()) {
      const double st = json["shift_terminal"].get<double>();
      if (st != 0.0) c.shift_terminal = st;  // upstream tests it for truthiness
    }
    prediction_type = JsonValueOr<std::string>(json, "prediction_type", "epsilon");
    use_flow_sigmas = JsonValueOr<bool>(json, "use_flow_sigmas", false);
    predict_x0 = JsonValueOr<bool>(json, "predict_x0", true);
    thresholding = JsonValueOr<bool>(json, "thresholding", false);
    dynamic_shifting = JsonValueOr<bool>(json, "use_dynamic_shifting", false);
    other_sigmas = JsonValueOr<bool>(json, "use_karras_sigmas", false) ||
                   JsonValueOr<bool>(json, "use_exponential_sigmas", false) ||
                   JsonValueOr<bool>(json, "use_beta_sigmas", false);
    has_solver_p = json.contains("solver_p") && !json["solver_p"].is_null();
  });
  STAS_RETURN_IF_ERROR(parsed);
  if (!use_flow_sigmas) return NotImplemented("UniPC: only flow sigmas (use_flow_sigmas: true) are supported");
  if (prediction_type != "flow_prediction")
    return NotImplemented("UniPC: prediction_type '" + prediction_type + "' is not supported (only flow_prediction)");
  if (!predict_x0) return NotImplemented("UniPC: predict_x0 false (noise prediction) is not supported");
  if (thresholding) return NotImplemented("UniPC: thresholding is not supported");
  if (dynamic_shifting) return NotImplemented("UniPC: use_dynamic_shifting is not supported");
  if (other_sigmas) return NotImplemented("UniPC: karras/exponential/beta sigmas are not supported");
  if (has_solver_p) return NotImplemented("UniPC: solver_p is not supported");
  if (c.solver_type == "midpoint" || c.solver_type == "heun" || c.solver_type == "logrho") c.solver_type = "bh2";
  if (c.solver_type != "bh1" && c.solver_type != "bh2")
    return InvalidArgument("UniPC: solver_type must be bh1 or bh2, got '" + c.solver_type + "'");
  if (c.num_train_timesteps < 2) return InvalidArgument("UniPC: num_train_timesteps must be at least 2");
  if (c.solver_order < 1 || c.solver_order > 8)
    return InvalidArgument("UniPC: solver_order must be in [1, 8], got " + std::to_string(c.solver_order));
  if (!(c.flow_shift > 0)) return InvalidArgument("UniPC: flow_shift must be positive");
  if (c.final_sigmas_type != "zero" && c.final_sigmas_type != "sigma_min")
    return InvalidArgument("UniPC: final_sigmas_type must be zero or sigma_min, got '" + c.final_sigmas_type + "'");
  if (c.timestep_spacing != "linspace" && c.timestep_spacing != "leading" && c.timestep_spacing != "trailing")
    return InvalidArgument("UniPC: timestep_spacing must be linspace, leading or trailing, got '" +
                           c.timestep_spacing + "'");
  if (c.shift_terminal && !(*c.shift_terminal > 0 && *c.shift_terminal < 1))
    return InvalidArgument("UniPC: shift_terminal must be in (0, 1)");
  return c;
}

Status UniPCMultistepScheduler::SetTimesteps(int num_inference_steps) {
  if (num_inference_steps < 1) return InvalidArgument("UniPC: num_inference_steps must be at least 1");
  const int n = num_inference_steps;
  const double T = static_cast<double>(config_.num_train_timesteps);
  // numpy linspace(1, 1/T, n + 1) without its last point: start + i * (stop - start) / n, in float64.
  const double start = 1.0, stop = 1.0 / T, delta = (stop - start) / n;
  std::vector<double> s(n);
  for (int i = 0; i < n; ++i) s[i] = i * delta + start;
  const double k = config_.flow_shift;
  for (double& v : s) v = k * v / (1 + (k - 1) * v);
  if (config_.shift_terminal) {
    const double scale = (1 - s.back()) / (1 - *config_.shift_terminal);
    for (double& v : s) v = 1 - (1 - v) / scale;
  }
  if (std::fabs(s[0] - 1) < 1e-6) s[0] -= 1e-6;  // keeps log(alpha) finite in the first update

  timesteps_.assign(n, 0);
  sigmas_.assign(n + 1, 0.0f);
  for (int i = 0; i < n; ++i) {
    timesteps_[i] = static_cast<int64_t>(s[i] * T);
    sigmas_[i] = static_cast<float>(s[i]);
  }
  sigmas_[n] = config_.final_sigmas_type == "sigma_min" ? static_cast<float>(s[n - 1]) : 0.0f;

  step_index_ = 0;
  lower_order_nums_ = 0;
  last_order_ = 0;
  model_outputs_.assign(config_.solver_order, at::Tensor());
  last_sample_ = at::Tensor();
  return Status::Ok();
}

float UniPCMultistepScheduler::Lambda(float sigma) const {
  const float alpha = 1.0f - sigma;
  return std::log(alpha) - std::log(sigma);
}

at::Tensor UniPCMultistepScheduler::Predict(const at::Tensor& x, int order) const {
  const int i = step_index_;
  const float sigma_t = sigmas_[i + 1], sigma_s0 = sigmas_[i];
  const float alpha_t = 1.0f - sigma_t;
  const float lambda_s0 = Lambda(sigma_s0);
  const float h = Lambda(sigma_t) - lambda_s0;
  const at::Tensor& m0 = model_outputs_.back();
  const int n_hist = static_cast<int>(model_outputs_.size());

  std::vector<float> rks;
  std::vector<at::Tensor> D1s;
  for (int k = 1; k < order; ++k) {
    const float rk = (Lambda(sigmas_[i - k]) - lambda_s0) / h;
    rks.push_back(rk);
    D1s.push_back((model_outputs_[n_hist - 1 - k] - m0) / static_cast<double>(rk));
  }
  rks.push_back(1.0f);
  const BhCoefficients c = ComputeBh(h, order, config_.solver_type == "bh1");

  at::Tensor x_t = x * static_cast<double>(sigma_t / sigma_s0) - m0 * static_cast<double>(alpha_t * c.h_phi_1);
  if (!D1s.empty()) {
    std::vector<float> rhos;
    if (order == 2) {
      rhos = {0.5f};
    } else {
      const size_t n = static_cast<size_t>(order - 1);
      std::vector<double> b(c.b.begin(), c.b.begin() + n);
      for (double r : SolveSmall(PowerMatrix(rks, n), b)) rhos.push_back(static_cast<float>(r));
    }
    at::Tensor pred_res = D1s[0] * static_cast<double>(rhos[0]);
    for (size_t k = 1; k < D1s.size(); ++k) pred_res = pred_res + D1s[k] * static_cast<double>(rhos[k]);
    x_t = x_t - pred_res * static_cast<double>(alpha_t * c.B_h);
  }
  return x_t.to(x.scalar_type());
}

at::Tensor UniPCMultistepScheduler::Correct(const at::Tensor& model_t, const at::Tensor& x,
                                            const at::Tensor& this_sample, int order) const {
  const int i = step_index_;
  const float sigma_t = sigmas_[i], sigma_s0 = sigmas_[i - 1];
  const float alpha_t = 1.0f - sigma_t;
  const float lambda_s0 = Lambda(sigma_s0);
  const float h = Lambda(sigma_t) - lambda_s0;
  const at::Tensor& m0 = model_outputs_.back();
  const int n_hist = static_cast<int>(model_outputs_.size());

  std::vector<float> rks;
  std::vector<at::Tensor> D1s;
  for (int k = 1; k < order; ++k) {
    const float rk = (Lambda(sigmas_[i - (k + 1)]) - lambda_s0) / h;
    rks.push_back(rk);
    D1s.push_back((model_outputs_[n_hist - 1 - k] - m0) / static_cast<double>(rk));
  }
  rks.push_back(1.0f);
  const BhCoefficients c = ComputeBh(h, order, config_.solver_type == "bh1");
  std::vector<float> rhos;
  if (order == 1) {
    rhos = {0.5f};
  } else {
    for (double r : SolveSmall(PowerMatrix(rks, order), std::vector<double>(c.b.begin(), c.b.end())))
      rhos.push_back(static_cast<float>(r));
  }

  at::Tensor x_t = x * static_cast<double>(sigma_t / sigma_s0) - m0 * static_cast<double>(alpha_t * c.h_phi_1);
  at::Tensor correction = (model_t - m0) * static_cast<double>(rhos.back());
  if (!D1s.empty()) {
    at::Tensor corr_res = D1s[0] * static_cast<double>(rhos[0]);
    for (size_t k = 1; k < D1s.size(); ++k) corr_res = corr_res + D1s[k] * static_cast<double>(rhos[k]);
    correction = corr_res + correction;
  }
  x_t = x_t - correction * static_cast<double>(alpha_t * c.B_h);
  return x_t.to(this_sample.scalar_type());
}

Result<at::Tensor> UniPCMultistepScheduler::Step(const at::Tensor& model_output, const at::Tensor& sample) {
  if (timesteps_.empty()) return InvalidArgument("UniPC: SetTimesteps must be called before Step");
  if (step_index_ >= num_inference_steps())
    return InvalidArgument("UniPC: all " + std::to_string(num_inference_steps()) + " steps are done");
  if (!model_output.defined() || !sample.defined() || model_output.sizes() != sample.sizes())
    return InvalidArgument("UniPC: model_output and sample must have the same shape");
  const int order = config_.solver_order;
  const bool use_corrector =
      step_index_ > 0 && last_sample_.defined() &&
      std::find(config_.disable_corrector.begin(), config_.disable_corrector.end(), step_index_ - 1) ==
          config_.disable_corrector.end();

  // Data prediction for flow matching: x0 = x - sigma * v.
  at::Tensor converted = sample - model_output * static_cast<double>(sigmas_[step_index_]);
  at::Tensor current = sample;
  if (use_corrector) current = Correct(converted, last_sample_, sample, last_order_);

  for (int k = 0; k + 1 < order; ++k) model_outputs_[k] = model_outputs_[k + 1];
  model_outputs_.back() = converted;

  int this_order = config_.lower_order_final ? std::min(order, num_inference_steps() - step_index_) : order;
  this_order = std::min(this_order, lower_order_nums_ + 1);  // warm-up: no history yet
  STAS_CHECK(this_order > 0);
  last_sample_ = current;
  at::Tensor next = Predict(current, this_order);
  if (lower_order_nums_ < order) ++lower_order_nums_;
  last_order_ = this_order;
  ++step_index_;
  return next;
}

UniPCMultistepScheduler::State UniPCMultistepScheduler::SaveState() const {
  State s;
  s.num_inference_steps = num_inference_steps();
  s.step_index = step_index_;
  s.lower_order_nums = lower_order_nums_;
  s.last_order = last_order_;
  s.model_outputs = model_outputs_;
  s.last_sample = last_sample_;
  return s;
}

Status UniPCMultistepScheduler::Restore(const State& state) {
  if (state.num_inference_steps < 1 || state.step_index < 0 || state.step_index > state.num_inference_steps ||
      static_cast<int>(state.model_outputs.size()) != config_.solver_order || state.lower_order_nums < 0 ||
      state.lower_order_nums > config_.solver_order || state.last_order < 0 ||
      state.last_order > config_.solver_order)
    return InvalidArgument("UniPC: the saved state does not fit this scheduler's configuration");
  for (int k = 0; k < state.lower_order_nums; ++k)
    if (!state.model_outputs[config_.solver_order - 1 - k].defined())
      return InvalidArgument("UniPC: the saved state lacks model outputs its step count implies");
  STAS_RETURN_IF_ERROR(SetTimesteps(state.num_inference_steps));
  step_index_ = state.step_index;
  lower_order_nums_ = state.lower_order_nums;
  last_order_ = state.last_order;
  model_outputs_ = state.model_outputs;
  last_sample_ = state.last_sample;
  return Status::Ok();
}

}  // namespace stas::models
