#include "steering/ma_channels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "common/check.h"
#include "common/fs.h"

namespace stas::steering {

// ---------------------------------------------------------------------------------------------
// Calibrated set

const std::vector<int64_t>& MaChannelSet::ChannelsForBlock(int block) const {
  auto it = blocks.find(block);
  return it == blocks.end() ? global.channels : it->second.channels;
}

namespace {

Status ValidateList(const ChannelList& list, int64_t hidden_dim, int k, const std::string& where) {
  if (list.channels.size() != list.peak_median_ratios.size())
    return InvalidArgument(where + ": channels and peak_median_ratios differ in length");
  if (static_cast<int64_t>(list.channels.size()) > k)
    return InvalidArgument(where + ": more than k = " + std::to_string(k) + " channels");
  std::set<int64_t> seen;
  for (int64_t c : list.channels) {
    if (c < 0 || c >= hidden_dim)
      return InvalidArgument(where + ": channel " + std::to_string(c) + " outside [0, " + std::to_string(hidden_dim) + ")");
    if (!seen.insert(c).second) return InvalidArgument(where + ": channel " + std::to_string(c) + " listed twice");
  }
  for (double r : list.peak_median_ratios)
    if (!std::isfinite(r) || r < 0) return InvalidArgument(where + ": peak_median_ratios must be finite and >= 0");
  return Status::Ok();
}

Json ListToJson(const ChannelList& list) {
  return Json{{"channels", list.channels}, {"peak_median_ratios", list.peak_median_ratios}};
}

ChannelList ListFromJson(const Json& j, const std::string& where, bool allow_block_key) {
  if (!j.is_object()) throw std::runtime_error(where + " must be an object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (key != "channels" && key != "peak_median_ratios" && !(allow_block_key && key == "block"))
      throw std::runtime_error(where + ": unknown key '" + key + "'");
  }
  if (!j.contains("channels")) throw std::runtime_error(where + ": missing 'channels'");
  ChannelList list;
  list.channels = j.at("channels").get<std::vector<int64_t>>();
  list.peak_median_ratios = JsonValueOr(j, "peak_median_ratios", std::vector<double>(list.channels.size(), 0.0));
  return list;
}

}  // namespace

Status MaChannelSet::Validate() const {
  if (hidden_dim < 1) return InvalidArgument("ma channels: hidden_dim must be >= 1");
  if (num_blocks < 1) return InvalidArgument("ma channels: num_blocks must be >= 1");
  if (!(tau > 1) || !std::isfinite(tau)) return InvalidArgument("ma channels: tau must be > 1");
  if (k < 1) return InvalidArgument("ma channels: k must be >= 1");
  STAS_RETURN_IF_ERROR(ValidateList(global, hidden_dim, k, "ma channels 'global'"));
  for (const auto& [block, list] : blocks) {
    if (block < 0 || block >= num_blocks)
      return InvalidArgument("ma channels: block " + std::to_string(block) + " outside [0, " +
                             std::to_string(num_blocks) + ")");
    STAS_RETURN_IF_ERROR(ValidateList(list, hidden_dim, k, "ma channels block " + std::to_string(block)));
  }
  return Status::Ok();
}

Json MaChannelSet::ToJson() const {
  Json block_list = Json::array();
  for (const auto& [block, list] : blocks) {
    Json e = ListToJson(list);
    e["block"] = block;
    block_list.push_back(std::move(e));
  }
  return Json{{"format", kMaChannelsFormat}, {"model", model},     {"hidden_dim", hidden_dim},
              {"num_blocks", num_blocks},    {"tau", tau},         {"k", k},
              {"source", source},            {"global", ListToJson(global)}, {"blocks", block_list}};
}

Result<MaChannelSet> MaChannelSet::FromJson(const Json& j) {
  if (!j.is_object()) return InvalidArgument("ma channels: the file must hold a JSON object");
  static const std::set<std::string> kKnown = {"format", "model", "hidden_dim", "num_blocks", "tau",
                                               "k",      "source", "global",    "blocks"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!kKnown.count(it.key())) return InvalidArgument("ma channels: unknown key '" + it.key() + "'");
  const std::string format = JsonValueOr<std::string>(j, "format", "");
  if (format != kMaChannelsFormat)
    return InvalidArgument("ma channels: format must be '" + std::string(kMaChannelsFormat) + "', got '" + format + "'");
  MaChannelSet s;
  Status st = CatchConfigErrors("ma channels", [&] {
    s.model = JsonValueOr<std::string>(j, "model", "");
    s.hidden_dim = j.at("hidden_dim").get<int64_t>();
    s.num_blocks = j.at("num_blocks").get<int>();
    s.tau = JsonValueOr(j, "tau", s.tau);
    s.k = JsonValueOr(j, "k", s.k);
    if (j.contains("source") && !j["source"].is_null()) s.source = j["source"];
    if (!j.contains("global")) throw std::runtime_error("missing 'global'");
    s.global = ListFromJson(j["global"], "'global'", false);
    if (j.contains("blocks") && !j["blocks"].is_null()) {
      if (!j["blocks"].is_array()) throw std::runtime_error("'blocks' must be an array");
      for (const Json& e : j["blocks"]) {
        if (!e.is_object() || !e.contains("block")) throw std::runtime_error("each 'blocks' entry needs a 'block'");
        const int block = e["block"].get<int>();
        if (s.blocks.count(block)) throw std::runtime_error("block " + std::to_string(block) + " listed twice");
        s.blocks[block] = ListFromJson(e, "block " + std::to_string(block), true);
      }
    }
  });
  STAS_RETURN_IF_ERROR(st);
  STAS_RETURN_IF_ERROR(s.Validate());
  return s;
}

Result<MaChannelSet> MaChannelSet::Load(const std::string& path) {
  STAS_ASSIGN_OR_RETURN(Json j, ReadJsonFile(path));
  auto set = FromJson(j);
  if (!set.ok()) return set.status().WithContext(path);
  return set;
}

Status MaChannelSet::Save(const std::string& path) const {
  STAS_RETURN_IF_ERROR(Validate());
  return WriteFileAtomically(path, ToJson().dump(2) + "\n");
}

// ---------------------------------------------------------------------------------------------
// Online detection

at::Tensor ChannelPeakAbs(const at::Tensor& video, models::SequenceParallel* parallel) {
  STAS_CHECK(video.dim() == 3) << "expected [B, L, D], got " << video.sizes();
  at::Tensor peak;
  if (video.size(1) == 0) {
    peak = at::zeros({video.size(0), video.size(2)}, video.options().dtype(at::kFloat));
  } else {
    // max(amax, -amin) reads h twice but allocates no |h| copy of the whole stream.
    peak = at::maximum(video.amax(1), video.amin(1).neg()).to(at::kFloat);
  }
  if (parallel) peak = parallel->AllReduceMax(peak);
  return peak;
}

at::Tensor LayerMedianAbs(const at::Tensor& video, const models::ShardLayout& layout,
                          models::SequenceParallel* parallel) {
  STAS_CHECK(video.dim() == 3) << "expected [B, L, D], got " << video.sizes();
  const int64_t batch = video.size(0);
  const int64_t real = video.size(1);
  STAS_CHECK(real == layout.local_real_tokens())
      << "video holds " << real << " tokens, the shard layout " << layout.local_real_tokens();
  // The sample is every stride-th token of the whole sequence, by global index.
  const int64_t stride = std::max<int64_t>(1, (layout.global_tokens + kMedianSampleTokens - 1) / kMedianSampleTokens);
  const int64_t first = (stride - layout.begin % stride) % stride;  // local index of this shard's first sampled token
  const int64_t sampled = first < real ? (real - 1 - first) / stride + 1 : 0;
  at::Tensor sample = sampled > 0 ? video.slice(1, first, real, stride) : video.narrow(1, 0, 0);  // [B, n, D]
  const bool sharded = parallel && parallel->size() > 1;
  if (sharded) {
    // Shards hold different numbers of sampled tokens: pad to the most any shard of local_tokens can
    // hold, with NaN, which the median below ignores. |h| is exact in any dtype, so the gather travels
    // in the stream's dtype.
    const int64_t capacity = (layout.local_tokens + stride - 1) / stride;
    if (sampled < capacity) {
      const at::Tensor pad =
          at::full({batch, capacity - sampled, video.size(2)}, std::numeric_limits<float>::quiet_NaN(), video.options());
      sample = at::cat({sample, pad}, 1);
    }
    sample = parallel->GatherSequence(sample.contiguous());  // [B, size * capacity, D], rank order
  }
  const at::Tensor values = sample.abs().to(at::kFloat).reshape({batch, -1});
  if (values.size(1) == 0)
    return at::full({batch}, std::numeric_limits<float>::quiet_NaN(), video.options().dtype(at::kFloat));
  // The lower median of the non-NaN values: a function of the set alone, so the order in which the
  // shards' samples arrive does not matter. One rank takes the same path (without padding).
  return std::get<0>(at::nanmedian(values, 1));
}

DetectedChannels DetectMaChannels(const at::Tensor& video, const models::ShardLayout& layout, double tau, int k,
                                  models::SequenceParallel* parallel) {
  STAS_CHECK(k >= 1) << "k must be >= 1";
  DetectedChannels d;
  const at::Tensor peak = ChannelPeakAbs(video, parallel);   // [B, D]
  d.median = LayerMedianAbs(video, layout, parallel);          // [B]
  const at::Tensor denom = d.median.clamp_min(std::numeric_limits<float>::min()).unsqueeze(1);
  const at::Tensor ratio = at::nan_to_num(peak / denom, 0.0);  // a shard-less NaN median never qualifies
  const int64_t kk = std::min<int64_t>(k, video.size(2));
  auto [values, index] = ratio.topk(kk, 1, /*largest=*/true, /*sorted=*/true);
  d.index = index;
  d.ratio = values;
  d.valid = values >= tau;
  d.peak = peak.gather(1, index);
  return d;
}

}  // namespace stas::steering
