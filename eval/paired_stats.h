// Paired statistics for A/B comparisons (e.g. the same prompt and seed rendered with and without STAS):
// the mean of the per-pair differences and its 95% confidence interval from the paired t-test,
// mean +- t(0.975, n-1) x sd / sqrt(n). The t interval is exact for normally distributed differences and
// a good approximation otherwise from a few tens of pairs; it needs n >= 2.
#pragma once

#include <cstdint>
#include <vector>

namespace stas::eval {

struct PairedInterval {
  int64_t n = 0;
  double mean = 0;     // mean difference (B - A)
  double sd = 0;       // sample standard deviation of the differences (n - 1 denominator)
  bool has_ci = false; // false when n < 2
  double low = 0, high = 0;  // the 95% interval
};

// Two-sided 97.5% quantile of Student's t with `df` >= 1 degrees of freedom (table, then the
// Cornish-Fisher expansion beyond it; error < 1e-3).
double StudentT975(int64_t df);

PairedInterval PairedTInterval(const std::vector<double>& differences);

}  // namespace stas::eval
