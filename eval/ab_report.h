// The A/B report of `stas ab` (docs/EVALUATION.md): the same prompts and seeds rendered without (A,
// "baseline") and with STAS (B), each video's temporal metrics (eval/video_metrics.h), per-case deltas
// B - A, and per metric the mean delta with a 95% paired-t interval (eval/paired_stats.h).
//
// RenderAbReportHtml writes one self-contained page: inline CSS, no scripts or external assets; the
// videos are <video> elements referring to the MP4s by paths relative to the report's folder, and the
// massive-activation report (steering's `stas analyze` page) is embedded as an iframe srcdoc.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/json.h"
#include "eval/paired_stats.h"
#include "eval/video_metrics.h"

namespace stas::eval {

struct AbArm {
  std::string video;  // MP4 path relative to the report's folder
  VideoMetrics metrics;
};

struct AbCase {
  std::string prompt;
  uint64_t seed = 0;
  AbArm baseline, stas;
  MetricSummary stas_vs_baseline;  // frame t of B against frame t of A: how much STAS changed the video
};

struct AbReport {
  std::string model;
  Json settings;  // free-form: the render settings of both arms, shown as JSON
  std::vector<AbCase> cases;
  // The MA report of one prompt: the page `stas analyze` writes (empty = not available, see ma_note).
  std::string ma_prompt;
  std::string ma_report_html;
  Json ma_summary;      // e.g. mean first-frame / boundary / interior MA magnitude at step 0
  std::string ma_note;  // why the MA report is missing, or where its files are
};

// One compared number: its key, its label and which direction is better.
struct AbMetric {
  std::string key;    // "ssim_cross", "dino_all", ...
  std::string label;  // "SSIM, cross-chunk pairs"
  bool higher_is_better = true;
  std::function<double(const VideoMetrics&)> value;
  std::function<bool(const VideoMetrics&)> present;  // false: this video has no pairs of that kind
};

// The metrics compared for these cases: SSIM, PSNR and flicker over all / within-chunk / cross-chunk
// pairs, and each feature encoder's similarity (all and cross-chunk).
std::vector<AbMetric> AbMetrics(const std::vector<AbCase>& cases);

// Per metric: the deltas B - A of every case that has the metric, and their paired-t interval.
struct AbMetricSummary {
  AbMetric metric;
  std::vector<double> deltas;  // one per case with the metric
  PairedInterval interval;
};
std::vector<AbMetricSummary> SummarizeAb(const AbReport& report);

Json AbReportJson(const AbReport& report);
std::string RenderAbReportHtml(const AbReport& report);

// HTML text escaping (&, <, >, ", ').
std::string HtmlEscape(const std::string& text);

}  // namespace stas::eval
