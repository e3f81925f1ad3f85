#include "common/safetensors.h"

#include <gtest/gtest.h>

#include <random>

#include "support/temp_dir.h"

namespace stas {
namespace {

// Builds a safetensors image from a raw header string and a data region.
std::string Image(const std::string& header, const std::string& data) {
  std::string out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + data;
}

Result<SafetensorsHeader> Parse(const std::string& bytes) {
  return ParseSafetensorsHeader(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

void ExpectInvalid(const std::string& bytes, const std::string& fragment) {
  auto r = Parse(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(fragment), std::string::npos) << r.status().message();
}

TEST(Safetensors, RoundTripsEveryWritableDtype) {
  testing::TempDir dir;
  std::map<std::string, at::Tensor> tensors = {
      {"f32", at::arange(6, at::kFloat).reshape({2, 3})},
      {"f16", at::arange(4, at::kHalf)},
      {"bf16", at::arange(5, at::kBFloat16)},
      {"i64", at::arange(3, at::kLong).mul(int64_t{1000000000000})},
      {"u8", at::arange(7, at::kByte)},
      {"b", at::ones({2}, at::kBool)},
      {"f64", at::arange(2, at::kDouble)},
      {"empty", at::zeros({0, 4})},
  };
  ASSERT_TRUE(WriteSafetensors(dir.File("a.safetensors"), tensors, {{"format", "pt"}}).ok());
  auto file = SafetensorsFile::Open(dir.File("a.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->header().metadata.at("format"), "pt");
  for (const auto& [name, t] : tensors) {
    auto got = file->Get(name);
    ASSERT_TRUE(got.ok()) << name;
    EXPECT_EQ(got->scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(at::equal(*got, t)) << name;
  }
  EXPECT_EQ(file->Get("nope").status().code(), StatusCode::kNotFound);
}

TEST(Safetensors, UnalignedDataIsCopiedToAlignedMemory) {
  // Header of odd length puts the F32 data at an odd address.
  float v[2] = {1.5f, -2.0f};
  std::string data(reinterpret_cast<const char*>(v), sizeof(v));
  std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  if ((8 + header.size()) % 4 == 0) header += " ";
  testing::TempDir dir;
  auto file = SafetensorsFile::Open(dir.Write("u.safetensors", Image(header, data)));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  auto t = file->Get("x");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data_ptr()) % 4, 0u);
  EXPECT_FLOAT_EQ(t->data_ptr<float>()[0], 1.5f);
  EXPECT_FLOAT_EQ(t->data_ptr<float>()[1], -2.0f);
}

TEST(Safetensors, TruncatedBeforeHeaderLength) { ExpectInvalid(std::string("\x05\x00\x00", 3), "too short"); }

TEST(Safetensors, HeaderLargerThanFile) {
  std::string img = Image(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcd");
  ExpectInvalid(img.substr(0, 20), "larger than the file");
}

TEST(Safetensors, AbsurdHeaderLength) {
  std::string img(16, '\0');
  img[7] = 0x7f;  // ~9e18 bytes
  ExpectInvalid(img, "exceeds the limit");
}

TEST(Safetensors, OffsetPastEnd) {
  ExpectInvalid(Image(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "abcd"), "past the data region");
}

TEST(Safetensors, TruncatedData) {
  std::string img = Image(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(16, 'a'));
  ExpectInvalid(img.substr(0, img.size() - 3), "truncated");
}

TEST(Safetensors, OverlappingRanges) {
  ExpectInvalid(Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                      std::string(12, 'a')),
                "overlapping");
}

TEST(Safetensors, BadDtypeName) {
  ExpectInvalid(Image(R"({"x":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", "abcd"), "unknown dtype 'F33'");
}

TEST(Safetensors, SizeNotMatchingShape) {
  ExpectInvalid(Image(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, 'a')),
                "shape x dtype");
}

TEST(Safetensors, NegativeOrHugeShape) {
  ExpectInvalid(Image(R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "abcd"), "non-negative");
  ExpectInvalid(Image(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})", "abcd"),
                "overflows");
}

TEST(Safetensors, BeginAfterEnd) {
  ExpectInvalid(Image(R"({"x":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", "abcd"), "begin > end");
}

TEST(Safetensors, MalformedJson) {
  ExpectInvalid(Image(R"({"x":{"dtype":"F32",)", ""), "not valid JSON");
  ExpectInvalid(Image(R"([1,2,3])", ""), "not a JSON object");
  ExpectInvalid(Image(R"({"x":{"shape":[1],"data_offsets":[0,4]}})", "abcd"), "no string dtype");
  ExpectInvalid(Image(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "abcd"), "data_offsets");
  ExpectInvalid(Image(R"({"__metadata__":{"k":1}})", ""), "__metadata__");
}

TEST(Safetensors, DtypesBeyondThisLibTorchAreParsedButRefusedClearly) {
  testing::TempDir dir;
  auto file = SafetensorsFile::Open(
      dir.Write("u.safetensors", Image(R"({"x":{"dtype":"F8_E8M0","shape":[2],"data_offsets":[0,2]}})", "ab")));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->Get("x").status().code(), StatusCode::kNotImplemented);
}

TEST(Safetensors, MissingFileAndDirectory) {
  testing::TempDir dir;
  EXPECT_EQ(SafetensorsFile::Open(dir.File("none.safetensors")).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(SafetensorsFile::Open(dir.path()).status().code(), StatusCode::kInvalidArgument);
}

// Bounded randomized fuzzing of the header parser: random mutations of a valid image must only ever
// produce a Status, never a crash, and accepted headers must describe ranges inside the file.
TEST(Safetensors, RandomMutationsNeverCrash) {
  const std::string valid = Image(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                                  R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},)"
                                  R"("__metadata__":{"format":"pt"}})",
                                  std::string(22, 'z'));
  std::mt19937 rng(1234);
  int accepted = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s = valid;
    const int edits = 1 + rng() % 4;
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 4) {
        case 0: s[rng() % s.size()] = static_cast<char>(rng()); break;
        case 1: s.resize(rng() % (s.size() + 1)); break;
        case 2: s.insert(rng() % (s.size() + 1), 1, "{}[]\",:0123456789-e"[rng() % 19]); break;
        case 3: if (!s.empty()) s.erase(rng() % s.size(), 1 + rng() % 4); break;
      }
      if (s.empty()) break;
    }
    auto r = Parse(s);
    if (r.ok()) {
      ++accepted;
      for (const auto& entry : r->entries) ASSERT_LE(r->data_offset + entry.end, s.size());
    }
  }
  EXPECT_GT(accepted, 0);  // some mutations (in the data region) stay valid
}

}  // namespace
}  // namespace stas
