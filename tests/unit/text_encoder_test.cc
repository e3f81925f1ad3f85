// T5 / UMT5 encoders and the prompt encoder: configs, relative position buckets, padding invariance,
// tied embeddings, precision, the UMT5-XXL layout and checkpoint loading. Parity with transformers on
// the shipped fixtures runs in the parity suite (`stas check-fixture`).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/checkpoint.h"
#include "common/fixture.h"
#include "common/safetensors.h"
#include "models/text/prompt_encoder.h"
#include "models/text/t5_encoder.h"
#include "support/temp_dir.h"

namespace stas::models::text {
namespace {

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
}

T5EncoderConfig TinyConfig(T5Variant variant) {
  auto c = T5EncoderConfig::FromJson(TinyTextEncoderConfigJson());
  EXPECT_TRUE(c.ok());
  c->variant = variant;
  return *c;
}

// Tiny weights laid out for `variant`: T5 keeps only block 0's relative bias.
WeightStore TinyWeights(T5Variant variant, uint64_t seed = 0) {
  auto w = TinyTextEncoderWeights(seed);
  if (variant == T5Variant::kT5) {
    for (int64_t i = 1; i < TinyConfig(variant).num_layers; ++i)
      w.erase("encoder.block." + std::to_string(i) + ".layer.0.SelfAttention.relative_attention_bias.weight");
  }
  return WeightStore::FromTensors(std::move(w));
}

at::Tensor Ids(const std::vector<std::vector<int64_t>>& rows, int64_t length, at::Tensor* mask) {
  at::Tensor ids = at::zeros({static_cast<int64_t>(rows.size()), length}, at::kLong);
  *mask = at::zeros_like(ids);
  for (size_t b = 0; b < rows.size(); ++b)
    for (size_t t = 0; t < rows[b].size(); ++t) {
      ids[b][t] = rows[b][t];
      (*mask)[b][t] = 1;
    }
  return ids;
}

TEST(T5RelativePositionBucket, HandDerivedBidirectionalValues) {
  // 32 buckets, max distance 128: 16 per direction (keys after the query add 16); |d| < 8 exact;
  // otherwise 8 + floor(ln(|d|/8) / ln(16) * 8), capped at 15. E.g. |d| = 12: ln 1.5 / ln 16 * 8 = 1.17 -> 9;
  // |d| = 20: 2.64 -> 10; |d| = 100: 7.29 -> 15; |d| = 127: 7.98 -> 15; |d| >= 128: capped -> 15.
  const std::vector<int64_t> rel = {0, -1, 1, -7, 7, -8, 8, -12, 12, -20, 20, -100, 100, -127, -128, 128, -1000, 1000};
  const std::vector<int64_t> expected = {0, 1, 17, 7, 23, 8, 24, 9, 25, 10, 26, 15, 31, 15, 15, 31, 15, 31};
  const at::Tensor got = T5RelativePositionBucket(at::tensor(rel, at::kLong), true, 32, 128);
  EXPECT_EQ(std::vector<int64_t>(got.data_ptr<int64_t>(), got.data_ptr<int64_t>() + got.numel()), expected);
}

TEST(T5RelativePositionBucket, HandDerivedUnidirectionalValues) {
  // Decoder-style: only keys before the query count (d = -min(rel, 0)); 16 exact, then
  // 16 + floor(ln(d/16) / ln 8 * 16) capped at 31: d = 20 -> 16 + 1.72 -> 17; d = 200 -> 16 + 19.4 -> 31.
  const at::Tensor got = T5RelativePositionBucket(at::tensor(std::vector<int64_t>{5, 0, -5, -15, -20, -200}, at::kLong),
                                                  false, 32, 128);
  EXPECT_EQ(std::vector<int64_t>(got.data_ptr<int64_t>(), got.data_ptr<int64_t>() + 6),
            (std::vector<int64_t>{0, 0, 5, 15, 17, 31}));
}

TEST(T5EncoderConfig, ParsesTheShippedFixtureConfigs) {
  auto umt5 = Fixture::Open(std::string(STAS_FIXTURES_DIR) + "/umt5_tiny");
  ASSERT_TRUE(umt5.ok()) << umt5.status().ToString();
  auto c = T5EncoderConfig::FromJson(umt5->config());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->variant, T5Variant::kUmt5);
  EXPECT_EQ(c->d_model, 32);
  EXPECT_EQ(c->num_heads, 4);
  EXPECT_TRUE(c->gated_ffn);
  EXPECT_EQ(c->activation, T5Activation::kGeluTanh);
  auto t5 = Fixture::Open(std::string(STAS_FIXTURES_DIR) + "/t5_tiny");
  ASSERT_TRUE(t5.ok());
  auto c2 = T5EncoderConfig::FromJson(t5->config());
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(c2->variant, T5Variant::kT5);
  EXPECT_FALSE(c2->LayerOwnsBias(1));
  // Asking for the other variant than model_type says is an error, not a silent switch.
  EXPECT_FALSE(T5EncoderConfig::FromJson(t5->config(), T5Variant::kUmt5).ok());
}

