// Massive-Activation (MA) channels: the calibrated set written by `stas analyze` (ma_channels.json)
// and the online detector used when no calibration is given (docs/STAS.md, "MA channels").
//
// A channel c of the residual stream h [B, L, D] is an MA channel of a sample when
//     peak_c = max over real tokens t of |h[t, c]|  >=  tau x median over real tokens and all channels of |h|,
// and at most k such channels (the largest ratios) are kept.
//
// ma_channels.json (format "stas-ma-channels/1"):
//   { "format": "stas-ma-channels/1", "model": "<model id>", "hidden_dim": D, "num_blocks": N,
//     "tau": 100, "k": 8, "source": {free-form: prompts, steps, size},
//     "global": {"channels": [c...], "peak_median_ratios": [r...]},
//     "blocks": [ {"block": b, "channels": [c...], "peak_median_ratios": [r...]}, ... ] }
// "blocks" is optional; a block listed there uses its own list (an empty list = nothing to steer at that
// block), any other block uses "global".
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "models/dit.h"

namespace stas::steering {

inline constexpr const char* kMaChannelsFormat = "stas-ma-channels/1";

struct ChannelList {
  std::vector<int64_t> channels;
  std::vector<double> peak_median_ratios;  // same length as channels (informative)
};

struct MaChannelSet {
  std::string model;       // model id the calibration ran on ("tiny", a checkpoint folder name, ...)
  int64_t hidden_dim = 0;  // D of the residual stream
  int num_blocks = 0;
  double tau = 100.0;
  int k = 8;
  Json source = Json::object();  // how it was calibrated (prompts, steps, size); informative only
  ChannelList global;
  std::map<int, ChannelList> blocks;

  // The channels to steer at `block`.
  const std::vector<int64_t>& ChannelsForBlock(int block) const;
  // Channels in [0, hidden_dim), unique, lists of equal length, blocks in [0, num_blocks), at most k each.
  Status Validate() const;
  Json ToJson() const;
  // Strict: unknown keys, wrong types, a wrong "format" and invalid contents are InvalidArgument.
  static Result<MaChannelSet> FromJson(const Json& j);
  static Result<MaChannelSet> Load(const std::string& path);
  Status Save(const std::string& path) const;  // atomic write
};

// Online detection result, one row per sample; everything stays on the device of the input.
struct DetectedChannels {
  at::Tensor index;  // [B, k] int64, channels ordered by decreasing peak/median ratio
  at::Tensor valid;  // [B, k] bool, ratio >= tau (fewer than k may qualify)
  at::Tensor ratio;  // [B, k] float32 peak/median ratio
  at::Tensor peak;   // [B, k] float32 peak |h| of each channel over real tokens (all shards)
  at::Tensor median; // [B] float32 layer median |h| (see LayerMedianAbs)
};

// At most this many real tokens enter the median: an even stride over the GLOBAL real tokens (global
// index a multiple of ceil(L / kMedianSampleTokens)), which keeps the median's sort small on long
// sequences. The peak always sees every real token.
inline constexpr int64_t kMedianSampleTokens = 1024;

// Per-channel peak |h| over the real tokens of every shard: [B, D] float32. `video` is this shard's
// real video tokens [B, L_real, D] (L_real may be 0). Collective under sequence parallelism (AllReduceMax).
at::Tensor ChannelPeakAbs(const at::Tensor& video, models::SequenceParallel* parallel);

// Median |h| over the sampled real tokens and all channels, per sample: [B] float32 (the lower median,
// as at::median). `video` is this shard's real tokens and `layout` where they sit in the sequence
// (WholeGridLayout on one rank). The sample is fixed by global token index, so under sequence
// parallelism every shard contributes exactly the sampled tokens it holds; they are gathered over the
// group (GatherSequence, padded with NaN to a common length) and every rank takes the median of the
// same set of values as one rank would: the result is bitwise the single-rank one. Collective under
// sequence parallelism.
at::Tensor LayerMedianAbs(const at::Tensor& video, const models::ShardLayout& layout,
                          models::SequenceParallel* parallel);

// Detects up to k MA channels per sample (ratio >= tau). Collective under sequence parallelism; every
// shard gets the same result, bitwise equal to one rank's. k is clamped to D.
DetectedChannels DetectMaChannels(const at::Tensor& video, const models::ShardLayout& layout, double tau, int k,
                                  models::SequenceParallel* parallel);

}  // namespace stas::steering
