// Massive-Activation analysis (`stas analyze`, docs/STAS.md "Analysis"): a read-only ResidualHook that
// records, per block and denoising step,
//  - the MA channels detected online (peak |h| >= tau x layer median, at most k) with their ratios,
//  - the mean MA magnitude of first-frame, boundary and interior tokens (the paper's hierarchy), where a
//    token's MA magnitude is max over the block's MA channels of |h[t, c]|,
//  - per-token MA magnitude profiles (downsampled by bin max so spikes survive) at a few steps,
// accumulated over the analysed rows (one CFG branch) and over runs (prompts). It also turns the records
// into a calibrated channel set (ma_channels.json) and a self-contained HTML report.
//
// The hook only reads the residual stream. Under sequence parallelism it is collective (peaks via
// AllReduceMax, shard medians and token profiles via GatherSequence) and every rank records the same.
// It synchronises with the host each call: it is a diagnostic, not for production renders.
// Thread-safety: one hook per sampling loop; not for concurrent forwards.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "models/dit.h"
#include "steering/ma_channels.h"
#include "steering/stas_options.h"
#include "steering/token_mask.h"

namespace stas::steering {

inline constexpr const char* kMaAnalysisFormat = "stas-ma-analysis/1";

struct MaAnalysisOptions {
  double tau = 100.0;           // detection threshold (peak / median)
  int max_channels = 8;         // k
  int profile_points = 2048;    // per-token profiles are cut into at most this many bins (bin max)
  std::vector<int> profile_steps;  // steps whose profiles are kept; empty = first, middle and last step
  models::CfgBranch branch = models::CfgBranch::kCond;  // rows of this branch are analysed
  // Token classes (boundary_mode, boundary_width, chunk_frames) follow the STAS mask definition.
  StasOptions mask;
};

class MaAnalysisHook : public models::ResidualHook {
 public:
  explicit MaAnalysisHook(MaAnalysisOptions options);

  void AfterBlock(at::Tensor& hidden, const models::BlockContext& context) override;

  // Marks the start of a new sampling run (e.g. the next prompt); `info` is stored in "runs".
  void BeginRun(Json info);
  // Forgets everything recorded.
  void Reset();
  bool empty() const { return records_.empty(); }

  // analysis.json (format "stas-ma-analysis/1"; fields documented in docs/STAS.md). `model` names the
  // model analysed.
  Json ToJson(const std::string& model) const;

  // A calibrated set from everything recorded: per block, the channels detected in at least half of
  // that block's observations (ordered by detections, then mean ratio; at most k); globally, the channels
  // whose detections over all blocks reach half of the most detected one's (at most k).
  // FailedPrecondition-like InvalidArgument when nothing was recorded.
  Result<MaChannelSet> Calibrate(const std::string& model, int64_t hidden_dim) const;

  const MaAnalysisOptions& options() const { return options_; }

 private:
  struct ChannelStats {
    int64_t detections = 0;
    double ratio_sum = 0;
    double peak_sum = 0;
  };
  struct Record {
    int64_t observations = 0;  // analysed rows x runs
    int64_t detected_observations = 0;  // observations with at least one channel over tau
    double median_sum = 0;
    double class_sum[3] = {0, 0, 0};  // first frame, boundary, interior mean magnitudes, summed
    int64_t class_observations[3] = {0, 0, 0};
    std::map<int64_t, ChannelStats> channels;
  };
  struct Profile {
    std::vector<double> sum;  // per bin
    int64_t observations = 0;
  };

  const std::vector<TokenClass>& GlobalClasses(const models::TokenGrid& grid);
  bool KeepsProfile(int step, int num_steps) const;

  MaAnalysisOptions options_;
  std::vector<Json> runs_;
  models::TokenGrid grid_;
  int num_blocks_ = 0;
  int num_steps_ = 0;
  int64_t hidden_dim_ = 0;
  std::vector<TokenClass> classes_;  // for grid_
  std::map<std::pair<int, int>, Record> records_;    // (step, block)
  std::map<std::pair<int, int>, Profile> profiles_;  // (step, block)
};

// A self-contained HTML page (inline SVG drawn by inline JavaScript from the embedded analysis JSON, no
// external assets): MA magnitude vs token index with latent-frame boundaries marked, a block x token
// heatmap, the first-frame / boundary / interior hierarchy over steps, and the channel table.
std::string RenderMaReportHtml(const Json& analysis);

}  // namespace stas::steering