TEST(T5EncoderConfig, FeedForwardProjAndBadConfigs) {
  Json j = TinyTextEncoderConfigJson();
  auto with = [&](const char* key, Json value) {
    Json k = j;
    k[key] = value;
    return T5EncoderConfig::FromJson(k);
  };
  auto relu = with("feed_forward_proj", "relu");
  ASSERT_TRUE(relu.ok());
  EXPECT_FALSE(relu->gated_ffn);
  EXPECT_EQ(relu->activation, T5Activation::kRelu);
  auto silu = with("feed_forward_proj", "gated-silu");
  ASSERT_TRUE(silu.ok());
  EXPECT_TRUE(silu->gated_ffn);
  EXPECT_EQ(silu->activation, T5Activation::kSilu);
  EXPECT_EQ(with("feed_forward_proj", "gated-gelu")->activation, T5Activation::kGeluTanh);
  EXPECT_EQ(with("feed_forward_proj", "gelu")->activation, T5Activation::kGelu);
  EXPECT_EQ(with("feed_forward_proj", "foo-gelu").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(with("feed_forward_proj", "gated-quick_gelu").status().code(), StatusCode::kNotImplemented);
  EXPECT_FALSE(with("d_model", -4).ok());
  EXPECT_FALSE(with("model_type", "bert").ok());
  EXPECT_FALSE(with("num_heads", "four").ok());
  Json missing = j;
  missing.erase("d_kv");
  auto r = T5EncoderConfig::FromJson(missing);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("d_kv"), std::string::npos) << r.status().message();
  // ToJson round-trips.
  auto back = T5EncoderConfig::FromJson(T5EncoderConfig::Umt5Xxl().ToJson());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->d_ff, 10240);
  EXPECT_EQ(back->variant, T5Variant::kUmt5);
}

class T5EncoderVariants : public ::testing::TestWithParam<T5Variant> {};

TEST_P(T5EncoderVariants, RealTokensIgnoreHowMuchPaddingFollows) {
  const T5Variant variant = GetParam();
  auto enc = T5Encoder::Load(TinyConfig(variant), TinyWeights(variant));
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  const std::vector<std::vector<int64_t>> rows = {{17, 250, 33, 9, 1}, {400, 5, 1}};
  at::Tensor mask_short, mask_long;
  const at::Tensor short_ids = Ids(rows, 6, &mask_short);
  const at::Tensor long_ids = Ids(rows, 23, &mask_long);
  auto a = enc->Forward(short_ids, mask_short);
  auto b = enc->Forward(long_ids, mask_long);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(b->sizes(), (std::vector<int64_t>{2, 23, 32}));
  for (size_t r = 0; r < rows.size(); ++r) {
    const int64_t n = static_cast<int64_t>(rows[r].size());
    EXPECT_LT(MaxAbsDiff((*a)[r].slice(0, 0, n), (*b)[r].slice(0, 0, n)), 1e-5) << "row " << r;
  }
  EXPECT_TRUE(b->isfinite().all().item<bool>());
  // Without the mask the padding is attended to and real tokens change: the mask is really used.
  auto unmasked = enc->Forward(long_ids);
  ASSERT_TRUE(unmasked.ok());
  EXPECT_GT(MaxAbsDiff((*unmasked)[1].slice(0, 0, 3), (*b)[1].slice(0, 0, 3)), 1e-3);
  // Rows are independent: row 1 alone equals row 1 in the batch.
  auto alone = enc->Forward(long_ids.slice(0, 1, 2), mask_long.slice(0, 1, 2));
  ASSERT_TRUE(alone.ok());
  EXPECT_LT(MaxAbsDiff((*alone)[0], (*b)[1]), 1e-5);
}

