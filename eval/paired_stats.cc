#include "eval/paired_stats.h"

#include <cmath>

namespace stas::eval {

double StudentT975(int64_t df) {
  static const double kTable[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                  2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                  2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  if (df < 1) return NAN;
  if (df <= 30) return kTable[df - 1];
  // Expansion of t in powers of 1/df around the normal quantile z (Abramowitz & Stegun 26.7.5).
  const double z = 1.959963984540054, n = static_cast<double>(df);
  const double z3 = z * z * z, z5 = z3 * z * z, z7 = z5 * z * z;
  return z + (z3 + z) / (4 * n) + (5 * z5 + 16 * z3 + 3 * z) / (96 * n * n) +
         (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * n * n * n);
}

PairedInterval PairedTInterval(const std::vector<double>& differences) {
  PairedInterval r;
  r.n = static_cast<int64_t>(differences.size());
  if (r.n == 0) return r;
  for (double d : differences) r.mean += d;
  r.mean /= static_cast<double>(r.n);
  if (r.n < 2) return r;
  double ss = 0;
  for (double d : differences) ss += (d - r.mean) * (d - r.mean);
  r.sd = std::sqrt(ss / static_cast<double>(r.n - 1));
  const double half = StudentT975(r.n - 1) * r.sd / std::sqrt(static_cast<double>(r.n));
  r.has_ci = true;
  r.low = r.mean - half;
  r.high = r.mean + half;
  return r;
}

}  // namespace stas::eval
