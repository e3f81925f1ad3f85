// The Wan video VAE decoder (diffusers `AutoencoderKLWan`, Wan2.1 and the Wan2.2 residual variant).
//
// Decoding maps de-normalized latents [B, z_dim, F, h, w] to video [B, 3, T, H, W] in [-1, 1] with
// T = 1 + 2^u (F - 1) (u = temporal upsamplings, 2 in the released models: 21 latent frames -> 81) and
// H = h * 2^(levels - 1) * patch_size (8x for Wan2.1, 16x for Wan2.2).
//
// The network is causal in time: every 3D convolution sees only the current and the previous two
// frames of its input (zero frames before the start), and the first latent frame is decoded to a
// single frame (no temporal upsampling). The decoder therefore streams: it takes one latent frame at a
// time, keeps a cache of the last two input frames per causal convolution, and hands each finished
// piece of video to a sink. Peak memory is the per-frame working set (fixed, whatever F) plus whatever
// the sink keeps.
//
// Thread-safety: a WanVaeDecoder is immutable after Load; Decode/DecodeStreaming may run concurrently
// from several threads (each call owns its caches).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/fixture.h"
#include "common/json.h"
#include "common/status.h"
#include "common/weights.h"

namespace stas::models {
class SequenceParallel;  // models/dit.h
}

namespace stas::models::wan {

// The fields of the diffusers `AutoencoderKLWan` config.json that the decoder and pipeline use
// (upstream spellings kept, including `temperal_downsample`). Missing or null keys take diffusers'
// defaults (the Wan2.1 release values).
struct WanVaeConfig {
  int64_t base_dim = 96;
  int64_t decoder_base_dim = 96;  // null upstream means base_dim
  int64_t z_dim = 16;
  std::vector<int64_t> dim_mult = {1, 2, 4, 4};
  int64_t num_res_blocks = 2;
  // Accepted for completeness; like diffusers' decoder, ours has attention only in the mid block.
  std::vector<double> attn_scales;
  std::vector<bool> temperal_downsample = {false, true, true};
  // Per-channel latent statistics (z_dim values each). FromJson fills diffusers' defaults (the Wan2.1
  // constants) when the keys are missing; a default-constructed config leaves them empty.
  std::vector<double> latents_mean;
  std::vector<double> latents_std;
  bool is_residual = false;  // Wan2.2: residual up blocks with a duplicate-upsample shortcut
  int64_t in_channels = 3;
  int64_t out_channels = 3;  // channels of conv_out, before unpatchify
  int64_t patch_size = 1;    // null upstream means 1 (no unpatchify)
  int64_t scale_factor_temporal = 4;
  int64_t scale_factor_spatial = 8;

  // Parses and validates a diffusers vae config.json object.
  static Result<WanVaeConfig> FromJson(const Json& json);
  // Structural checks (positive sizes, list lengths, channel divisibility); FromJson calls it.
  Status Validate() const;

