#include "models/text/prompt_encoder.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "common/check.h"

namespace stas::models::text {

PromptEncoderOptions PromptEncoderOptions::Wan() { return PromptEncoderOptions{}; }

PromptEncoderOptions PromptEncoderOptions::CogVideoX() {
  PromptEncoderOptions o;
  o.max_length = 226;
  o.clean_prompts = false;
  o.use_attention_mask = false;
  o.zero_past_length = false;
  return o;
}

Result<PromptEncoder> PromptEncoder::Create(SentencePieceTokenizer tokenizer, T5Encoder encoder,
                                            PromptEncoderOptions options) {
  if (options.max_length < 1)
    return InvalidArgument("prompt max_length must be at least 1, got " + std::to_string(options.max_length));
  if (tokenizer.vocab_size() > encoder.config().vocab_size)
    return InvalidArgument("the tokenizer has " + std::to_string(tokenizer.vocab_size()) +
                           " pieces but the text encoder only " + std::to_string(encoder.config().vocab_size) +
                           " embeddings: tokenizer and text_encoder do not belong together");
  if (tokenizer.eos_id() < 0 || tokenizer.pad_id() < 0)
    return InvalidArgument("the tokenizer defines no EOS (" + tokenizer.model().trainer_spec.eos_piece +
                           ") or pad (" + tokenizer.model().trainer_spec.pad_piece + ") piece");
  return PromptEncoder(std::move(tokenizer), std::move(encoder), options);
}

Result<PromptEncoder> PromptEncoder::FromCheckpoint(const CheckpointFolder& checkpoint, at::Device device,
                                                    at::ScalarType dtype, PromptEncoderOptions options) {
  const std::string spiece = (std::filesystem::path(checkpoint.ComponentPath("tokenizer")) / "spiece.model").string();
  std::error_code ec;
  if (!std::filesystem::exists(spiece, ec))
    return NotFound("no sentencepiece model at " + spiece +
                    " (only spiece.model tokenizers are supported, not tokenizer.json alone)");
  STAS_ASSIGN_OR_RETURN(SentencePieceTokenizer tokenizer, SentencePieceTokenizer::Load(spiece));
  STAS_ASSIGN_OR_RETURN(Json config_json, checkpoint.ComponentConfig("text_encoder"));
  auto config = T5EncoderConfig::FromJson(config_json);
  if (!config.ok()) return config.status().WithContext(checkpoint.ComponentPath("text_encoder"));
  STAS_ASSIGN_OR_RETURN(WeightStore weights, checkpoint.ComponentWeights("text_encoder"));
  STAS_RETURN_IF_ERROR(CheckT5EncoderWeights(*config, weights));
  STAS_ASSIGN_OR_RETURN(T5Encoder encoder, T5Encoder::Load(*config, weights, device, dtype));
  return Create(std::move(tokenizer), std::move(encoder), options);
}

Result<PromptEncoder> PromptEncoder::Tiny(uint64_t seed, at::Device device, at::ScalarType dtype,
                                          PromptEncoderOptions options) {
  STAS_ASSIGN_OR_RETURN(SentencePieceTokenizer tokenizer, SentencePieceTokenizer::FromModel(TinyTokenizerModel()));
  STAS_ASSIGN_OR_RETURN(T5EncoderConfig config, T5EncoderConfig::FromJson(TinyTextEncoderConfigJson()));
  STAS_ASSIGN_OR_RETURN(T5Encoder encoder,
                        T5Encoder::Load(config, WeightStore::FromTensors(TinyTextEncoderWeights(seed)), device, dtype));
  return Create(std::move(tokenizer), std::move(encoder), options);
}

Result<TokenBatch> PromptEncoder::Tokenize(const std::vector<std::string>& prompts) const {
  T5TokenizeOptions t;
  t.max_length = options_.max_length;
  t.clean_prompts = options_.clean_prompts;
  return TokenizeForT5(tokenizer_, prompts, t);
}

Result<at::Tensor> PromptEncoder::Encode(const std::vector<std::string>& prompts) const {
  if (prompts.empty()) return InvalidArgument("no prompts to encode");
  STAS_ASSIGN_OR_RETURN(TokenBatch batch, Tokenize(prompts));
  const auto long_cpu = at::TensorOptions().dtype(at::kLong);
  at::Tensor ids = at::from_blob(batch.input_ids.data(), {batch.batch, batch.max_length}, long_cpu).clone();
  at::Tensor mask = at::from_blob(batch.attention_mask.data(), {batch.batch, batch.max_length}, long_cpu).clone();
  // With the mask on, real tokens never see padding (masked keys get exactly zero weight and the position
  // bias depends only on offsets), and with zeroing on, padded outputs are discarded: so encoding only up
  // to the longest prompt gives the same result as encoding all max_length positions, much faster.
  const bool trim = options_.use_attention_mask && options_.zero_past_length;
  const int64_t longest = *std::max_element(batch.lengths.begin(), batch.lengths.end());
  const int64_t encoded_length = trim ? longest : batch.max_length;
  STAS_ASSIGN_OR_RETURN(at::Tensor hidden,
                        encoder_.Forward(ids.slice(1, 0, encoded_length),
                                         options_.use_attention_mask ? mask.slice(1, 0, encoded_length) : at::Tensor()));
  // WanPipeline keeps u[:seq_len] and pads with zeros: the same as zeroing every masked position.
  if (options_.zero_past_length) {
    hidden = hidden.masked_fill(mask.slice(1, 0, encoded_length).to(hidden.device()).eq(0).unsqueeze(-1), 0);
    if (encoded_length < batch.max_length)
      hidden = at::constant_pad_nd(hidden, {0, 0, 0, batch.max_length - encoded_length}, 0);
  }
  return hidden;
}

Result<GuidanceEmbeddings> PromptEncoder::EncodeForGuidance(const std::vector<std::string>& prompts,
                                                            const std::vector<std::string>& negative_prompts) const {
  if (!negative_prompts.empty() && negative_prompts.size() != prompts.size())
    return InvalidArgument("got " + std::to_string(negative_prompts.size()) + " negative prompts for " +
                           std::to_string(prompts.size()) + " prompts (give one per prompt, or none)");
  GuidanceEmbeddings out;
  STAS_ASSIGN_OR_RETURN(out.positive, Encode(prompts));
  STAS_ASSIGN_OR_RETURN(out.negative, Encode(negative_prompts.empty() ? std::vector<std::string>(prompts.size(), "")
                                                                      : negative_prompts));
  return out;
}

// --- the built-in tiny text encoder -------------------------------------------------------------------

namespace {

constexpr int64_t kTinyVocab = 512, kTinyDModel = 32, kTinyDkv = 8, kTinyHeads = 4, kTinyDff = 64, kTinyLayers = 2;

// splitmix64: a tiny, well-mixed generator whose output is fixed by the standard, unlike torch's.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float Symmetric() { return static_cast<float>(static_cast<double>(Next() >> 11) * 0x1.0p-52 - 1.0); }