TEST_P(T5EncoderVariants, TiedEmbeddingUnderEitherName) {
  const T5Variant variant = GetParam();
  auto with_shared = TinyTextEncoderWeights(0);
  if (variant == T5Variant::kT5) with_shared.erase("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight");
  auto with_embed = with_shared;
  with_embed["encoder.embed_tokens.weight"] = with_embed.at("shared.weight");
  with_embed.erase("shared.weight");
  auto both = with_shared;
  both["encoder.embed_tokens.weight"] = both.at("shared.weight");
  at::Tensor mask;
  const at::Tensor ids = Ids({{3, 4, 5, 1}}, 4, &mask);
  std::vector<at::Tensor> outs;
  for (auto* w : {&with_shared, &with_embed, &both}) {
    auto enc = T5Encoder::Load(TinyConfig(variant), WeightStore::FromTensors(*w));
    ASSERT_TRUE(enc.ok()) << enc.status().ToString();
    outs.push_back(*enc->Forward(ids, mask));
  }
  EXPECT_TRUE(at::equal(outs[0], outs[1]));
  EXPECT_TRUE(at::equal(outs[0], outs[2]));
  auto neither = with_shared;
  neither.erase("shared.weight");
  auto r = T5Encoder::Load(TinyConfig(variant), WeightStore::FromTensors(neither));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("shared.weight"), std::string::npos) << r.status().message();
}

INSTANTIATE_TEST_SUITE_P(Both, T5EncoderVariants, ::testing::Values(T5Variant::kUmt5, T5Variant::kT5),
                         [](const auto& info) { return info.param == T5Variant::kUmt5 ? "umt5" : "t5"; });

TEST(T5Encoder, VariantAndWeightsMustAgree) {
  // UMT5 weights (a bias in every block) loaded as T5 and T5 weights loaded as UMT5 both fail clearly.
  auto as_t5 = T5Encoder::Load(TinyConfig(T5Variant::kT5), TinyWeights(T5Variant::kUmt5));
  ASSERT_FALSE(as_t5.ok());
  EXPECT_NE(as_t5.status().message().find("umt5"), std::string::npos) << as_t5.status().message();
  auto as_umt5 = T5Encoder::Load(TinyConfig(T5Variant::kUmt5), TinyWeights(T5Variant::kT5));
  ASSERT_FALSE(as_umt5.ok());
  EXPECT_NE(as_umt5.status().message().find("block.1.layer.0.SelfAttention.relative_attention_bias"), std::string::npos)
      << as_umt5.status().message();
}

TEST(T5Encoder, BadInputsAreClearErrors) {
  auto enc = T5Encoder::Load(TinyConfig(T5Variant::kUmt5), TinyWeights(T5Variant::kUmt5));
  ASSERT_TRUE(enc.ok());
  auto out_of_range = enc->Forward(at::full({1, 3}, 512, at::kLong));
  ASSERT_FALSE(out_of_range.ok());
  EXPECT_NE(out_of_range.status().message().find("[0, 512)"), std::string::npos);
  EXPECT_FALSE(enc->Forward(at::full({1, 3}, -1, at::kLong)).ok());
  EXPECT_FALSE(enc->Forward(at::zeros({1, 3}, at::kFloat)).ok());
  EXPECT_FALSE(enc->Forward(at::zeros({3}, at::kLong)).ok());
  EXPECT_FALSE(enc->Forward(at::zeros({1, 3}, at::kLong), at::ones({1, 4}, at::kLong)).ok());
  EXPECT_EQ(T5Encoder::Load(TinyConfig(T5Variant::kUmt5), TinyWeights(T5Variant::kUmt5), at::kCPU, at::kHalf)
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  // A misshapen tensor names itself.
  auto w = TinyTextEncoderWeights(0);
  w["encoder.block.1.layer.1.DenseReluDense.wo.weight"] = at::zeros({32, 65});
  auto r = T5Encoder::Load(TinyConfig(T5Variant::kUmt5), WeightStore::FromTensors(w));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("DenseReluDense.wo"), std::string::npos) << r.status().message();
}

