// `stas eval VIDEO... | --dataset DIR [--json]`: temporal-consistency metrics of finished videos
// (eval/video_metrics.h; docs/EVALUATION.md explains every number).
//
// Exit codes: 0 evaluated; 2 bad input (missing file, not a video, bad flags), nothing printed on
// stdout; 1 a failure while decoding or running a feature encoder.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "eval/eval_settings.h"
#include "eval/feature_encoder.h"
#include "eval/mp4_reader.h"
#include "eval/video_metrics.h"

namespace stas::cli {

namespace {

namespace fs = std::filesystem;

struct EvalCommandFlags {
  std::vector<std::string> videos;
  std::string dataset;
  bool json = false;
  eval::EvalSettings eval;
};

int ExitCodeFor(const Status& st) {
  return (st.code() == StatusCode::kInvalidArgument || st.code() == StatusCode::kNotFound) ? 2 : 1;
}

int Fail(const Status& st) {
  std::cerr << "stas eval: " << st.message() << "\n";
  return ExitCodeFor(st);
}

// Every .mp4 under `dir` (recursively, sorted), without our hidden temporary files.
Result<std::vector<std::string>> DatasetVideos(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("--dataset: '" + dir + "' is not a folder");
  std::vector<std::string> out;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    const fs::path& p = it->path();
    std::string ext = p.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    if (it->is_regular_file(ec) && ext == ".mp4" && p.filename().string().rfind('.', 0) != 0) out.push_back(p.string());
  }
  if (ec) return IoError("--dataset: cannot list '" + dir + "': " + ec.message());
  std::sort(out.begin(), out.end());
  if (out.empty()) return NotFound("--dataset: no .mp4 files under '" + dir + "'");
  return out;
}

std::string Num(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

void PrintSummaryLine(std::ostream& os, const char* label, const eval::MetricSummary& s) {
  os << "  " << label << " (" << s.pairs << " pairs):";
  if (s.pairs == 0) {
    os << " none\n";
    return;
  }
  os << " SSIM " << Num(s.ssim, 4) << "  PSNR " << Num(s.psnr, 2) << " dB  flicker " << Num(s.flicker, 3);
  for (const auto& [k, v] : s.features) os << "  " << k << " " << Num(v, 4);
  os << "\n";
}

void PrintTable(std::ostream& os, const eval::VideoMetrics& m) {
  os << m.name << "  (" << m.frames << " frames, " << m.width << "x" << m.height << ", chunks of "
     << m.temporal_compression << " after frame 0)\n";
  os << "  pair     class    SSIM     PSNR dB  flicker";
  std::vector<std::string> features;
  if (!m.pairs.empty())
    for (const auto& [k, v] : m.pairs.front().features) features.push_back(k), os << "  " << k;
  os << "\n";
  for (const eval::PairMetrics& p : m.pairs) {
    char line[128];
    std::snprintf(line, sizeof(line), "  %3lld-%-3lld  %-6s  %.4f  %7.2f  %7.3f", static_cast<long long>(p.first),
                  static_cast<long long>(p.first + 1), p.cross_chunk ? "cross" : "within", p.ssim, p.psnr, p.flicker);
    os << line;
    for (const std::string& k : features) os << "  " << Num(p.features.at(k), 4);
    os << "\n";
  }
  PrintSummaryLine(os, "within-chunk", m.within_chunk);
  PrintSummaryLine(os, "cross-chunk ", m.cross_chunk);
}

int RunEval(const EvalCommandFlags& flags) {
  if (flags.videos.empty() == flags.dataset.empty()) return Fail(InvalidArgument("give VIDEO... or --dataset DIR (not both)"));
  std::vector<std::string> videos = flags.videos;
  if (!flags.dataset.empty()) {
    auto found = DatasetVideos(flags.dataset);
    if (!found.ok()) return Fail(found.status());
    videos = *found;
  }
  // Refuse missing inputs before the (possibly slow) encoders load or anything is decoded.
  for (const std::string& v : videos) {
    std::error_code ec;
    if (!fs::exists(v, ec)) return Fail(NotFound(v + ": no such file"));
  }
  if (!eval::CanReadVideo()) return Fail(NotImplemented("built without FFmpeg: stas eval needs a build with STAS_WITH_FFMPEG"));
  auto options = flags.eval.Options();
  if (!options.ok()) return Fail(options.status());
  auto encoders = flags.eval.LoadEncoders();
  if (!encoders.ok()) return Fail(encoders.status());
  std::vector<eval::FeatureEncoder*> encoder_ptrs;
  for (auto& e : *encoders) encoder_ptrs.push_back(e.get());

  std::vector<eval::VideoMetrics> results;
  for (size_t i = 0; i < videos.size(); ++i) {
    if (videos.size() > 1) std::cerr << "eval: [" << (i + 1) << "/" << videos.size() << "] " << videos[i] << "\n";
    auto m = eval::EvaluateVideoFile(videos[i], *options, encoder_ptrs);
    if (!m.ok()) return Fail(m.status());
    results.push_back(std::move(*m));
  }
  // The summary pools every pair of every video, so long videos weigh more than short ones.
  std::vector<eval::PairMetrics> within, cross, all;
  for (const auto& m : results)
    for (const auto& p : m.pairs) {
      all.push_back(p);
      (p.cross_chunk ? cross : within).push_back(p);
    }
  const eval::MetricSummary s_all = eval::Summarize(all), s_within = eval::Summarize(within),
                            s_cross = eval::Summarize(cross);
  if (flags.json) {
    Json j{{"format", "stas-eval/1"}, {"videos", Json::array()}};
    for (const auto& m : results) j["videos"].push_back(m.ToJson());
    auto summary = [](const eval::MetricSummary& s) {
      Json o{{"pairs", s.pairs}};
      o["ssim"] = s.pairs ? Json(s.ssim) : Json(nullptr);
      o["psnr"] = s.pairs ? Json(s.psnr) : Json(nullptr);
      o["flicker"] = s.pairs ? Json(s.flicker) : Json(nullptr);
      if (!s.features.empty()) o["features"] = s.features;
      return o;
    };
    j["summary"] = {{"videos", results.size()},
                    {"all", summary(s_all)},
                    {"within_chunk", summary(s_within)},
                    {"cross_chunk", summary(s_cross)}};
    std::cout << j.dump(1) << "\n";
    return 0;
  }
  for (const auto& m : results) {
    PrintTable(std::cout, m);
    std::cout << "\n";
  }
  std::cout << "summary over " << results.size() << " video(s), pooled over their frame pairs:\n";
  PrintSummaryLine(std::cout, "within-chunk", s_within);
  PrintSummaryLine(std::cout, "cross-chunk ", s_cross);
  PrintSummaryLine(std::cout, "all         ", s_all);
  if (s_within.pairs && s_cross.pairs)
    std::cout << "  cross - within: SSIM " << Num(s_cross.ssim - s_within.ssim, 4) << ", PSNR "
              << Num(s_cross.psnr - s_within.psnr, 2) << " dB, flicker " << Num(s_cross.flicker - s_within.flicker, 3)
              << "\n";
  return 0;
}

}  // namespace

void AddEvalFlags(CLI::App* cmd, eval::EvalSettings* s) {
  cmd->add_option("--temporal-compression", s->temporal_compression,
                  "video frames per latent frame after frame 0 (4 for Wan): sets the chunks")
      ->capture_default_str();
  cmd->add_option("--dino", s->dino, "TorchScript image encoder for DINO similarity (docs/EVALUATION.md)");
  cmd->add_option("--clip", s->clip, "TorchScript image encoder for CLIP similarity");
  cmd->add_option("--dino-size", s->dino_size, "DINO input size (shorter side resize + centre crop)")->capture_default_str();
  cmd->add_option("--clip-size", s->clip_size, "CLIP input size")->capture_default_str();
  cmd->add_option("--dino-mean", s->dino_mean, "DINO normalisation mean r,g,b (default ImageNet 0.485,0.456,0.406)");
  cmd->add_option("--dino-std", s->dino_std, "DINO normalisation std (default ImageNet 0.229,0.224,0.225)");
  cmd->add_option("--clip-mean", s->clip_mean, "CLIP normalisation mean (default 0.48145466,0.4578275,0.40821073)");
  cmd->add_option("--clip-std", s->clip_std, "CLIP normalisation std (default 0.26862954,0.26130258,0.27577711)");
}

void RegisterEval(CLI::App& app) {
  auto flags = std::make_shared<EvalCommandFlags>();
  CLI::App* cmd = AddCommand(app, "eval",
                             "Temporal-consistency metrics of videos (SSIM, PSNR, flicker, optional DINO/CLIP "
                             "similarity), split into within-chunk and cross-chunk frame pairs",
                             [flags] { return RunEval(*flags); });
  cmd->add_option("videos", flags->videos, "MP4 files to evaluate");
  cmd->add_option("--dataset", flags->dataset, "evaluate every .mp4 under this folder instead");
  cmd->add_flag("--json", flags->json, "print JSON instead of tables");
  AddEvalFlags(cmd, &flags->eval);
}

}  // namespace stas::cli
