// Prompts -> text embeddings for the diffusion transformers: SentencePiece tokenizer + T5-family encoder,
// with the prompt handling of the diffusers pipelines.
//
//  Wan (WanPipeline._get_t5_prompt_embeds): prompt_clean (see tokenizer.h), EOS appended, truncated and
//    padded to 512, the encoder sees the attention mask, and every position past a prompt's length (its
//    tokens incl. EOS) is set to zero.
//  CogVideoX (CogVideoXPipeline._get_t5_prompt_embeds): the prompt as given, 226 tokens, the encoder is
//    called without a mask (padding tokens attend and are attended to), nothing is zeroed.
// The negative prompt defaults to "" for every prompt (one EOS token), as both pipelines do.
//
// A built-in tiny variant (tiny tokenizer + 2-layer UMT5 with d_model 32, the text_dim of the tiny Wan
// transformer) needs no files: PromptEncoder::Tiny, or TinyTextEncoderConfigJson / TinyTextEncoderWeights
// / TinyTokenizerModel to assemble it elsewhere.
//
// A PromptEncoder is immutable after construction; Encode may be called from several threads.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/json.h"
#include "common/status.h"
#include "models/text/t5_encoder.h"
#include "models/text/tokenizer.h"

namespace stas::models::text {

struct PromptEncoderOptions {
  int64_t max_length = 512;
  bool clean_prompts = true;       // run WanPromptClean before tokenizing
  bool use_attention_mask = true;  // pass the padding mask to the encoder
  bool zero_past_length = true;    // zero the embeddings of padding positions

  static PromptEncoderOptions Wan();        // 512 tokens, cleaned, masked, zeroed
  static PromptEncoderOptions CogVideoX();  // 226 tokens, as given, unmasked, not zeroed
};

// Embeddings for classifier-free guidance: [B, max_length, d_model] each.
struct GuidanceEmbeddings {
  at::Tensor positive;
  at::Tensor negative;
};

class PromptEncoder {
 public:
  // InvalidArgument when options.max_length < 1 or the tokenizer has ids outside the encoder's vocabulary.
  static Result<PromptEncoder> Create(SentencePieceTokenizer tokenizer, T5Encoder encoder,
                                      PromptEncoderOptions options);
  // A diffusers checkpoint folder: tokenizer/spiece.model and text_encoder/ (config.json with model_type
  // umt5 or t5, sharded or single safetensors). Only the sentencepiece tokenizer is read; a folder with
  // only tokenizer.json gives NotFound.
  static Result<PromptEncoder> FromCheckpoint(const CheckpointFolder& checkpoint, at::Device device,
                                              at::ScalarType dtype, PromptEncoderOptions options);
  // The built-in tiny text encoder (deterministic weights for `seed`) with the built-in tiny tokenizer.
  static Result<PromptEncoder> Tiny(uint64_t seed = 0, at::Device device = at::kCPU,
                                    at::ScalarType dtype = at::kFloat,
                                    PromptEncoderOptions options = PromptEncoderOptions::Wan());

  // Token ids and mask as the pipeline feeds them to the encoder.
  Result<TokenBatch> Tokenize(const std::vector<std::string>& prompts) const;
  // [B, max_length, d_model] in the encoder's dtype on its device. InvalidArgument for an empty list.
  Result<at::Tensor> Encode(const std::vector<std::string>& prompts) const;
  // Encode(prompts) and Encode(negative_prompts); an empty negative list means "" for every prompt,
  // otherwise it must have one entry per prompt.
  Result<GuidanceEmbeddings> EncodeForGuidance(const std::vector<std::string>& prompts,
                                               const std::vector<std::string>& negative_prompts = {}) const;

  const SentencePieceTokenizer& tokenizer() const { return tokenizer_; }
  const T5Encoder& encoder() const { return encoder_; }
  const PromptEncoderOptions& options() const { return options_; }
  int64_t embedding_dim() const { return encoder_.config().d_model; }

 private:
  PromptEncoder(SentencePieceTokenizer tokenizer, T5Encoder encoder, PromptEncoderOptions options)
      : tokenizer_(std::move(tokenizer)), encoder_(std::move(encoder)), options_(options) {}
  SentencePieceTokenizer tokenizer_;
  T5Encoder encoder_;
  PromptEncoderOptions options_;
};

// The transformers config.json of the tiny text encoder: UMT5, d_model 32 (= the tiny Wan transformer's
// text_dim), 4 heads x 8, d_ff 64, 2 layers, 32 buckets, vocab 512.
Json TinyTextEncoderConfigJson();
// Its weights (CPU, float32) under upstream names (shared.weight, encoder.block.*, ...). Pseudo-random but
// the same for a seed on every platform and LibTorch version (our own generator), with transformers-like
// scales so activations stay O(1).
std::map<std::string, at::Tensor> TinyTextEncoderWeights(uint64_t seed);
// A small unigram vocabulary (about 300 pieces): <pad>=0, </s>=1, <unk>=2, common English words,
// letters, digits and punctuation with scores that prefer whole words. Characters outside it map to
// <unk>. No charsmap (identity normalization), sentencepiece's whitespace handling.
SentencePieceModel TinyTokenizerModel();

}  // namespace stas::models::text