TEST(T5Encoder, Bfloat16StaysCloseToFloat32) {
  auto f32 = T5Encoder::Load(TinyConfig(T5Variant::kUmt5), TinyWeights(T5Variant::kUmt5));
  auto bf16 = T5Encoder::Load(TinyConfig(T5Variant::kUmt5), TinyWeights(T5Variant::kUmt5), at::kCPU, at::kBFloat16);
  ASSERT_TRUE(f32.ok() && bf16.ok());
  at::Tensor mask;
  const at::Tensor ids = Ids({{10, 20, 30, 40, 1}, {7, 1}}, 8, &mask);
  auto a = f32->Forward(ids, mask);
  auto b = bf16->Forward(ids, mask);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status().ToString();
  EXPECT_EQ(b->scalar_type(), at::kBFloat16);
  // Outputs are O(1) after the final norm; bf16 keeps about 3 significant digits through 2 layers.
  EXPECT_LT(MaxAbsDiff(*a, *b), 0.15);
  EXPECT_LT((a->to(at::kFloat) - b->to(at::kFloat)).abs().mean().item<double>(), 0.03);
}

TEST(T5EncoderWeights, Umt5XxlLayoutChecksWithoutLoadingData) {
  // The text_encoder/config.json of the diffusers Wan2.1 checkpoints (google/umt5-xxl).
  const char* config_json = R"({
    "architectures": ["UMT5EncoderModel"], "classifier_dropout": 0.0, "d_ff": 10240, "d_kv": 64,
    "d_model": 4096, "decoder_start_token_id": 0, "dense_act_fn": "gelu_new", "dropout_rate": 0.1,
    "eos_token_id": 1, "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0,
    "is_encoder_decoder": true, "is_gated_act": true, "layer_norm_epsilon": 1e-06, "model_type": "umt5",
    "num_decoder_layers": 24, "num_heads": 64, "num_layers": 24, "output_past": true, "pad_token_id": 0,
    "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
    "scalable_attention": true, "tie_word_embeddings": false, "tokenizer_class": "T5Tokenizer",
    "torch_dtype": "float32", "use_cache": true, "vocab_size": 256384})";
  auto config = T5EncoderConfig::FromJson(Json::parse(config_json));
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  const T5EncoderConfig xxl = T5EncoderConfig::Umt5Xxl();
  EXPECT_EQ(config->ToJson(), xxl.ToJson());
  // 256384*4096 + 24 * (4*4096^2 + 32*64 + 3*4096*10240 + 2*4096) + 4096
  EXPECT_EQ(T5EncoderParameterCount(xxl), 5680910336LL);
  // T5 v1.1 XXL (CogVideoX): vocab 32128 and only block 0's bias: 4.76B.
  EXPECT_EQ(T5EncoderParameterCount(T5EncoderConfig::T5V11Xxl()), 4762310656LL);

  // Shapes only: meta tensors stand in for the 11 GB of weights.
  std::map<std::string, at::Tensor> meta;
  for (const auto& [name, shape] : T5EncoderWeightShapes(xxl))
    meta[name] = at::empty(shape, at::TensorOptions().device(at::kMeta).dtype(at::kBFloat16));
  EXPECT_EQ(meta.size(), 1u + 24u * 10u + 1u);
  EXPECT_TRUE(CheckT5EncoderWeights(xxl, WeightStore::FromTensors(meta)).ok());
  auto broken = meta;
  broken.erase("encoder.block.7.layer.1.DenseReluDense.wo.weight");
  broken["shared.weight"] = at::empty({256000, 4096}, at::TensorOptions().device(at::kMeta));
  const Status st = CheckT5EncoderWeights(xxl, WeightStore::FromTensors(broken));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("missing encoder.block.7.layer.1.DenseReluDense.wo.weight"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("shared.weight has shape [256000, 4096]"), std::string::npos) << st.message();
}

