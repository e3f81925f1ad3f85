#include "steering/ma_analysis.h"

#include <algorithm>
#include <cmath>

#include "common/check.h"

namespace stas::steering {

namespace {

// 4 significant digits: keeps analysis.json (and the report embedding it) compact.
double Round4(double v) {
  if (v == 0 || !std::isfinite(v)) return v;
  const int e = static_cast<int>(std::floor(std::log10(std::abs(v))));
  if (e >= 3) {
    const double div = std::pow(10.0, e - 3);
    return std::round(v / div) * div;
  }
  const double mul = std::pow(10.0, 3 - e);
  return std::round(v * mul) / mul;
}

Json NumberOrNull(double sum, int64_t count) { return count > 0 ? Json(Round4(sum / count)) : Json(nullptr); }

int64_t BinTokens(int64_t tokens, int points) {
  return std::max<int64_t>(1, (tokens + points - 1) / std::max(1, points));
}

}  // namespace

MaAnalysisHook::MaAnalysisHook(MaAnalysisOptions options) : options_(std::move(options)) {
  STAS_CHECK(options_.tau > 1) << "tau must be > 1";
  STAS_CHECK(options_.max_channels >= 1) << "k must be >= 1";
  STAS_CHECK(options_.profile_points >= 1) << "profile_points must be >= 1";
}

void MaAnalysisHook::BeginRun(Json info) { runs_.push_back(std::move(info)); }

void MaAnalysisHook::Reset() {
  runs_.clear();
  records_.clear();
  profiles_.clear();
  classes_.clear();
  grid_ = {};
  num_blocks_ = num_steps_ = 0;
  hidden_dim_ = 0;
}

const std::vector<TokenClass>& MaAnalysisHook::GlobalClasses(const models::TokenGrid& grid) {
  if (classes_.empty()) classes_ = ClassifyShardTokens(grid, WholeGridLayout(grid), MaskSpec::Resolve(options_.mask, grid));
  return classes_;
}

bool MaAnalysisHook::KeepsProfile(int step, int num_steps) const {
  if (!options_.profile_steps.empty())
    return std::find(options_.profile_steps.begin(), options_.profile_steps.end(), step) != options_.profile_steps.end();
  return step == 0 || step == num_steps / 2 || step == num_steps - 1;
}

void MaAnalysisHook::AfterBlock(at::Tensor& hidden, const models::BlockContext& context) {
  STAS_CHECK(hidden.dim() == 3) << "residual stream must be [B, S, D], got " << hidden.sizes();
  const int64_t batch = hidden.size(0);
  std::vector<int64_t> rows;
  for (int64_t b = 0; b < batch; ++b) {
    const models::CfgBranch branch =
        b < static_cast<int64_t>(context.branches.size()) ? context.branches[b] : models::CfgBranch::kCond;
    if (branch == options_.branch) rows.push_back(b);
  }
  if (rows.empty()) return;  // the same on every shard of a group: no collective is skipped unevenly

  const models::TokenGrid& grid = context.grid;
  if (records_.empty()) {
    grid_ = grid;
    classes_.clear();
  }
  STAS_CHECK(grid.frames == grid_.frames && grid.rows == grid_.rows && grid.cols == grid_.cols)
      << "one analysis covers one video size; reset between sizes";
  num_blocks_ = std::max(num_blocks_, std::max(context.num_blocks, context.block + 1));
  num_steps_ = std::max(num_steps_, std::max(context.num_steps, context.step + 1));
  hidden_dim_ = hidden.size(2);

  const models::ShardLayout layout = EffectiveLayout(grid, context.shard);
  const int64_t real = layout.local_real_tokens();
  at::Tensor video = hidden.narrow(1, context.text_tokens, real);
  if (static_cast<int64_t>(rows.size()) != batch)
    video = video.index_select(0, at::tensor(rows, at::TensorOptions().dtype(at::kLong)).to(hidden.device()));
  const int64_t nrows = video.size(0);

  const DetectedChannels detected = DetectMaChannels(video, layout, options_.tau, options_.max_channels, context.parallel);
  // Magnitudes use the detected channels; a row with none falls back to its strongest candidate so the
  // profile still shows where that channel is large (the record notes that nothing was detected).
  at::Tensor used = detected.valid.clone();
  used.select(1, 0).logical_or_(detected.valid.any(1).logical_not());
  const int64_t k = detected.index.size(1);
  at::Tensor local = at::zeros({nrows, layout.local_tokens}, video.options().dtype(at::kFloat));
  if (real > 0) {
    at::Tensor magnitude = video.gather(2, detected.index.unsqueeze(1).expand({nrows, real, k}))
                               .abs()
                               .to(at::kFloat)
                               .masked_fill(used.logical_not().unsqueeze(1), 0.0)
                               .amax(2);
    local.narrow(1, 0, real).copy_(magnitude);
  }
  at::Tensor full = (context.parallel && context.parallel->size() > 1) ? context.parallel->GatherSequence(local) : local;
  full = full.narrow(1, 0, grid.count()).cpu().contiguous();

  const at::Tensor index = detected.index.cpu(), valid = detected.valid.cpu(), ratio = detected.ratio.cpu(),
                   peak = detected.peak.cpu(), median = detected.median.cpu();
  auto index_a = index.accessor<int64_t, 2>();
  auto valid_a = valid.accessor<bool, 2>();
  auto ratio_a = ratio.accessor<float, 2>();
  auto peak_a = peak.accessor<float, 2>();
  auto full_a = full.accessor<float, 2>();
  const std::vector<TokenClass>& classes = GlobalClasses(grid);
  const int64_t tokens = grid.count();

  Record& record = records_[{context.step, context.block}];
  const bool keep_profile = KeepsProfile(context.step, context.num_steps);
  const int64_t bin = BinTokens(tokens, options_.profile_points);
  const int64_t bins = (tokens + bin - 1) / bin;
  for (int64_t r = 0; r < nrows; ++r) {
    ++record.observations;
    record.median_sum += median[r].item<double>();
    bool any = false;
    for (int64_t i = 0; i < k; ++i) {
      if (!valid_a[r][i]) continue;
      any = true;
      ChannelStats& c = record.channels[index_a[r][i]];
      ++c.detections;
      c.ratio_sum += ratio_a[r][i];
      c.peak_sum += peak_a[r][i];
    }
    if (any) ++record.detected_observations;
    double sums[3] = {0, 0, 0};
    int64_t counts[3] = {0, 0, 0};
    for (int64_t t = 0; t < tokens; ++t) {
      const int cls = static_cast<int>(classes[t]);
      sums[cls] += full_a[r][t];
      ++counts[cls];
    }
    for (int c = 0; c < 3; ++c)
      if (counts[c] > 0) {
        record.class_sum[c] += sums[c] / counts[c];
        ++record.class_observations[c];
      }
    if (keep_profile) {
      Profile& p = profiles_[{context.step, context.block}];
      p.sum.resize(bins, 0.0);
      for (int64_t i = 0; i < bins; ++i) {
        float m = 0;
        for (int64_t t = i * bin; t < std::min(tokens, (i + 1) * bin); ++t) m = std::max(m, full_a[r][t]);
        p.sum[i] += m;
      }
      ++p.observations;
    }
  }
}

Json MaAnalysisHook::ToJson(const std::string& model) const {
  const MaskSpec spec = MaskSpec::Resolve(options_.mask, grid_);
  int64_t counts[3] = {0, 0, 0};
  for (TokenClass c : classes_) ++counts[static_cast<int>(c)];

  Json records = Json::array();
  for (const auto& [key, rec] : records_) {
    std::vector<std::pair<int64_t, ChannelStats>> channels(rec.channels.begin(), rec.channels.end());
    std::sort(channels.begin(), channels.end(), [](const auto& a, const auto& b) {
      return a.second.detections != b.second.detections ? a.second.detections > b.second.detections
                                                        : a.second.ratio_sum > b.second.ratio_sum;
    });
    Json ch = Json::array();
    for (const auto& [c, s] : channels)
      ch.push_back({{"channel", c},
                    {"detections", s.detections},
                    {"mean_ratio", Round4(s.ratio_sum / s.detections)},
                    {"mean_peak", Round4(s.peak_sum / s.detections)}});
    records.push_back({{"step", key.first},
                       {"block", key.second},
                       {"observations", rec.observations},
                       {"detected_fraction", Round4(static_cast<double>(rec.detected_observations) / rec.observations)},
                       {"median", NumberOrNull(rec.median_sum, rec.observations)},
                       {"first_frame", NumberOrNull(rec.class_sum[0], rec.class_observations[0])},
                       {"boundary", NumberOrNull(rec.class_sum[1], rec.class_observations[1])},
                       {"interior", NumberOrNull(rec.class_sum[2], rec.class_observations[2])},
                       {"channels", ch}});
  }

  const int64_t tokens = grid_.count();
  const int64_t bin = BinTokens(tokens, options_.profile_points);
  std::vector<int> steps;
  for (const auto& [key, p] : profiles_)
    if (std::find(steps.begin(), steps.end(), key.first) == steps.end()) steps.push_back(key.first);
  Json data = Json::array();
  for (int step : steps) {
    Json blocks = Json::array();
    for (int b = 0; b < num_blocks_; ++b) {
      Json values = Json::array();
      auto it = profiles_.find({step, b});
      if (it != profiles_.end())
        for (double s : it->second.sum) values.push_back(Round4(s / it->second.observations));
      blocks.push_back(std::move(values));
    }
    data.push_back({{"step", step}, {"blocks", std::move(blocks)}});
  }

  return Json{
      {"format", kMaAnalysisFormat},
      {"model", model},
      {"grid",
       {{"frames", grid_.frames}, {"rows", grid_.rows}, {"cols", grid_.cols},
        {"tokens_per_frame", grid_.tokens_per_frame()}, {"tokens", tokens}}},
      {"num_blocks", num_blocks_},
      {"num_steps", num_steps_},
      {"hidden_dim", hidden_dim_},
      {"tau", options_.tau},
      {"k", options_.max_channels},
      {"branch", options_.branch == models::CfgBranch::kCond ? "cond" : "uncond"},
      {"mask",
       {{"mode", spec.mode == BoundaryMode::kRows ? "rows" : "frames"}, {"width", spec.width},
        {"chunk_frames", spec.chunk_frames}, {"description", spec.ToString()}}},
      {"token_counts", {{"first_frame", counts[0]}, {"boundary", counts[1]}, {"interior", counts[2]}}},
      {"default_steered_steps", static_cast<int>(std::lround(0.4 * num_steps_))},
      {"runs", runs_},
      {"records", std::move(records)},
      {"profiles", {{"bin_tokens", bin}, {"bins", tokens > 0 ? (tokens + bin - 1) / bin : 0}, {"data", std::move(data)}}},
  };
}

Result<MaChannelSet> MaAnalysisHook::Calibrate(const std::string& model, int64_t hidden_dim) const {
  if (records_.empty()) return InvalidArgument("ma calibration: nothing was recorded (did the sampler run the hook?)");
  using Ranked = std::vector<std::pair<int64_t, ChannelStats>>;
  auto rank = [&](const std::map<int64_t, ChannelStats>& stats, int64_t min_detections) {
    Ranked out;
    for (const auto& e : stats)
      if (e.second.detections >= min_detections && e.second.detections > 0) out.push_back(e);
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
      if (a.second.detections != b.second.detections) return a.second.detections > b.second.detections;
      return a.second.ratio_sum / a.second.detections > b.second.ratio_sum / b.second.detections;
    });
    if (static_cast<int>(out.size()) > options_.max_channels) out.resize(options_.max_channels);
    ChannelList list;
    for (const auto& [c, s] : out) {
      list.channels.push_back(c);
      list.peak_median_ratios.push_back(Round4(s.ratio_sum / s.detections));
    }
    return list;
  };

  MaChannelSet set;
  set.model = model;
  set.hidden_dim = hidden_dim;
  set.num_blocks = num_blocks_;
  set.tau = options_.tau;
  set.k = options_.max_channels;
  set.source = {{"runs", runs_},
                {"steps", num_steps_},
                {"grid", {{"frames", grid_.frames}, {"rows", grid_.rows}, {"cols", grid_.cols}}},
                {"rule", "per block: detected in >= half of its observations; global: >= half the detections "
                         "of the most detected channel"}};
  std::map<int, std::map<int64_t, ChannelStats>> per_block;
  std::map<int, int64_t> block_observations;
  std::map<int64_t, ChannelStats> overall;
  for (const auto& [key, rec] : records_) {
    block_observations[key.second] += rec.observations;
    auto& stats = per_block[key.second];
    for (const auto& [c, s] : rec.channels) {
      for (ChannelStats* dst : {&stats[c], &overall[c]}) {
        dst->detections += s.detections;
        dst->ratio_sum += s.ratio_sum;
        dst->peak_sum += s.peak_sum;
      }
    }
  }
  for (const auto& [block, observations] : block_observations)
    set.blocks[block] = rank(per_block[block], (observations + 1) / 2);
  int64_t most = 0;
  for (const auto& e : overall) most = std::max(most, e.second.detections);
  set.global = rank(overall, (most + 1) / 2);
  STAS_RETURN_IF_ERROR(set.Validate());
  return set;
}

}  // namespace stas::steering