  int64_t num_levels() const { return static_cast<int64_t>(dim_mult.size()); }
  // Temporal upsampling per latent frame after the first (2^number of true temperal_downsample).
  int64_t temporal_upsampling() const;
  // Spatial upsampling from latent to video pixels, patch size included.
  int64_t spatial_upsampling() const;
  int64_t video_channels() const { return out_channels / (patch_size * patch_size); }
  // 1 + temporal_upsampling() * (latent_frames - 1).
  int64_t OutputFrames(int64_t latent_frames) const;
  // How far, in latent positions, a latent position after the mid block reaches into the output: the
  // 3x3 convolutions of the up blocks, their upsamplers and conv_out, each at its own scale, rounded up
  // (13 for Wan2.1 and Wan2.2). A tile decoded with this much context per side is exact.
  int64_t UpBlocksReach() const;
};

// z = latents * std + mean per channel, computed like the diffusers pipeline does it
// (latents / (1 / std) + mean, in the latents' dtype). latents: [B, z_dim, F, h, w].
Result<at::Tensor> DenormalizeWanLatents(const at::Tensor& latents, const WanVaeConfig& config);

// The diffusers video processor's output_type "pt": video [B, 3, T, H, W] in [-1, 1] ->
// frames [B, T, 3, H, W] in [0, 1] ((v / 2 + 0.5) clamped).
at::Tensor WanVideoToFrames(const at::Tensor& video);

// A rectangle of latent positions: rows [top, bottom), columns [left, right).
struct LatentTile {
  int64_t top = 0, bottom = 0, left = 0, right = 0;
};

struct WanVaeDecodeOptions {
  // At most this many frames flow through the up blocks at once. Every layer is per-frame or causal
  // with a cache, so any value gives the same video; 1 keeps the working set smallest, 0 means
  // "no splitting" (whole chunks of 2^u frames per latent frame, as diffusers does).
  int64_t max_chunk_frames = 1;
  // Where Decode puts the video; defaults: the decoder's device and dtype.
  std::optional<at::Device> output_device;
  std::optional<at::ScalarType> output_dtype;
  // Decode only the video over this tile of the latents (default: all of it), e.g. one GPU's share of
  // a decode split over several. The mid block runs on the whole frame (its attention sees every
  // position); the up blocks run on the tile widened by `halo` latent positions per side (clipped at
  // the frame's edges) and the result is cropped to the tile. Every layer after the mid block is local
  // (RMS norms are per position), so with the default halo, config.UpBlocksReach(), the tile equals
  // the same pixels of the whole decode; a smaller halo is cheaper and differs near the tile's seams.
  std::optional<LatentTile> tile;
  std::optional<int64_t> halo;
};

// Receives consecutive pieces of decoded video, in order: frames [B, 3, t, H, W] (clamped, on the
// decoder's device and dtype; H, W of the tile when one is set) starting at output frame `first_frame`. A non-OK status stops decoding.
using WanVaeFrameSink = std::function<Status(int64_t first_frame, const at::Tensor& frames)>;

// The latent frame h x w split into `parts` bands along its longer side (rows when h > w, else
// columns), the first ones one position longer when it does not divide. Empty when parts < 1 or the
// side is shorter than parts.
std::vector<LatentTile> SplitIntoBands(int64_t h, int64_t w, int parts);

class WanVaeDecoder {
 public:
  // Loads `post_quant_conv.*` and `decoder.*` (upstream key names; `encoder.*` and `quant_conv.*` are
  // ignored) from `weights`, checking every shape against `config`, onto options' device and dtype.
  // Decoder weights that the config does not account for are an error (config/weights mismatch).
  static Result<WanVaeDecoder> Load(const WanVaeConfig& config, const WeightStore& weights,
                                    at::TensorOptions options);

  // The names (upstream keys) and shapes of every tensor Load requires for `config`, in load order.
  // Optional tensors (RMS-norm biases) are not listed.
  static Result<std::vector<std::pair<std::string, std::vector<int64_t>>>> WeightShapes(const WanVaeConfig& config);

  // latents: [B, z_dim, F, h, w], already de-normalized (see DenormalizeWanLatents); any floating
  // dtype/device (converted). Returns video [B, 3, T, H, W] in [-1, 1].
  Result<at::Tensor> Decode(const at::Tensor& latents, const WanVaeDecodeOptions& options = {}) const;
  // The same decode, handing the video to `sink` piece by piece instead of assembling it.
  Status DecodeStreaming(const at::Tensor& latents, const WanVaeDecodeOptions& options,
                         const WanVaeFrameSink& sink) const;
  // The decode shared by the ranks of `group` (collective: every rank calls it with the same latents
  // and options, whose tile must be unset): rank r decodes band r of SplitIntoBands with the exact
  // halo, and the bands of every piece are gathered, so `sink` sees the whole pieces on every rank,
  // equal to DecodeStreaming's. An error of the sink stops the sink calls but not the collectives (the
  // ranks stay in step) and is returned at the end. InvalidArgument when the frame has fewer latent
  // rows/columns along its longer side than the group has ranks.
  Status DecodeShared(const at::Tensor& latents, const WanVaeDecodeOptions& options, SequenceParallel& group,
                      const WanVaeFrameSink& sink) const;

  const WanVaeConfig& config() const;
  at::TensorOptions options() const;
  // Number of causal convolutions that keep a frame cache while decoding.
  int64_t num_cached_convs() const;

 private:
  struct Impl;
  explicit WanVaeDecoder(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// Fixture runner for component `wan_vae_decoder`: inputs `latents` (not de-normalized by the
// fixture), output `video` (clamped decode). CPU float32.
Result<std::map<std::string, at::Tensor>> RunWanVaeDecoderFixture(const Fixture& fixture);

}  // namespace stas::models::wan