TEST(PromptEncoder, TinyWanStyleEmbeddings) {
  auto pe = PromptEncoder::Tiny();
  ASSERT_TRUE(pe.ok()) << pe.status().ToString();
  EXPECT_EQ(pe->embedding_dim(), 32);
  const std::vector<std::string> prompts = {"A cat and a dog", "  a dog running in the rain at sunset "};
  auto tokens = pe->Tokenize(prompts);
  ASSERT_TRUE(tokens.ok());
  // Whole words win over spellings: "▁A" (-7.5) beats "▁" + "A" (-3 - 7), "▁cat" beats its letters.
  const SentencePieceTokenizer& tok = pe->tokenizer();
  const std::string sp = "\xe2\x96\x81";
  std::vector<int64_t> expected;
  for (const char* w : {"A", "cat", "and", "a", "dog"}) expected.push_back(tok.PieceToId(sp + w));
  expected.push_back(1);
  EXPECT_EQ(std::vector<int64_t>(tokens->input_ids.begin(), tokens->input_ids.begin() + 6), expected);
  EXPECT_EQ(tokens->lengths, (std::vector<int64_t>{6, 9}));

  auto emb = pe->Encode(prompts);
  ASSERT_TRUE(emb.ok()) << emb.status().ToString();
  EXPECT_EQ(emb->sizes(), (std::vector<int64_t>{2, 512, 32}));
  for (int64_t b = 0; b < 2; ++b) {
    const int64_t n = tokens->lengths[b];
    EXPECT_GT((*emb)[b].slice(0, 0, n).abs().amin(1).min().item<float>(), 0.0f) << "a real token row is zero";
    EXPECT_EQ((*emb)[b].slice(0, n).abs().max().item<float>(), 0.0f) << "padding is not zero";
  }
  // Encode runs only up to the longest prompt; a full 512-position forward with the mask, zeroed past each
  // length as WanPipeline does, gives the same embeddings.
  at::Tensor ids = at::tensor(tokens->input_ids, at::kLong).view({2, 512});
  at::Tensor mask = at::tensor(tokens->attention_mask, at::kLong).view({2, 512});
  auto full = pe->encoder().Forward(ids, mask);
  ASSERT_TRUE(full.ok());
  EXPECT_LT(MaxAbsDiff(full->masked_fill(mask.eq(0).unsqueeze(-1), 0), *emb), 1e-5);
  // Same seed, same numbers; another seed, other numbers.
  EXPECT_TRUE(at::equal(*emb, *PromptEncoder::Tiny(0)->Encode(prompts)));
  EXPECT_GT(MaxAbsDiff(*emb, *PromptEncoder::Tiny(1)->Encode(prompts)), 1e-3);
  // A shorter max_length gives the same real-token embeddings (the mask hides the padding).
  PromptEncoderOptions short_options = PromptEncoderOptions::Wan();
  short_options.max_length = 16;
  auto short_emb = PromptEncoder::Tiny(0, at::kCPU, at::kFloat, short_options)->Encode(prompts);
  ASSERT_TRUE(short_emb.ok());
  EXPECT_LT(MaxAbsDiff(*short_emb, emb->slice(1, 0, 16)), 1e-5);
}

