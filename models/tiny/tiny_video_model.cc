#include "models/tiny/tiny_video_model.h"

#include "models/schedulers/unipc.h"
#include "models/text/prompt_encoder.h"
#include "models/wan/tiny.h"
#include "models/wan/vae_tiny.h"
#include "models/wan/wan_video_model.h"

namespace stas::models::tiny {

ModelDescription TinyDescription() {
  ModelDescription d;
  d.family = "tiny";
  d.size_multiple = 16;
  d.frame_multiple = 4;
  d.defaults = VideoDefaults{64, 96, 17, 16, 8, 5.0, 3.0, 5.0};
  d.trained_max = TrainedMaximum{256, 256, 33};
  d.num_attention_heads = JsonValueOr<int64_t>(wan::TinyWanTransformerConfigJson(), "num_attention_heads", 0);
  return d;
}

Result<std::unique_ptr<VideoModel>> LoadTinyVideoModel(const ModelLoadOptions& options) {
  STAS_ASSIGN_OR_RETURN(auto text_encoder,
                        text::PromptEncoder::Tiny(options.tiny_seed, options.text_device(), options.text_dtype()));
  STAS_ASSIGN_OR_RETURN(auto tconfig, wan::WanTransformerConfig::FromJson(wan::TinyWanTransformerConfigJson()));
  STAS_ASSIGN_OR_RETURN(auto dit, wan::WanTransformer::Load(tconfig, wan::TinyWanTransformerWeights(options.tiny_seed),
                                                            options.device, options.dtype));
  if (options.fp8_linears) STAS_RETURN_IF_ERROR(dit.UseFp8Linears(*options.fp8_linears));
  // The sampler settings of the released Wan2.1 scheduler_config.json.
  const Json scheduler_json = {{"num_train_timesteps", 1000}, {"solver_order", 2},         {"solver_type", "bh2"},
                               {"use_flow_sigmas", true},     {"prediction_type", "flow_prediction"},
                               {"flow_shift", 3.0},           {"lower_order_final", true}};
  STAS_ASSIGN_OR_RETURN(auto scheduler, UniPCConfig::FromJson(scheduler_json));
  const Json vae_json = wan::TinyWanVaeConfigJson();
  STAS_ASSIGN_OR_RETURN(auto vae_config, wan::WanVaeConfig::FromJson(vae_json));
  STAS_ASSIGN_OR_RETURN(auto compression, wan::VaeCompression::FromVaeConfig(vae_json));
  // The VAE decodes in options.vae_dtype (float32 unless asked).
  STAS_ASSIGN_OR_RETURN(auto decoder,
                        wan::WanVaeDecoder::Load(vae_config, wan::TinyWanVaeWeights(options.tiny_seed),
                                                 at::TensorOptions().device(options.device).dtype(options.vae_dtype)));
  return wan::MakeWanVideoModel(TinyDescription(),
                                wan::WanComponents{std::move(text_encoder), std::move(dit), std::move(scheduler),
                                                   std::move(vae_config), std::move(decoder), compression, false});
}

}  // namespace stas::models::tiny
