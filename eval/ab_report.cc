#include "eval/ab_report.h"

#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

namespace stas::eval {

namespace {

std::string Fmt(double v, int digits = 4) {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

std::string SignedFmt(double v, int digits = 4) { return (v > 0 ? "+" : "") + Fmt(v, digits); }

int DigitsFor(const std::string& key) { return key.rfind("psnr", 0) == 0 || key.rfind("flicker", 0) == 0 ? 3 : 4; }

// A summary selector: 0 all pairs, 1 within-chunk, 2 cross-chunk.
const MetricSummary& Pick(const VideoMetrics& m, int which) {
  return which == 0 ? m.all : which == 1 ? m.within_chunk : m.cross_chunk;
}

AbMetric MakeMetric(const std::string& key, const std::string& label, bool higher, int which,
                    std::function<double(const MetricSummary&)> get) {
  AbMetric m;
  m.key = key;
  m.label = label;
  m.higher_is_better = higher;
  m.value = [which, get](const VideoMetrics& v) { return get(Pick(v, which)); };
  m.present = [which](const VideoMetrics& v) { return Pick(v, which).pairs > 0; };
  return m;
}

const char* kStyle = R"(
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#1d232a;padding:0 16px}
h1{font-size:22px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #d5dbe1;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #d5dbe1;padding:3px 8px;text-align:right}
th{background:#f1f4f7} td.l,th.l{text-align:left} .better{color:#11773a;font-weight:600} .worse{color:#b3261e;font-weight:600}
.pair{display:flex;gap:16px;flex-wrap:wrap;margin:12px 0 24px} .pair figure{margin:0} figcaption{font-size:12px;color:#555}
video{width:420px;max-width:100%;background:#000} .note{color:#555;font-size:13px} pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px}
iframe{width:100%;height:900px;border:1px solid #d5dbe1}
)";

}  // namespace

std::string HtmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::vector<AbMetric> AbMetrics(const std::vector<AbCase>& cases) {
  std::vector<AbMetric> out;
  const char* where[3] = {"all", "within", "cross"};
  const char* where_label[3] = {"all pairs", "within-chunk pairs", "cross-chunk pairs"};
  for (int w = 0; w < 3; ++w)
    out.push_back(MakeMetric(std::string("ssim_") + where[w], std::string("SSIM, ") + where_label[w], true, w,
                             [](const MetricSummary& s) { return s.ssim; }));
  for (int w = 0; w < 3; ++w)
    out.push_back(MakeMetric(std::string("psnr_") + where[w], std::string("PSNR dB, ") + where_label[w], true, w,
                             [](const MetricSummary& s) { return s.psnr; }));
  for (int w = 0; w < 3; ++w)
    out.push_back(MakeMetric(std::string("flicker_") + where[w], std::string("flicker, ") + where_label[w], false, w,
                             [](const MetricSummary& s) { return s.flicker; }));
  std::set<std::string> encoders;
  for (const AbCase& c : cases)
    for (const auto& [name, v] : c.baseline.metrics.all.features) encoders.insert(name);
  for (const std::string& e : encoders)
    for (int w : {0, 2})
      out.push_back(MakeMetric(e + "_" + where[w], e + " similarity, " + where_label[w], true, w,
                               [e](const MetricSummary& s) {
                                 auto it = s.features.find(e);
                                 return it == s.features.end() ? NAN : it->second;
                               }));
  return out;
}

std::vector<AbMetricSummary> SummarizeAb(const AbReport& report) {
  std::vector<AbMetricSummary> out;
  for (AbMetric& m : AbMetrics(report.cases)) {
    AbMetricSummary s;
    for (const AbCase& c : report.cases) {
      if (!m.present(c.baseline.metrics) || !m.present(c.stas.metrics)) continue;
      const double d = m.value(c.stas.metrics) - m.value(c.baseline.metrics);
      if (std::isfinite(d)) s.deltas.push_back(d);
    }
    s.interval = PairedTInterval(s.deltas);
    s.metric = std::move(m);
    out.push_back(std::move(s));
  }
  return out;
}

Json AbReportJson(const AbReport& report) {
  const std::vector<AbMetric> metrics = AbMetrics(report.cases);
  Json cases = Json::array();
  for (const AbCase& c : report.cases) {
    Json deltas = Json::object();
    for (const AbMetric& m : metrics)
      if (m.present(c.baseline.metrics) && m.present(c.stas.metrics))
        deltas[m.key] = m.value(c.stas.metrics) - m.value(c.baseline.metrics);
    cases.push_back({{"prompt", c.prompt},
                     {"seed", c.seed},
                     {"baseline", {{"video", c.baseline.video}, {"metrics", c.baseline.metrics.ToJson()}}},
                     {"stas", {{"video", c.stas.video}, {"metrics", c.stas.metrics.ToJson()}}},
                     {"stas_vs_baseline", {{"ssim", c.stas_vs_baseline.ssim}, {"psnr", c.stas_vs_baseline.psnr}}},
                     {"delta", deltas}});
  }
  Json summary = Json::object();
  for (const AbMetricSummary& s : SummarizeAb(report)) {
    Json j{{"label", s.metric.label}, {"higher_is_better", s.metric.higher_is_better}, {"n", s.interval.n},
           {"mean_delta", s.interval.n ? Json(s.interval.mean) : Json(nullptr)}};
    j["ci95"] = s.interval.has_ci ? Json::array({s.interval.low, s.interval.high}) : Json(nullptr);
    summary[s.metric.key] = j;
  }
  return Json{{"format", "stas-ab-report/1"},
              {"model", report.model},
              {"settings", report.settings},
              {"interval", "95% paired t: mean delta +- t(0.975, n-1) sd / sqrt(n); delta = STAS - baseline"},
              {"cases", cases},
              {"summary", summary},
              {"ma_report", {{"prompt", report.ma_prompt}, {"summary", report.ma_summary}, {"note", report.ma_note}}}};
}

std::string RenderAbReportHtml(const AbReport& report) {
  const std::vector<AbMetricSummary> summary = SummarizeAb(report);
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>STAS A/B report: "
    << HtmlEscape(report.model) << "</title>\n<style>" << kStyle << "</style></head><body>\n";
  h << "<h1>STAS A/B report</h1>\n<p>Model <b>" << HtmlEscape(report.model) << "</b>, " << report.cases.size()
    << " prompt/seed case(s), each rendered without STAS (baseline) and with STAS from the same noise. "
       "Delta = STAS &minus; baseline.</p>\n";

  // Summary.
  h << "<section id=\"summary\"><h2>Summary</h2>\n<table><tr><th class=\"l\">metric</th><th>better</th><th>n</th>"
       "<th>mean delta</th><th>95% CI (paired t)</th></tr>\n";
  for (const AbMetricSummary& s : summary) {
    const int digits = DigitsFor(s.metric.key);
    std::string cls;
    if (s.interval.has_ci && (s.interval.low > 0 || s.interval.high < 0)) {
      const bool up = s.interval.low > 0;
      cls = up == s.metric.higher_is_better ? "better" : "worse";
    }
    h << "<tr><td class=\"l\">" << HtmlEscape(s.metric.label) << "</td><td>"
      << (s.metric.higher_is_better ? "higher" : "lower") << "</td><td>" << s.interval.n << "</td><td"
      << (cls.empty() ? "" : " class=\"" + cls + "\"") << ">" << (s.interval.n ? SignedFmt(s.interval.mean, digits) : "n/a")
      << "</td><td>"
      << (s.interval.has_ci ? "[" + SignedFmt(s.interval.low, digits) + ", " + SignedFmt(s.interval.high, digits) + "]"
                            : "n/a (needs 2+ cases)")
      << "</td></tr>\n";
  }
  h << "</table>\n<p class=\"note\">Interval: mean delta &plusmn; t<sub>0.975, n&minus;1</sub> &middot; sd / &radic;n "
       "over the cases (paired t). Coloured when the interval excludes 0. A pair of frames is <i>cross-chunk</i> when "
       "its two frames decode from different latent frames (frame 0 alone, then groups of the VAE's temporal "
       "compression); that is where latent-boundary artefacts show. Flicker is the absolute change of mean luma "
       "(0&ndash;255) between consecutive frames.</p></section>\n";

  // Side by side.
  h << "<section id=\"videos\"><h2>Side by side</h2>\n";
  for (size_t i = 0; i < report.cases.size(); ++i) {
    const AbCase& c = report.cases[i];
    h << "<h3>" << (i + 1) << ". " << HtmlEscape(c.prompt) << " <span class=\"note\">(seed " << c.seed
      << ")</span></h3>\n<div class=\"pair\">";
    for (const AbArm* arm : {&c.baseline, &c.stas}) {
      h << "<figure><video src=\"" << HtmlEscape(arm->video) << "\" controls loop muted playsinline preload=\"metadata\">"
        << "</video><figcaption>" << (arm == &c.baseline ? "baseline" : "STAS") << ": <a href=\""
        << HtmlEscape(arm->video) << "\">" << HtmlEscape(arm->video) << "</a></figcaption></figure>";
    }
    h << "</div>\n";
  }
  h << "</section>\n";

  // Per-case metrics.
  const std::vector<AbMetric> metrics = AbMetrics(report.cases);
  h << "<section id=\"metrics\"><h2>Per-prompt metrics</h2>\n<table><tr><th class=\"l\">prompt</th><th>seed</th>"
       "<th class=\"l\">metric</th><th>baseline</th><th>STAS</th><th>delta</th></tr>\n";
  for (const AbCase& c : report.cases) {
    bool first = true;
    for (const AbMetric& m : metrics) {
      if (!m.present(c.baseline.metrics) || !m.present(c.stas.metrics)) continue;
      const int digits = DigitsFor(m.key);
      const double a = m.value(c.baseline.metrics), b = m.value(c.stas.metrics);
      h << "<tr><td class=\"l\">" << (first ? HtmlEscape(c.prompt) : "") << "</td><td>"
        << (first ? std::to_string(c.seed) : "") << "</td><td class=\"l\">" << HtmlEscape(m.label) << "</td><td>"
        << Fmt(a, digits) << "</td><td>" << Fmt(b, digits) << "</td><td>" << SignedFmt(b - a, digits) << "</td></tr>\n";
      first = false;
    }
    h << "<tr><td class=\"l\"></td><td></td><td class=\"l\">STAS vs baseline, frame by frame (SSIM / PSNR dB)</td>"
         "<td colspan=\"3\">"
      << Fmt(c.stas_vs_baseline.ssim) << " / " << Fmt(c.stas_vs_baseline.psnr, 2) << "</td></tr>\n";
  }
  h << "</table></section>\n";

  // MA report.
  h << "<section id=\"ma-report\"><h2>Massive-activation report</h2>\n";
  if (!report.ma_prompt.empty()) h << "<p>Prompt: <b>" << HtmlEscape(report.ma_prompt) << "</b></p>\n";
  if (!report.ma_summary.is_null()) h << "<pre>" << HtmlEscape(report.ma_summary.dump(1)) << "</pre>\n";
  if (!report.ma_note.empty()) h << "<p class=\"note\">" << HtmlEscape(report.ma_note) << "</p>\n";
  if (!report.ma_report_html.empty())
    h << "<iframe title=\"massive-activation report\" sandbox=\"allow-scripts\" srcdoc=\""
      << HtmlEscape(report.ma_report_html) << "\"></iframe>\n";
  h << "</section>\n";

  h << "<section id=\"settings\"><h2>Settings</h2><pre>" << HtmlEscape(report.settings.dump(1)) << "</pre></section>\n";
  h << "</body></html>\n";
  return h.str();
}

}  // namespace stas::eval
