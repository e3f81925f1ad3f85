// The Wan VAE decode shared by the ranks of a sequence-parallel group over real MPI collectives: every
// rank decodes its band of the frame with the exact halo and every rank receives the whole video,
// equal to the decode one rank makes alone. The frame is wide enough (40 latent columns, halo 9) that
// every seam between bands is a real one on 2, 3 and 4 ranks.
#include <gtest/gtest.h>

#include "common/check.h"
#include "models/wan/vae.h"
#include "models/wan/vae_tiny.h"
#include "mpi_test_support.h"
#include "parallel/ulysses.h"

namespace stas::testing {
namespace {

using models::wan::WanVaeDecoder;

WanVaeDecoder TinyDecoder() {
  auto config = models::wan::WanVaeConfig::FromJson(models::wan::TinyWanVaeConfigJson());
  STAS_CHECK(config.ok());
  auto decoder = WanVaeDecoder::Load(*config, models::wan::TinyWanVaeWeights(4), at::TensorOptions().dtype(at::kFloat));
  STAS_CHECK(decoder.ok()) << decoder.status().ToString();
  return std::move(decoder).value();
}

TEST(WanVaeSharedDecode, BandsOverTheRanksEqualTheOneRankDecode) {
  const WanVaeDecoder decoder = TinyDecoder();
  const at::Tensor z = SeededRandn({1, 16, 2, 4, 40}, 21);
  auto alone = decoder.Decode(z);
  ASSERT_TRUE(alone.ok()) << alone.status().ToString();

  auto comm = MakeCommunicator(MPI_COMM_WORLD, "shared decode");
  parallel::UlyssesAttention group(*comm);
  std::vector<at::Tensor> pieces;
  int64_t next_frame = 0;
  Status st = decoder.DecodeShared(z, {}, group, [&](int64_t first, const at::Tensor& piece) {
    EXPECT_EQ(first, next_frame);
    next_frame += piece.size(2);
    pieces.push_back(piece.clone());
    return Status::Ok();
  });
  ASSERT_TRUE(st.ok()) << st.ToString();
  const at::Tensor shared = at::cat(pieces, 2);
  ASSERT_EQ(shared.sizes(), alone->sizes());
  const double max_error = (shared - *alone).abs().max().item<double>();
  EXPECT_LT(max_error, 1e-5) << "rank " << WorldRank() << " of " << WorldSize();
}

}  // namespace
}  // namespace stas::testing
