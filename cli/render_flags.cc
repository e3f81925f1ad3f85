#include "cli/render_flags.h"

#include <cctype>

namespace stas::cli {

namespace {

// Binds an option to a std::optional, which stays unset (= the model's default) unless given.
template <typename T>
CLI::Option* AddOptional(CLI::App* app, const std::string& name, std::optional<T>& target, const std::string& help) {
  CLI::Option* opt = app->add_option_function<T>(name, [&target](const T& v) { target = v; }, help);
  opt->type_name(std::is_integral<T>::value ? "INT" : "FLOAT");
  // A repeated flag overrides the earlier one, as in most command lines (`... --steps 8 --steps 4`).
  opt->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  return opt;
}

}  // namespace

Result<std::vector<int>> ParseIndexList(const std::string& text, const std::string& flag) {
  std::vector<int> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(pos, comma - pos);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.front()))) item.erase(item.begin());
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back()))) item.pop_back();
    bool digits = !item.empty() && item.size() <= 6;
    for (char c : item) digits = digits && std::isdigit(static_cast<unsigned char>(c));
    if (!digits) return InvalidArgument(flag + ": '" + item + "' is not a block index (expected e.g. 0,1,5)");
    out.push_back(std::stoi(item));
    pos = comma + 1;
  }
  return out;
}

void RenderFlags::AddTo(CLI::App* cmd) {
  cmd->add_option("--model", model, "'tiny' (built in, random weights) or a diffusers checkpoint folder")
      ->capture_default_str();
  cmd->add_option("--prompt", prompt, "what to render (at most 8 KiB)");
  cmd->add_option("--negative-prompt", negative_prompt, "what to steer away from (classifier-free guidance)");
  AddOptional(cmd, "--height", height, "video height in pixels, a multiple of 16 (32 for Wan2.2); default: the model's");
  AddOptional(cmd, "--width", width, "video width in pixels, a multiple of 16 (32 for Wan2.2); default: the model's");
  AddOptional(cmd, "--frames", frames, "number of frames, 4k+1 (e.g. 81); default: the model's");
  AddOptional(cmd, "--steps", steps, "denoising steps in [1, 1000]; default 50 (tiny: 8)");
  AddOptional(cmd, "--guidance", guidance, "classifier-free guidance scale; <= 1 disables CFG; default 5.0");
  AddOptional(cmd, "--shift", shift, "flow shift of the sampler; default 3.0 (5.0 at 720p and for Wan2.2)");
  AddOptional(cmd, "--fps", fps, "frames per second of the MP4; default 16 (Wan2.2: 24)");
  cmd->add_option("--seed", seed, "random seed of the initial noise")->capture_default_str();

  CLI::Option* on = cmd->add_flag("--stas", stas, "enable Structured Activation Steering (docs/STAS.md)");
  AddOptional(cmd, "--stas-alpha", stas_alpha, "STAS target scale: target = alpha x global max (default 1.0)")->needs(on);
  AddOptional(cmd, "--stas-lambda", stas_lambda, "STAS update strength: 1 replaces, > 1 extrapolates (default 1.0)")
      ->needs(on);
  CLI::Option* k = AddOptional(cmd, "--stas-steps", stas_steps, "steer denoising steps [0, K) (default: 0.4 x steps)");
  k->needs(on);
  AddOptional(cmd, "--stas-fraction", stas_fraction, "steer the first fraction of the steps (default 0.4)")
      ->needs(on)
      ->excludes(k);
  cmd->add_option("--stas-blocks", stas_blocks, "comma-separated DiT blocks to steer (default: all)")->needs(on);
  AddOptional(cmd, "--stas-boundary-width", stas_boundary_width,
              "tokens steered at the head and tail of each later latent frame (default: one row)")
      ->needs(on);
  cmd->add_option("--stas-boundary-mode", stas_boundary_mode,
                  "rows: head/tail tokens of each latent frame (default); frames: whole boundary frames")
      ->check(CLI::IsMember({"rows", "frames"}))
      ->needs(on);
  cmd->add_option("--stas-branches", stas_branches, "CFG branches to steer: both (default) or cond")
      ->check(CLI::IsMember({"both", "cond"}))
      ->needs(on);
  cmd->add_option("--stas-channels", stas_channels,
                  "calibrated MA channels JSON from `stas analyze` (default: detect online)")
      ->needs(on);
  AddOptional(cmd, "--stas-tau", stas_tau, "online MA detection: peak/median ratio threshold (default 100)")->needs(on);
  AddOptional(cmd, "--stas-max-channels", stas_max_channels, "online MA detection: at most this many channels (default 8)")
      ->needs(on);
}

Result<jobspec::RenderSpec> RenderFlags::ToSpec() const {
  jobspec::RenderSpec s;
  s.model = model;
  s.prompt = prompt;
  s.negative_prompt = negative_prompt;
  s.seed = seed;
  s.height = height;
  s.width = width;
  s.frames = frames;
  s.steps = steps;
  s.fps = fps;
  s.guidance = guidance;
  s.shift = shift;
  steering::StasOptions& o = s.stas;
  o.enabled = stas;
  if (stas_alpha) o.alpha = *stas_alpha;
  if (stas_lambda) o.lambda = *stas_lambda;
  if (stas_steps) o.steps = *stas_steps;
  if (stas_fraction) o.step_fraction = *stas_fraction;
  if (stas_tau) o.tau = *stas_tau;
  if (stas_max_channels) o.max_channels = *stas_max_channels;
  if (stas_boundary_width) o.boundary_width = *stas_boundary_width;
  if (!stas_blocks.empty()) {
    STAS_ASSIGN_OR_RETURN(o.blocks, ParseIndexList(stas_blocks, "--stas-blocks"));
  }
  if (stas_boundary_mode == "frames") o.boundary_mode = steering::BoundaryMode::kFrames;
  if (stas_branches == "cond") o.branches = steering::SteerBranches::kCondOnly;
  o.channels_file = stas_channels;
  STAS_RETURN_IF_ERROR(s.Validate());
  return s;
}

}  // namespace stas::cli
