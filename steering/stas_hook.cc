#include "steering/stas_hook.h"

#include <algorithm>

#include "common/check.h"
#include "common/log.h"

namespace stas::steering {

namespace {

bool AllTrue(const std::vector<bool>& v) {
  return std::all_of(v.begin(), v.end(), [](bool b) { return b; });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The tensor math

at::Tensor StasReference(const at::Tensor& video, const at::Tensor& channels, const at::Tensor& channel_valid,
                         models::SequenceParallel* parallel) {
  STAS_CHECK(video.dim() == 3) << "expected [B, L, D], got " << video.sizes();
  STAS_CHECK(channels.dim() == 2) << "channels must be [1 or B, k], got " << channels.sizes();
  const int64_t batch = video.size(0);
  const int64_t tokens = video.size(1);
  const int64_t k = channels.size(1);
  at::Tensor reference;
  if (tokens == 0 || k == 0) {
    // A shard holding only padding still joins the reduction, with the neutral element of |h|.
    reference = at::zeros({batch}, video.options().dtype(at::kFloat));
  } else {
    const at::Tensor index = channels.unsqueeze(1).expand({batch, tokens, k});
    at::Tensor magnitude = video.gather(2, index).abs().to(at::kFloat);  // [B, L, k]: MA channels only
    if (channel_valid.defined()) magnitude = magnitude.masked_fill(channel_valid.logical_not().unsqueeze(1), 0.0);
    reference = magnitude.amax({1, 2});
  }
  if (parallel) reference = parallel->AllReduceMax(reference);
  return reference;
}

void ApplyStasUpdate(at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& channels,
                     const at::Tensor& channel_valid, const at::Tensor& reference, const at::Tensor& rows,
                     double alpha, double lambda) {
  STAS_CHECK(hidden.dim() == 3) << "expected hidden [B, S, D], got " << hidden.sizes();
  STAS_CHECK(mask.dim() == 1) << "mask must be [M]";
  STAS_CHECK(channels.dim() == 2) << "channels must be [1 or B, k]";
  const int64_t batch = hidden.size(0);
  const int64_t dim = hidden.size(2);
  const int64_t m = mask.numel();
  const int64_t kb = channels.size(0);
  const int64_t k = channels.size(1);
  STAS_CHECK(kb == 1 || kb == batch) << "channels rows " << kb << " vs batch " << batch;
  STAS_CHECK(reference.numel() == batch) << "reference must be [B]";
  if (m == 0 || k == 0 || batch == 0) return;

  at::Tensor work = hidden.is_contiguous() ? hidden : hidden.contiguous();
  at::Tensor flat = work.view({batch, -1});
  // Flat offsets t * D + c of the masked tokens x MA channels: [B, M * k].
  const at::Tensor index =
      (mask.view({1, m, 1}) * dim + channels.view({kb, 1, k})).expand({batch, m, k}).reshape({batch, m * k});
  const at::Tensor values = flat.gather(1, index).to(at::kFloat);
  const at::Tensor target = values.sign() * (reference.to(at::kFloat).view({batch, 1}) * alpha);
  at::Tensor updated = values + (target - values) * lambda;

  at::Tensor keep;
  if (channel_valid.defined())
    keep = channel_valid.view({kb, 1, k}).expand({batch, m, k}).reshape({batch, m * k});
  if (rows.defined()) {
    const at::Tensor row_keep = rows.view({batch, 1});
    keep = keep.defined() ? keep.logical_and(row_keep) : row_keep.expand({batch, m * k});
  }
  // Unselected entries get their own value back; the float round trip is exact, so they stay bit-identical.
  if (keep.defined()) updated = at::where(keep, updated, values);
  flat.scatter_(1, index, updated.to(work.scalar_type()));
  if (!work.is_same(hidden)) hidden.copy_(work);
}

// ---------------------------------------------------------------------------------------------
// The hook

StasHook::StasHook(StasOptions options, std::optional<MaChannelSet> channels)
    : options_(std::move(options)), channels_(std::move(channels)) {}

bool StasHook::RowSelected(models::CfgBranch branch) const {
  return options_.branches == SteerBranches::kBoth || branch == models::CfgBranch::kCond;
}

bool StasHook::Applies(const models::BlockContext& context) const {
  if (!options_.enabled) return false;
  if (context.step < 0 || context.step >= options_.SteeredSteps(context.num_steps)) return false;
  if (!options_.blocks.empty() &&
      std::find(options_.blocks.begin(), options_.blocks.end(), context.block) == options_.blocks.end())
    return false;
  if (context.branches.empty()) return true;  // all rows are conditional
  return std::any_of(context.branches.begin(), context.branches.end(),
                     [&](models::CfgBranch b) { return RowSelected(b); });
}

const at::Tensor& StasHook::MaskIndex(const models::BlockContext& context, const at::Device& device) {
  const models::ShardLayout layout = EffectiveLayout(context.grid, context.shard);
  const ShapeKey key{context.grid.frames, context.grid.rows, context.grid.cols, layout.global_tokens, layout.begin,
                     layout.local_tokens,  context.text_tokens, static_cast<int>(device.type()), device.index()};
  auto it = mask_cache_.find(key);
  if (it != mask_cache_.end()) return it->second;
  std::vector<int64_t> positions = SteeredLocalTokens(context.grid, layout, MaskSpec::Resolve(options_, context.grid));
  for (int64_t& p : positions) p += context.text_tokens;
  at::Tensor t = at::tensor(positions, at::TensorOptions().dtype(at::kLong)).to(device);
  return mask_cache_.emplace(key, std::move(t)).first->second;
}

const at::Tensor& StasHook::CalibratedIndex(int block, const at::Device& device) {
  const auto key = std::make_tuple(block, static_cast<int>(device.type()), static_cast<int>(device.index()));
  auto it = channel_cache_.find(key);
  if (it != channel_cache_.end()) return it->second;
  const std::vector<int64_t>& list = channels_->ChannelsForBlock(block);
  at::Tensor t;
  if (!list.empty()) t = at::tensor(list, at::TensorOptions().dtype(at::kLong)).view({1, -1}).to(device);
  return channel_cache_.emplace(key, std::move(t)).first->second;
}

const at::Tensor& StasHook::RowMask(const std::vector<models::CfgBranch>& branches, int64_t batch,
                                    const at::Device& device) {
  std::vector<bool> selected(static_cast<size_t>(batch), true);
  for (size_t i = 0; i < branches.size() && i < selected.size(); ++i) selected[i] = RowSelected(branches[i]);
  const auto key = std::make_tuple(selected, static_cast<int>(device.type()), static_cast<int>(device.index()));
  auto it = row_cache_.find(key);
  if (it != row_cache_.end()) return it->second;
  at::Tensor t;  // undefined = every row
  if (!AllTrue(selected)) {
    const std::vector<int64_t> flags(selected.begin(), selected.end());
    t = at::tensor(flags, at::TensorOptions().dtype(at::kLong)).to(at::kBool).to(device);
  }
  return row_cache_.emplace(key, std::move(t)).first->second;
}

void StasHook::AfterBlock(at::Tensor& hidden, const models::BlockContext& context) {
  if (!Applies(context)) return;
  STAS_CHECK(hidden.dim() == 3) << "residual stream must be [B, S, D], got " << hidden.sizes();
  const int64_t batch = hidden.size(0);
  STAS_CHECK(context.branches.empty() || static_cast<int64_t>(context.branches.size()) == batch)
      << "one CFG branch per batch row: " << context.branches.size() << " for batch " << batch;
  const models::ShardLayout layout = EffectiveLayout(context.grid, context.shard);
  const int64_t real = layout.local_real_tokens();
  STAS_CHECK(hidden.size(1) >= context.text_tokens + real)
      << "hidden has " << hidden.size(1) << " tokens, expected >= " << context.text_tokens + real;
  const at::Device device = hidden.device();
  const at::Tensor video = hidden.narrow(1, context.text_tokens, real);

  at::Tensor channels, valid;
  if (channels_) {
    STAS_CHECK_EQ(hidden.size(2), channels_->hidden_dim) << "calibrated MA channels are for another hidden size";
    channels = CalibratedIndex(context.block, device);
    // Decided on the host from the block index alone, so every shard skips together (no collective).
    if (!channels.defined()) return;
  } else {
    DetectedChannels detected = DetectMaChannels(video, layout, options_.tau, options_.max_channels, context.parallel);
    channels = detected.index;
    valid = detected.valid;
  }
  const at::Tensor reference = StasReference(video, channels, valid, context.parallel);
  const at::Tensor& rows = RowMask(context.branches, batch, device);
  ApplyStasUpdate(hidden, MaskIndex(context, device), channels, valid, reference, rows, options_.alpha,
                  options_.lambda);
  ++steered_calls_;
}

// ---------------------------------------------------------------------------------------------
// Factory

Result<std::unique_ptr<StasHook>> MakeStasHook(const StasOptions& options, const StasModelInfo& model) {
  STAS_RETURN_IF_ERROR(options.Validate());
  if (!options.enabled) return std::unique_ptr<StasHook>();
  if (model.num_blocks > 0)
    for (int b : options.blocks)
      if (b >= model.num_blocks)
        return InvalidArgument("stas block " + std::to_string(b) + " does not exist: the model has " +
                               std::to_string(model.num_blocks) + " blocks");
  std::optional<MaChannelSet> channels;
  std::string source;
  if (!options.channels_file.empty()) {
    source = "stas channels file " + options.channels_file;
    auto loaded = MaChannelSet::Load(options.channels_file);
    if (!loaded.ok()) return loaded.status().WithContext("stas channels file");
    channels = std::move(loaded).value();
  } else if (!options.channels.is_null()) {
    source = options.calibration.empty() ? "stas channels" : "stas calibration " + options.calibration;
    auto parsed = MaChannelSet::FromJson(options.channels);
    if (!parsed.ok()) return parsed.status().WithContext("stas channels");
    channels = std::move(parsed).value();
  } else if (!options.calibration.empty()) {
    return InvalidArgument("stas calibration " + options.calibration +
                           " came without its channels (the coordinator puts them in the job)");
  }
  if (channels) {
    if (model.hidden_dim > 0 && channels->hidden_dim != model.hidden_dim)
      return InvalidArgument(source + " was calibrated for hidden size " + std::to_string(channels->hidden_dim) +
                             ", the model has " + std::to_string(model.hidden_dim));
    if (model.num_blocks > 0 && channels->num_blocks != model.num_blocks)
      return InvalidArgument(source + " was calibrated for " + std::to_string(channels->num_blocks) +
                             " blocks, the model has " + std::to_string(model.num_blocks));
    if (!model.model_id.empty() && !channels->model.empty() && channels->model != model.model_id)
      STAS_LOG_WARN("{} was calibrated on model '{}', rendering '{}'", source, channels->model, model.model_id);
  }
  return std::make_unique<StasHook>(options, std::move(channels));
}

}  // namespace stas::steering
