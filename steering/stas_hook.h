// StasHook: Structured Activation Steering on the residual stream (docs/DESIGN.md#stas, docs/STAS.md).
//
// After each selected block, for denoising steps [0, K) and the selected CFG branch rows:
//   R_b      = max over real video tokens and MA channels of |h[b, t, c]|   (AllReduceMax under SP)
//   h'[t, c] = h[t, c] + lambda (alpha R_b sign(h[t, c]) - h[t, c])        for t in mask M, c in MA channels
// Every other element is left bit-identical. The work touches only the k MA channels (a gather of
// [B, L, k] for R and a gather/scatter of [B, |M|, k] for the update), stays on the device and never
// synchronises with the host; token masks and index tensors are built once per shape and device.
//
// Thread-safety: one hook per pipeline run (it caches per-shape state); not for concurrent forwards.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common/status.h"
#include "models/dit.h"
#include "steering/ma_channels.h"
#include "steering/stas_options.h"
#include "steering/token_mask.h"

namespace stas::steering {

// What the hook is told about the model it steers; zero/empty fields are not checked.
struct StasModelInfo {
  std::string model_id;    // compared with the calibration's "model" (a mismatch is logged, not fatal)
  int64_t hidden_dim = 0;  // D: calibrated channels must be < D
  int num_blocks = 0;      // options.blocks and calibrated blocks must be < num_blocks
};

class StasHook : public models::ResidualHook {
 public:
  // `channels`: a calibrated set, or nullopt to detect MA channels online in each steered call.
  StasHook(StasOptions options, std::optional<MaChannelSet> channels);

  void AfterBlock(at::Tensor& hidden, const models::BlockContext& context) override;

  const StasOptions& options() const { return options_; }
  bool online() const { return !channels_.has_value(); }
  // Host-side counter of (block, step) calls that were steered; for tests and logs, no device sync.
  int64_t steered_calls() const { return steered_calls_; }
  // Whether a call with this context would steer (step window, block selection, some row selected).
  bool Applies(const models::BlockContext& context) const;

 private:
  struct ShapeKey {
    int64_t frames, rows, cols, global, begin, local, text;
    int device_type, device_index;
    bool operator<(const ShapeKey& o) const {
      return std::tie(frames, rows, cols, global, begin, local, text, device_type, device_index) <
             std::tie(o.frames, o.rows, o.cols, o.global, o.begin, o.local, o.text, o.device_type, o.device_index);
    }
  };
  // Positions (within the hidden tensor's sequence axis, text offset included) of masked tokens.
  const at::Tensor& MaskIndex(const models::BlockContext& context, const at::Device& device);
  // [1, k] int64 calibrated channels of `block` on `device` (cached); undefined when the list is empty.
  const at::Tensor& CalibratedIndex(int block, const at::Device& device);
  // [B] bool: rows of the branches this hook steers (cached per pattern and device).
  const at::Tensor& RowMask(const std::vector<models::CfgBranch>& branches, int64_t batch, const at::Device& device);
  bool RowSelected(models::CfgBranch branch) const;

  StasOptions options_;
  std::optional<MaChannelSet> channels_;
  int64_t steered_calls_ = 0;
  std::map<ShapeKey, at::Tensor> mask_cache_;
  std::map<std::tuple<int, int, int>, at::Tensor> channel_cache_;  // (block, device type, index)
  std::map<std::tuple<std::vector<bool>, int, int>, at::Tensor> row_cache_;
};

// Builds the hook for `options`. Returns a null pointer (OK) when STAS is disabled, so callers install
// nothing and the forward is exactly vanilla. Loads and validates options.channels_file when set (empty
// = online detection) and checks channels/blocks against `model`. Errors: InvalidArgument / NotFound.
Result<std::unique_ptr<StasHook>> MakeStasHook(const StasOptions& options, const StasModelInfo& model = {});

// The STAS update on one tensor, exposed for tests and the benchmark; the hook calls this.
//   hidden   [B, S, D] (modified in place; must be contiguous-able), S = text offset + local tokens
//   mask     [M] int64 positions along S of the steered tokens
//   channels [1 or B, k] int64; channel_valid [1 or B, k] bool or undefined (= all valid)
//   reference [B] float32 (R_b); rows [B] bool or undefined (= all rows)
void ApplyStasUpdate(at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& channels,
                     const at::Tensor& channel_valid, const at::Tensor& reference, const at::Tensor& rows,
                     double alpha, double lambda);

// R_b over `video` [B, L_real, D] (this shard's real tokens) and `channels` [1 or B, k], invalid
// channels ignored: [B] float32, AllReduceMax'ed over `parallel` when given. Collective under SP.
at::Tensor StasReference(const at::Tensor& video, const at::Tensor& channels, const at::Tensor& channel_valid,
                         models::SequenceParallel* parallel);

// A hook that runs several hooks in order (e.g. STAS then the MA analysis of the steered stream).
class HookChain : public models::ResidualHook {
 public:
  void Add(models::ResidualHook* hook) {
    if (hook) hooks_.push_back(hook);
  }
  bool empty() const { return hooks_.empty(); }
  void AfterBlock(at::Tensor& hidden, const models::BlockContext& context) override {
    for (auto* h : hooks_) h->AfterBlock(hidden, context);
  }

 private:
  std::vector<models::ResidualHook*> hooks_;
};

}  // namespace stas::steering