TEST(PromptEncoder, NegativePromptDefaultsToEmpty) {
  auto pe = PromptEncoder::Tiny();
  ASSERT_TRUE(pe.ok());
  auto g = pe->EncodeForGuidance({"a cat", "a red car"});
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->negative.sizes(), g->positive.sizes());
  // "" is one EOS token: only position 0 is non-zero, the same for every row.
  EXPECT_GT(g->negative[0][0].abs().max().item<float>(), 0.0f);
  EXPECT_EQ(g->negative.slice(1, 1).abs().max().item<float>(), 0.0f);
  EXPECT_TRUE(at::equal(g->negative[0], g->negative[1]));
  auto explicit_negative = pe->EncodeForGuidance({"a cat", "a red car"}, {"", ""});
  ASSERT_TRUE(explicit_negative.ok());
  EXPECT_TRUE(at::equal(explicit_negative->negative, g->negative));
  EXPECT_EQ(pe->EncodeForGuidance({"a", "b"}, {"x"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(pe->Encode({}).status().code(), StatusCode::kInvalidArgument);
}

TEST(PromptEncoder, CogVideoXStyleKeepsPaddingAndSkipsTheMask) {
  auto cog = PromptEncoder::Tiny(0, at::kCPU, at::kFloat, PromptEncoderOptions::CogVideoX());
  auto wan = PromptEncoder::Tiny(0, at::kCPU, at::kFloat, PromptEncoderOptions::Wan());
  ASSERT_TRUE(cog.ok() && wan.ok());
  auto c = cog->Encode({"a cat"});
  auto w = wan->Encode({"a cat"});
  ASSERT_TRUE(c.ok() && w.ok());
  EXPECT_EQ(c->sizes(), (std::vector<int64_t>{1, 226, 32}));
  EXPECT_GT(c->slice(1, 3).abs().amin(2).min().item<float>(), 0.0f);  // padding positions are encoded
  EXPECT_GT(MaxAbsDiff(c->slice(1, 0, 3), w->slice(1, 0, 3)), 1e-3);  // padding was attended to
  // No prompt cleaning: "&amp;" is tokenized as written.
  auto raw = cog->Tokenize({"a &amp; b"});
  auto cleaned = wan->Tokenize({"a &amp; b"});
  ASSERT_TRUE(raw.ok() && cleaned.ok());
  EXPECT_GT(raw->lengths[0], cleaned->lengths[0]);
}

TEST(PromptEncoder, LoadsACheckpointFolder) {
  testing::TempDir dir;
  dir.Write("model_index.json",
            R"({"_class_name":"WanPipeline","text_encoder":["transformers","UMT5EncoderModel"],)"
            R"("tokenizer":["transformers","T5TokenizerFast"]})");
  dir.Write("tokenizer/spiece.model", TinyTokenizerModel().Serialize());
  dir.Write("text_encoder/config.json", TinyTextEncoderConfigJson().dump(2));
  auto weights = TinyTextEncoderWeights(3);
  // Sharded as real checkpoints are.
  std::map<std::string, at::Tensor> first, second;
  Json index;
  for (const auto& [name, t] : weights) {
    const bool in_first = name < "encoder.block.1";
    (in_first ? first : second)[name] = t;
    index["weight_map"][name] = in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  ASSERT_TRUE(WriteSafetensors(dir.File("text_encoder/model-00001-of-00002.safetensors"), first).ok());
  ASSERT_TRUE(WriteSafetensors(dir.File("text_encoder/model-00002-of-00002.safetensors"), second).ok());
  dir.Write("text_encoder/model.safetensors.index.json", index.dump());
  auto ckpt = CheckpointFolder::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  auto loaded = PromptEncoder::FromCheckpoint(*ckpt, at::kCPU, at::kFloat, PromptEncoderOptions::Wan());
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  auto builtin = PromptEncoder::Tiny(3);
  ASSERT_TRUE(builtin.ok());
  const std::vector<std::string> prompts = {"a cinematic shot of a golden forest"};
  EXPECT_TRUE(at::equal(*loaded->Encode(prompts), *builtin->Encode(prompts)));

  std::filesystem::remove(dir.File("tokenizer/spiece.model"));
  EXPECT_EQ(PromptEncoder::FromCheckpoint(*ckpt, at::kCPU, at::kFloat, PromptEncoderOptions::Wan()).status().code(),
            StatusCode::kNotFound);
}

TEST(PromptEncoder, TokenizerMustFitTheEncoderVocabulary) {
  auto tok = SentencePieceTokenizer::FromModel(TinyTokenizerModel());
  ASSERT_TRUE(tok.ok());
  T5EncoderConfig small = TinyConfig(T5Variant::kUmt5);
  small.vocab_size = 100;
  auto w = TinyTextEncoderWeights(0);
  w["shared.weight"] = w["shared.weight"].slice(0, 0, 100).clone();
  auto enc = T5Encoder::Load(small, WeightStore::FromTensors(w));
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  auto pe = PromptEncoder::Create(*tok, *enc, PromptEncoderOptions::Wan());
  ASSERT_FALSE(pe.ok());
  EXPECT_NE(pe.status().message().find("do not belong together"), std::string::npos);
}

}  // namespace
}  // namespace stas::models::text