 private:
  uint64_t state_;
};

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Uniform values with standard deviation `stddev` (uniform on [-a, a] has std a / sqrt(3)), plus `offset`.
at::Tensor TinyTensor(uint64_t seed, const std::string& name, std::vector<int64_t> shape, double stddev,
                      double offset = 0.0) {
  SplitMix64 rng(seed ^ Fnv1a(name));
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  float* data = t.data_ptr<float>();
  const float scale = static_cast<float>(stddev * std::sqrt(3.0));
  for (int64_t i = 0; i < t.numel(); ++i) data[i] = static_cast<float>(offset) + scale * rng.Symmetric();
  return t;
}

}  // namespace

Json TinyTextEncoderConfigJson() {
  T5EncoderConfig c;
  c.variant = T5Variant::kUmt5;
  c.vocab_size = kTinyVocab;
  c.d_model = kTinyDModel;
  c.d_kv = kTinyDkv;
  c.d_ff = kTinyDff;
  c.num_layers = kTinyLayers;
  c.num_heads = kTinyHeads;
  return c.ToJson();
}

std::map<std::string, at::Tensor> TinyTextEncoderWeights(uint64_t seed) {
  auto config = T5EncoderConfig::FromJson(TinyTextEncoderConfigJson());
  STAS_CHECK(config.ok()) << config.status().ToString();
  const double D = kTinyDModel, I = kTinyHeads * kTinyDkv, F = kTinyDff;
  std::map<std::string, at::Tensor> weights;
  for (const auto& [name, shape] : T5EncoderWeightShapes(*config)) {
    // transformers' T5 initialisation scales (Mesh TensorFlow): activations stay O(1) without 1/sqrt(d).
    double stddev = 1.0, offset = 0.0;
    auto ends_with = [&](const char* suffix) {
      const std::string s(suffix);
      return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    if (ends_with("layer_norm.weight")) {
      stddev = 0.1;
      offset = 1.0;
    } else if (ends_with("SelfAttention.q.weight")) {
      stddev = 1.0 / std::sqrt(D * kTinyDkv);
    } else if (ends_with("SelfAttention.k.weight") || ends_with("SelfAttention.v.weight") ||
               ends_with("wi_0.weight") || ends_with("wi_1.weight") || ends_with("relative_attention_bias.weight")) {
      stddev = 1.0 / std::sqrt(D);
    } else if (ends_with("SelfAttention.o.weight")) {
      stddev = 1.0 / std::sqrt(I);
    } else if (ends_with("wo.weight")) {
      stddev = 1.0 / std::sqrt(F);
    }
    weights[name] = TinyTensor(seed, name, shape, stddev, offset);
  }
  return weights;
}

SentencePieceModel TinyTokenizerModel() {
  SentencePieceModel m;
  m.trainer_spec.model_type = 1;
  m.trainer_spec.unk_id = 2;
  m.trainer_spec.bos_id = -1;
  m.trainer_spec.eos_id = 1;
  m.trainer_spec.pad_id = 0;
  m.normalizer_spec.name = "identity";
  std::set<std::string> seen;
  auto add = [&](std::string piece, float score, PieceType type = PieceType::kNormal) {
    if (seen.insert(piece).second) m.pieces.push_back({std::move(piece), score, type});  // "a" is a word and a letter
  };
  add("<pad>", 0, PieceType::kControl);
  add("</s>", 0, PieceType::kControl);
  add("<unk>", 0, PieceType::kUnknown);
  const std::string space = "\xe2\x96\x81";  // U+2581
  add(space, -3.0f);
  // Whole words score well above their spellings, so the Viterbi search keeps them in one piece.
  static const char* kWords[] = {
      "the", "a", "an", "and", "of", "in", "on", "at", "with", "to", "from", "by", "for", "is", "are", "it",
      "its", "as", "into", "over", "under", "through", "while", "his", "her", "their", "this", "that",
      "cat", "dog", "bird", "fish", "horse", "man", "woman", "child", "people", "person", "girl", "boy",
      "car", "train", "boat", "ship", "city", "street", "road", "forest", "tree", "trees", "mountain",
      "river", "lake", "sea", "ocean", "beach", "sky", "cloud", "clouds", "sun", "sunset", "sunrise",
      "moon", "night", "day", "light", "rain", "snow", "water", "fire", "wind", "field", "flower",
      "flowers", "garden", "house", "room", "kitchen", "window", "table", "cake", "food", "coffee",
      "walking", "running", "flying", "dancing", "playing", "sitting", "standing", "swimming", "baking",
      "together", "slowly", "camera", "shot", "view", "close", "up", "wide", "aerial", "scene", "video",
      "style", "cinematic", "realistic", "quality", "detailed", "beautiful", "bright", "dark", "soft",
      "warm", "cold", "red", "blue", "green", "yellow", "white", "black", "golden", "small", "large",
      "big", "old", "young", "happy", "cozy", "static", "blurred", "low", "high", "worst", "best",
  };
  float word_score = -4.0f;
  for (const char* w : kWords) {
    add(space + w, word_score);
    word_score -= 0.01f;
  }
  for (char c = 'a'; c <= 'z'; ++c) add(std::string(1, c), -6.0f);
  for (char c = 'a'; c <= 'z'; ++c) add(space + c, -6.5f);
  for (char c = 'A'; c <= 'Z'; ++c) add(std::string(1, c), -7.0f);
  for (char c = 'A'; c <= 'Z'; ++c) add(space + c, -7.5f);
  for (char c = '0'; c <= '9'; ++c) add(std::string(1, c), -7.0f);
  for (char c = '0'; c <= '9'; ++c) add(space + c, -7.5f);
  for (const char* p : {".", ",", "!", "?", ";", ":", "'", "\"", "-", "(", ")", "/", "&", "%", "+", "=", "*",
                        "#", "@", "_", "<", ">", "[", "]", "{", "}", "~", "^", "$", "`", "|", "\\"})
    add(p, -7.0f);
  m.trainer_spec.vocab_size = static_cast<int32_t>(m.pieces.size());
  return m;
}

}  // namespace stas::models::text
